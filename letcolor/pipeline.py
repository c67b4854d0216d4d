"""Colorizing images: any image in, the colorized image and its scene classes out (paper section 3 at test time).

The global branch always reads a 224x224 resize; the local branch reads the image at a longer side of at most
`max_side` and a shorter side of at least MIN_NETWORK_SIDE (small images are enlarged), rounded to a multiple of 8;
the predicted ab is upsampled (bilinear) to the full size and joined with the full-resolution L of the input, so the
output keeps every detail of the original.
"""

import inspect
import math
import numbers
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from letcolor.color import rgb_to_lab, target_to_ab
from letcolor.engines import DEFAULT_ENGINE, make_network, resolve_engine
from letcolor.fullres import compose, global_input, input_luma, lightness, network_input
from letcolor.hints import Hints, HintSource, InvalidHintsError
from letcolor.images import ImageSource, InvalidImageError, Pixels, image_pixels, load_image, read_image
from letcolor.inference import Speedups
from letcolor.model import NO_HINTS_MESSAGE, InvalidModelError, LetThereBeColor, ModelError, ModelNotFoundError
from letcolor.refine import refine_ab

T = TypeVar("T")
DEFAULT_MAX_SIDE = 512
# The network was trained on photos scaled to a shorter side of 256, and colours small ones better a little enlarged:
# on the 150 px validation photos of letcolor-scenes, +0.14 dB at 192 (model card, "Processing size").
MIN_NETWORK_SIDE = 192
# The local branch never sees more pixels than this, whatever `max_side` (None = native size) asks for.
NETWORK_PIXEL_BUDGET = 2048 * 2048
# Nor a side longer than this: the hint propagation's window matrices grow with the square of a side (12 MB a side
# here; a 1x80000 strip at native size took 3.9 GB).
MAX_NETWORK_SIDE = 8192
PALETTE_SAMPLE_SIDE = 256  # the reference's ab statistics are taken at most at this size
TOP_SCENES = 5
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "pretrained"
MODEL_ENV_VAR = "LETCOLOR_MODEL"
# The palette moves every pixel's a,b by one affine map per photo (`transfer_palette`): hinted colours too
PALETTE_WITH_HINTS = (
    "a palette strength cannot be used with colour hints: its pull toward the reference's colours would move the "
    "hinted colours too (the reference's scene can: keep the reference, palette strength 0)"
)
HOW_TO_PASS_A_MODEL = (
    f"Pass one with --model (CLI) or name_or_path (Python), or set {MODEL_ENV_VAR}: a local directory holding "
    "config.json and model.safetensors (as written by save_pretrained) or a Hugging Face Hub model id."
)

__all__ = [
    "ColorizationResult",
    "Colorizer",
    "InvalidImageError",
    "InvalidModelError",
    "ModelError",
    "ModelNotFoundError",
    "Options",
    "Reference",
    "load_image",
    "load_model",
]


@dataclass(frozen=True)
class ColorizationResult:
    image: Image.Image  # same size and orientation as the (EXIF-transposed) input; RGBA if the input had alpha
    scenes: dict[str, float]  # the top scene classes and their probabilities ({} if the model has no class names)
    scene_probabilities: np.ndarray  # (num_classes,) softmax of the scene logits
    warnings: tuple[str, ...] = ()  # e.g. only the first frame of an animated GIF or multi-page TIFF was colorized


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the network (see `Colorizer.prepare`)."""

    lightness: torch.Tensor  # (1, 1, H, W) L* at full resolution, on the CPU
    luma: np.ndarray  # (H, W) the input's Rec. 601 luma, which the output keeps (`letcolor.fullres.input_luma`)
    alpha: Image.Image | None
    network_input: torch.Tensor  # (1, 1, h, w), h and w multiples of 8
    global_input: torch.Tensor | None  # (1, 1, 224, 224); None when not asked for
    hints: torch.Tensor | None = None  # (1, 3, h, w) hint channels (letcolor.color.hint_input), None for no hints


@dataclass(frozen=True)
class _Palette:
    mean: torch.Tensor  # (1, 2, 1, 1) a and b of the reference
    std: torch.Tensor


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference photo as colorizing reads it (`Colorizer.reference`): its scene vector and its colours' mean and
    spread. Made once, it serves any number of photos and frames of the Colorizer that made it without decoding the
    photo again."""

    features: torch.Tensor  # (1, C) the scene vector
    palette: _Palette
    made_by: object = field(repr=False, compare=False)  # the Colorizer's: another model's vector would mean nothing
    warnings: tuple[str, ...] = ()  # the photo's, as `read_image` gives them (only an animation's first frame used)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def usable_device(device: str | torch.device | None) -> torch.device:
    """The device asked for (None: CUDA when available, else the CPU); ValueError if it is not on this machine."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: use cpu or cuda") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {str(device)!r}: use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here (use --device cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return device


def model_source(name_or_path: str | Path | None = None) -> str | Path:
    """The directory or Hub id that `load_model(name_or_path)` loads (ModelNotFoundError where there is none)."""
    if isinstance(name_or_path, str) and not name_or_path.strip():  # not None: a name left empty by mistake
        raise ModelNotFoundError(f"The model name is empty. {HOW_TO_PASS_A_MODEL}")
    bundled = BUNDLED_MODEL_DIR if BUNDLED_MODEL_DIR.is_dir() else None
    source = name_or_path or os.environ.get(MODEL_ENV_VAR) or bundled
    if source is None:
        raise ModelNotFoundError(f"No default model is installed. {HOW_TO_PASS_A_MODEL}")
    return source


def load_model(name_or_path: str | Path | None = None) -> LetThereBeColor:
    """Loads a model from a local directory or Hub id; None: $LETCOLOR_MODEL, then the bundled model.
    Raises ModelNotFoundError (nothing there) or InvalidModelError (something there, but not a valid model); both are
    ModelErrors."""
    source = model_source(name_or_path)
    try:
        return LetThereBeColor.from_pretrained(source)
    except ModelNotFoundError as error:
        reason = str(error).removeprefix(f"{source}: ")
        raise ModelNotFoundError(f"Cannot load the model {str(source)!r}: {reason}\n{HOW_TO_PASS_A_MODEL}") from error


def network_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The local branch's input size, rounded to a multiple of 8: with `max_side`, a shorter side of at least
    MIN_NETWORK_SIDE (small images are enlarged) and a longer side of at most `max_side`; with None, the native size.
    Never more pixels than the budget, nor a side longer than MAX_NETWORK_SIDE (a side is at least 8, so without that
    limit a thin strip's longer side would keep the budget's scale and its area go 8 times over the budget)."""
    scale = 1.0
    if max_side is not None:
        scale = min(max(1.0, MIN_NETWORK_SIDE / min(height, width)), max_side / max(height, width))
    scale = min(scale, math.sqrt(NETWORK_PIXEL_BUDGET / (height * width)), MAX_NETWORK_SIDE / max(height, width))
    return max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8)


def batches_within(items: Iterable[T], size: int, pixels: int, area: Callable[[T], int]) -> Iterator[list[T]]:
    """The items in lists of at most `size` items and `pixels` pixels in all (or one larger item), `area` giving each
    item's pixels: batches of photos held whole at once stay bounded in memory. A full batch is handed out before the
    next item is taken (a large photo was read while the one before it was colorized)."""
    batch, total = [], 0
    for item in items:
        if batch and total + area(item) > pixels:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += area(item)
        if len(batch) == size or total >= pixels:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def palette_of(image: Image.Image, device: torch.device) -> _Palette:
    """Mean and standard deviation of a and b over a reduced copy of a loaded image (zero for a gray image), each
    pixel weighted by its alpha (a cut-out's transparent background, often black, is not its colour)."""
    if Image.getmodebase(image.mode) == "L":  # (16-bit gray cannot be reduced as below)
        zero = torch.zeros((1, 2, 1, 1), device=device)
        return _Palette(zero, zero)
    scale = min(1.0, PALETTE_SAMPLE_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    pixels = image_pixels(image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0))  # as `thumbnail`, no copy
    ab = rgb_to_lab(pixels.values[None].to(device).float() / pixels.white_level)[:, 1:]
    weights = torch.ones_like(ab[:, :1])
    if pixels.alpha is not None and pixels.alpha.getbbox() is not None:  # (wholly transparent: every pixel alike)
        weights = torch.from_numpy(np.asarray(pixels.alpha, np.float32) / 255)[None, None].to(device)
    mean = (ab * weights).sum((2, 3), keepdim=True) / weights.sum()
    variance = ((ab - mean).square() * weights).sum((2, 3), keepdim=True) / weights.sum()
    return _Palette(mean, variance.sqrt())


def transfer_palette(ab: torch.Tensor, palette: _Palette, strength: float) -> torch.Tensor:
    """lerp(ab, (ab - mean) / std * std_ref + mean_ref, strength), per channel and image."""
    mean, std = ab.mean((2, 3), keepdim=True), ab.std((2, 3), keepdim=True, correction=0)
    matched = (ab - mean) / std.clamp(min=1e-3) * palette.std + palette.mean
    return torch.lerp(ab, matched, strength)


def is_number(value) -> bool:
    """A real number, not a bool (True is an int to Python)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_count(value) -> bool:
    """A whole number, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Options:
    """How to colorize; see `Colorizer.batch`. Checked when made (ValueError)."""

    use_global: bool = True
    global_strength: float = 1.0
    reference: ImageSource | Reference | None = None
    palette_strength: float = 0.0
    max_side: int | None = DEFAULT_MAX_SIDE
    refine: bool = False

    def __post_init__(self):
        for name in ("use_global", "refine"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name, high in (("global_strength", 2), ("palette_strength", 1)):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= high:
                raise ValueError(f"{name} must be a number in [0, {high}], got {value!r}")
        if self.palette_strength > 0 and self.reference is None:
            raise ValueError("palette_strength > 0 needs a reference image")
        if self.reference is not None and not self.use_global and self.palette_strength == 0:  # (it was ignored)
            raise ValueError(
                "a reference image drives the colours through the global features, which use_global=False turns off: "
                "leave it out (or pull toward its colours with palette_strength > 0)"
            )
        side = self.max_side
        if side is not None and (not is_count(side) or side < 8):
            raise ValueError(f"max_side must be an integer >= 8 or None (native size), got {side!r}")


class Colorizer:
    """Colorizes images with a LetThereBeColor model.

    The model is copied (and sped up for `device`) when the Colorizer is made: build a new one after changing
    the model's weights. `device` defaults to CUDA when available, else the CPU. `engine` runs the network:
    "torch" (with `speedups`), "torch-int8" (CPU; calibrated once per model, see `letcolor.quantized`), "onnxruntime" or
    "onnxruntime-int8" (CPU; the graphs exported once per model and cached, see `letcolor.onnx_engine`), or "auto",
    the fastest installed for the device (`letcolor.engines`), torch where `speedups` are given; the choice is
    `self.engine`."""

    def __init__(
        self,
        model: LetThereBeColor,
        device: str | torch.device | None = None,
        speedups: Speedups | None = None,
        engine: str = DEFAULT_ENGINE,
    ):
        if not isinstance(model, LetThereBeColor):
            raise TypeError(
                f"Colorizer takes a LetThereBeColor model, not a {type(model).__name__}: for a directory or Hub id, "
                "use Colorizer.from_pretrained(name_or_path)"
            )
        self.device = usable_device(device)
        self.speedups = speedups or Speedups.default_for(self.device)
        self.class_names = list(model.class_names)
        self.takes_hints = model.takes_hints
        self.engine = "torch" if engine == "auto" and speedups else resolve_engine(engine, self.device)
        self.network = make_network(model, self.device, self.speedups, self.engine)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        device: str | torch.device | None = None,
        speedups: Speedups | None = None,
        engine: str = DEFAULT_ENGINE,
    ) -> "Colorizer":
        """From a local directory or Hub id; None: $LETCOLOR_MODEL, then the bundled model (ModelNotFoundError)."""
        return cls(load_model(name_or_path), device, speedups, engine)

    def __call__(self, image: ImageSource, hints: HintSource | None = None, **options) -> ColorizationResult:
        """Colorizes one image, with its colour hints if given; the options are those of `batch`."""
        unknown = set(options) - BATCH_OPTIONS  # (batch's own TypeError named a method that was not called)
        if unknown:
            raise TypeError(f"Colorizer: unknown options {sorted(unknown)}; the options are {sorted(BATCH_OPTIONS)}")
        return self.batch([image], hints=None if hints is None else [hints], **options)[0]

    def batch(
        self,
        images: list[ImageSource],
        *,
        hints: list[HintSource | None] | None = None,
        use_global: bool = True,
        global_strength: float = 1.0,
        reference: ImageSource | Reference | None = None,
        palette_strength: float = 0.0,
        max_side: int | None = DEFAULT_MAX_SIDE,
        refine: bool = Options.refine,
    ) -> list[ColorizationResult]:
        """Colorizes images (paths, PIL images or arrays), running same-size network inputs as one batch.

        hints: one entry per image (None for none): points `(x, y, colour)` in the image's pixel coordinates, colour
            "#rrggbb" or (r, g, b); or an RGBA layer of the image's size whose pixels with alpha > 0 are hints; or a
            `Hints`, or a path to a JSON file of points or an image file of a layer (see `letcolor.hints`). The
            model must take hints (its config's hint_channels or hint_propagation).
        use_global: False replaces the scene vector by the model's "no global information" vector.
        global_strength: s in [0, 2] scales the scene vector's departure from that null vector (1 = as predicted).
        reference: an image whose scene vector replaces each input's (paper 4.5, style transfer), or what
            `reference` made of one (read once for many calls; its warnings are then its own, else each result's).
        palette_strength: p in [0, 1] also pulls the ab mean and spread of each result towards the reference's (not
            with hints: ValueError).
        max_side: the local branch's longest side; a smaller image is enlarged to a shorter side of MIN_NETWORK_SIDE
            within it (None: native size, up to NETWORK_PIXEL_BUDGET pixels and MAX_NETWORK_SIDE a side).
        refine: filter the colours with L as the guide, so that they follow the photo's edges (`letcolor.refine`).
        Raises InvalidImageError for an input that is not a usable image, InvalidHintsError for hints that cannot be
        used, ValueError for bad options, TypeError where `images` is one image rather than a list."""
        if isinstance(images, str | Path | Image.Image | np.ndarray):  # a path's characters would be read as paths
            raise TypeError(f"batch takes a list of images, got one {type(images).__name__}: call the Colorizer on it")
        options = Options(use_global, global_strength, reference, palette_strength, max_side, refine)
        loaded = [read_image(image) for image in images]
        parsed = self.parse_hints(hints, [each.image.size for each in loaded])
        if options.palette_strength > 0 and any(parsed):
            raise ValueError(PALETTE_WITH_HINTS)
        reference_warnings = ()  # (a Reference read before: its reader has them)
        if options.reference is not None and not isinstance(options.reference, Reference):
            options = replace(options, reference=self.reference(options.reference))
            reference_warnings = options.reference.warnings
        with torch.inference_mode():
            prepared = [
                self.prepare(image_pixels(each.image), max_side, each_hints)
                for each, each_hints in zip(loaded, parsed, strict=True)
            ]
            ab, probabilities = self._predict(prepared, options)
            return [
                ColorizationResult(
                    compose(each.lightness, each_ab, each.alpha, each.luma),
                    self._top_scenes(probs),
                    probs,
                    source.warnings + reference_warnings,
                )
                for each, each_ab, probs, source in zip(prepared, ab, probabilities, loaded, strict=True)
            ]

    def predict_ab(self, images: list[ImageSource], **options) -> list[torch.Tensor]:
        """Each image's predicted ab in Lab units, (1, 2, h/2, w/2) at the network's resolution, before upsampling
        (for measurements). The options are those of `batch`, without hints."""
        options = Options(**options)
        with torch.inference_mode():
            prepared = [self.prepare(image_pixels(load_image(image)), options.max_side) for image in images]
            return self._predict(prepared, options)[0]

    def parse_hints(self, hints: list | None, sizes: list[tuple[int, int]]) -> list[Hints | None]:
        """Each image's `Hints` (None where it has none), checked against its size (width, height)."""
        if hints is None:
            return [None] * len(sizes)
        if not isinstance(hints, list | tuple) or len(hints) != len(sizes):
            raise InvalidHintsError(f"hints must be a list with one entry (or None) per image, {len(sizes)} here")
        parsed = [None if each is None else Hints.parse(each, size) for each, size in zip(hints, sizes, strict=True)]
        if any(parsed) and not self.takes_hints:
            raise InvalidHintsError(NO_HINTS_MESSAGE)
        return [each or None for each in parsed]

    def prepare(
        self, pixels: Pixels, max_side: int | None, hints: Hints | None = None, *, scene: bool = True
    ) -> PreparedImage:
        """The full-resolution L and the network's inputs for one image's pixels (and its hints, if any); the global
        branch's input only with `scene` (a caller that has the scene vector already skips it)."""
        full = lightness(pixels)
        size = network_size(*full.shape[-2:], max_side)
        local_input = network_input(full, size).to(self.device)
        encoded = hints.encode(*size, self.device) if hints else None
        scene_input = global_input(full).to(self.device) if scene else None
        return PreparedImage(full, input_luma(pixels), pixels.alpha, local_input, scene_input, encoded)

    def reference(self, image: ImageSource | Reference | None) -> Reference | None:
        """A reference photo (paper 4.5) read once: its scene vector and palette, for the `reference` option of
        many calls (the photo is not decoded again for each); InvalidImageError for an unusable image."""
        if isinstance(image, Reference) and image.made_by is not self.network:
            raise ValueError("the reference was read by another Colorizer: read it with this one's reference()")
        if image is None or isinstance(image, Reference):
            return image
        loaded = read_image(image, role="reference")
        with torch.inference_mode():
            pixels = image_pixels(loaded.image)
            features = self.network.global_output(global_input(lightness(pixels)).to(self.device))
            return Reference(features.features, palette_of(loaded.image, self.device), self.network, loaded.warnings)

    def ab_from_features(
        self, prepared: list[PreparedImage], features: torch.Tensor, options: Options, reference: Reference | None
    ) -> list[torch.Tensor]:
        """ab in Lab units at the network's output size for each input, given each input's scene vector (N, C) before
        `use_global` and `global_strength` apply; `reference` is `options.reference` read (for the palette)."""
        vectors = self.network.mix_global(features, options.use_global, options.global_strength)
        ab = [target_to_ab(target) for target in self._colorize(prepared, vectors)]
        if options.palette_strength > 0:
            ab = [transfer_palette(each, reference.palette, options.palette_strength) for each in ab]
        if options.refine:
            ab = [refine_ab(each, image.network_input) for each, image in zip(ab, prepared, strict=True)]
        return ab

    def _predict(self, prepared: list[PreparedImage], options: Options) -> tuple[list[torch.Tensor], np.ndarray]:
        """ab in Lab units at the network's output size for each input, and the scene probabilities (N, classes)."""
        if not prepared:
            return [], np.zeros((0, len(self.class_names)))
        scene = self.network.global_output(torch.cat([each.global_input for each in prepared]))
        features = scene.features
        reference = self.reference(options.reference)
        if reference is not None:
            features = reference.features.expand_as(features)
        ab = self.ab_from_features(prepared, features, options, reference)
        return ab, scene.scene_logits.softmax(dim=1).cpu().numpy()

    def _colorize(self, prepared: list[PreparedImage], vectors: torch.Tensor) -> list[torch.Tensor]:
        """Sigmoid ab (1, 2, h/2, w/2) for each input, one network call per input size, those with hints apart from
        those without (an engine's hint graph is not its automatic one: onnxruntime-int8 moved a photo without hints
        by up to 35 levels when a hinted one shared its batch)."""
        groups = defaultdict(list)
        for index, each in enumerate(prepared):
            groups[each.network_input.shape, each.hints is not None].append(index)
        predictions = [None] * len(prepared)
        for (shape, hinted), group in groups.items():
            for indices in self._chunks(group, shape[-2] * shape[-1]):
                inputs = torch.cat([prepared[i].network_input for i in indices])
                hints = self._hint_channels([prepared[i] for i in indices]) if hinted else None
                for i, prediction in zip(indices, self.network.colorize(inputs, vectors[indices], hints), strict=True):
                    predictions[i] = prediction[None]
        return predictions

    def _chunks(self, indices: list[int], pixels: int) -> list[list[int]]:
        """The network calls for same-size inputs: at most the engine's `max_call_pixels` input pixels each."""
        limit = self.network.max_call_pixels
        size = len(indices) if limit is None else max(1, limit // pixels)
        return [indices[start : start + size] for start in range(0, len(indices), size)]

    @staticmethod
    def _hint_channels(group: list[PreparedImage]) -> torch.Tensor:
        """The hint channels of same-size inputs with hints, as one batch."""
        return group[0].hints if len(group) == 1 else torch.cat([each.hints for each in group])  # (one: not copied)

    def _top_scenes(self, probabilities: np.ndarray) -> dict[str, float]:
        if not self.class_names:
            return {}
        top = np.argsort(probabilities)[::-1][:TOP_SCENES]
        return {self.class_names[i]: float(probabilities[i]) for i in top}


# (after the class: read from its signature, so that a new option of batch() is one of __call__'s too)
BATCH_OPTIONS = frozenset(inspect.signature(Colorizer.batch).parameters) - {"self", "images", "hints"}
