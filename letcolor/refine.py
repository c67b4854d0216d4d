"""Edge-aware colour refinement: a guided filter (He, Sun and Tang, 2013) of the predicted a and b, guided by L.

Within a window, the filter fits a and b as a linear function of L and averages the fits: colour follows the photo's
edges, and a patch whose colour disagrees with its surroundings but not its lightness (a pink blotch on a gray
facade) merges into its region. Batched over images and channels; box sums by cumulative sums, so the cost does not
grow with the radius.
"""

import torch
import torch.nn.functional as F

RADIUS = 0.04  # of the longer side
EPSILON = 1e-3  # regularises the fit, for L in [0, 1]: below this variance of L, a window's colour is its mean


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean of each (2 radius + 1)-square window of x (N, C, H, W), clipped at the borders."""
    for dim in (-2, -1):
        x = _window_sums(x, radius, dim) / _window_sums(torch.ones_like(x.narrow(dim, 0, x.shape[dim])), radius, dim)
    return x


def _window_sums(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    size = x.shape[dim]
    padded = F.pad(x.cumsum(dim), _pad_before(dim, 1))  # padded[i] = sum of x[:i]
    index = torch.arange(size, device=x.device)
    upper = (index + radius + 1).clamp(max=size)
    lower = (index - radius).clamp(min=0)
    return padded.index_select(dim, upper) - padded.index_select(dim, lower)


def _pad_before(dim: int, amount: int) -> tuple[int, ...]:
    return (amount, 0) if dim == -1 else (0, 0, amount, 0)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, epsilon: float = EPSILON) -> torch.Tensor:
    """`source` (N, C, H, W) filtered with the single-channel `guide` (N, 1, H, W)."""
    mean_guide, mean_source = box_mean(guide, radius), box_mean(source, radius)
    covariance = box_mean(guide * source, radius) - mean_guide * mean_source
    variance = box_mean(guide * guide, radius) - mean_guide * mean_guide
    gain = covariance / (variance + epsilon)
    offset = mean_source - gain * mean_guide
    return box_mean(gain, radius) * guide + box_mean(offset, radius)


def refine_ab(ab: torch.Tensor, network_input: torch.Tensor) -> torch.Tensor:
    """ab (N, 2, h, w) in Lab units at the network's output size, refined with the network's input L (N, 1, 2h, 2w),
    in [0, 1], as the guide: a window of RADIUS of the longer side."""
    guide = F.interpolate(network_input, size=ab.shape[-2:], mode="area")
    radius = max(1, round(RADIUS * max(ab.shape[-2:])))
    return guided_filter(guide, ab, radius)
