"""Edge-aware colour refinement: the guided filter's box means and behaviour at edges and on blotches, and the
pipeline's `refine` option on real photos."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import EXAMPLES

from letcolor import Colorizer
from letcolor.refine import box_mean, guided_filter, refine_ab


@pytest.mark.parametrize("radius", [1, 4, 30])
def test_box_means_are_window_means_clipped_at_the_borders(radius):
    x = torch.rand(2, 3, 37, 53, dtype=torch.float64)
    kernel = torch.ones((1, 1, 2 * radius + 1, 2 * radius + 1), dtype=torch.float64)
    sums = F.conv2d(x.flatten(0, 1)[:, None], kernel, padding=radius).view_as(x)
    counts = F.conv2d(torch.ones_like(x[:1, :1]), kernel, padding=radius)
    assert torch.allclose(box_mean(x, radius), sums / counts)


def test_colour_follows_the_guides_edges_and_a_blotch_in_a_flat_region_merges():
    guide = torch.full((1, 1, 64, 64), 0.3)
    guide[..., 32:] = 0.8  # a lightness edge down the middle
    ab = torch.zeros((1, 2, 64, 64))
    ab[:, 0, :, 32:] = 40.0  # the colour changes at that edge...
    ab[:, 1, 10:16, 8:14] = 30.0  # ... and a blotch of colour where L is flat
    refined = guided_filter(guide, ab, radius=8)
    assert refined[0, 0, :, 28:32].abs().max() < 1 and (refined[0, 0, :, 32:36] - 40).abs().max() < 1
    assert refined[0, 1, 10:16, 8:14].max() < 0.4 * 30


def test_the_pipelines_refinement_keeps_a_colour_edge_where_the_network_input_has_a_lightness_edge():
    """refine_ab guides by the network input (at twice ab's size): a colour step on a lightness edge survives (a
    blur that ignored the guide would halve it), one where the lightness is flat is smoothed."""
    network_input = torch.full((1, 1, 256, 256), 0.3)
    network_input[..., 128:] = 0.8
    ab = torch.zeros((1, 2, 128, 128))
    ab[:, 0, :, 64:] = 40.0  # on the lightness edge
    ab[:, 1, 64:, :] = 40.0  # across it, where L is flat above and below
    refined = refine_ab(ab, network_input)
    assert (refined[0, 0, :, 64] - refined[0, 0, :, 63]).min() > 0.8 * 40
    assert (refined[0, 1, 64, :] - refined[0, 1, 63, :]).max() < 0.5 * 40


def test_refine_changes_the_colours_not_the_size_or_the_lightness(tiny_model):
    colorizer = Colorizer(tiny_model, "cpu")
    photo = EXAMPLES / "china.jpg"
    plain, refined = colorizer(photo, max_side=256), colorizer(photo, max_side=256, refine=True)
    assert refined.image.size == plain.image.size
    assert not np.array_equal(np.asarray(refined.image), np.asarray(plain.image))
    lightness = [np.asarray(result.image.convert("L"), float) for result in (plain, refined)]
    assert np.abs(lightness[0] - lightness[1]).mean() < 1.5
    with pytest.raises(ValueError, match="refine must be True or False"):
        colorizer(photo, refine="yes")
