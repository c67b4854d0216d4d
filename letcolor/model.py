"""The Let there be Color! network (Iizuka, Simo-Serra and Ishikawa, SIGGRAPH 2016), top to bottom as in the paper.

A grayscale L channel goes through shared low-level features; a mid-level branch keeps the spatial map; a global
branch reads a 224x224 resize and gives a scene vector (and scene class logits); the fusion layer concatenates
that vector at every pixel; the colorization network predicts a,b (as a sigmoid) at half the input resolution.

Beyond the paper, a model may take local colour hints beside L (Zhang et al., SIGGRAPH 2017): for each pixel a
hint's a and b and a mask, zero where there is none (`letcolor.color.hint_input`). Only the local path reads them;
the global branch always sees L with no hints, so the scene vector of one image can still drive another.
"""

import json
import math
from collections import Counter
from numbers import Real
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, RemoteEntryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from torch import nn

from letcolor.color import HINT_CHANNELS

GLOBAL_INPUT_SIZE = 224  # the global branch's fixed input side (paper 3.2)
WEIGHTS_NAME = "model.safetensors"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names
CONFIG_NAME = "config.json"
MAX_CLASSES = 100_000  # far above any scene or object label set; a config asking for more is broken
MAX_WIDTH = 4.0
# The card that save_pretrained writes for a model saved outside training (`train` writes its own, with the run).
MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# A letcolor model

A *Let there be Color!* network (Iizuka, Simo-Serra and Ishikawa, SIGGRAPH 2016: {{ paper_url }}) saved by letcolor
({{ repo_url }}): it colorizes black-and-white photos and video. Its settings are in `config.json`, its weights in
`model.safetensors`.

```python
from letcolor import Colorizer

colorizer = Colorizer.from_pretrained("this model's directory or Hub id")
colorizer("photo.jpg").image.save("colour.jpg")
```

This card was written by `save_pretrained`: it does not say how the model was trained or how good it is.
"""
NO_HINTS_MESSAGE = "this model takes no colour hints (its config has hint_channels 0 and hint_propagation false)"


class ModelError(Exception):
    """A model cannot be had: it is not found (ModelNotFoundError) or not a valid letcolor model (InvalidModelError)."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model to load: none given and none installed, or the given directory or Hub id cannot be found."""


class InvalidModelError(ModelError, ValueError):
    """Not a valid letcolor model: corrupt or mismatched weights, or a config with unknown keys, wrong types or
    absurd values."""


def check_config(num_classes, class_names, width, hint_channels=0, hint_propagation=False) -> None:
    """Raises InvalidModelError unless the arguments make a model of sane size (checked before allocating it)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise InvalidModelError(f"num_classes must be an integer from 1 to {MAX_CLASSES}, got {num_classes!r}")
    if not isinstance(class_names, list | tuple) or not all(isinstance(name, str) for name in class_names):
        raise InvalidModelError(f"class_names must be a list of strings, got {class_names!r:.200}")
    if class_names and len(class_names) != num_classes:
        raise InvalidModelError(f"{len(class_names)} class_names given for num_classes={num_classes}")
    if twice := sorted(name for name, count in Counter(class_names).items() if count > 1):
        raise InvalidModelError(f"class_names must differ (scene probabilities are keyed by them): {twice}")
    if isinstance(width, bool) or not isinstance(width, Real) or not 0 < width <= MAX_WIDTH or math.isnan(width):
        raise InvalidModelError(f"width must be a number in (0, {MAX_WIDTH:g}], got {width!r}")
    if not isinstance(hint_channels, int) or isinstance(hint_channels, bool) or hint_channels not in (0, HINT_CHANNELS):
        raise InvalidModelError(f"hint_channels must be 0 (no hints) or {HINT_CHANNELS}, got {hint_channels!r}")
    if not isinstance(hint_propagation, bool):
        raise InvalidModelError(f"hint_propagation must be true or false, got {hint_propagation!r}")


def check_stored_tensors(model: nn.Module, weights: str) -> None:
    """InvalidModelError unless the weights file holds the model's tensors, of its shapes, floating point (but the
    BatchNorms' step counts), read from the file's header: a config of another width allocated gigabytes before the
    load refused it, and integer weights were cast without a word."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(weights, framework="pt") as stored:
        tensors = {name: stored.get_slice(name) for name in stored.keys()}
        shapes = {name: tuple(tensor.get_shape()) for name, tensor in tensors.items()}
        integers = [name for name, tensor in tensors.items() if tensor.get_dtype() not in FLOAT_DTYPES]
    if set(shapes) != set(expected):
        missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
        raise InvalidModelError(
            f"the weights do not fit config.json: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if wrong := [name for name in expected if shapes[name] != expected[name]]:
        name = wrong[0]
        raise InvalidModelError(
            f"the weights do not fit config.json: {name} is {list(shapes[name])}, the config makes "
            f"{list(expected[name])} ({len(wrong)} tensors differ)"
        )
    if integers := [name for name in integers if not name.endswith("num_batches_tracked")]:
        raise InvalidModelError(f"the weights must be floating point: {integers[0]} is not")


def check_values(model: nn.Module) -> None:
    """InvalidModelError for weights that cannot be right: not finite, or a BatchNorm's variance below zero (the
    outputs were NaN on one engine, gray or wrong colours on another)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InvalidModelError(f"the weights hold NaN or infinite values ({name})")
        if name.endswith("running_var") and (tensor < 0).any():
            raise InvalidModelError(f"the weights hold a negative BatchNorm variance ({name})")


def channels(paper_channels: int, width: float) -> int:
    """A layer's channel count for the width multiplier `width` (1.0 = the paper's network)."""
    return max(1, round(paper_channels * width))


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv_stack(layer_list: list[tuple[int, int, int]], width: float, in_channels: int | None = None) -> nn.Sequential:
    """Convs from (paper in-channels, paper out-channels, stride) triples, scaled by `width`; `in_channels` overrides
    the first layer's input count (the network's own inputs are not scaled)."""
    in_channels = in_channels or channels(layer_list[0][0], width)
    layers = []
    for _, cout, stride in layer_list:
        layers.append(conv_bn_relu(in_channels, channels(cout, width), stride))
        in_channels = channels(cout, width)
    return nn.Sequential(*layers)


class LowLevelFeatures(nn.Module):
    """Low-level features network shared by the local and global paths, down to H/8 (paper 3.1, Table 1). In a model
    with hints, the hint channels have a conv of their own whose output joins the first layer's after its
    BatchNorm: without hints the network computes, bit for bit, what one without hint inputs computes."""

    LAYERS = [(1, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1), (256, 256, 2), (256, 512, 1)]

    def __init__(self, width: float, hint_channels: int = 0):
        super().__init__()
        self.convs = conv_stack(self.LAYERS, width, in_channels=1)
        first_channels, first_stride = channels(self.LAYERS[0][1], width), self.LAYERS[0][2]
        self.hint_conv = (
            nn.Conv2d(hint_channels, first_channels, 3, first_stride, 1, bias=False) if hint_channels else None
        )

    def forward(self, l: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        conv, norm, relu = self.convs[0]
        x = norm(conv(l))
        if hints is not None:
            x = x + self.hint_conv(hints).to(x.dtype)
        return self.convs[1:](relu(x))


class MidLevelFeatures(nn.Module):
    """Mid-level features network: two convs that keep the spatial map (paper 3.1, Table 1)."""

    LAYERS = [(512, 512, 1), (512, 256, 1)]

    def __init__(self, width: float):
        super().__init__()
        self.convs = conv_stack(self.LAYERS, width)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        return self.convs(low)


class GlobalOutput(NamedTuple):
    features: torch.Tensor  # (N, 256w): the scene vector that drives the fusion layer
    scene_logits: torch.Tensor  # (N, num_classes): the simultaneous classification (paper 3.3)


class GlobalFeatures(nn.Module):
    """Global features network: 4 convs and 3 FC layers to a 256-d scene vector, plus the classifier (paper 3.2-3.3)."""

    LAYERS = [(512, 512, 2), (512, 512, 1), (512, 512, 2), (512, 512, 1)]

    def __init__(self, width: float, num_classes: int):
        super().__init__()
        self.convs = conv_stack(self.LAYERS, width)
        side = GLOBAL_INPUT_SIZE // 32
        self.fc = nn.Sequential(
            nn.Linear(channels(512, width) * side * side, channels(1024, width)),
            nn.ReLU(inplace=True),
            nn.Linear(channels(1024, width), channels(512, width)),
            nn.ReLU(inplace=True),
        )
        self.to_vector = nn.Sequential(nn.Linear(channels(512, width), channels(256, width)), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(
            nn.Linear(channels(512, width), channels(256, width)),
            nn.ReLU(inplace=True),
            nn.Linear(channels(256, width), num_classes),
        )

    def forward(self, low224: torch.Tensor) -> GlobalOutput:
        hidden = self.fc(self.convs(low224).flatten(1))
        return GlobalOutput(self.to_vector(hidden), self.classifier(hidden))


class FusionLayer(nn.Module):
    """Fusion layer: global vector tiled over mid-level features, then a 1x1 conv (paper 3.2, eq. 1)."""

    def __init__(self, width: float):
        super().__init__()
        self.conv = nn.Conv2d(channels(256, width) * 2, channels(256, width), 1)

    def forward(self, mid: torch.Tensor, global_vector: torch.Tensor) -> torch.Tensor:
        tiled = global_vector[:, :, None, None].expand(-1, -1, *mid.shape[-2:])
        return F.relu(self.conv(torch.cat((mid, tiled), dim=1)))


NEARNESS_POWER = 4  # high enough that the nearest hinted pixels set the nearness


def window_matrices(size: int, radii: torch.Tensor) -> torch.Tensor:
    """(3R, size, size) for the R radii: the window means (row i averages what lies within radius r of i, clipped at
    the borders, and that twice over: a box filter applied twice, as one matrix product per axis), then the window
    weights clipped to 1 over the window's inner third, to the powers NEARNESS_POWER + 1 and NEARNESS_POWER.

    Those two give a hint's *nearness*: a soft maximum of the window weights of the hinted pixels near a cell, their
    mean weighted by the weights to the power NEARNESS_POWER. A count of hinted pixels would not do: a stroke holds
    so many that its colour would stay at full strength up to the window's edge, and stop there along a line; the
    nearness fades with the distance from the nearest hinted pixel, however many there are."""
    index = torch.arange(size, device=radii.device)
    band = ((index[:, None] - index[None, :]).abs() <= radii[:, None, None]).float()
    once = band / band.sum(-1, keepdim=True)
    means = once @ once
    clipped = (1.5 * means / means.amax(-1, keepdim=True)).clamp(max=1)  # 1 where at least 2/3 of the peak
    return torch.cat((means, clipped ** (NEARNESS_POWER + 1), clipped**NEARNESS_POWER))


def block_means(x: torch.Tensor, size: int) -> torch.Tensor:
    """`x` (N, C, H, W) averaged over blocks of size x size, H and W multiples of `size`: avg_pool2d, 2x faster."""
    n, c, height, width = x.shape  # (reshapes by these sizes, not by -1, keep an exported graph's sizes dynamic)
    rows = x.reshape(n, c, height // size, size, width).sum(3)
    return rows.reshape(n, c, height // size, width // size, size).sum(4) / size**2


def windowed(grid: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """`grid` (N, BINS, C, h, w) filtered by each pair of matrices, rows (M, h, h) and columns (M, w, w):
    (N, BINS, M, C, h, w)."""
    n, bins, channels, height, width = grid.shape
    down = rows @ grid.permute(3, 0, 1, 2, 4).reshape(height, -1)
    across = down.view(len(rows), -1, width) @ columns.transpose(1, 2)  # one product per pair
    return across.view(-1, height, n, bins, channels, width).permute(2, 3, 0, 4, 1, 5)


def positional_variance(weights: torch.Tensor) -> torch.Tensor:
    """The variance of positions along the last axis (as fractions of its length) weighted by `weights` (..., L)."""
    positions = (torch.arange(weights.shape[-1], device=weights.device) + 0.5) / weights.shape[-1]
    total = weights.sum(-1).clamp(min=1e-12)
    mean = (weights * positions).sum(-1) / total
    return ((weights * positions.square()).sum(-1) / total - mean.square()).clamp(min=0)


class Level(NamedTuple):
    """Levels of the hint propagation (`HintPropagation.spread`): what the output misses spread over a window, as a
    shift of a and b (N, bins, levels, 2, gh, gw), and the confidence in it (N, bins, levels, 1, gh, gw)."""

    shifts: torch.Tensor
    confidences: torch.Tensor


def slice_bins(grid: torch.Tensor, lower: torch.Tensor, upper_share: torch.Tensor) -> torch.Tensor:
    """`grid` (N, BINS, C, h, w, or broadcastable in h and w) sliced by lightness: each pixel's value blended from
    its two lightness bins, the lower `lower` (N, 1, h, w) and the next by `upper_share` (N, 1, h, w): (N, C, h, w)."""
    n, _, channels = grid.shape[:3]
    index = lower.unsqueeze(2).expand(n, 1, channels, *lower.shape[-2:])
    grid = grid.expand(n, grid.shape[1], channels, *lower.shape[-2:])
    return torch.lerp(grid.gather(1, index), grid.gather(1, index + 1), upper_share.unsqueeze(2)).squeeze(1)


class HintPropagation(nn.Module):
    """Beyond the paper: what the network's colours still miss at each hint (the hint's colour minus the network's
    there) is spread over the neighbouring pixels, as the non-learned baseline of `letcolor.evaluate` does but learned
    and at a few scales, and added to the network's a,b by gates that two convs learn from the network's last features
    and the spread fields. Coarse to fine: first the coarsest radii over pixels of any lightness (an object's shadowed
    and lit parts both take its hint), then every radius over those of like lightness. A bilateral grid does it (Chen
    et al., SIGGRAPH 2007): cells of CELL x CELL network input pixels, lightness in BINS, box windows of RADII cells;
    the colours are blended in the grid and sliced once, at H/8, by the lightness there. Last, the colour level pulls
    the result toward the hints' own colours, their mean over a window (COLOUR_RADIUS) of like lightness: a residual
    keeps the network's colours varying as they did, wrong hues and blotches too, where the hints' colours replace
    them; its chroma gain (COLOUR_GAIN) gives back the colour that a mean of several hints takes out. `scale` starts
    at zero: until it is trained, the output is the network's own. A hint's confidence grows with the hinted pixels
    counted and fades with the distance from them (its nearness: `window_matrices`). Before the colour level, the
    palette pulls the colours toward those of the hints of like lightness anywhere in the photo (a level whose window
    is the whole photo), where such hints lie across the photo: one stroke's colour stays near it. Before all of this,
    hints that lie across the photo also set the strength of the network's colours (`strength`, not learned)."""

    CELL = 16  # network input pixels per side of a grid cell
    SLICE = 8  # network input pixels per side of a pixel where the grid is sliced (H/8)
    BINS = 9  # lightness bins from 0 to 100: a hint reaches pixels within about 12 L of its own (11: 0.03 dB less)
    RADII = (6, 3, 1, 0)  # box windows of (2r + 1)^2 grid cells, coarse to fine, applied twice: (4r + 1)^2 in all
    CONFIDENCE_GAIN = 4.0  # a window holding one hinted pixel (at H/2) of like lightness is 98% sure
    COLOUR_RADIUS = 3  # the colour level: the hints' mean colour over this radius (6: 0.1 dB more, strokes spill)
    COLOUR_GAIN = 0.4  # chroma times 1 + 0.4 w where the colour level blends by w: a mean of hints is grayer than each
    PALETTE_HALF = 1e-4  # the palette of a lightness bin is half sure when its hints cover this share of the photo
    PALETTE_SPREAD = 0.03  # and unsure unless its hints' positions vary more than this (twice: sure), in sides squared
    STRENGTH_PRIOR = 0.02  # the strength's fit as if the network also had this chroma at each hint, in agreement
    ANY_LIGHTNESS = 2  # how many of the widest RADII also spread the hints of any lightness (blended first)
    GATE_CHANNELS = 16

    def __init__(self, feature_channels: int):
        super().__init__()
        levels = len(self.RADII) + self.ANY_LIGHTNESS + 2  # and the colour level, and the palette
        self.gate_hidden = nn.Conv2d(feature_channels + 3 * levels, self.GATE_CHANNELS, 3, 1, 1)
        self.gates = nn.Conv2d(self.GATE_CHANNELS, levels, 3, 1, 1)
        self.scale = nn.Parameter(torch.zeros(()))
        self._windows = {}  # the window matrices by grid size: see `windows`

    def tents(self, l: torch.Tensor) -> torch.Tensor:
        """Each lightness bin's share of each pixel (N, BINS, h, w) given L (N, 1, h, w) in [0, 1]."""
        centres = torch.linspace(0, 1, self.BINS, device=l.device).view(1, -1, 1, 1)
        return (1 - (l - centres).abs() * (self.BINS - 1)).clamp(min=0)

    def spread(
        self, residual_sums: torch.Tensor, colour_sums: torch.Tensor, mask: torch.Tensor, l: torch.Tensor
    ) -> tuple[tuple[Level, Level, Level], torch.Tensor]:
        """For each grid cell, lightness bin and level, given at H/8 the residual and the hints' colours summed over
        each pixel's hinted share (N, 2, h, w) each, that share `mask` (N, 1, h, w) and L (N, 1, h, w) in [0, 1]: the
        mean residual over the hinted pixels near the cell, and a confidence in [0, 1): it grows with the hinted pixels
        counted and fades with their distance, 0 where none is near. Three groups of levels, each as `Level` (N, bins,
        levels, 2 and 1, h / 2, w / 2): the RADII over the hinted pixels in each bin; the first ANY_LIGHTNESS radii
        over those of any lightness (one bin, for all); the colour level, the hints' mean colour over the
        COLOUR_RADIUS window of like lightness, and that window's confidence. And the `palette` (N, BINS, 3)."""
        hinted = torch.cat((residual_sums, colour_sums, mask, l * mask), dim=1)
        cells = F.avg_pool2d(hinted, self.CELL // self.SLICE, ceil_mode=True)
        sums, colours, count, lightness_sum = cells.split((2, 2, 1, 1), dim=1)
        tents = self.tents(lightness_sum / count.clamp(min=1e-12))  # each cell's hints go to their lightness bins
        grid = tents.unsqueeze(2) * torch.cat((sums, count), dim=1).unsqueeze(1)  # (N, BINS, 3, gh, gw)
        grid = torch.cat((grid, grid.sum(1, keepdim=True)), dim=1)  # and one more bin: the hints of any lightness
        rows, columns, decays = self.windows(*grid.shape[-2:], grid.device)
        radii = len(self.RADII)
        sums, weights = windowed(grid, rows[:radii], columns[:radii]).split((2, 1), dim=3)
        evidence = 1 - torch.exp(weights * decays)  # decays: -CONFIDENCE_GAIN x the window's pixels
        near_weighted, near_weights = windowed(grid[:, :, 2:], rows[radii:], columns[radii:]).chunk(2, dim=2)
        nearness = near_weighted / near_weights.clamp(min=1e-12)  # of the hinted pixels counted in `grid`
        levels = Level(sums / weights.clamp(min=1e-12), evidence * nearness)
        like_lightness = Level(*(each[:, : self.BINS] for each in levels))
        any_lightness = Level(*(each[:, self.BINS :, : self.ANY_LIGHTNESS] for each in levels))
        radius = self.RADII.index(self.COLOUR_RADIUS)
        window = slice(radius, radius + 1)  # that radius, its dimension kept
        colour_grid = tents.unsqueeze(2) * colours.unsqueeze(1)  # the hints' own colours, binned by their lightness
        colour_sums = windowed(colour_grid, rows[window], columns[window])
        colour_means = colour_sums / weights[:, : self.BINS, window].clamp(min=1e-12)
        colour = Level(colour_means, like_lightness.confidences[:, :, window])  # with that window's confidence
        return (like_lightness, any_lightness, colour), self.palette(colour_grid, grid[:, : self.BINS, 2])

    def strength(
        self, hint_sums: torch.Tensor, mask: torch.Tensor, ab_eighth: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """Each photo's factor (N, 1, 1, 1) on the network's colours (ab - 0.5), given at H/8 the hints' a,b summed
        over each pixel's hinted share (N, 2, h, w, in the hint channels' scale), that share (N, 1, h, w) and the
        network's ab: the factor in [0, 1] that brings the network's colours at the hints nearest the hints' own (least
        squares), where the hints lie across the photo (`across`, as for the palette), else 1; 1 while the
        propagation's `scale` is 0. Hints that say the colours are grayer than the network's, or of other hues, all
        over the photo, take colour out of it beyond their reach too: a gray car on a gray street no longer keeps the
        network's tint between the hints."""
        hinted = (ab_eighth - 0.5) * mask
        prior = self.STRENGTH_PRIOR**2 * mask.square().sum((1, 2, 3))  # as if the network's colours had agreed
        agreement, power = (hint_sums / 2 * hinted).sum((1, 2, 3)) + prior, hinted.square().sum((1, 2, 3)) + prior
        fit = agreement / power.clamp(min=1e-12)  # 0, not NaN, for a photo without hints in a batch with some
        fit = fit.detach()  # a statistic of the photo: in training, 1 / power would scale the gradients up to 1e7
        sure = self.across(mask[:, 0]) * scale
        return (1 - sure * (1 - fit.clamp(0, 1))).view(-1, 1, 1, 1)

    def palette(self, colour_grid: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(N, BINS, 3): each lightness bin's mean hint colour over the whole photo times its confidence, and that
        confidence, given the grid of the hints' colours (N, BINS, 2, gh, gw) and of their counts (N, BINS, gh, gw):
        it grows with the share of the photo that the bin's hints cover (PALETTE_HALF) and is zero unless they lie
        spread across the photo (PALETTE_SPREAD): one stroke's colour stays near it."""
        shares = counts.mean((-2, -1))
        colours = colour_grid.mean((-2, -1)) / shares.clamp(min=1e-12).unsqueeze(-1)
        confidence = (shares / (shares + self.PALETTE_HALF) * self.across(counts)).unsqueeze(-1)
        return torch.cat((colours * confidence, confidence), dim=-1)

    def across(self, counts: torch.Tensor) -> torch.Tensor:
        """How surely hints counted so (..., h, w) lie across the photo, in [0, 1]: 0 unless the variance of their
        positions (in sides squared, summed over the two axes) is above PALETTE_SPREAD, 1 from twice that."""
        spread = positional_variance(counts.sum(-1)) + positional_variance(counts.sum(-2))
        return (spread / self.PALETTE_SPREAD - 1).clamp(0, 1)

    def windows(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The `window_matrices` of a grid of that size, and each window's -CONFIDENCE_GAIN x its pixels at H/2 (R,
        1, 1, 1): made once for the last grid size seen (a video's frames, a photo colorized again with new hints), and
        again outside inference mode (tensors made in it cannot be saved for a backward pass)."""
        key = (height, width, device, torch.is_inference_mode_enabled())
        windows = self._windows.get(key)
        if windows is None:
            radii = torch.tensor(self.RADII, device=device)
            decays = -self.CONFIDENCE_GAIN * ((2 * radii + 1) * self.CELL / 2).square().view(-1, 1, 1, 1)
            windows = window_matrices(height, radii), window_matrices(width, radii), decays
            self._windows = {key: windows}
        return windows

    def forward(self, ab: torch.Tensor, features: torch.Tensor, hints: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
        """`ab` (N, 2, h, w, the sigmoid's output) moved toward the hints (N, 3, 2h, 2w) given the network input `l`
        (N, 1, 2h, 2w), in float32."""
        with torch.autocast(ab.device.type, enabled=False):
            ab = ab.float().contiguous()  # channels-last ab (int8, oneDNN) pools and adds 3x slower
            hint_sums, mask = block_means(hints.float(), self.SLICE).split((2, 1), dim=1)
            lightness = block_means(l.float(), self.SLICE)
            # (hint + 1) / 2: the hints' colours in the sigmoid's range, summed over each pixel's hinted share
            colour_sums = (hint_sums + mask) / 2
            ab_eighth = block_means(ab, self.SLICE // 2)
            scale = self.scale.float().clamp(0, 1)
            strength = self.strength(hint_sums, mask, ab_eighth, scale)
            ab_eighth = torch.addcmul(ab_eighth, ab_eighth - 0.5, strength - 1)  # (ab - 0.5) strength + 0.5
            residual_sums = colour_sums - ab_eighth * mask  # minus ab: what the output misses
            tents = self.tents(lightness)
            groups, palette = self.spread(residual_sums, colour_sums, mask, lightness)
            cells = F.avg_pool2d(features.float(), self.CELL // 2, ceil_mode=True)
            gates = scale * self.gate_values(cells, groups, palette, tents)
            level_shifts, level_weights = [], []
            level_gates = gates[:, None, :-1, None].split([group.shifts.shape[2] for group in groups], dim=2)
            for group, group_gates in zip(groups, level_gates, strict=True):
                level_shifts += group.shifts.unbind(2)
                level_weights += (group_gates * group.confidences).unbind(2)
            shift, radii = torch.zeros_like(level_shifts[0]), len(self.RADII)
            for level in (*range(radii, radii + self.ANY_LIGHTNESS), *range(radii)):  # any lightness, then like
                shift = torch.lerp(shift, level_shifts[level], level_weights[level])
            colour_weight = level_weights[-1]  # then toward the hints' colours (premultiplied: slicing is linear)
            sliceable = torch.cat((shift, colour_weight * level_shifts[-1], colour_weight), dim=2)
            many_channels = sliceable.flatten(1, 2).contiguous(memory_format=torch.channels_last)  # upsampled 3x faster
            sliced = F.interpolate(many_channels, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
            bins, upper_share = self.bin_pairs(lightness)
            shift, colour_part = slice_bins(sliced.unflatten(1, (self.BINS, 5)), bins, upper_share).split((2, 3), 1)
            # the palette, sliced as the levels are (its gate bilinear from the cells, then by the lightness), moves
            # the output at H/8 toward its colour
            palette_gate = F.interpolate(gates[:, -1:], size=lightness.shape[-2:], mode="bilinear", align_corners=False)
            toward, sure = slice_bins(palette[..., None, None], bins, upper_share).split((2, 1), dim=1)
            shift = shift + palette_gate * (toward - sure * (ab_eighth + shift))
            return self.blend(ab, shift, colour_part, strength)

    def bin_pairs(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For L (N, 1, h, w) in [0, 1], the lower of the two lightness bins whose tents hold each pixel (N, 1, h, w,
        in 0 to BINS - 2) and the upper one's share (N, 1, h, w): slicing by them is slicing by the `tents`."""
        position = lightness.clamp(0, 1) * (self.BINS - 1)
        lower = position.floor().clamp(max=self.BINS - 2)
        return lower.long(), position - lower

    def blend(
        self, ab: torch.Tensor, shift: torch.Tensor, colour_part: torch.Tensor, strength: torch.Tensor
    ) -> torch.Tensor:
        """The output at H/2: the network's `ab` (N, 2, h, w) times the `strength` (as in `forward`), plus the
        `shift` at H/8, then blended toward the colour level's colour (`colour_part` at H/8: that colour times its
        weight w, and w) by w, the chroma times 1 + COLOUR_GAIN w. That is affine in ab, A ab + B: A and B are made at
        H/8 and upsampled, so that H/2 sees 3 channels and one product (at most 3 ab units from upsampling each)."""
        weighted_colour, weight = colour_part.split((2, 1), dim=1)
        keep, gain = 1 - weight, 1 + self.COLOUR_GAIN * weight
        factor = keep * gain  # on (ab - 0.5) strength + 0.5
        offset = (shift * keep + weighted_colour - 0.5) * gain + 0.5
        coefficients = torch.cat((factor * strength, offset + factor * (1 - strength) * 0.5), dim=1)
        factor, offset = F.interpolate(coefficients, size=ab.shape[-2:], mode="bilinear", align_corners=False).split(
            (1, 2), dim=1
        )
        return torch.addcmul(offset, factor, ab).clamp_(0, 1)

    def gate_values(
        self, cells: torch.Tensor, groups: tuple[Level, ...], palette: torch.Tensor, tents: torch.Tensor
    ) -> torch.Tensor:
        """Each level's gate in (0, 1) per grid cell (N, RADII + ANY_LIGHTNESS + 2, gh, gw: the palette's last), from
        the network's features pooled to the cells and the levels (`spread`) and palette averaged over the cell's
        lightness bins; in float32 whatever the weights are stored in."""
        occupancy = F.avg_pool2d(tents, self.CELL // self.SLICE, ceil_mode=True)  # each bin's share of the cell
        summary = torch.cat([self.bin_average(group, occupancy) for group in groups], dim=1).flatten(1, 2)
        palette_summary = torch.einsum("nbhw,nbc->nchw", occupancy, palette)
        gate_input = torch.cat((cells, summary, palette_summary), dim=1)
        gate_input = gate_input.contiguous(memory_format=torch.channels_last)  # 2x faster
        hidden = F.conv2d(gate_input, self.gate_hidden.weight.float(), self.gate_hidden.bias.float(), padding=1)
        return F.conv2d(hidden.relu(), self.gates.weight.float(), self.gates.bias.float(), padding=1).sigmoid()

    @staticmethod
    def bin_average(group: Level, occupancy: torch.Tensor) -> torch.Tensor:
        """A group of levels' shifts and confidences averaged over each cell's lightness bins (N, levels, 3, gh, gw),
        given each bin's share of the cell (N, BINS, gh, gw): the group's own where it has one bin for all (the
        shares sum to 1)."""
        if group.shifts.shape[1] == 1:
            return torch.cat(group, dim=3)[:, 0]
        return torch.cat([(occupancy[:, :, None, None] * each).sum(1) for each in group], dim=2)


class ColorizationNetwork(nn.Module):
    """Colorization network: convs and nearest upsampling to a,b through a sigmoid, at H/2 (paper 3.1, Table 1); with
    `hint_propagation`, what the a,b still miss at the hints is spread over their regions (`HintPropagation`)."""

    def __init__(self, width: float, hint_propagation: bool = False):
        super().__init__()
        c = lambda paper_channels: channels(paper_channels, width)  # noqa: E731
        self.layers = nn.Sequential(
            conv_bn_relu(c(256), c(128)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_bn_relu(c(128), c(64)),
            conv_bn_relu(c(64), c(64)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_bn_relu(c(64), c(32)),
            nn.Conv2d(c(32), 2, 3, 1, 1),
            nn.Sigmoid(),
        )
        self.propagation = HintPropagation(c(32)) if hint_propagation else None

    def forward(self, fused: torch.Tensor, l: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """Sigmoid a,b at H/2 from the fused features, given the network input `l` (N, 1, H, W) and hints or None."""
        if self.propagation is None or hints is None:
            return self.layers(fused)
        features = self.layers[:-2](fused)
        ab = self.layers[-1](self.layers[-2](features))
        return self.propagation(ab, features, hints, l).to(ab.dtype)


def mix_global(null: torch.Tensor, features: torch.Tensor, use_global: bool, strength: float) -> torch.Tensor:
    """g_null + strength * (g - g_null); the null vector alone when `use_global` is False (paper 4.4)."""
    null = null.expand_as(features)
    if not use_global:
        return null
    return null + strength * (features - null)


HUB_LOADING_OPTIONS = {"force_download", "token", "cache_dir", "local_files_only", "revision", "map_location", "strict"}


def check_loading_options(options: dict, config_names) -> None:
    """TypeError or ValueError for `from_pretrained` options that it does not take (they failed inside the model's
    constructor, reported as an invalid model) or that it cannot honour."""
    unknown = set(options) - HUB_LOADING_OPTIONS - set(config_names)
    if unknown:
        raise TypeError(f"from_pretrained() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    if options.get("strict", True) is not True:
        raise ValueError("from_pretrained(strict=False) is not supported: letcolor's weights are loaded strictly")
    if "map_location" in options:  # (a bad one was reported as an invalid model, after loading it)
        try:
            device = torch.device(options["map_location"])
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"map_location: {error}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"map_location={options['map_location']!r}: CUDA is not available here")


def check_config_file(path: Path) -> None:
    """InvalidModelError for a model directory's config.json that is missing or not a JSON object."""
    if not path.is_file():
        raise InvalidModelError(f"{path.parent} has no {CONFIG_NAME}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidModelError(f"{path}: not a readable JSON file ({error})") from error
    if problem := not_an_object(config):
        raise InvalidModelError(f"{path} {problem}")


def not_an_object(config) -> str | None:
    """What is wrong with a config.json that holds `config`, parsed: None for a JSON object."""
    if isinstance(config, dict):
        return None
    return f"must be a JSON object of the model's settings, not a {type(config).__name__}"


def fetched_config_problem(model_id: str, options: dict) -> str | None:
    """`not_an_object` of a Hub model's config.json as fetched to the cache (the mixin fails on a list with a bare
    "'list' object has no attribute 'items'"); None where it is an object, or was not fetched, or is not JSON (the
    mixin's own error says so)."""
    try:
        path = hf_hub_download(
            model_id,
            CONFIG_NAME,
            revision=options.get("revision"),
            cache_dir=options.get("cache_dir"),
            local_files_only=True,
        )
        return not_an_object(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError):  # (not in the cache: LocalEntryNotFoundError is both)
        return None


def is_local_path(name: str) -> bool:
    """Whether a model's name can only be a path (absolute, ./ or ../, ~, a trailing slash, more than one slash), never
    a Hub id (owner/name)."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(("/", "\\")) or name.count("/") > 1


class LetThereBeColor(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="letcolor",
    tags=["image-colorization", "let-there-be-color"],
    pipeline_tag="image-to-image",
    license="mit",
    repo_url="https://github.com/letcolor/letcolor",
    paper_url="https://doi.org/10.1145/2897824.2925974",
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """The whole network (paper Fig. 2). Its `__init__` arguments are the model's config.

    Args:
        num_classes: scene classes of the classification head (365 for Places365).
        class_names: their names, in label order (empty if unknown).
        width: channel width multiplier; 1.0 is the paper's network.
        hint_channels: 3 for a model whose low-level features take local colour hints beside L (a, b and mask), 0
            for none (the paper).
        hint_propagation: spread the hints' colours over the output (`HintPropagation`); a model takes hints if it
            has hint_channels, hint_propagation or both.
    """

    def __init__(
        self,
        num_classes: int = 365,
        class_names: list[str] | None = None,
        width: float = 1.0,
        hint_channels: int = 0,
        hint_propagation: bool = False,
    ):
        super().__init__()
        class_names = class_names or []
        check_config(num_classes, class_names, width, hint_channels, hint_propagation)
        class_names = list(class_names)
        self.num_classes, self.class_names, self.width = num_classes, class_names, width
        self.hint_channels, self.hint_propagation = hint_channels, hint_propagation
        self.low_level = LowLevelFeatures(width, hint_channels)
        self.mid_level = MidLevelFeatures(width)
        self.global_level = GlobalFeatures(width, num_classes)
        self.fusion = FusionLayer(width)
        self.colorization = ColorizationNetwork(width, hint_propagation)
        # The "no global information" vector (paper 4.4 without a second network): trained by global-feature dropout.
        self.null_global = nn.Parameter(torch.zeros(channels(256, width)))

    def global_features(self, l224: torch.Tensor) -> GlobalOutput:
        """Scene vector and class logits from the network input of a 224x224 image, shape (N, 1, 224, 224)."""
        if l224.shape[-2:] != (GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE):
            raise ValueError(f"the global branch takes 224x224 inputs, got {tuple(l224.shape[-2:])}")
        return self.global_level(self.low_level(l224))

    def low_level_features(self, l: torch.Tensor, hints: torch.Tensor | None) -> torch.Tensor:
        """Low-level features of L (N, 1, H, W) and, in a model with hint channels, the hints (N, 3, H, W) or None
        for none. ValueError for hints given to a model that takes none, or of the wrong shape."""
        if hints is not None:
            if not self.takes_hints:
                raise ValueError(NO_HINTS_MESSAGE)
            if hints.shape != (l.shape[0], HINT_CHANNELS, *l.shape[-2:]):
                raise ValueError(f"hints of shape {tuple(hints.shape)} for an input of shape {tuple(l.shape)}")
        return self.low_level(l, hints if self.hint_channels else None)

    @property
    def takes_hints(self) -> bool:
        return bool(self.hint_channels or self.hint_propagation)

    def mix_global(self, features: torch.Tensor, use_global: bool = True, strength: float = 1.0) -> torch.Tensor:
        return mix_global(self.null_global.to(features.dtype), features, use_global, strength)

    def colorize(self, l: torch.Tensor, global_vector: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """Sigmoid ab at H/2 for the network input `l` (N, 1, H, W), H and W multiples of 8, given global vectors
        and, for a model with hints, the hint channels (N, 3, H, W) (None: no hints)."""
        return self.colorize_low(self.low_level_features(l, hints), global_vector, l, hints)

    def colorize_low(
        self, low: torch.Tensor, global_vector: torch.Tensor, l: torch.Tensor, hints: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.colorization(self.fusion(self.mid_level(low), global_vector), l, hints)

    def forward(
        self,
        l: torch.Tensor,
        l224: torch.Tensor | None = None,
        global_dropout: float = 0.0,
        hints: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (sigmoid ab at H/2, scene logits). Without `l224`, `l` must be 224x224 and, when there
        are no hints, the low-level features are computed once for both paths (paper 3.4).

        `global_dropout` replaces each sample's global vector by the null vector with that probability."""
        low = self.low_level_features(l, hints)
        if l224 is None:
            if l.shape[-2:] != (GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE):
                raise ValueError("pass l224 when l is not 224x224")
            glob = self.global_level(low) if hints is None or not self.hint_channels else self.global_features(l)
        else:
            glob = self.global_features(l224)
        vector = glob.features
        if global_dropout > 0:
            drop = torch.rand(vector.shape[0], 1, device=vector.device) < global_dropout
            vector = torch.where(drop, self.null_global.to(vector.dtype).expand_as(vector), vector)
        return self.colorize_low(low, vector, l, hints), glob.scene_logits

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> "LetThereBeColor":
        """A saved model (local directory or Hub id). Raises InvalidModelError for anything that is not a valid
        letcolor model, ModelNotFoundError for a directory or Hub id that cannot be found (it raised the Hub's or the
        OS's error, which `except ModelError` missed)."""
        check_loading_options(kwargs, cls._hub_mixin_init_parameters)
        if str(pretrained_model_name_or_path).startswith("~"):  # a shell leaves a quoted or --model=~/x unexpanded
            try:
                pretrained_model_name_or_path = Path(pretrained_model_name_or_path).expanduser()
            except RuntimeError as error:  # ~user of no such user
                raise ModelNotFoundError(f"{pretrained_model_name_or_path}: {error}") from error
        directory = Path(pretrained_model_name_or_path)
        if directory.is_dir():
            check_config_file(directory / CONFIG_NAME)
        if directory.exists() and not directory.is_dir():
            raise InvalidModelError(f"{directory} is a file, not a model directory")
        local = isinstance(pretrained_model_name_or_path, Path) or is_local_path(str(pretrained_model_name_or_path))
        if not directory.exists() and local:
            raise ModelNotFoundError(f"{directory}: no such model directory")  # not asked of the Hub: not an id
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (HFValidationError, FileNotFoundError, EntryNotFoundError, HfHubHTTPError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelNotFoundError(
                f"{pretrained_model_name_or_path}: not a model directory, nor a Hub model id that can be fetched or is "
                f"cached ({type(error).__name__}: {reason})"
            ) from error
        except (ValueError, TypeError, AttributeError, SafetensorError, RuntimeError) as error:
            # ValueError includes a config.json that is not JSON; RuntimeError, weights that do not fit the config.
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            name = pretrained_model_name_or_path
            if not directory.is_dir() and (problem := fetched_config_problem(str(name), kwargs)):
                reason = f"{CONFIG_NAME} {problem}"
            raise InvalidModelError(f"{name}: not a valid letcolor model: {reason}") from error

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,  # always: check_loading_options refuses False
        config: dict | None = None,
        **model_kwargs,
    ) -> "LetThereBeColor":
        """Safetensors only (never a pickle), loaded strictly: a mismatched checkpoint or config is an error."""
        unknown = set(config or {}) - set(cls._hub_mixin_init_parameters)
        if unknown:
            raise InvalidModelError(f"config.json has unknown keys {sorted(unknown)}")
        if Path(model_id).is_dir():
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():  # something is there: not a model
                raise InvalidModelError(f"it has no {WEIGHTS_NAME} (letcolor reads safetensors weights only)")
        else:
            try:
                weights = hf_hub_download(
                    repo_id=model_id,
                    filename=WEIGHTS_NAME,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            except RemoteEntryNotFoundError as error:  # the repo is there (its config too): not a model
                raise InvalidModelError(f"it has no {WEIGHTS_NAME}") from error
        if config is None:  # the mixin goes on without one that the Hub does not have (a directory's is checked first)
            raise InvalidModelError(f"it has no {CONFIG_NAME} (or it could not be fetched)")
        with torch.device("meta"):  # shapes only: a config that does not fit the weights allocates nothing
            check_stored_tensors(cls(**model_kwargs), str(weights))
        model = cls(**model_kwargs)
        load_model(model, str(weights), strict=True)
        check_values(model)
        return model.to(map_location).eval()
