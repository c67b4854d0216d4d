"""The web app's work behind its UI: API values checked into pipeline options, uploaded files, the app's own pixel
and video limits, one photo, a batch or a video colorized into result files named after the user's files.

Every message names the user's files, never the server's copies. Bad requests raise ValueError; a batch skips and
reports each bad photo and colorizes the rest.
"""

import math
import numbers
import os
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from letcolor.batch_io import BatchFolder, remove_stale_folders, result_folder, result_name, save_result
from letcolor.engines import DEFAULT_ENGINE
from letcolor.images import (
    InvalidImageError,
    check_image_file,
    exif_orientation,
    image_pixels,
    load_image,
    upright_size,
)
from letcolor.memory import return_freed_memory
from letcolor.pipeline import Colorizer, Options, is_number
from letcolor.video import VideoInfo, colorize_video, probe

MAX_PIXELS_ENV_VAR = "LETCOLOR_APP_MAX_MEGAPIXELS"
ENGINE_ENV_VAR = "LETCOLOR_ENGINE"
DEFAULT_MAX_MEGAPIXELS = 25  # a 6000x4000 photo; the library's own limit (100 MP) is for trusted callers
MAX_SIDE_RANGE = (256, 1024)  # the processing-resolution slider's range, also enforced over the API
RESULT_LIFETIME_SECONDS = 3600  # the app deletes its result files this long after making them
MAX_BATCH_FILES = 50  # photos in one batch
# Videos, sized for a 2-core CPU Space (about 3 frames/s at 720p): checked from the header, before decoding.
MAX_VIDEO_SECONDS = 20
MAX_VIDEO_FRAMES = 600
MAX_VIDEO_SIDES = (1280, 720)  # long side, short side: 720p
# A brush stroke's anti-aliased rim: pixels this transparent are dropped from painted hints, since their colour is
# only approximate once the browser's canvas has premultiplied and rounded it.
PAINT_MIN_ALPHA = 128
BROWSER_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}  # photos that every browser, and its canvas, draws


def engine_from_environment() -> str:
    """The engine that runs the network: $LETCOLOR_ENGINE, else the default (checked when the Colorizer is made)."""
    return os.environ.get(ENGINE_ENV_VAR, "").strip() or DEFAULT_ENGINE


def max_pixels_from_environment() -> int:
    """The app's pixel limit: $LETCOLOR_APP_MAX_MEGAPIXELS (a positive number of megapixels), else the default."""
    text = os.environ.get(MAX_PIXELS_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_MEGAPIXELS * 1_000_000
    try:
        megapixels = float(text)
    except ValueError:
        megapixels = math.nan
    if not 0.01 <= megapixels <= 100:  # (1e-7 passed a check of (0, 100] and refused every photo: 0 pixels)
        raise ValueError(f"{MAX_PIXELS_ENV_VAR} must be a number of megapixels in [0.01, 100], got {text!r}")
    return round(megapixels * 1_000_000)


@dataclass(frozen=True)
class Upload:
    path: Path  # the server's copy
    name: str  # the user's file name

    @classmethod
    def from_api(cls, value, parameter: str) -> "Upload":
        """From Gradio's file data (a dict with the uploaded copy's `path`, as gradio_client's handle_file sends)."""
        path = value.get("path") if isinstance(value, dict) else None
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"{parameter}: expected an uploaded file (gradio_client's handle_file(...) or an MCP file URL), "
                f"got {value!r:.100}"
            )
        return cls(Path(path), value.get("orig_name") or Path(path).name)

    @classmethod
    def optional_from_api(cls, value, parameter: str) -> "Upload | None":
        return None if value is None else cls.from_api(value, parameter)

    @classmethod
    def list_from_api(cls, value, parameter: str) -> list["Upload"]:
        if not isinstance(value, list):
            raise ValueError(f"{parameter}: expected a list of uploaded files, got {value!r:.100}")
        return [cls.from_api(each, parameter) for each in value]


def _number(value, parameter: str) -> float:
    if not is_number(value) or not _fits_a_float(value):
        raise ValueError(f"{parameter} must be a finite number, got {value!r:.100}")
    return float(value)


def _fits_a_float(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer of 400 digits
        return False


@dataclass(frozen=True)
class Settings:
    """The API's settings (JSON values that Gradio does not check) as numbers; `options` makes (and checks) the
    pipeline's options."""

    use_global: bool
    strength: float
    palette_strength: float
    max_side: int
    refine: bool

    @classmethod
    def from_api(cls, use_global, strength, palette_strength, max_side, refine) -> "Settings":
        low, high = MAX_SIDE_RANGE
        side = _number(max_side, "max_side")
        if not low <= side <= high:
            raise ValueError(f"max_side must be from {low} to {high} (pixels), got {max_side!r}")
        strength, palette_strength = _number(strength, "strength"), _number(palette_strength, "palette_strength")
        return cls(use_global, strength, palette_strength, round(side), refine)

    def options(self, reference) -> Options:
        """The pipeline's options; a ValueError names the API's parameters (strength, not global_strength)."""
        try:
            return Options(self.use_global, self.strength, reference, self.palette_strength, self.max_side, self.refine)
        except ValueError as error:
            raise ValueError(str(error).replace("global_strength", "strength")) from error


@dataclass(frozen=True)
class VideoResult:
    path: Path  # <video name>_color.mp4
    warnings: tuple[str, ...]  # the reference photo's


@dataclass(frozen=True)
class PhotoResult:
    path: Path  # <photo name>_color.png
    scenes: dict[str, float]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class BatchResult:
    archive: Path
    previews: list[tuple[Path, str]]  # (preview image, its name in the zip)
    report: str  # Markdown: how many were colorized, and each skipped photo or warning with its reason


SHAPE_SLACK = 0.02  # how far the editor's canvas may stray from the photo's shape (its scaling rounds)


class WebColorizer:
    """Colorizes uploads for the app: refuses images over `max_pixels` from their header, writes results under
    `result_dir` (the app's upload folder, whose files the app deletes on schedule)."""

    def __init__(self, colorizer: Colorizer, max_pixels: int, result_dir: str | Path):
        self.colorizer, self.max_pixels, self.result_dir = colorizer, max_pixels, Path(result_dir)

    def colorize(
        self, image: Upload, reference: Upload | None, settings: Settings, hints: Upload | None = None
    ) -> PhotoResult:
        """`hints`: a JSON file of points or an image file of a paint layer (see letcolor.hints)."""
        with user_messages(image, reference, hints):
            self._check(image)
            options = self._options(settings, reference)
            result = self.colorizer(image.path, hints=hints.path if hints else None, **vars(options))
        remove_stale_folders(self.result_dir, RESULT_LIFETIME_SECONDS)
        path = save_result(result.image, image.name, self.result_dir)
        warnings = result.warnings + reference_warnings(options)
        return PhotoResult(path, result.scenes, tuple(public(w, [image, reference]) for w in warnings))

    def shown_photo(self, image: Upload) -> Path:
        """The photo as a browser can show it, for the before/after slider and the hint editor: itself in a format
        that browsers draw (BROWSER_SUFFIXES) and turn by its EXIF orientation, else an 8-bit PNG copy, upright (a
        TIFF scan, a GIF: the editor could not draw them and the slider collapsed; a turned WebP, which browsers draw
        as stored: the slider showed it turned against its result, and paint on it was refused)."""
        suffix = Path(image.name).suffix.lower()
        with user_messages(image):
            if suffix in BROWSER_SUFFIXES and (suffix != ".webp" or exif_orientation(image.path) == 1):
                return image.path
            self._check(image)
            shown = eight_bit(load_image(image.path))
        remove_stale_folders(self.result_dir, RESULT_LIFETIME_SECONDS)
        with result_folder(self.result_dir, "shown") as folder:
            path = folder / f"{Path(image.name).stem}.png"
            shown.save(path)
        return path

    def painted_hints(self, image: Upload, layers: list[Upload]) -> Path | None:
        """The image editor's paint layers, laid over each other and scaled to the photo's upright size, as one hint
        layer (a PNG in a result folder); None where nothing is painted."""
        with user_messages(image, *layers):
            size = upright_size(image.path, self.max_pixels)
            painted = None
            for layer in layers:
                self._check(layer)
                painted = _laid_over(painted, load_image(layer.path).convert("RGBA"))
        if painted is None or painted.getchannel("A").getextrema()[1] < PAINT_MIN_ALPHA:
            return None
        if abs(painted.width * size[1] - painted.height * size[0]) > SHAPE_SLACK * painted.width * size[1]:
            raise ValueError(  # the editor's "clear canvas" leaves a blank square: strokes there are blind
                f"The paint ({painted.width}x{painted.height}) is not over the photo ({size[0]}x{size[1]}): was the "
                "editor's canvas cleared? Upload the photo again and paint over it."
            )
        alpha = painted.getchannel("A").point(lambda value: 255 if value >= PAINT_MIN_ALPHA else 0)
        painted.putalpha(alpha)
        remove_stale_folders(self.result_dir, RESULT_LIFETIME_SECONDS)
        with result_folder(self.result_dir, "hints") as folder:
            path = folder / "hints.png"
            painted.resize(size, Image.Resampling.NEAREST).save(path)
        return path

    def colorize_batch(
        self, files: list[Upload], reference: Upload | None, settings: Settings, progress: Callable = iter
    ) -> BatchResult:
        """Colorizes each file in turn; a bad one is skipped and reported. Raises ValueError if none is usable or
        there are more than MAX_BATCH_FILES."""
        if len(files) > MAX_BATCH_FILES:
            raise ValueError(f"At most {MAX_BATCH_FILES} photos per batch; got {len(files)}.")
        with user_messages(reference):
            options = self._options(settings, reference)
        remove_stale_folders(self.result_dir, RESULT_LIFETIME_SECONDS)
        skipped, notes = [], [(reference, public(warning, [reference])) for warning in reference_warnings(options)]
        with BatchFolder(self.result_dir) as batch:
            for upload in progress(files):
                try:
                    with user_messages(upload):
                        self._check(upload)
                        result = self.colorizer(upload.path, **vars(options))
                except InvalidImageError as error:
                    skipped.append((upload, str(error)))
                    continue
                batch.add(upload.name, result.image)
                notes += [(upload, public(warning, [upload])) for warning in result.warnings]
            if not batch.previews:  # (an error's text is shown as it is, not as Markdown)
                raise ValueError(batch_report(0, len(files), skipped, notes))  # the folder is removed on the way out
            report = batch_report(len(batch.previews), len(files), skipped, notes, markdown=True)
        return BatchResult(batch.zip.path, batch.previews, report)

    def colorize_video(
        self, video: Upload, reference: Upload | None, settings: Settings, mode: str, progress: Callable | None = None
    ) -> VideoResult:
        """`<video name>_color.mp4` (H.264, same frames, rate, length and sound), and the reference's warnings;
        ValueError for a bad or too large video, whose checks come from its header before any decoding."""
        try:
            with user_messages(video, reference):
                check_video_limits(probe(video.path), video.name)
                options = self._options(settings, reference)
                remove_stale_folders(self.result_dir, RESULT_LIFETIME_SECONDS)
                with result_folder(self.result_dir, "video") as folder:
                    output = folder / result_name(video.name, ".mp4")
                    colorize_video(
                        self.colorizer,
                        video.path,
                        output,
                        mode=mode,
                        max_frames=MAX_VIDEO_FRAMES,
                        max_seconds=MAX_VIDEO_SECONDS,
                        progress=progress,
                        **vars(options),
                    )
            return VideoResult(output, tuple(public(warning, [reference]) for warning in reference_warnings(options)))
        finally:
            return_freed_memory()

    def _check(self, upload: Upload) -> None:
        check_image_file(upload.path, self.max_pixels)

    def _options(self, settings: Settings, reference: Upload | None) -> Options:
        """The pipeline's options, with the reference photo decoded (once, for all photos of a batch)."""
        if reference is not None:
            self._check(reference)
        return settings.options(self.colorizer.reference(reference.path) if reference else None)


def reference_warnings(options: Options) -> tuple[str, ...]:
    """The warnings of the reference photo read for `options` (`WebColorizer._options`), if any."""
    return options.reference.warnings if options.reference is not None else ()


def eight_bit(image: Image.Image) -> Image.Image:
    """A `load_image` result as 8-bit gray or RGB (scaled from its white level: 16-bit and float scans), its alpha
    kept."""
    pixels = image_pixels(image)
    values = (pixels.values.float() * (255 / pixels.white_level)).round().clamp(0, 255).to(torch.uint8)
    shown = Image.fromarray(values.permute(1, 2, 0).squeeze(2).numpy())
    if pixels.alpha is not None:
        shown.putalpha(pixels.alpha)
    return shown


def _laid_over(below: Image.Image | None, layer: Image.Image) -> Image.Image:
    if below is None:
        return layer
    return Image.alpha_composite(below, layer.resize(below.size, Image.Resampling.NEAREST))


def check_video_limits(info: VideoInfo, name: str) -> None:
    """ValueError for a video over the app's limits."""
    long_side, short_side = max(info.width, info.height), min(info.width, info.height)
    if long_side > MAX_VIDEO_SIDES[0] or short_side > MAX_VIDEO_SIDES[1]:
        raise ValueError(
            f"{name}: {info.width}x{info.height} is over the {MAX_VIDEO_SIDES[0]}x{MAX_VIDEO_SIDES[1]} limit."
        )
    seconds = max(info.duration, info.sound_duration)  # the sound is copied or encoded to its end
    if seconds > MAX_VIDEO_SECONDS or info.frames > MAX_VIDEO_FRAMES:
        frames = f", {info.frames} frames" if info.frames else ""  # (a Matroska file declares no count)
        digits = 1 if round(seconds, 1) > MAX_VIDEO_SECONDS or seconds <= MAX_VIDEO_SECONDS else 3  # 20.033: not 20.0
        raise ValueError(
            f"{name}: {seconds:.{digits}f} s{frames}; the limit is {MAX_VIDEO_SECONDS} s and {MAX_VIDEO_FRAMES} frames."
        )


def batch_report(
    done: int, total: int, skipped: list[tuple[Upload, str]], notes: list[tuple[Upload, str]], markdown: bool = False
) -> str:
    """The report of a batch, each skipped photo's reason and each note naming its file; for Markdown (the Batch
    tab's report), the names as code: a name's * or _ made italics of it, and <...> vanished."""

    def line(upload: Upload, message: str) -> str:
        return "- " + (message.replace(upload.name, code_span(upload.name), 1) if markdown else message)

    lines = [f"Colorized {done} of {total} photos."]
    if skipped:
        lines += ["", "Skipped:", *(line(*each) for each in skipped)]
    if notes:
        lines += ["", "Notes:", *(line(*each) for each in notes)]
    return "\n".join(lines)


def public(message: str, uploads: Iterable[Upload | None]) -> str:
    """`message` with the server's copies of `uploads` named by the user's file names."""
    for upload in filter(None, uploads):
        message = message.replace(str(upload.path), upload.name)
    return message


def code_span(text: str) -> str:
    """`text` as Markdown shows it, literally."""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    space = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{space}{text}{space}{fence}"


@contextmanager
def user_messages(*uploads: Upload | None):
    """Re-raises a ValueError (InvalidImageError included) naming the user's files instead of the server's copies,
    and an upload that is gone (never there, or removed by the app's hourly sweep) as a ValueError."""
    try:
        yield
    except FileNotFoundError as error:
        raise ValueError(public(f"{error.filename}: the uploaded file is gone; upload it again", uploads)) from error
    except ValueError as error:
        message = public(str(error), uploads)
        if message == str(error):
            raise
        raise (InvalidImageError if isinstance(error, InvalidImageError) else ValueError)(message) from error
