"""letcolor's web demo (Gradio Blocks) and its API: the endpoints /colorize and /colorize_batch.

    python app.py   # serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (127.0.0.1:7860 unless set)

The model comes from $LETCOLOR_MODEL (a Hub repo id or a local directory), else the bundled one. It is loaded once,
at start-up; without one the page still loads, says so, and the endpoints answer with an error.
"""

import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from letcolor.batch_io import ResultsZip
from letcolor.pipeline import DEFAULT_MAX_SIDE, Colorizer, ModelNotFoundError, load_image

EXAMPLES = Path(__file__).resolve().parent / "examples"  # licences in examples/LICENSES.md
EXAMPLE_PHOTOS = ["chelsea_gray.png", "rocket_gray.png", "astronaut_gray.png", "china_gray.png", "coffee.png"]
MAX_FILE_SIZE = "25mb"
MAX_BATCH_FILES = 50
# Sized for a 2-core CPU Space: every colorization uses both cores, so more parallel work only adds memory.
COLORIZE_CONCURRENCY = 2
BATCH_CONCURRENCY = 1
QUEUE_SIZE = 20

INTRO = """# letcolor: colour for black-and-white photos
Drop in an old photo, paste one or take one with the webcam, and get it back in colour. The network is
*Let there be Color!* (Iizuka, Simo-Serra and Ishikawa, SIGGRAPH 2016), which also recognises the scene."""


def load_colorizer() -> tuple[Colorizer | None, str]:
    """The colorizer, or None and the reason there is none."""
    try:
        return Colorizer.from_pretrained(), ""
    except ModelNotFoundError as err:
        return None, str(err)


def open_upload(upload: dict | None, what: str) -> Image.Image | None:
    """The photo behind an uploaded file's payload (the events skip Gradio's preprocessing, so that an unreadable
    file gets the pipeline's clear message rather than Gradio's generic one)."""
    if upload is None:
        return None
    try:
        return load_image(upload["path"])
    except ValueError as err:  # the message names the server's copy of the file: name the user's instead
        raise gr.Error(f"{what}: {str(err).replace(upload['path'], upload_name(upload))}") from err


def upload_name(upload: dict) -> str:
    return upload.get("orig_name") or Path(upload["path"]).name


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
        photo = open_upload(image, "Photo")
        result = self._run(
            photo, open_upload(reference, "Reference photo"), use_global, strength, palette_strength, max_side
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
        reference_photo = open_upload(reference, "Reference photo")
        archive = Path(tempfile.mkdtemp(dir=gr.utils.get_upload_folder())) / "letcolor-results.zip"
        with ResultsZip(archive) as results:
            for upload in progress.tqdm(files, desc="Colorizing"):
                photo = open_upload(upload, "Photo")
                result = self._run(photo, reference_photo, use_global, strength, palette_strength, max_side)
                results.add(upload_name(upload), result.image)
        return str(archive)

    def _run(self, photo, reference, use_global, strength, palette_strength, max_side):
        if self._colorizer is None:
            raise gr.Error(f"No colorization model is available. {self._model_problem}")
        try:
            return self._colorizer(
                photo,
                use_global=bool(use_global),
                global_strength=float(strength),
                reference=reference,
                palette_strength=float(palette_strength),
                max_side=int(max_side),
            )
        except ValueError as err:  # settings out of range
            raise gr.Error(str(err)) from err


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
            with gr.Column(scale=1):
                settings = settings_controls()

        colorize_button.click(
            endpoints.colorize,
            inputs=[image, *settings],
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
            inputs=[files, *settings],
            outputs=archive,
            api_name="colorize_batch",
            preprocess=False,
            concurrency_limit=BATCH_CONCURRENCY,
        )
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def settings_controls() -> list[gr.components.Component]:
    """The colorization settings shared by both tabs, in the endpoints' parameter order after the photo(s)."""
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
