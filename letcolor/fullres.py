"""Full-resolution conversions between stored pixels and Lab: the input's L* (and the network's inputs resized from
it) and the output's 8-bit sRGB.

They touch every pixel of the original (the network sees a downscaled copy), so for large photos they cost more
than the network. Both run on the CPU in OpenCV's vectorized loops (at 1 MP, 2 threads: L* of a colour photo 9 ->
3 ms, of a gray one 2 -> 0.5 ms, the output 13 -> 7.5 ms against the element-wise torch steps they replaced).
Integer pixels go through lookup tables computed with letcolor.color (the same values, to float rounding); sRGB
rows whose three channels are equal (a black-and-white scan saved as colour) are read as gray. The output is
OpenCV's float Lab -> sRGB; it differs from `round(255 * lab_to_rgb(lab))` by at most one level, on a fraction of
a percent of pixels (OpenCV's white point differs in the fifth digit). Video frames, which H.264 then keeps at
about 39 dB, are composed through OpenCV's 8-bit Lab instead (`compose_rgb_8bit`: 51 dB from the float output, in
0.6x its time). Given the input's luma (`input_luma`), the output keeps it: each pixel's R, G and B are shifted alike
so that its Rec. 601 luma, what a gray conversion (PIL's, OpenCV's) gives, is the input's (`match_luma`). Work
runs in strips of rows, which keeps the intermediates in cache and memory bounded for huge images (the ab of photos
up to 8 MP is upsampled at once).
"""

from collections.abc import Iterator
from functools import cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from letcolor.color import (
    LAB_EPSILON,
    LAB_KAPPA,
    LUMINANCE_WEIGHTS,
    gray_to_lightness,
    lightness_to_input,
    srgb_to_linear,
)
from letcolor.images import Pixels
from letcolor.model import GLOBAL_INPUT_SIZE

STRIP_PIXELS = 1 << 18
# L* takes strips 4x as large (20 bytes a pixel of intermediates, 20 MB): at 1 MP, one strip took 2.8 ms where four
# took 3.5 (each OpenCV call hands its work to the threads and waits); the output's composition was fastest at 0.26 MP.
LIGHTNESS_STRIP_PIXELS = 1 << 20
# Up to this size the output's ab is upsampled by one OpenCV call (8 bytes a pixel, 64 MB at most): at 1 MP, 0.5 ms
# against 1.9 for the strips' row interpolation and widening, which bound the memory of larger photos.
WHOLE_UPSAMPLE_PIXELS = 1 << 23
REC601_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # the luma of R, G and B, as OpenCV and PIL take it


def row_strips(height: int, width: int, pixels: int | None = None):
    """Slices of about `pixels` (default STRIP_PIXELS) pixels, top to bottom."""
    rows = max(1, (pixels or STRIP_PIXELS) // width)
    return (slice(top, min(height, top + rows)) for top in range(0, height, rows))


@cache
def _gray_table(white_level: int) -> torch.Tensor:
    """L* of every integer gray level 0..white_level."""
    return gray_to_lightness(torch.arange(white_level + 1) / white_level)


@cache
def _luminance_tables() -> np.ndarray:
    """(1, 256, 3) float32: each 8-bit R, G, B level's share of the luminance Y (an OpenCV lookup table)."""
    weights = torch.tensor(LUMINANCE_WEIGHTS[0])[:, None]
    return (weights * srgb_to_linear(torch.arange(256) / 255)).T.contiguous().numpy()[None]


def _rgb_lightness(rgb: np.ndarray) -> np.ndarray:
    """L* (h, w) of 8-bit sRGB (h, w, 3): Y summed from per-level tables in OpenCV's vectorized loops, then Lab's
    cube root. Lab's two pieces meet at LAB_EPSILON with the same slope, so L* is the larger of 116 Y^(1/3) - 16 and
    min(LAB_KAPPA * Y, 8): two element-wise passes instead of a masked assignment (and numpy's cube root takes 0.4x
    the time of OpenCV's power)."""
    luminance = cv2.transform(cv2.LUT(rgb, _luminance_tables()), np.ones((1, 3), np.float32))
    result = np.cbrt(luminance)
    result *= 116
    result -= 16
    luminance *= LAB_KAPPA
    return np.maximum(result, np.minimum(luminance, LAB_KAPPA * LAB_EPSILON, out=luminance), out=result)


def _channels_equal(values: torch.Tensor) -> bool:
    return torch.equal(values[0], values[1]) and torch.equal(values[1], values[2])


def _is_gray(values: torch.Tensor) -> bool:
    """Whether the three channels of sRGB pixels (3, h, w) are equal. A colour photo nearly always shows it in its
    first row: at 1 MP, 0.5 ms less than comparing every pixel."""
    return _channels_equal(values[:, :1]) and _channels_equal(values)


def _strip_lightness(values: torch.Tensor, white_level: float) -> torch.Tensor:
    """L* (h, w) of a strip of 8-bit sRGB (3, h, w), or of integer or float gray (1, h, w), pixels, on the CPU."""
    if values.shape[0] == 3 and not _is_gray(values):
        return torch.from_numpy(_rgb_lightness(np.ascontiguousarray(values.permute(1, 2, 0).numpy())))
    gray = values[0]
    if gray.dtype == torch.uint8:
        return torch.from_numpy(cv2.LUT(np.ascontiguousarray(gray.numpy()), _gray_table(int(white_level)).numpy()))
    if gray.is_floating_point():
        return gray_to_lightness(gray.float().div(white_level).clamp_(0, 1))
    return _gray_table(int(white_level))[gray.long().clamp_(0, int(white_level))]


def _use_torch_threads() -> None:
    """OpenCV's thread pool (process-wide) as large as torch's, so that a process given one CPU (a Ray actor, say)
    uses one."""
    cv2.setNumThreads(torch.get_num_threads())


def lightness(pixels: Pixels) -> torch.Tensor:
    """L* of gray or sRGB pixels, shape (1, 1, H, W), float32 on the CPU (where the pixels are, and where `compose`
    uses it; the network's smaller inputs go to its device)."""
    _, height, width = pixels.values.shape
    result = torch.empty((1, 1, height, width))
    _use_torch_threads()
    for rows in row_strips(height, width, LIGHTNESS_STRIP_PIXELS):
        result[0, 0, rows] = _strip_lightness(pixels.values[:, rows], pixels.white_level)
    return result


def network_input(lightness_full: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The network's input (N, 1, *size) in [0, 1] from full-resolution L* (N, 1, H, W), resized with antialiasing."""
    resized = F.interpolate(lightness_full, size=size, mode="bilinear", align_corners=False, antialias=True)
    return lightness_to_input(resized)


def global_input(lightness_full: torch.Tensor) -> torch.Tensor:
    """The global branch's input: the whole photo at GLOBAL_INPUT_SIZE x GLOBAL_INPUT_SIZE (paper 3.2)."""
    return network_input(lightness_full, (GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE))


def input_luma(pixels: Pixels) -> np.ndarray:
    """The input's Rec. 601 luma (H, W), what PIL's convert("L") gives: uint8 for 8-bit pixels (a gray photo's own
    values), else float32 in [0, 1]."""
    values = pixels.values
    _, height, width = values.shape
    if values.dtype != torch.uint8:  # 16-bit, 32-bit or float gray (colour pixels are always 8-bit)
        return values[0].float().div(pixels.white_level).clamp_(0, 1).numpy()
    if values.shape[0] == 1:
        return values[0].numpy()
    luma = np.empty((height, width), np.uint8)
    _use_torch_threads()
    for rows in row_strips(height, width):
        cv2.cvtColor(np.ascontiguousarray(values[:, rows].permute(1, 2, 0).numpy()), cv2.COLOR_RGB2GRAY, dst=luma[rows])
    return luma


def match_luma(rgb: np.ndarray, luma: np.ndarray) -> None:
    """Shifts the R, G and B of each pixel of `rgb` (h, w, 3, uint8), in place, by the same amount so that its Rec. 601
    luma is `luma`'s (h, w, uint8, or float32 in [0, 1]), within [0, 255]. The colour's L* from the gray input was
    taken as if the gray were luminance, which darkens saturated colours (a red of luma 76 came out at L* 32, not 53);
    on the validation splits, with 10 points, the shift gained 0.15 to 0.3 dB, as much as solving each pixel's L* for
    that luma (within 0.06). Twice, so that what one channel could not take (clipped) goes to the others, in 8-bit
    OpenCV operations (a third of the time of the same in float32); then the few pixels still off are solved exactly
    (`_match_clipped`)."""
    target = luma if luma.dtype == np.uint8 else cv2.convertScaleAbs(luma, alpha=255)
    for _ in range(2):
        shift = cv2.subtract(target, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=cv2.CV_16S)
        # numpy's maximum: OpenCV takes a 1x1 array beside a scalar for a scalar
        up, down = cv2.convertScaleAbs(np.maximum(shift, 0)), cv2.convertScaleAbs(np.minimum(shift, 0))
        cv2.add(rgb, cv2.merge([up, up, up]), dst=rgb)
        cv2.subtract(rgb, cv2.merge([down, down, down]), dst=rgb)
    _match_clipped(rgb, target)


def _match_clipped(rgb: np.ndarray, target: np.ndarray) -> None:
    """The pixels of `rgb` still more than a level off the `target` luma (uint8, in place): where a channel clipped,
    each shift moved the luma by the weight of the others only (a saturated hint's colour was 6 levels off, white with
    some colour 12). At most three steps solve them: each shifts every channel by what is missing over the weight of
    those that can still move (the others stay clipped), until it is found or one more channel clips."""
    off = np.flatnonzero(cv2.absdiff(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), target) > 1)  # (np.nonzero: 10x slower)
    if off.size == 0:
        return
    rows, columns = np.divmod(off, rgb.shape[1])
    pixels, goal = rgb[rows, columns].astype(np.float32), target[rows, columns].astype(np.float32)
    for _ in range(3):
        missing = goal - pixels @ REC601_WEIGHTS
        movable = np.where(missing[:, None] > 0, pixels < 255, pixels > 0) @ REC601_WEIGHTS
        pixels = np.clip(pixels + (missing / np.maximum(movable, 1e-3))[:, None], 0, 255)
    rgb[rows, columns] = np.rint(pixels).astype(np.uint8)


def _upsample_rows(ab: np.ndarray, height: int, width: int, rows: slice, out: np.ndarray) -> None:
    """Rows `rows` of ab (h, w, 2) resized to (height, width, 2) into `out`, as F.interpolate(mode="bilinear",
    align_corners=False) would: the rows interpolated at the low width, then widened by OpenCV."""
    source_height = ab.shape[0]
    position = ((np.arange(rows.start, rows.stop) + 0.5) * (source_height / height) - 0.5).clip(min=0)
    above = np.minimum(position.astype(np.int64), source_height - 1)
    below = np.minimum(above + 1, source_height - 1)
    weight = (position - above).astype(np.float32)[:, None, None]
    strip = ab[above] + weight * (ab[below] - ab[above])
    cv2.resize(strip, (width, len(strip)), dst=out, interpolation=cv2.INTER_LINEAR)


def _as_arrays(lightness_full: torch.Tensor, ab: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """L* (H, W) and ab (h, w, 2) as float32 arrays on the CPU, for OpenCV."""
    ab_low = np.ascontiguousarray(ab[0].float().cpu().permute(1, 2, 0).numpy())
    return lightness_full[0, 0].float().cpu().numpy(), ab_low


def _upsampled_ab_strips(ab_low: np.ndarray, height: int, width: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Each strip's rows and the ab (h, w, 2) upsampled to (height, width) for them: by one call up to
    WHOLE_UPSAMPLE_PIXELS, else strip by strip into one buffer (memory bounded for huge photos)."""
    if height * width <= WHOLE_UPSAMPLE_PIXELS:
        whole = cv2.resize(ab_low, (width, height), interpolation=cv2.INTER_LINEAR)
        yield from ((rows, whole[rows]) for rows in row_strips(height, width))
        return
    buffer = np.empty((min(height, max(1, STRIP_PIXELS // width)), width, 2), np.float32)
    for rows in row_strips(height, width):
        strip = buffer[: rows.stop - rows.start]
        _upsample_rows(ab_low, height, width, rows, strip)
        yield rows, strip


def compose_rgb(lightness_full: torch.Tensor, ab: torch.Tensor, luma: np.ndarray | None = None) -> np.ndarray:
    """The output's 8-bit sRGB (H, W, 3): full-resolution L* (1, 1, H, W) with the ab prediction (1, 2, h, w)
    upsampled to it, and the input's `luma` kept (`match_luma`) if given. Each strip is converted in place in a
    buffer made once (no allocation per strip)."""
    height, width = lightness_full.shape[-2:]
    lightness_plane, ab_low = _as_arrays(lightness_full, ab)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    lab_strip = np.empty((min(height, max(1, STRIP_PIXELS // width)), width, 3), np.float32)
    _use_torch_threads()
    for rows, ab_rows in _upsampled_ab_strips(ab_low, height, width):
        lab = lab_strip[: rows.stop - rows.start]
        cv2.mixChannels([lightness_plane[rows], ab_rows], [lab], [0, 0, 1, 1, 2, 2])
        cv2.cvtColor(lab, cv2.COLOR_Lab2RGB, dst=lab)  # float, clipped to [0, 1]: the absolute value is a no-op
        cv2.convertScaleAbs(lab, dst=rgb[rows], alpha=255)
        if luma is not None:
            match_luma(rgb[rows], luma[rows])
    return rgb


def compose_rgb_8bit(lightness_full: torch.Tensor, ab: torch.Tensor, luma: np.ndarray | None = None) -> np.ndarray:
    """`compose_rgb` through OpenCV's 8-bit Lab (L* rounded to steps of 0.4, a and b to whole units): 0.6x its time,
    within a few levels of it (51 dB PSNR on photos), which is finer than an H.264 encoding keeps: for video frames.
    Upsamples ab for the whole frame at once (2 bytes a pixel; video frames are at most 8.3 MP)."""
    height, width = lightness_full.shape[-2:]
    lightness_plane, ab_low = _as_arrays(lightness_full, ab)
    _use_torch_threads()
    ab_low_8bit = cv2.convertScaleAbs(np.clip(ab_low, -128, 127), beta=128)  # clipped: no absolute value taken
    ab_8bit = cv2.resize(ab_low_8bit, (width, height), interpolation=cv2.INTER_LINEAR)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    for rows in row_strips(height, width):
        lab = cv2.merge([cv2.convertScaleAbs(lightness_plane[rows], alpha=255 / 100), ab_8bit[rows]])
        cv2.cvtColor(lab, cv2.COLOR_Lab2RGB, dst=rgb[rows])
        if luma is not None:
            match_luma(rgb[rows], luma[rows])
    return rgb


def compose(
    lightness_full: torch.Tensor, ab: torch.Tensor, alpha: Image.Image | None, luma: np.ndarray | None = None
) -> Image.Image:
    """The output image: `compose_rgb`, with the input's alpha channel if it had one."""
    image = Image.fromarray(compose_rgb(lightness_full, ab, luma))
    if alpha is not None:
        image.putalpha(alpha)
    return image
