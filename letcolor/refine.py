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
    return _window_means(_window_means(x, radius, -2), radius, -1)


def _window_means(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    size = x.shape[dim]
    cumulative = x.cumsum(dim)

    def repeated(edge: torch.Tensor, times: int) -> torch.Tensor:
        shape = list(edge.shape)
        shape[dim] = times
        return edge.expand(shape)

    # sums[j] = the sum of x[:j - radius], clipped to none and to all of x: each window's sum is then a difference
    # of two slices (slices, not gathers, which were four times slower)
    head = repeated(torch.zeros_like(cumulative.narrow(dim, 0, 1)), radius + 1)
    sums = torch.cat((head, cumulative, repeated(cumulative.narrow(dim, size - 1, 1), radius)), dim)
    windows = sums.narrow(dim, 2 * radius + 1, size) - sums.narrow(dim, 0, size)
    index = torch.arange(size, device=x.device)
    counts = ((index + radius + 1).clamp(max=size) - (index - radius).clamp(min=0)).to(x.dtype)
    return windows / (counts[:, None] if dim == -2 else counts)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, epsilon: float = EPSILON) -> torch.Tensor:
    """`source` (N, C, H, W) filtered with the single-channel `guide` (N, 1, H, W)."""
    channels = source.shape[1]
    means = box_mean(torch.cat((guide, source, guide * source, guide * guide), dim=1), radius)
    mean_guide, mean_source, mean_product, mean_square = means.split((1, channels, channels, 1), dim=1)
    gain = (mean_product - mean_guide * mean_source) / (mean_square - mean_guide * mean_guide + epsilon)
    mean_gain, mean_offset = box_mean(torch.cat((gain, mean_source - gain * mean_guide), dim=1), radius).chunk(2, 1)
    return mean_gain * guide + mean_offset


def refine_ab(ab: torch.Tensor, network_input: torch.Tensor) -> torch.Tensor:
    """ab (N, 2, h, w) in Lab units at the network's output size, refined with the network's input L (N, 1, 2h, 2w),
    in [0, 1], as the guide: a window of RADIUS of the longer side."""
    guide = F.interpolate(network_input, size=ab.shape[-2:], mode="area")
    radius = max(1, round(RADIUS * max(ab.shape[-2:])))
    return guided_filter(guide, ab, radius)
