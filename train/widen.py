"""Warm start of a wider network (or one with more classes) from a saved one, computing the same function.

Each saved tensor goes into the leading block of the wider one. The new input channels of every saved output start
with zero weights, so nothing the saved network computed changes; the new output channels keep their fresh random
weights, so they have something to learn from. A classifier with more classes gets its new rows the same way.
"""

import torch

from letcolor.model import LetThereBeColor

FLATTENED_FC = "global_level.fc.0.weight"  # its inputs are the global convs' channels times 7 x 7 positions
FUSION = "fusion.conv.weight"  # its inputs are the mid-level channels, then the global vector's


def embed(saved: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """`fresh` with `saved` in its leading block, and the saved outputs' weights on the new inputs set to zero."""
    if saved.shape == fresh.shape:
        return saved.clone()
    if saved.dim() != fresh.dim() or any(old > new for old, new in zip(saved.shape, fresh.shape, strict=True)):
        raise ValueError(f"a tensor of shape {tuple(saved.shape)} does not fit into {tuple(fresh.shape)}")
    widened = fresh.detach().clone().to(saved.dtype)
    widened[tuple(slice(0, size) for size in saved.shape)] = saved
    if widened.dim() > 1:
        widened[: saved.shape[0], saved.shape[1] :] = 0
    return widened


def widened_weights(saved: LetThereBeColor, fresh: LetThereBeColor) -> dict[str, torch.Tensor]:
    """A state dict for `fresh` (at least as wide, at least as many classes) that computes what `saved` computes."""
    saved_weights, fresh_weights = saved.state_dict(), fresh.state_dict()
    weights = {name: embed(saved_weights[name], tensor) for name, tensor in fresh_weights.items()}
    positions = fresh_weights[FLATTENED_FC].shape[1] // fresh.global_level.convs[-1][0].out_channels
    saved_fc, fresh_fc = saved_weights[FLATTENED_FC], fresh_weights[FLATTENED_FC]
    per_position = embed(saved_fc.unflatten(1, (-1, positions)), fresh_fc.unflatten(1, (-1, positions)))
    weights[FLATTENED_FC] = per_position.flatten(1)
    mid_and_global = zip(saved_weights[FUSION].chunk(2, dim=1), fresh_weights[FUSION].chunk(2, dim=1), strict=True)
    weights[FUSION] = torch.cat([embed(old, new) for old, new in mid_and_global], dim=1)
    return weights
