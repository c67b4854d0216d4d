"""The training objective (paper 3.3): MSE on the ab targets plus alpha x scene cross-entropy (plus an optional
chroma term, not in the paper), and the batched device-side conversion of uint8 RGB crops into network inputs and
targets."""

import torch
import torch.nn.functional as F

from letcolor.color import ab_to_target, lightness_to_input, rgb_to_lab


def lab_batch(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sRGB (N, 3, H, W) in [0, 1] -> (Lab, network input L (N, 1, H, W), ab target at H/2 in [0, 1])."""
    lab = rgb_to_lab(rgb)
    return lab, lightness_to_input(lab[:, :1]), ab_to_target(F.avg_pool2d(lab[:, 1:], 2))


def mean_chroma(ab: torch.Tensor) -> torch.Tensor:
    """Per-image mean distance of ab targets (N, 2, H, W) from gray (0.5), in target units."""
    return ((ab - 0.5).square().sum(1) + 1e-8).sqrt().mean((1, 2))


def colorization_losses(
    ab: torch.Tensor,
    target: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    chroma_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mse, cross-entropy); unlabelled samples (label -1) add no cross-entropy. No host sync.

    MSE alone predicts the conditional mean, which fades uncertain colours towards sepia; `chroma_weight` adds the
    squared gap between each image's predicted and true mean chroma, so that the network commits to a colour.
    """
    mse = F.mse_loss(ab, target)
    labelled = labels >= 0
    per_sample = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    cross_entropy = (per_sample * labelled).sum() / labelled.sum().clamp(min=1)
    total = mse + alpha * cross_entropy
    if chroma_weight:
        total = total + chroma_weight * (mean_chroma(ab) - mean_chroma(target)).square().mean()
    return total, mse, cross_entropy
