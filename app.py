"""letcolor's web demo (Gradio Blocks), its API (the endpoints /colorize, /colorize_batch and /colorize_video) and
MCP server.

    python app.py   # serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (127.0.0.1:7860 unless set)

The model comes from $LETCOLOR_MODEL (a Hub repo id or a local directory), else the bundled one, and runs on
$LETCOLOR_ENGINE (auto, the default: the fastest installed; torch; torch-int8; onnxruntime; onnxruntime-int8). It is
loaded once, at start-up; without one the page still loads, says why, and the endpoints answer with an error. Photos
over $LETCOLOR_APP_MAX_MEGAPIXELS (default 25) are refused from their header. For a model that takes colour hints,
the Photo tab has an editor to paint them over the photo (/colorize's `hints`). The work is letcolor.webapp's; this
file is the UI.
"""

import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import gradio as gr
from gradio.context import LocalContext

from letcolor.batch_io import remove_stale_folders
from letcolor.images import EXAMPLES_DIR
from letcolor.memory import keep_large_buffers_off_the_heap
from letcolor.pipeline import DEFAULT_MAX_SIDE, Colorizer, ModelError, Options
from letcolor.video import Mode
from letcolor.webapp import (
    MAX_BATCH_FILES,
    MAX_SIDE_RANGE,
    MAX_VIDEO_FRAMES,
    MAX_VIDEO_SECONDS,
    MAX_VIDEO_SIDES,
    RESULT_LIFETIME_SECONDS,
    Settings,
    Upload,
    WebColorizer,
    engine_from_environment,
    max_pixels_from_environment,
)

EXAMPLE_PHOTOS = ["chelsea_gray.png", "rocket_gray.png", "astronaut_gray.png", "china_gray.png", "coffee.png"]
MAX_FILE_SIZE = "25mb"
# Sized for a 2-core CPU Space: each colorization uses both cores; a second slot lets a small photo through while a
# large one runs, and more would only add memory.
COLORIZE_CONCURRENCY = 2
BATCH_CONCURRENCY = 1
QUEUE_SIZE = 20
# Videos on a 2-core CPU Space: 600 frames of 720p take 2 to 4 minutes (2.6 to 5.5 frames/s in the README).
VIDEO_CONCURRENCY = 1
VIDEO_LIMITS = (
    f"Videos up to {MAX_VIDEO_SECONDS} s (sound included) and {MAX_VIDEO_FRAMES} frames, at most {MAX_VIDEO_SIDES[0]}x"
    f"{MAX_VIDEO_SIDES[1]} (720p), {MAX_FILE_SIZE.upper()}. The result is an H.264 MP4 of the same size, frame rate "
    "and length, with the sound kept."
)

INTRO = """# letcolor: colour for black-and-white photos
Drop in an old photo, paste one or take one with the webcam, and get it back in colour. The network is
*Let there be Color!* (Iizuka, Simo-Serra and Ishikawa, SIGGRAPH 2016), which also names what the photo shows, among
the classes it was trained on (for the bundled model: 21 kinds of scene, and faces, clothing, cats, dogs, cars
and wild animals)."""


HINTS_HELP = (
    "Paint a dot or a stroke of the colour you know (the car was red, the dress blue) on each region, then press "
    "**Colorize** again. The brush's colour picker takes any colour; only its hue and saturation count, the photo "
    "keeps its own light and shade."
)
NO_HINTS_NOTE = (
    "This model takes no colour hints. Set `LETCOLOR_MODEL` to a model trained with them (`python -m train --hints`) "
    "to paint the colours you know over the photo."
)
# Colours people know in old photos: skin tones, sky, foliage, brick, a red car, a blue dress, a yellow cab.
HINT_PALETTE = ["#e0ac8a", "#8d5a3b", "#6f9bd1", "#4f7b3a", "#a4452c", "#c0262d", "#1f4e9c", "#f2c230"]


def limits_note(max_pixels: int) -> str:
    return (
        f"Photos up to {max_pixels / 1e6:g} megapixels and {MAX_FILE_SIZE.upper()}, batches up to {MAX_BATCH_FILES} "
        "photos. An animated GIF or multi-page TIFF is colorized from its first frame."
    )


def load_colorizer() -> tuple[Colorizer | None, str]:
    """The colorizer (on $LETCOLOR_ENGINE's engine), or None and the reason there is none."""
    try:
        return Colorizer.from_pretrained(engine=engine_from_environment()), ""
    except (ModelError, ValueError, OSError) as err:  # ValueError: an engine that is unknown or not installed
        return None, str(err)


def user_error(message: str) -> gr.Error:
    """A gr.Error for the user's mistake (a bad file, a bad setting): its message goes to the user, and to the log as
    one line, not the traceback Gradio prints for a failure."""
    print(f"refused: {message}", file=sys.stderr)
    return gr.Error(message, print_exception=False)


@contextmanager
def shown_to_the_user():
    """The web app's ValueErrors as `user_error`s."""
    try:
        yield
    except ValueError as err:
        raise user_error(str(err)) from err


class Cancelled(Exception):
    """The call's event was cancelled: its client pressed Stop, or left."""


class Replaced(Cancelled):
    """The call's input was replaced in its page after the call was queued: its result would show beside another."""


def upload_paths(value) -> tuple[str, ...]:
    """The paths of an input's uploads (a File's list, a Video's dict), as its change and its call both get them."""
    if isinstance(value, dict):
        return (value["path"],) if isinstance(value.get("path"), str) else sum(map(upload_paths, value.values()), ())
    if isinstance(value, list | tuple):
        return sum(map(upload_paths, value), ())
    return ()


class Recent:
    """A map that keeps its last `size` entries (set last, kept last), for all users: changes and results come in on
    several threads."""

    def __init__(self, size: int = 4096):
        self._entries, self._size, self._lock = OrderedDict(), size, threading.Lock()

    def add(self, key, value) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def get(self, key, default=None):
        with self._lock:
            return self._entries.get(key, default)


class InView:
    """Each page's uploads in one input (a tab's files or video) as its change events last reported them, and when.
    A call stops where a change after it was queued shows other uploads. Gradio's `cancels` on the change also stopped
    the call that a press made during the upload: the press waits for the upload, then goes with its change."""

    def __init__(self):
        self._changes = Recent()  # session hash: (time.monotonic() of the change, upload_paths)

    def changed(self, value, session: str) -> None:
        self._changes.add(session, (time.monotonic(), upload_paths(value)))

    def replaced(self, event, value) -> bool:
        """Whether `event`'s page changed the input to other uploads than `value` after the event was queued."""
        changed_at, paths = self._changes.get(event.session_hash, (-math.inf, ()))
        return changed_at > event.enqueue_time and paths != upload_paths(value)


class CancelWatch:
    """Stops a long call (a video, a batch) whose event was cancelled. Gradio frees a cancelled event's concurrency
    slot at once but cannot stop a function that runs: the next video started beside the cancelled one, and a client
    that submitted and cancelled ran any number at once, past VIDEO_CONCURRENCY; one whose client left (a closed tab)
    ran to its end. Made as the call starts, it finds the call's event among Gradio's running jobs (a call from
    outside the queue has none and is never stopped); the event is cancelled once it is gone from them or no longer
    alive; or, given the page's `in_view` uploads and the call's `value`, once they were replaced (`InView`)."""

    def __init__(self, in_view: InView | None = None, value=None):
        self.queue = getattr(LocalContext.blocks.get(None), "_queue", None)
        event_id = LocalContext.event_id.get(None)
        self.event = next((event for event in self._running_events() if event._id == event_id), None)
        self.in_view, self.value = in_view, value

    def stop_if_cancelled(self) -> None:
        if self.event is None:
            return
        if not (self.event.alive and self.event in self._running_events()):
            print(f"cancelled: stopped event {self.event._id}", file=sys.stderr)
            raise Cancelled(self.event._id)
        if self.in_view and self.in_view.replaced(self.event, self.value):
            print(f"replaced: stopped event {self.event._id}", file=sys.stderr)
            raise Replaced(self.event._id)

    def each(self, items: list) -> Iterator:
        """`items`, stopping before the next where the event was cancelled."""
        for item in items:
            self.stop_if_cancelled()
            yield item

    def _running_events(self) -> list:
        jobs = [] if self.queue is None else self.queue.active_jobs  # (a queue with no one waiting is falsy)
        return [event for job in jobs if job for event in job]


class Endpoints:
    """The app's API functions; their parameter names are the API's parameter names, and their docstrings describe
    them as MCP tools."""

    def __init__(self, colorizer: Colorizer | None, model_problem: str, max_pixels: int):
        folder = gr.utils.get_upload_folder()
        self._web = WebColorizer(colorizer, max_pixels, folder) if colorizer else None
        self._model_problem = model_problem
        self._files_in_view, self._video_in_view = InView(), InView()
        self._photo_of = Recent()  # the photo of each recent /colorize result

    # The defaults (the pipeline's) make the API's optional parameters, the reference photo above all, optional.
    def colorize(
        self,
        image,
        use_global=True,
        strength=1.0,
        reference=None,
        palette_strength=0.0,
        max_side=DEFAULT_MAX_SIDE,
        refine=Options.refine,
        hints=None,
        pressed_for=None,
    ):
        """Colorize a black-and-white photo with the Let there be Color! network.

        Args:
            image: the photo to colorize (colour photos are reduced to gray first)
            use_global: use the scene-level (global) features for the colours
            strength: how strongly the scene drives the colours, 0 to 2 (1: as trained)
            reference: optional photo whose scene drives the colours instead
            palette_strength: 0 to 1, pull the colours toward the reference's (needs a reference; not with hints)
            max_side: processing resolution in pixels, 256 to 1024; the result is always full size
            refine: edge-aware colour refinement (colours follow the photo's edges)
            hints: optional colour hints (a model that takes them): a JSON file of points [[x, y, "#rrggbb"], ...] in the photo's pixels, or a PNG of the photo's size whose painted pixels are hints of their colour
        Returns:
            the colorized photo at full resolution (a PNG named after the photo) and the top 5 classes the model recognises (scenes, and subjects such as faces or dogs)
        """  # noqa: E501 (Gradio reads one line per argument for the MCP tools)
        # `pressed_for`: the page's photo when Colorize was pressed (a State: not an API parameter). A press held back
        # while the last one ran comes after it, with the page as it is then: not for a photo since replaced or cleared
        if pressed_for is not None and (image is None or image["path"] != pressed_for):
            return gr.skip(), gr.skip()
        if image is None:
            raise user_error("Upload a photo first.")
        web = self._require_model()
        with shown_to_the_user():
            settings = Settings.from_api(use_global, strength, palette_strength, max_side, refine)
            photo, reference = Upload.from_api(image, "image"), Upload.optional_from_api(reference, "reference")
            result = web.colorize(photo, reference, settings, Upload.optional_from_api(hints, "hints"))
        for warning in result.warnings:
            gr.Warning(warning)
        self._photo_of.add(str(result.path), image["path"])
        return str(result.path), result.scenes

    def colorize_batch(
        self,
        files,
        use_global=True,
        strength=1.0,
        reference=None,
        palette_strength=0.0,
        max_side=DEFAULT_MAX_SIDE,
        refine=Options.refine,
        progress=gr.Progress(),  # noqa: B008  (Gradio's idiom: it swaps in a tracker per call)
    ):
        """Colorize many black-and-white photos; a photo that cannot be colorized is skipped and reported.

        Args:
            files: the photos to colorize
            use_global: use the scene-level (global) features for the colours
            strength: how strongly the scene drives the colours, 0 to 2 (1: as trained)
            reference: optional photo whose scene drives the colours of every photo instead
            palette_strength: 0 to 1, pull the colours toward the reference's (needs a reference)
            max_side: processing resolution in pixels, 256 to 1024; the results are always full size
            refine: edge-aware colour refinement (colours follow the photo's edges)
        Returns:
            a zip with one full-resolution PNG per photo (photo.jpg gives photo_color.png), previews of them and a report of what was colorized or skipped and why
        """  # noqa: E501 (Gradio reads one line per argument for the MCP tools)
        if not files:
            raise user_error("Upload some photos first.")
        web = self._require_model()
        with shown_to_the_user():
            photos = Upload.list_from_api(files, "files")
            settings = Settings.from_api(use_global, strength, palette_strength, max_side, refine)
            reference = Upload.optional_from_api(reference, "reference")
            watch = CancelWatch(self._files_in_view, files)
            try:
                result = web.colorize_batch(
                    photos,
                    reference,
                    settings,
                    lambda items: progress.tqdm(watch.each(items), desc="Colorizing", total=len(items)),
                )
                watch.stop_if_cancelled()  # (files changed during the last photo)
            except Replaced:  # (the change cleared the result: nothing to show)
                return gr.skip(), gr.skip(), gr.skip()
        return str(result.archive), [(str(path), name) for path, name in result.previews], result.report

    def colorize_video(
        self,
        video,
        use_global=True,
        strength=1.0,
        reference=None,
        palette_strength=0.0,
        max_side=DEFAULT_MAX_SIDE,
        refine=Options.refine,
        mode=Mode.SHOT.value,
        progress=gr.Progress(),  # noqa: B008  (Gradio's idiom: it swaps in a tracker per call)
    ):
        """Colorize a black-and-white video; returns an H.264 MP4 with the same frames, frame rate, length and sound.

        Args:
            video: the video to colorize (at most 20 s, 600 frames and 720p)
            use_global: use the scene-level (global) features for the colours
            strength: how strongly the scene drives the colours, 0 to 2 (1: as trained)
            reference: optional photo whose scene drives the colours of the whole video instead
            palette_strength: 0 to 1, pull the colours toward the reference's (needs a reference)
            max_side: processing resolution in pixels, 256 to 1024; the result is always full size
            refine: edge-aware colour refinement (colours follow the photo's edges)
            mode: "shot" (steady: one palette per shot, colours carried along the motion) or "frame" (each frame on its own)
        Returns:
            the colorized video (an MP4 named after the video)
        """  # noqa: E501 (Gradio reads one line per argument for the MCP tools)
        if video is None:
            raise user_error("Upload a video first.")
        web, watch = self._require_model(), CancelWatch(self._video_in_view, video)

        def frames_done(done: int, total: int) -> None:
            watch.stop_if_cancelled()
            progress((done, total or None), desc=VIDEO_PASSES.get(mode, ""), unit="frames")

        with shown_to_the_user():
            settings = Settings.from_api(use_global, strength, palette_strength, max_side, refine)
            clip, reference = Upload.from_api(video, "video"), Upload.optional_from_api(reference, "reference")
            try:
                watch.stop_if_cancelled()  # (a video replaced while it waited in the queue: before its header is read)
                result = web.colorize_video(clip, reference, settings, mode, frames_done)
                watch.stop_if_cancelled()  # (a video changed after the last frame)
            except Replaced:
                return gr.skip()
        for warning in result.warnings:
            gr.Warning(warning)
        return str(result.path)

    def files_changed(self, files, request: gr.Request):
        """UI only: new or cleared batch files clear the last result, and stop a batch of other files (`InView`)."""
        self._files_in_view.changed(files, request.session_hash)
        return None, None, ""

    def video_changed(self, video, request: gr.Request):
        """UI only: a new or cleared video clears the last result, and stops the colorization of another (`InView`)."""
        self._video_in_view.changed(video, request.session_hash)
        return None, gr.DownloadButton(value=None, interactive=False)

    def painted_hints(self, image, editor, shown: dict | None):
        """UI only: the hint editor's paint layers as one hint layer for /colorize (None if nothing is painted, or
        if it was painted on no photo: the editor left blank by a removed photo, before the next one's copy is set; or
        on another photo than this one, where `shown` is not of it: Colorize pressed while a new photo uploaded took
        the strokes painted on the last one)."""
        if image is None or not editor or not editor.get("layers") or not editor.get("background"):
            return None
        if not shown or shown["photo"] != image["path"]:
            return None
        web = self._require_model()
        with shown_to_the_user():
            layers = Upload.list_from_api(editor["layers"], "hint layers")
            path = web.painted_hints(Upload.from_api(image, "image"), layers)
        return str(path) if path else None

    def shown_photo(self, image):
        """UI only: the photo as the browser can show it (a PNG copy of a TIFF or a GIF), for the slider and editor,
        with the upload's path: {"photo": ..., "shown": ...}."""
        if image is None:
            return None
        if self._web is None:
            return {"photo": image["path"], "shown": image["path"]}
        with shown_to_the_user():
            return {"photo": image["path"], "shown": str(self._web.shown_photo(Upload.from_api(image, "image")))}

    def photo_to_show(self, image, shown: dict | None):
        """UI only: `shown_photo` for a new photo, not again for the one `shown` is of (one new photo is reported as
        changed 2-3 times: a TIFF was copied as often, one at a time for all users)."""
        if image and shown and shown["photo"] == image["path"]:
            return gr.skip()
        return self.shown_photo(image)

    def before_after(self, image: dict | None, colorized: str | None, shown: dict | None, result: dict):
        """UI only: the slider's pair (the photo as `shown`) and the download button, from the /colorize event's
        input and output; cleared where the photo changed while it was colorized (`colorized`: its path when Colorize
        was pressed), or where the result is another photo's (a step of the last photo's chain that ran after the
        next photo's press: it paired the new photo with the old result). `shown` may still be an earlier photo's
        (made one at a time for all users): then it is made, and kept as `shown`."""
        if image is None or image["path"] != colorized or self._photo_of.get(result["path"]) != colorized:
            return *no_photo_result(), gr.skip()
        made = None if shown and shown["photo"] == colorized else self.shown_photo(image)
        pair = ((made or shown)["shown"], result["path"])
        return pair, gr.DownloadButton(value=result["path"], interactive=True), gr.skip(), made or gr.skip()

    def _require_model(self) -> WebColorizer:
        if self._web is None:
            raise user_error(f"No colorization model is available. {self._model_problem}")
        return self._web


# the shot mode reads the video twice, and its progress counts the frames of both passes
VIDEO_PASSES = {Mode.SHOT.value: "Colorizing (2 passes)", Mode.FRAME.value: "Colorizing"}


def video_download(result: dict | None):
    """UI only: the download button for the /colorize_video event's output (none where it was stopped, replaced)."""
    return gr.DownloadButton(value=result["path"], interactive=True) if result else gr.skip()


def photo_path(image: dict | None) -> str | None:
    """UI only: the photo's path when Colorize was pressed."""
    return image["path"] if image else None


def no_photo_result():
    """UI only: a new or cleared photo clears the last result (slider, download, scenes)."""
    return None, gr.DownloadButton(value=None, interactive=False), None


def result_of_another_photo(image: dict | None, colorized: str | None):
    """UI only: a new or cleared photo clears the last result; not where Colorize was pressed for it (one new photo is
    reported as changed 2-3 times, some after that)."""
    if image and image["path"] == colorized:
        return gr.skip(), gr.skip(), gr.skip()
    return no_photo_result()


def photo_to_paint_on(image: dict | None, shown: dict | None):
    """UI only: the hint editor shows the photo (as `shown`), with nothing painted yet; not a photo since replaced."""
    if not image or not shown or shown["photo"] != image["path"]:
        return gr.skip()
    return {"background": shown["shown"], "layers": [], "composite": None}


def nothing_to_paint_on(image: dict | None, shown: dict | None):
    """UI only: a new or cleared photo clears the hint editor at once (its own copy of the photo comes later), where
    it holds an earlier photo (`shown`: an update of an empty editor redraws it under a user opening its colours)."""
    if not shown or (image and shown["photo"] == image["path"]):
        return gr.skip(), gr.skip()
    return None, None  # and `shown` with it: where the new photo's copy fails, the last one's is not taken for it


def build_demo(colorizer: Colorizer | None, model_problem: str = "", max_pixels: int | None = None) -> gr.Blocks:
    """The page; `max_pixels` defaults to $LETCOLOR_APP_MAX_MEGAPIXELS (else 25 MP)."""
    max_pixels = max_pixels or max_pixels_from_environment()
    endpoints = Endpoints(colorizer, model_problem, max_pixels)
    with gr.Blocks(title="letcolor", delete_cache=(RESULT_LIFETIME_SECONDS, RESULT_LIFETIME_SECONDS)) as demo:
        gr.Markdown(INTRO)
        if colorizer is None:
            gr.Markdown(f"**No colorization model is available, so the app cannot colorize yet.** {model_problem}")
        with gr.Row():
            with gr.Column(scale=3):
                photo, batch, video = photo_tab(colorizer), batch_tab(), video_tab()
                gr.Markdown(limits_note(max_pixels), elem_id="limits")
            with gr.Column(scale=1):
                controls = settings_controls()
        wire_photo_tab(photo, controls, endpoints)
        wire_batch_tab(batch, controls, endpoints)
        wire_video_tab(video, controls, endpoints)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


class PhotoTab(NamedTuple):
    image: gr.Image
    comparison: gr.ImageSlider
    colorize_button: gr.Button
    download: gr.DownloadButton
    scenes: gr.Label
    result: gr.Image
    hint_file: gr.File
    hint_editor: gr.ImageEditor | None
    colorized: gr.State  # the photo's path when Colorize was pressed
    shown: gr.State  # the photo as the browser can show it (`Endpoints.shown_photo`)


def photo_tab(colorizer: Colorizer | None) -> PhotoTab:
    with gr.Tab("Photo"):
        with gr.Row():
            image = gr.Image(
                type="filepath",
                sources=["upload", "clipboard", "webcam"],
                label="Black-and-white photo",
                elem_id="photo",
            )
            comparison = gr.ImageSlider(label="Before / after", interactive=False, elem_id="comparison")
        with gr.Row():
            colorize_button = gr.Button("Colorize", variant="primary")
            download = gr.DownloadButton("Download full-resolution PNG", interactive=False)
        scenes = gr.Label(num_top_classes=5, label="What the model recognises (its classes, top 5)", elem_id="scenes")
        result = gr.Image(type="filepath", format="png", label="Colorized photo", visible=False)
        hint_file = gr.File(label="Colour hints: JSON points or a paint layer", visible=False)
        hint_editor = hint_controls(colorizer)
        gr.Examples([[str(EXAMPLES_DIR / name)] for name in EXAMPLE_PHOTOS], inputs=image, cache_examples=False)
        colorized, shown = gr.State(), gr.State()
    return PhotoTab(
        image, comparison, colorize_button, download, scenes, result, hint_file, hint_editor, colorized, shown
    )


def wire_photo_tab(tab: PhotoTab, controls: list, endpoints: Endpoints) -> None:
    """Colorize: the photo's path kept, the painted hints (a model that takes them), the photo, the before/after; a new
    or cleared photo clears the result and the editor. A new photo does not stop the colorization of the one before
    (Gradio's `cancels`): its thread ran on anyway, and the stop, made once the new photo's upload ended, also stopped
    a Colorize pressed during that upload (1 run in 2 on a busy machine); the last photo's result is never shown with
    the new one (`before_after`), and a press held back for it is dropped (`colorize`)."""
    # Each step waits for its last run: a press while the last one's runs (new settings, new strokes) comes after it
    # ("once", Gradio's default, dropped it: the last settings' result never came)
    pressed = tab.colorize_button.click(
        photo_path, inputs=tab.image, outputs=tab.colorized, preprocess=False, queue=False, api_visibility="private",
        trigger_mode="always_last",
    )  # fmt: skip
    if tab.hint_editor:
        pressed = pressed.then(
            endpoints.painted_hints,
            inputs=[tab.image, tab.hint_editor, tab.shown],
            outputs=tab.hint_file,
            preprocess=False,
            api_visibility="private",
            trigger_mode="always_last",
        )
    colorizing = (pressed.success if tab.hint_editor else pressed.then)(
        endpoints.colorize,
        inputs=[tab.image, *controls, tab.hint_file, tab.colorized],
        outputs=[tab.result, tab.scenes],
        api_name="colorize",
        preprocess=False,
        concurrency_limit=COLORIZE_CONCURRENCY,
        trigger_mode="always_last",
    )
    colorizing.success(
        endpoints.before_after,  # queued: where the browser's copy of the photo is not made yet, it makes it
        inputs=[tab.image, tab.colorized, tab.shown, tab.result],
        outputs=[tab.comparison, tab.download, tab.scenes, tab.shown],
        preprocess=False,
        api_visibility="private",
        trigger_mode="always_last",
    )
    tab.image.change(
        result_of_another_photo,
        inputs=[tab.image, tab.colorized],
        outputs=[tab.comparison, tab.download, tab.scenes],
        preprocess=False,
        queue=False,
        api_visibility="private",
    )
    if tab.hint_editor:  # strokes on the last photo must never reach the next: the editor is cleared first
        cleared = tab.image.change(
            nothing_to_paint_on,
            inputs=[tab.image, tab.shown],
            outputs=[tab.hint_editor, tab.shown],
            preprocess=False,
            queue=False,
            api_visibility="private",
        )
        after_change = cleared.then
    else:
        after_change = tab.image.change
    after_change(
        endpoints.photo_to_show,
        inputs=[tab.image, tab.shown],
        outputs=tab.shown,
        preprocess=False,
        api_visibility="private",
    )
    if tab.hint_editor:  # a new copy of the photo (not the same again: it redrew the editor under the strokes)
        tab.shown.change(
            photo_to_paint_on,
            inputs=[tab.image, tab.shown],
            outputs=tab.hint_editor,
            preprocess=False,
            api_visibility="private",
        )


class BatchTab(NamedTuple):
    files: gr.File
    button: gr.Button
    report: gr.Markdown
    gallery: gr.Gallery
    archive: gr.File


def batch_tab() -> BatchTab:
    with gr.Tab("Batch"):
        files = gr.File(file_count="multiple", file_types=["image"], label="Photos", elem_id="batch-files")
        button = gr.Button("Colorize all", variant="primary")
        report = gr.Markdown(label="Report", elem_id="batch-report")
        gallery = gr.Gallery(label="Results (previews)", columns=4, elem_id="batch-gallery")
        archive = gr.File(label="Results (zip of full-resolution PNGs)", elem_id="batch-zip")
    return BatchTab(files, button, report, gallery, archive)


def wire_batch_tab(tab: BatchTab, controls: list, endpoints: Endpoints) -> None:
    """Colorize all; new or cleared files clear the result, and stop a batch of other files (its result was shown
    beside them)."""
    tab.button.click(
        endpoints.colorize_batch,
        inputs=[tab.files, *controls],
        outputs=[tab.archive, tab.gallery, tab.report],
        api_name="colorize_batch",
        preprocess=False,
        concurrency_limit=BATCH_CONCURRENCY,
        trigger_mode="always_last",  # a press while the last batch runs or stops waits for it ("once" dropped it)
    )
    tab.files.change(
        endpoints.files_changed,
        inputs=tab.files,
        outputs=[tab.archive, tab.gallery, tab.report],
        preprocess=False,
        queue=False,
        api_visibility="private",
    )


class VideoTab(NamedTuple):
    video: gr.Video
    result: gr.Video
    mode: gr.Radio
    button: gr.Button
    download: gr.DownloadButton


def video_tab() -> VideoTab:
    with gr.Tab("Video"):
        gr.Markdown(VIDEO_LIMITS, elem_id="video-limits")
        with gr.Row():
            video = gr.Video(sources=["upload"], label="Black-and-white video", elem_id="video")
            result = gr.Video(label="Colorized video", interactive=False, elem_id="video-result")
        mode = gr.Radio(
            [("Steady: one palette per shot, colours follow the motion", Mode.SHOT.value),
             ("Each frame on its own (flickers)", Mode.FRAME.value)],
            value=Mode.SHOT.value,
            label="Mode",
        )  # fmt: skip
        with gr.Row():
            button = gr.Button("Colorize video", variant="primary")
            download = gr.DownloadButton("Download MP4", interactive=False)
    return VideoTab(video, result, mode, button, download)


def wire_video_tab(tab: VideoTab, controls: list, endpoints: Endpoints) -> None:
    """Colorize video; a new or cleared video clears the result, and stops the colorization of another (its result
    was shown beside the new one)."""
    colorizing = tab.button.click(
        endpoints.colorize_video,
        inputs=[tab.video, *controls, tab.mode],
        outputs=tab.result,
        api_name="colorize_video",
        preprocess=False,
        concurrency_limit=VIDEO_CONCURRENCY,
        trigger_mode="always_last",  # a press while the last video runs or stops waits for it ("once" dropped it)
    )
    colorizing.success(
        video_download, inputs=tab.result, outputs=tab.download, preprocess=False, queue=False, api_visibility="private"
    )
    tab.video.change(
        endpoints.video_changed,
        inputs=tab.video,
        outputs=[tab.result, tab.download],
        preprocess=False,
        queue=False,
        api_visibility="private",
    )


def hint_controls(colorizer: Colorizer | None) -> gr.ImageEditor | None:
    """The hint editor (a brush over the photo), for a model that takes colour hints; else a note that this one
    does not."""
    if colorizer is None:
        return None
    if not colorizer.takes_hints:
        gr.Markdown(NO_HINTS_NOTE, elem_id="no-hints")
        return None
    with gr.Accordion("Colour hints: paint the colours you know", open=True):
        gr.Markdown(HINTS_HELP)
        return gr.ImageEditor(
            type="filepath",
            sources=(),
            transforms=(),
            layers=False,
            brush=gr.Brush(colors=HINT_PALETTE, color_mode="defaults"),
            label="Paint over the photo",
            elem_id="hint-editor",
        )


def settings_controls() -> list[gr.components.Component]:
    """The colorization settings shared by the tabs, in the endpoints' parameter order after the photo(s)."""
    gr.Markdown("### Settings")
    use_global = gr.Checkbox(True, label="Use global features", info="Scene-level context for the colours")
    strength = gr.Slider(0, 2, value=1, step=0.05, label="Global strength", info="0: none, 1: as trained")
    with gr.Accordion("Reference photo (optional)", open=False):
        reference = gr.Image(
            type="filepath",
            sources=["upload", "clipboard"],
            label="Reference photo: its scene drives the colours",
        )
        palette_strength = gr.Slider(0, 1, value=0, step=0.05, label="Palette strength", info="Pull toward its colours")
    max_side = gr.Slider(
        *MAX_SIDE_RANGE,
        value=DEFAULT_MAX_SIDE,
        step=32,
        label="Processing resolution (px, longest side)",
        info="Lower is faster, higher keeps more detail; the result is always full size",
    )
    refine = gr.Checkbox(
        Options.refine, label="Edge-aware refinement", info="Colours follow the photo's edges; blotches merge away"
    )
    return [use_global, strength, reference, palette_strength, max_side, refine]


def launch(demo: gr.Blocks, **options) -> None:
    """Start the server, and its MCP server at /gradio_api/mcp/; `options` are gr.Blocks.launch's (server name and
    port default to $GRADIO_SERVER_*). show_error: a request that Gradio itself refuses (say, a string where a file
    belongs) gets Gradio's reason, not an error without a message."""
    remove_stale_folders(gr.utils.get_upload_folder(), RESULT_LIFETIME_SECONDS)  # left by a crash or restart
    demo.launch(max_file_size=MAX_FILE_SIZE, mcp_server=True, show_error=True, **options)


def main() -> None:
    keep_large_buffers_off_the_heap()
    try:
        max_pixels = max_pixels_from_environment()
    except ValueError as err:
        raise SystemExit(f"app.py: {err}") from None
    launch(build_demo(*load_colorizer(), max_pixels))


if __name__ == "__main__":
    main()
