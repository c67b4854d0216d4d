"""Full-resolution conversions between stored pixels and Lab: the input's L* and the output's 8-bit sRGB.

They touch every pixel of the original (the network sees a downscaled copy), so for large photos they cost more
than the network. Integer pixels go through lookup tables computed with letcolor.color (the same values, to float
rounding). The output is encoded to 8 bits through a table on linear light, fine enough that it differs from
`round(255 * lab_to_rgb(lab))` by at most one level, and only within a few hundredths of a level of a rounding
tie. Work runs in strips of rows, which keeps the intermediates in cache and memory bounded for huge images.
"""

from functools import cache

import torch
import torch.nn.functional as F
from PIL import Image

from letcolor.color import (
    LUMINANCE_WEIGHTS,
    RGB_TO_XYZ,
    WHITE_D65,
    gray_to_lightness,
    lab_f_inverse,
    linear_to_srgb,
    luminance_to_lightness,
    srgb_to_linear,
)
from letcolor.images import Pixels

STRIP_PIXELS = 1 << 18
ENCODING_LEVELS = 1 << 16  # linear-light steps of the 8-bit output table


def row_strips(height: int, width: int):
    """Slices of about STRIP_PIXELS pixels, top to bottom."""
    rows = max(1, STRIP_PIXELS // width)
    return (slice(top, min(height, top + rows)) for top in range(0, height, rows))


@cache
def _gray_table(white_level: int, device: torch.device) -> torch.Tensor:
    """L* of every integer gray level 0..white_level."""
    return gray_to_lightness(torch.arange(white_level + 1, device=device) / white_level)


@cache
def _luminance_tables(device: torch.device) -> torch.Tensor:
    """(3, 256): each 8-bit R, G, B level's share of the luminance Y."""
    weights = torch.tensor(LUMINANCE_WEIGHTS[0], device=device)[:, None]
    return weights * srgb_to_linear(torch.arange(256, device=device) / 255)


@cache
def _encoding_table(device: torch.device) -> torch.Tensor:
    """8-bit sRGB of linear light quantized to ENCODING_LEVELS steps."""
    linear = torch.arange(ENCODING_LEVELS, device=device) / (ENCODING_LEVELS - 1)
    return linear_to_srgb(linear).mul_(255).round_().to(torch.uint8)


def _strip_lightness(values: torch.Tensor, white_level: float) -> torch.Tensor:
    """L* (1, h, w) of a strip of 8-bit sRGB (3, h, w), or of integer or float gray (1, h, w), pixels."""
    if values.shape[0] == 3:
        red, green, blue = _luminance_tables(values.device)
        r, g, b = values.long()
        return luminance_to_lightness(red.take(r).add_(green.take(g)).add_(blue.take(b)))[None]
    if values.is_floating_point():
        return gray_to_lightness(values.float().div(white_level).clamp_(0, 1))
    return _gray_table(int(white_level), values.device)[values.long().clamp_(0, int(white_level))]


def lightness(pixels: Pixels, device: torch.device) -> torch.Tensor:
    """L* of gray or sRGB pixels, shape (1, 1, H, W), float32 on `device`."""
    _, height, width = pixels.values.shape
    result = torch.empty((1, 1, height, width), device=device)
    for rows in row_strips(height, width):
        result[0, :, rows] = _strip_lightness(pixels.values[:, rows].to(device), pixels.white_level)
    return result


def _upsample_rows(ab: torch.Tensor, height: int, rows: slice) -> torch.Tensor:
    """Rows `rows` of `ab` resized to `height` rows, as F.interpolate(mode="bilinear", align_corners=False) would."""
    source_height = ab.shape[-2]
    output_rows = torch.arange(rows.start, rows.stop, device=ab.device)
    position = ((output_rows + 0.5) * (source_height / height) - 0.5).clamp(min=0)
    above = position.long().clamp(max=source_height - 1)
    below = (above + 1).clamp(max=source_height - 1)
    return torch.lerp(ab[:, :, above], ab[:, :, below], (position - above)[:, None])


@cache
def _xyz_to_linear_rgb() -> tuple[tuple[float, ...], ...]:
    """The 3x3 matrix from XYZ relative to the white (X/Xn, Y/Yn, Z/Zn) to linear RGB, as Python floats."""
    return tuple(map(tuple, (torch.linalg.inv(torch.tensor(RGB_TO_XYZ, dtype=torch.float64)) * torch.tensor(
        WHITE_D65, dtype=torch.float64)).tolist()))  # fmt: skip


def _strip_linear_rgb(l: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """Linear R, G and B (each (h, w), unclipped) of a strip's L*, a and b: `lab_to_linear_rgb` unrolled into
    element-wise steps, with no stacking of channels (it took most of the time at full resolution)."""
    fy = (l + 16) / 116
    relative = [lab_f_inverse(fy + a / 500), lab_f_inverse(fy), lab_f_inverse(fy - b / 200)]
    x, y, z = relative
    return [x.mul(row[0]).add_(y, alpha=row[1]).add_(z, alpha=row[2]) for row in _xyz_to_linear_rgb()]


def compose(lightness_full: torch.Tensor, ab: torch.Tensor, alpha: Image.Image | None) -> Image.Image:
    """The output image: full-resolution L* (1, 1, H, W) with the ab prediction (1, 2, h, w) upsampled to it."""
    height, width = lightness_full.shape[-2:]
    ab_wide = F.interpolate(ab, size=(ab.shape[-2], width), mode="bilinear", align_corners=False)
    encoding = _encoding_table(ab.device)
    rgb = torch.empty((height, width, 3), dtype=torch.uint8)
    for rows in row_strips(height, width):
        a, b = _upsample_rows(ab_wide, height, rows)[0]
        for channel, linear in enumerate(_strip_linear_rgb(lightness_full[0, 0, rows], a, b)):
            levels = linear.clamp_(0, 1).mul_(ENCODING_LEVELS - 1).round_().long()
            rgb[rows, :, channel] = encoding.take(levels).cpu()
    image = Image.fromarray(rgb.numpy())
    if alpha is not None:
        image.putalpha(alpha)
    return image
