"""letcolor's web demo (Gradio Blocks) and its API: the endpoints /colorize, /colorize_batch and /colorize_video.

    python app.py   # serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (127.0.0.1:7860 unless set)

The model comes from $LETCOLOR_MODEL (a Hub repo id or a local directory), else the bundled one. It is loaded once,
at start-up; without one the page still loads, says so, and the endpoints answer with an error.
"""

import tempfile
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from letcolor.batch_io import ResultsZip
from letcolor.pipeline import DEFAULT_MAX_SIDE, Colorizer, ModelError, load_image
from letcolor.video import Mode, VideoInfo, probe

EXAMPLES = Path(__file__).resolve().parent / "letcolor" / "examples"  # licences in its LICENSES.md
EXAMPLE_PHOTOS = ["chelsea_gray.png", "rocket_gray.png", "astronaut_gray.png", "china_gray.png", "coffee.png"]
MAX_FILE_SIZE = "25mb"
MAX_BATCH_FILES = 50
# Sized for a 2-core CPU Space: each colorization uses both cores; a second slot lets a small photo through while a
# large one runs, and more would only add memory.
COLORIZE_CONCURRENCY = 2
BATCH_CONCURRENCY = 1
QUEUE_SIZE = 20
# Videos on a 2-core CPU Space: 600 frames of 720p take 2 to 4 minutes (2.6 to 5.5 frames/s in the README).
VIDEO_CONCURRENCY = 1
MAX_VIDEO_SECONDS = 20
MAX_VIDEO_FRAMES = 600
MAX_VIDEO_SIDES = (1280, 720)  # long side, short side: 720p
VIDEO_LIMITS = (
    f"Videos up to {MAX_VIDEO_SECONDS} s and {MAX_VIDEO_FRAMES} frames, at most {MAX_VIDEO_SIDES[0]}x"
    f"{MAX_VIDEO_SIDES[1]} (720p), {MAX_FILE_SIZE.upper()}. The result is an H.264 MP4 of the same size, frame rate "
    "and length, with the sound kept."
)

INTRO = """# letcolor: colour for black-and-white photos
Drop in an old photo, paste one or take one with the webcam, and get it back in colour. The network is
*Let there be Color!* (Iizuka, Simo-Serra and Ishikawa, SIGGRAPH 2016), which also recognises the scene."""


def load_colorizer() -> tuple[Colorizer | None, str]:
    """The colorizer, or None and the reason there is none."""
    try:
        return Colorizer.from_pretrained(), ""
    except ModelError as err:
        return None, str(err)


def upload_name(upload: dict) -> str:
    return upload.get("orig_name") or Path(upload["path"]).name


@contextmanager
def user_errors(*uploads: dict | None):
    """The pipeline's ValueErrors (a bad file, a bad setting) as gr.Errors naming the user's files, not the server's
    copies. The events skip Gradio's preprocessing, whose message for an unreadable file says nothing useful."""
    try:
        yield
    except ValueError as err:
        message = str(err)
        for upload in filter(None, uploads):
            message = message.replace(upload["path"], upload_name(upload))
        raise gr.Error(message) from err


class Endpoints:
    """The app's API functions; their parameter names are the API's parameter names."""

    def __init__(self, colorizer: Colorizer | None, model_problem: str):
        self._colorizer = colorizer
        self._model_problem = model_problem

    # The defaults (the pipeline's) make the API's optional parameters, the reference photo above all, optional.
    def colorize(
        self, image, use_global=True, strength=1.0, reference=None, palette_strength=0.0, max_side=DEFAULT_MAX_SIDE
    ):
        """Colorize one photo; returns the full-resolution result and the top 5 predicted scenes."""
        if image is None:
            raise gr.Error("Upload a photo first.")
        colorizer = self._require_model()
        with user_errors(image, reference):
            result = colorizer(
                image["path"],
                reference=reference and reference["path"],
                **settings(use_global, strength, palette_strength, max_side),
            )
        return result.image, result.scenes

    def colorize_batch(
        self,
        files,
        use_global=True,
        strength=1.0,
        reference=None,
        palette_strength=0.0,
        max_side=DEFAULT_MAX_SIDE,
        progress=gr.Progress(),  # noqa: B008  (Gradio's idiom: it swaps in a tracker per call)
    ):
        """Colorize many photos; returns a zip with one PNG per photo."""
        if not files:
            raise gr.Error("Upload some photos first.")
        if len(files) > MAX_BATCH_FILES:
            raise gr.Error(f"At most {MAX_BATCH_FILES} photos per batch; got {len(files)}.")
        colorizer = self._require_model()
        with user_errors(reference):
            options = settings(use_global, strength, palette_strength, max_side)
            reference_photo = load_image(reference["path"]) if reference else None  # decoded once for all photos
        archive = Path(tempfile.mkdtemp(dir=gr.utils.get_upload_folder())) / "letcolor-results.zip"
        with ResultsZip(archive) as results:
            for upload in progress.tqdm(files, desc="Colorizing"):
                with user_errors(upload):
                    result = colorizer(upload["path"], reference=reference_photo, **options)
                results.add(upload_name(upload), result.image)
        return str(archive)

    def colorize_video(
        self,
        video,
        use_global=True,
        strength=1.0,
        reference=None,
        palette_strength=0.0,
        max_side=DEFAULT_MAX_SIDE,
        mode=Mode.SHOT.value,
        progress=gr.Progress(),  # noqa: B008  (Gradio's idiom: it swaps in a tracker per call)
    ):
        """Colorize a video; returns an H.264 MP4 with the same frames, frame rate, length and sound."""
        if video is None:
            raise gr.Error("Upload a video first.")
        colorizer = self._require_model()
        with user_errors(video, reference):
            check_video_limits(probe(video["path"]), upload_name(video))
            output = (
                Path(tempfile.mkdtemp(dir=gr.utils.get_upload_folder())) / f"{Path(upload_name(video)).stem}_color.mp4"
            )
            colorizer.video(
                video["path"],
                output,
                mode=mode,
                reference=reference and reference["path"],
                max_frames=MAX_VIDEO_FRAMES,
                progress=lambda done, total: progress((done, total or None), desc="Colorizing", unit="frames"),
                **settings(use_global, strength, palette_strength, max_side),
            )
        return str(output)

    def _require_model(self) -> Colorizer:
        if self._colorizer is None:
            raise gr.Error(f"No colorization model is available. {self._model_problem}")
        return self._colorizer


def settings(use_global, strength, palette_strength, max_side) -> dict:
    """The pipeline's options from the settings' values (Gradio's preprocessing, which would cast them, is skipped)."""
    return {
        "use_global": use_global,
        "global_strength": float(strength),
        "palette_strength": float(palette_strength),
        "max_side": int(max_side),
    }


def check_video_limits(info: VideoInfo, name: str) -> None:
    """gr.Error for a video over the Space's limits, checked from its header before any decoding."""
    long_side, short_side = max(info.width, info.height), min(info.width, info.height)
    if long_side > MAX_VIDEO_SIDES[0] or short_side > MAX_VIDEO_SIDES[1]:
        raise gr.Error(
            f"{name}: {info.width}x{info.height} is over the {MAX_VIDEO_SIDES[0]}x{MAX_VIDEO_SIDES[1]} limit."
        )
    if info.duration > MAX_VIDEO_SECONDS or info.frames > MAX_VIDEO_FRAMES:
        raise gr.Error(
            f"{name}: {info.duration:.1f} s, {info.frames} frames; the limit is {MAX_VIDEO_SECONDS} s and "
            f"{MAX_VIDEO_FRAMES} frames."
        )


def video_download(result: dict):
    """UI only: the download button for the /colorize_video event's output."""
    return gr.DownloadButton(value=result["path"], interactive=True)


def before_after(image: dict, result: dict):
    """UI only: the slider's pair and the download button, from the /colorize event's input and output."""
    return (image["path"], result["path"]), gr.DownloadButton(value=result["path"], interactive=True)


def build_demo(colorizer: Colorizer | None, model_problem: str = "") -> gr.Blocks:
    endpoints = Endpoints(colorizer, model_problem)
    with gr.Blocks(title="letcolor", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        if colorizer is None:
            gr.Markdown(f"**No colorization model is available, so the app cannot colorize yet.** {model_problem}")
        with gr.Row():
            with gr.Column(scale=3):
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
                    scenes = gr.Label(num_top_classes=5, label="Predicted scene (top 5)", elem_id="scenes")
                    result = gr.Image(type="pil", format="png", label="Colorized photo", visible=False)
                    gr.Examples([[str(EXAMPLES / name)] for name in EXAMPLE_PHOTOS], inputs=image, cache_examples=False)
                with gr.Tab("Batch"):
                    files = gr.File(file_count="multiple", file_types=["image"], label="Photos")
                    batch_button = gr.Button("Colorize all", variant="primary")
                    archive = gr.File(label="Results (zip of full-resolution PNGs)")
                with gr.Tab("Video"):
                    gr.Markdown(VIDEO_LIMITS)
                    with gr.Row():
                        video = gr.Video(sources=["upload"], label="Black-and-white video", elem_id="video")
                        video_result = gr.Video(label="Colorized video", interactive=False, elem_id="video-result")
                    video_mode = gr.Radio(
                        [("Steady: one palette per shot, colours follow the motion", Mode.SHOT.value),
                         ("Each frame on its own (flickers)", Mode.FRAME.value)],
                        value=Mode.SHOT.value,
                        label="Mode",
                    )  # fmt: skip
                    with gr.Row():
                        video_button = gr.Button("Colorize video", variant="primary")
                        video_download_button = gr.DownloadButton("Download MP4", interactive=False)
            with gr.Column(scale=1):
                controls = settings_controls()

        colorize_button.click(
            endpoints.colorize,
            inputs=[image, *controls],
            outputs=[result, scenes],
            api_name="colorize",
            preprocess=False,
            concurrency_limit=COLORIZE_CONCURRENCY,
        ).success(
            before_after,
            inputs=[image, result],
            outputs=[comparison, download],
            preprocess=False,
            queue=False,
            api_visibility="private",
        )
        batch_button.click(
            endpoints.colorize_batch,
            inputs=[files, *controls],
            outputs=archive,
            api_name="colorize_batch",
            preprocess=False,
            concurrency_limit=BATCH_CONCURRENCY,
        )
        video_button.click(
            endpoints.colorize_video,
            inputs=[video, *controls, video_mode],
            outputs=video_result,
            api_name="colorize_video",
            preprocess=False,
            concurrency_limit=VIDEO_CONCURRENCY,
        ).success(
            video_download,
            inputs=video_result,
            outputs=video_download_button,
            preprocess=False,
            queue=False,
            api_visibility="private",
        )
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


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
        256,
        1024,
        value=DEFAULT_MAX_SIDE,
        step=32,
        label="Processing resolution (px, longest side)",
        info="Lower is faster, higher keeps more detail; the result is always full size",
    )
    return [use_global, strength, reference, palette_strength, max_side]


def launch(demo: gr.Blocks, **options) -> None:
    """Start the server; `options` are gr.Blocks.launch's (server name and port default to $GRADIO_SERVER_*)."""
    demo.launch(max_file_size=MAX_FILE_SIZE, **options)


def main() -> None:
    launch(build_demo(*load_colorizer()))


if __name__ == "__main__":
    main()
