"""Local colour hints: what a person knows about a photo's colours, given as points or as a paint layer, and their
encoding as the input of a model with hint channels (`letcolor.color.hint_input`); also hints simulated from a
photo's true colours, as training and evaluation use them (Zhang et al., SIGGRAPH 2017).

A point is `(x, y, colour)` in the photo's pixel coordinates (after its EXIF orientation), the colour "#rrggbb" or
an (r, g, b) triple of 0-255 integers. A layer is an RGBA image of the photo's size: its pixels with alpha > 0 are
hints of their RGB colour, as a paint layer gives them. Only a hint's a and b count: the photo keeps its own L.
"""

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops

from letcolor.color import HINT_CHANNELS, hint_ab, hint_input, rgb_to_lab
from letcolor.images import (
    DECODING_ERRORS,
    InvalidImageError,
    check_header,
    open_header,
    reading_callers_image,
)

MAX_POINTS = 10_000
MAX_POINTS_FILE_BYTES = 4 * 2**20  # a JSON file of points: read whole, so bounded first
# A point stands for the colour of a small patch around it, as the hints seen in training do (patches of 1 to 5 px
# at a shorter side of 256): a square of cells reaching this far per 256 cells of the network input's shorter side,
# as far as the largest training patch. Reaches of 0 to 3 cells on the first 60 validation photos of each corpus,
# shorter sides about 200 (run C's model, 10 points): +0.7, +1.7, +1.9 and +1.8 dB over no hints.
POINT_REACH_AT_256 = 2
_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_SHORT_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{3}")

Colour = tuple[int, int, int]


class InvalidHintsError(ValueError):
    """Hints that cannot be used: outside the photo, a bad colour, a layer of the wrong size or kind, a bad file."""


def parse_colour(colour) -> Colour:
    """A colour as "#rrggbb" (or CSS's short "#rgb") or an (r, g, b) triple of integers 0-255 (a list, tuple or numpy
    array: an RGB photo's `array[y, x]`) -> (r, g, b); InvalidHintsError otherwise."""
    if isinstance(colour, str) and _SHORT_HEX_COLOUR.fullmatch(colour):
        colour = "#" + "".join(digit * 2 for digit in colour[1:])
    if isinstance(colour, str) and _HEX_COLOUR.fullmatch(colour):
        return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    if isinstance(colour, np.ndarray) and colour.ndim == 1:
        colour = colour.tolist()
    if (
        isinstance(colour, list | tuple)
        and len(colour) == 3
        and all(isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)
    ):
        return tuple(int(c) for c in colour)
    raise InvalidHintsError(f"a hint colour must be '#rrggbb' or three integers 0-255, got {colour!r:.60}")


@dataclass(frozen=True)
class Hints:
    """Colour hints for one photo of `size` (width, height): points, a paint layer, or both."""

    size: tuple[int, int]
    points: tuple[tuple[float, float, Colour], ...] = ()
    layer: Image.Image | None = None  # mode RGBA, of `size`

    @classmethod
    def from_points(cls, points, size: tuple[int, int]) -> "Hints":
        """Points `(x, y, colour)` in the photo's pixel coordinates; InvalidHintsError for any outside it."""
        if not isinstance(points, list | tuple):
            raise InvalidHintsError(f"hint points must be a list of (x, y, colour), got {type(points).__name__}")
        if len(points) > MAX_POINTS:
            raise InvalidHintsError(f"{len(points)} hint points, more than the {MAX_POINTS} allowed")
        return cls(tuple(size), tuple(_point(number, point, size) for number, point in enumerate(points, 1)))

    @classmethod
    def from_layer(cls, layer: Image.Image | np.ndarray, size: tuple[int, int]) -> "Hints":
        """An RGBA image (or HxWx4 uint8 array) of the photo's size whose pixels with alpha > 0 are hints."""
        if isinstance(layer, np.ndarray):
            if layer.dtype != np.uint8 or layer.ndim != 3 or layer.shape[2] != 4:
                raise InvalidHintsError(
                    f"a hint layer array must be HxWx4 uint8, got {layer.dtype} {layer.shape} (points go in a list of "
                    "(x, y, colour))"
                )
            layer = Image.fromarray(layer, "RGBA")
        if not isinstance(layer, Image.Image):
            raise InvalidHintsError(f"a hint layer must be an RGBA image, got {type(layer).__name__}")
        if layer.mode not in ("RGBA", "LA", "PA", "P") or (layer.mode == "P" and not layer.has_transparency_data):
            raise InvalidHintsError(f"a hint layer needs an alpha channel (RGBA), got mode {layer.mode}")
        _check_layer_size(layer.size, size)
        with reading_callers_image():
            return cls(tuple(size), layer=layer.convert("RGBA"))

    @classmethod
    def parse(cls, hints: "HintSource", size: tuple[int, int]) -> "Hints":
        """Hints for a photo of `size` from points, a layer (image or array), a JSON file of points or an image file
        of a layer; InvalidHintsError if they cannot be used."""
        if isinstance(hints, Hints):  # made by its constructor, unchecked: checked as its points and layer would be
            if tuple(hints.size) != tuple(size):
                raise InvalidHintsError(f"hints made for a {tuple(hints.size)} photo given for a {tuple(size)} one")
            layer = None if hints.layer is None else cls.from_layer(hints.layer, size).layer
            return replace(cls.from_points(list(hints.points), size), layer=layer)
        if isinstance(hints, str | Path):
            return cls._from_file(Path(hints), size)
        if isinstance(hints, Image.Image | np.ndarray):
            return cls.from_layer(hints, size)
        return cls.from_points(hints, size)

    @classmethod
    def _from_file(cls, path: Path, size: tuple[int, int]) -> "Hints":
        if not path.exists():
            raise InvalidHintsError(f"{path}: no such file (hints given as a string name a JSON file or an image)")
        if path.suffix.lower() == ".json":
            try:
                too_large = path.stat().st_size > MAX_POINTS_FILE_BYTES
                points = None if too_large else json.loads(path.read_text(encoding="utf-8-sig"))  # BOM or not
            except (OSError, ValueError, RecursionError) as error:  # not UTF-8, not JSON; nested too deep
                raise InvalidHintsError(f"{path}: not a readable JSON list of hint points ({error})") from error
            if too_large:
                raise InvalidHintsError(f"{path}: over {MAX_POINTS_FILE_BYTES >> 20} MB, more than {MAX_POINTS} points")
            return _naming(path, cls.from_points, points, size)
        try:
            layer = open_header(path)
        except InvalidImageError as error:
            raise InvalidHintsError(f"{path}: neither a JSON list of points nor a readable image ({error})") from error
        try:
            with layer:
                _check_layer_size(layer.size, size, str(path))  # from the header: never decoded if wrong
                check_header(layer, str(path))  # nor if it declares too much otherwise (a TIFF's tiles)
                layer.load()
                return _naming(path, cls.from_layer, layer, size)
        except InvalidHintsError:
            raise  # a readable layer that cannot be used (a ValueError, as decoding errors are)
        except InvalidImageError as error:
            raise InvalidHintsError(str(error)) from error
        except DECODING_ERRORS as error:
            raise InvalidHintsError(f"{path}: not a readable image ({error})") from error

    def __bool__(self) -> bool:
        return bool(self.points) or self.layer is not None

    def encode(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The hint channels (1, 3, height, width) for the network input of that size: painted cells, and around
        each point a square of cells (`POINT_REACH_AT_256`) that take its colour, or the mean of the points' colours
        where squares meet."""
        encoded = torch.zeros((1, HINT_CHANNELS, height, width))
        cells = encoded[0].view(HINT_CHANNELS, -1)  # a, b and mask: the hint_input of the cells' colours
        if self.layer is not None:
            painted, colours = _painted_cells(self.layer, height, width)
            cells[:2, painted.view(-1)], cells[2, painted.view(-1)] = hint_ab(colour_ab(colours)), 1
        if self.points:
            rows, columns, colours = self._point_cells(height, width)
            reach = max(1, round(POINT_REACH_AT_256 * min(height, width) / 256))
            offsets = torch.arange(-reach, reach + 1)
            rows = (rows[:, None, None] + offsets[:, None]).clamp(0, height - 1).expand(-1, len(offsets), len(offsets))
            columns = (columns[:, None, None] + offsets).clamp(0, width - 1).expand(-1, len(offsets), len(offsets))
            hit, each_hit = (rows * width + columns).reshape(-1).unique(return_inverse=True)
            point_ab = colour_ab(colours).repeat_interleave(len(offsets) ** 2, dim=1)
            ab_sum = torch.zeros((2, len(hit))).index_add_(1, each_hit, point_ab)
            counts = torch.zeros(len(hit)).index_add_(0, each_hit, torch.ones(len(each_hit)))
            cells[:2, hit], cells[2, hit] = hint_ab(ab_sum / counts), 1  # points outrank paint in the same cell
        return encoded.to(device)

    def _point_cells(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        photo_width, photo_height = self.size
        xs = torch.tensor([point[0] for point in self.points], dtype=torch.float64)
        ys = torch.tensor([point[1] for point in self.points], dtype=torch.float64)
        columns = ((xs + 0.5) * width / photo_width).long().clamp(0, width - 1)  # the pixel's centre
        rows = ((ys + 0.5) * height / photo_height).long().clamp(0, height - 1)
        return rows, columns, torch.tensor([point[2] for point in self.points], dtype=torch.uint8)


HintSource = Hints | list | tuple | str | Path | Image.Image | np.ndarray


def _naming(path: Path, parse, *args) -> Hints:
    """`parse(*args)`, its InvalidHintsError naming the file that the hints came from."""
    try:
        return parse(*args)
    except InvalidHintsError as error:
        raise InvalidHintsError(f"{path}: {error}") from None


def _check_layer_size(layer_size: tuple[int, int], size: tuple[int, int], name: str = "the hint layer") -> None:
    if tuple(layer_size) != tuple(size):
        raise InvalidHintsError(f"{name} is {layer_size[0]}x{layer_size[1]}, not the photo's {size[0]}x{size[1]}")


def _point(number: int, point, size: tuple[int, int]) -> tuple[float, float, Colour]:
    if isinstance(point, dict):
        point = (point.get("x"), point.get("y"), point.get("colour", point.get("color")))
    if not isinstance(point, list | tuple) or len(point) != 3:
        raise InvalidHintsError(f"hint {number} must be (x, y, colour), got {point!r:.80}")
    x, y, colour = point
    if not all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in (x, y)):
        raise InvalidHintsError(f"hint {number}: x and y must be numbers, got {x!r:.20} and {y!r:.20}")
    width, height = size
    if not (0 <= x < width and 0 <= y < height):
        where = ", ".join(_coordinate_text(v) for v in (x, y))
        raise InvalidHintsError(f"hint {number} at ({where}) is outside the {width}x{height} photo")
    return float(x), float(y), parse_colour(colour)


def _coordinate_text(value: int | float) -> str:
    """A coordinate for a message; an integer too long for str() (4300 digits at most) by its order of magnitude."""
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    if abs(value) < 10**15:
        return str(value)
    return f"{'-' if value < 0 else ''}~1e{math.floor(math.log10(abs(int(value))))}"  # log10 takes any int


def _painted_cells(layer: Image.Image, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cells of a (height, width) grid over the layer that hold a painted pixel (alpha > 0), as a mask, and the
    mean colour of their painted pixels (K, 3), however faint their alpha and however large the layer."""
    painted = layer.getchannel("A").point(lambda alpha: 255 if alpha else 0)

    def cell_means(channel: Image.Image) -> np.ndarray:  # float BOX resizing keeps a lone pixel in a large cell
        return np.asarray(channel.convert("F").resize((width, height), Image.Resampling.BOX))

    cover = cell_means(painted)
    mask = cover > 0
    sums = [cell_means(ImageChops.multiply(layer.getchannel(band), painted))[mask] for band in "RGB"]
    colours = np.stack(sums, axis=-1) / cover[mask][:, None] * 255
    return torch.from_numpy(mask), torch.from_numpy(colours.clip(0, 255).round().astype(np.uint8))


def colour_ab(rgb: torch.Tensor) -> torch.Tensor:
    """Colours (K, 3) of 0-255 values -> their a and b (2, K)."""
    return rgb_to_lab(rgb.float() / 255, dim=-1)[:, 1:].T


def simulate_hints(
    ab: torch.Tensor, counts: torch.Tensor, generator: torch.Generator, max_patch: int = 5
) -> torch.Tensor:
    """Hint channels for a batch of true colours ab (N, 2, H, W) in Lab units: counts[i] points on image i at random
    positions, each a square patch of odd side 1 to `max_patch` holding the true patch's mean ab (Zhang et al. 2017).
    Batched over points: no loop over images or pixels."""
    n, _, height, width = ab.shape
    k = max(int(counts.max()), 1) if len(counts) else 1
    device = ab.device
    real = (torch.arange(k, device=device) < counts.to(device)[:, None]).to(ab.dtype)  # (N, K)
    centre_y = torch.randint(0, height, (n, k), generator=generator).to(device)
    centre_x = torch.randint(0, width, (n, k), generator=generator).to(device)
    half = torch.randint(0, max_patch // 2 + 1, (n, k), generator=generator).to(device)
    rows = torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    in_rows = ((rows - centre_y[..., None]).abs() <= half[..., None]).to(ab.dtype) * real[..., None]  # (N, K, H)
    in_columns = ((columns - centre_x[..., None]).abs() <= half[..., None]).to(ab.dtype)  # (N, K, W)
    area = in_rows.sum(2) * in_columns.sum(2)  # (N, K); 0 for padding
    patch_ab = torch.einsum("nkh,nchw,nkw->nkc", in_rows, ab, in_columns) / area.clamp(min=1)[..., None]
    cover = torch.einsum("nkh,nkw->nhw", in_rows, in_columns)[:, None]
    hinted_ab = torch.einsum("nkh,nkc,nkw->nchw", in_rows, patch_ab, in_columns) / cover.clamp(min=1)
    return hint_input(hinted_ab, cover > 0)


def points_from_truth(image: Image.Image, count: int, rng: np.random.Generator) -> list[tuple[int, int, Colour]]:
    """`count` points at random pixels of an RGB photo, each with the photo's own colour there (what evaluation
    simulates: a person who knows the true colours)."""
    pixels = np.asarray(image.convert("RGB"))
    positions = rng.integers(0, (image.width, image.height), size=(count, 2))  # point by point: any count's first N
    return [(int(x), int(y), tuple(int(c) for c in pixels[y, x])) for x, y in positions]
