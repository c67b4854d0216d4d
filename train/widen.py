"""Warm start of a wider network (or one with more classes) from a saved one, computing the same function.

Each saved tensor goes into the leading block of the wider one. The saved outputs' weights on every new input start
at zero, so nothing the saved network computed changes; the new output channels keep their fresh random weights, so
they have something to learn from. A classifier with more classes gets its new rows the same way, and a layer the
saved network lacks (the conv of hint inputs) starts at zero; a hint propagation keeps its fresh weights, its
scale being zero. A hint propagation saved by an earlier layout with fewer levels (`with_earlier_propagation`) fits
the same way: its gates start theirs, the new levels' gates keep fresh weights.
"""

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from letcolor.model import WEIGHTS_NAME, InvalidModelError, LetThereBeColor, check_values
from letcolor.pipeline import load_model

FLATTENED_FC = "global_level.fc.0.weight"  # its inputs are the global convs' channels times 7 x 7 positions
FUSION = "fusion.conv.weight"  # its inputs are the mid-level channels, then the global vector's
# A hint propagation the saved network lacks keeps its fresh weights: its own scale starts at zero, which keeps the
# output the saved network's, and gates at zero would not learn (a zero hidden layer passes no gradient).
PROPAGATION = "colorization.propagation."
GATE_INPUTS = PROPAGATION + "gate_hidden.weight"  # its inputs are the last features' channels, then the levels'


def embed(saved: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """`fresh` with `saved` in its leading block, and the saved outputs' weights outside that block set to zero."""
    if saved.shape == fresh.shape:
        return saved.clone()
    if saved.dim() != fresh.dim() or any(old > new for old, new in zip(saved.shape, fresh.shape, strict=True)):
        raise ValueError(f"a tensor of shape {tuple(saved.shape)} does not fit into {tuple(fresh.shape)}")
    widened = fresh.detach().to(saved.dtype, copy=True)
    widened[: saved.shape[0]] = 0
    widened[tuple(slice(0, size) for size in saved.shape)] = saved
    return widened


def widened_weights(saved: LetThereBeColor, fresh: LetThereBeColor) -> dict[str, torch.Tensor]:
    """A state dict for `fresh` (at least as wide, at least as many classes) that computes what `saved` computes."""
    positions = fresh.global_level.fc[0].in_features // fresh.global_level.convs[-1][0].out_channels
    input_groups = {FLATTENED_FC: (-1, positions), FUSION: (2, -1)}  # inputs that are not one run of channels
    saved_weights, weights = saved.state_dict(), {}
    for name, tensor in fresh.state_dict().items():
        old, groups = saved_weights.get(name), input_groups.get(name)
        if old is None and name.startswith(PROPAGATION):
            weights[name] = tensor.clone()
        elif old is None:  # a layer the saved network lacks (the hint inputs' conv): it adds nothing at first
            weights[name] = torch.zeros_like(tensor)
        elif groups:
            weights[name] = embed(old.unflatten(1, groups), tensor.unflatten(1, groups)).flatten(1, 2)
        elif name == GATE_INPUTS:
            weights[name] = embed_gate_inputs(old, tensor, levels=fresh.colorization.propagation.gates.out_channels)
        else:
            weights[name] = embed(old, tensor)
    return weights


def embed_gate_inputs(saved: torch.Tensor, fresh: torch.Tensor, levels: int) -> torch.Tensor:
    """`embed` of the propagation's first gate conv, its two runs of inputs each on its own: the features widen, the
    levels' summaries (3 a level) follow them (one block put the saved summaries' weights on new features)."""
    runs = [(saved.shape[1] - 3 * levels, 3 * levels), (fresh.shape[1] - 3 * levels, 3 * levels)]
    parts = zip(saved.split(runs[0], dim=1), fresh.split(runs[1], dim=1), strict=True)
    return torch.cat([embed(old, new) for old, new in parts], dim=1)


def with_earlier_propagation(directory: Path) -> LetThereBeColor:
    """The model saved in `directory` whose hint propagation has fewer levels than this code's (an earlier layout):
    its propagation's weights in the leading blocks of this layout's, as `embed` widens them; every other weight must
    match. InvalidModelError for anything else that does not fit."""
    try:
        model = LetThereBeColor(**json.loads((directory / "config.json").read_text()))
        saved = load_file(directory / WEIGHTS_NAME)
        fresh = model.state_dict()
        if saved.keys() != fresh.keys():
            raise ValueError(f"its weights are not this code's: {sorted(saved.keys() ^ fresh.keys())[:4]}")
        if all(saved[name].shape == tensor.shape for name, tensor in fresh.items()):
            raise ValueError("its hint propagation is of this layout")  # what load_model refused is something else
        if integers := [n for n, t in saved.items() if not t.is_floating_point() and "num_batches" not in n]:
            raise ValueError(f"its weights must be floating point: {integers[0]} is not")
        fitting = {
            name: embed(saved[name], tensor) if name.startswith(PROPAGATION) else saved[name]
            for name, tensor in fresh.items()
        }
        model.load_state_dict(fitting)
        check_values(model)
    except (OSError, TypeError, ValueError, RuntimeError, SafetensorError) as error:
        raise InvalidModelError(
            f"{directory}: not a model whose hint propagation is an earlier layout ({error})"
        ) from error
    return model.eval()


def warm_start_model(name_or_path: str | Path) -> tuple[LetThereBeColor, bool]:
    """`load_model`'s model, or a local one whose hint propagation is of an earlier layout (then True): see
    `with_earlier_propagation`. A model that is neither gets load_model's error."""
    try:
        return load_model(name_or_path), False
    except InvalidModelError as error:
        if Path(name_or_path).is_dir():
            with contextlib.suppress(InvalidModelError):
                return with_earlier_propagation(Path(name_or_path)), True
        raise error
