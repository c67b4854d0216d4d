"""Colorization metrics, batched in torch.

Images are float sRGB tensors in [0, 1] of shape (N, 3, H, W); every metric returns one value per image, shape (N,).
A target of shape (1, 3, H, W) is compared with every one of N predictions.
PSNR and SSIM are computed on the 8-bit values (inputs are rounded to the 256 levels first), as for saved images.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from letcolor.color import rgb_to_lab

PSNR_CAP = 100.0  # dB; identical images would give infinity, which neither averages nor serialises
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
AUC_MAX_THRESHOLD = 150  # Lab ab units (Zhang, Isola and Efros 2016)


def image_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as the metrics take it: RGB (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float() / 255  # a writable copy


def to_8bit(rgb: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> the 8-bit levels 0..255, as float32."""
    return (rgb.float().clamp(0, 1) * 255).round()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over all three 8-bit channels, capped at PSNR_CAP."""
    mse = (to_8bit(pred) - to_8bit(target)).double().square().flatten(1).mean(1)
    return (10 * torch.log10(255**2 / mse)).clamp(max=PSNR_CAP).float()


def _gaussian_window(like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=like.dtype, device=like.device) - (SSIM_WINDOW - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def _local_mean(images: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted means over every full 11x11 window (no padding), per channel; images is (N, C, H, W)."""
    maps = images.flatten(0, 1).unsqueeze(0)
    count = maps.shape[1]
    window = _gaussian_window(maps).expand(count, SSIM_WINDOW)
    # One depthwise convolution with every map as a channel: far faster on CPU than a batch of 1-channel images.
    rows = F.conv2d(maps, window.reshape(count, 1, SSIM_WINDOW, 1), groups=count)
    means = F.conv2d(rows, window.reshape(count, 1, 1, SSIM_WINDOW), groups=count)
    return means.view(*images.shape[:2], *means.shape[-2:])


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per RGB channel on 8-bit values, averaged over the channels.

    Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255; only windows that lie inside the image count
    (as in the authors' MATLAB code). Images must be at least 11 px on each side."""
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(pred.shape[-2:])}")
    # On the 8-bit levels scaled to [0, 1] (so L = 1): float32 keeps ample precision there, and is fast.
    x, y = to_8bit(pred) / 255, to_8bit(target) / 255
    mean_x, mean_y = _local_mean(x), _local_mean(y)
    var_x, var_y = _local_mean(x * x) - mean_x.square(), _local_mean(y * y) - mean_y.square()
    cov_xy = _local_mean(x * y) - mean_x * mean_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x.square() + mean_y.square() + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(1)


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk (2003) colourfulness M on the 0..255 scale; 0 for a gray image.

    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G, yb = (R + G) / 2 - B,
    with population standard deviations over the image's pixels."""
    r, g, b = (rgb.float() * 255).flatten(2).unbind(1)
    rg, yb = r - g, (r + g) / 2 - b
    spread = torch.sqrt(rg.var(1, correction=0) + yb.var(1, correction=0))
    offset = torch.sqrt(rg.mean(1).square() + yb.mean(1).square())
    return spread + 0.3 * offset


def ab_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel Euclidean distance between the images' a,b (CIE Lab) channels, shape (N, H, W)."""
    ab_pred, ab_target = rgb_to_lab(pred.float())[:, 1:], rgb_to_lab(target.float())[:, 1:]
    return torch.linalg.vector_norm(ab_pred - ab_target, dim=1)


def ab_auc(pred: torch.Tensor, target: torch.Tensor, max_threshold: int = AUC_MAX_THRESHOLD) -> torch.Tensor:
    """Area under the CDF of per-pixel ab error (Zhang et al. 2016), in [0, 1]; 1 for identical colours.

    The fraction of pixels with error <= t, averaged over the thresholds t = 0, 1, ..., max_threshold."""
    error = ab_error(pred, target).flatten(1)
    # A pixel with error e lies within the integer thresholds ceil(e)..max_threshold: count them instead of
    # comparing every pixel with every threshold.
    thresholds_met = (max_threshold + 1 - torch.ceil(error)).clamp(0, max_threshold + 1)
    return thresholds_met.mean(1) / (max_threshold + 1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Whether each label is among its row's k highest scores (all classes if there are fewer than k); (N,) bool."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return (top == labels.unsqueeze(1)).any(1)


FLICKER_BLOCK = 8  # px; block means leave out codec noise and keep region colour shifts


def pan_flicker(rgb: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Flicker of a video made by panning over a still photo, where every scene point's true colour is constant:
    for each pair of consecutive frames, the mean ab distance (Lab units) between the same scene region's colours,
    over the FLICKER_BLOCK x FLICKER_BLOCK blocks of the area the two frames share. Needs no ground truth.

    rgb: the frames (T, 3, H, W) in [0, 1]; offsets: (T, 2) integer (x, y) of each frame's top-left corner in the
    photo, which aligns the frames exactly. Returns (T - 1,)."""
    ab = rgb_to_lab(rgb.float())[:, 1:]
    height, width = ab.shape[-2:]
    flicker = []
    for t in range(len(ab) - 1):
        dx, dy = (int(v) for v in offsets[t + 1] - offsets[t])
        if abs(dx) > width - FLICKER_BLOCK or abs(dy) > height - FLICKER_BLOCK:
            raise ValueError(f"frames {t} and {t + 1} share less than one {FLICKER_BLOCK}x{FLICKER_BLOCK} block")
        # A scene point at (x, y) in frame t is at (x - dx, y - dy) in frame t + 1.
        rows, cols = slice(max(0, dy), height + min(0, dy)), slice(max(0, dx), width + min(0, dx))
        next_rows = slice(rows.start - dy, rows.stop - dy)
        next_cols = slice(cols.start - dx, cols.stop - dx)
        blocks = F.avg_pool2d(ab[t, :, rows, cols], FLICKER_BLOCK)
        next_blocks = F.avg_pool2d(ab[t + 1, :, next_rows, next_cols], FLICKER_BLOCK)
        flicker.append(torch.linalg.vector_norm(blocks - next_blocks, dim=0).mean())
    return torch.stack(flicker)
