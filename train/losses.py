"""The training objective (paper 3.3): MSE on the ab targets plus alpha x scene cross-entropy (plus options not in
the paper: against MSE's sepia a per-image chroma gap, a per-image colour-spread gap and colour-rarity weights; for
the per-photo PSNR that evaluation reports, per-image weights), and the batched device-side conversion of uint8 RGB
crops into network inputs and targets."""

import torch
import torch.nn.functional as F

from letcolor.color import AB_RANGE, ab_to_target, lightness_to_input, rgb_to_lab


def lab_batch(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sRGB (N, 3, H, W) in [0, 1] -> (Lab, network input L (N, 1, H, W), ab target at H/2 in [0, 1])."""
    lab = rgb_to_lab(rgb)
    return lab, lightness_to_input(lab[:, :1]), ab_to_target(F.avg_pool2d(lab[:, 1:], 2))


def colour_spread(ab: torch.Tensor) -> torch.Tensor:
    """Per-image spatial standard deviation of a and of b of ab targets (N, 2, H, W) -> (N, 2): how much the colours
    vary across the photo, what colourfulness (Hasler and Suesstrunk 2003) mostly measures."""
    return ab.flatten(2).std(2)


def mean_chroma(ab: torch.Tensor) -> torch.Tensor:
    """Per-image mean distance of ab targets (N, 2, H, W) from gray (0.5), in target units."""
    return ((ab - 0.5).square().sum(1) + 1e-8).sqrt().mean((1, 2))


AB_BINS = 22  # ab histogram bins per axis: 10 Lab units each over the target range [-110, 110] (Zhang et al. 2016)


def ab_bins(target: torch.Tensor) -> torch.Tensor:
    """The histogram bin (0 .. AB_BINS**2 - 1) of each pixel of ab targets (N, 2, H, W) in [0, 1]."""
    index = (target.detach().clamp(0, 1) * AB_BINS).long().clamp(max=AB_BINS - 1)
    return index[:, 0] * AB_BINS + index[:, 1]


def ab_histogram(target: torch.Tensor) -> torch.Tensor:
    """Pixel counts per ab bin, flat (AB_BINS**2,)."""
    return torch.bincount(ab_bins(target).flatten(), minlength=AB_BINS**2).float()


class ColourRarity:
    """Per-pixel loss weights from the rarity of the pixel's true colour: the class rebalancing of Zhang et al. 2016
    (eq. 4) applied to the regression. With p the ab histogram of training crops, smoothed by a gaussian of 5 Lab
    units, and Q the number of bins that occur, a pixel in bin q weighs w_q ~ 1 / ((1 - mix) p_q + mix / Q),
    scaled so that the mean weight over the training pixels is 1. MSE then no longer lets the common browns and
    grays of the training set win every uncertain pixel."""

    def __init__(self, histogram: torch.Tensor, mix: float):
        counts = histogram.view(1, 1, AB_BINS, AB_BINS).float()
        kernel = torch.exp(-0.5 * (torch.arange(-1.0, 2.0, device=counts.device) / 0.5) ** 2)  # sigma 5 units
        kernel = kernel / kernel.sum()
        smoothed = F.conv2d(counts, kernel.view(1, 1, 1, 3), padding=(0, 1))
        smoothed = F.conv2d(smoothed, kernel.view(1, 1, 3, 1), padding=(1, 0)).flatten()
        probability = smoothed / smoothed.sum()
        occurring = int((histogram > 0).sum())
        weights = 1 / ((1 - mix) * probability + mix / occurring)
        self.weights = weights / (probability * weights).sum()

    def __call__(self, target: torch.Tensor) -> torch.Tensor:
        """Weights (N, 1, H, W) for ab targets (N, 2, H, W)."""
        return self.weights[ab_bins(target)].unsqueeze(1)


DEFAULT_PSNR_FLOOR = 5.0  # RMS ab error (Lab units) below which an image weighs no more


def psnr_image_weights(squared_error: torch.Tensor, floor: float = DEFAULT_PSNR_FLOOR) -> torch.Tensor:
    """(N,) weights of mean 1, each image's inverse mean squared error plus `floor` (an RMS ab error in Lab units)
    squared, detached. Weighting each image's error so follows the gradient of the mean per-image log error, i.e.
    of the mean PSNR over photos, where the pooled MSE lets a few colourful photos outvote the many whose colour is
    near-neutral: the network learns to leave a photo gray where a tint would cost it more than the colour wins."""
    floor_in_target_units = (floor / (2 * AB_RANGE)) ** 2
    inverse = 1 / (squared_error.detach().mean((1, 2, 3)) + floor_in_target_units)
    return inverse / inverse.mean()


def colorization_losses(
    ab: torch.Tensor,
    target: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    chroma_weight: float = 0.0,
    rarity: ColourRarity | None = None,
    psnr_floor: float = 0.0,
    spread_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mse, cross-entropy); unlabelled samples (label -1) add no cross-entropy. No host sync.

    MSE alone predicts the conditional mean, which fades uncertain colours towards sepia; `chroma_weight` adds the
    squared gap between each image's predicted and true mean chroma, so that the network commits to a colour, and
    `rarity` weights each pixel's squared error by how rare its true colour is, and a `psnr_floor` above 0 each
    image's by `psnr_image_weights` (the reported mse stays unweighted). The chroma gap can be closed by a uniform
    warm tint, which a gray car or street then wears; `spread_weight` instead adds the squared gap between each
    image's predicted and true `colour_spread`, which no uniform tint changes.
    """
    squared_error = (ab - target).square()
    mse = squared_error.mean()
    labelled = labels >= 0
    per_sample = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    cross_entropy = (per_sample * labelled).sum() / labelled.sum().clamp(min=1)
    weighted_error = rarity(target) * squared_error if rarity else squared_error
    if psnr_floor > 0:
        colour_loss = (psnr_image_weights(squared_error, psnr_floor) * weighted_error.mean((1, 2, 3))).mean()
    else:
        colour_loss = weighted_error.mean()
    total = colour_loss + alpha * cross_entropy
    if chroma_weight:
        total = total + chroma_weight * (mean_chroma(ab) - mean_chroma(target)).square().mean()
    if spread_weight:
        total = total + spread_weight * (colour_spread(ab) - colour_spread(target)).square().sum(1).mean()
    return total, mse, cross_entropy
