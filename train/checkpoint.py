"""Training checkpoints in one safetensors file: tensors (model, optimizer state, RNG states) as tensors and
everything else as JSON in the file's metadata, so resuming never unpickles anything.

Writes are atomic: a temp file in the same directory, fsync, then rename over the previous checkpoint, so a
process killed mid-write leaves the previous checkpoint intact."""

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from train.average import WeightAverage

CHECKPOINT_NAME = "checkpoint.safetensors"
STATE_KEY = "letcolor_training_state"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, truncated, or of another model or optimizer."""


def optimizer_tensors_and_json(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_from(tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    state: dict[int, dict] = {int(index): dict(values) for index, values in saved["scalars"].items()}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def rng_tensors_and_json() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    python_version, python_state, gauss = random.getstate()
    return tensors, {
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "python": [python_version, list(python_state), gauss],
    }


def restore_rng(tensors: dict[str, torch.Tensor], saved: dict) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    if torch.cuda.is_available() and "rng/cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    kind, keys, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    python_version, python_state, gauss = saved["python"]
    random.setstate((python_version, tuple(python_state), gauss))


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict,
    average: WeightAverage | None = None,
) -> Path:
    """Write model, optimizer, scaler, RNG, the weight average if any and `state` (step, data positions, ... all
    JSON) atomically."""
    optimizer_tensors, optimizer_json = optimizer_tensors_and_json(optimizer)
    rng_tensors, rng_json = rng_tensors_and_json()
    tensors = {f"model/{key}": value for key, value in model.state_dict().items()}
    if average:
        tensors |= {f"average/{key}": value for key, value in average.model.state_dict().items()}
    tensors |= optimizer_tensors | rng_tensors
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    saved = {**state, "optimizer": optimizer_json, "rng": rng_json, "scaler": scaler.state_dict()}
    path = directory / CHECKPOINT_NAME
    temporary = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    save_file(tensors, str(temporary), metadata={STATE_KEY: json.dumps(saved)})
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return path


# what a resumed run must repeat: its state holds them (the optimizer's, the data streams' positions in the split)
RESUMED_AS_SAVED = ("optimizer", "dataset", "split", "hint_layer_lr", "hint_layers_only", "label_column")
# what a resumed run may change without a word: how long it runs, what it logs and writes
RUN_CONTROLS = {"resume", "steps", "max_minutes", "log_every", "val_every", "checkpoint_every", "workers", "save_dtype"}


def saved_state(path: Path) -> dict:
    """The JSON state a checkpoint was saved with (step, args, ...); CheckpointError where it cannot be read."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return json.loads((file.metadata() or {})[STATE_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise CheckpointError(f"cannot resume from {path}: {error}") from error


def check_resumable(path: Path, args) -> list[str]:
    """CheckpointError where the run's network would have another shape (`check_same_network`), or where its
    RESUMED_AS_SAVED settings differ from those the checkpoint was made with (another optimizer's state crashed the
    first step; another dataset count, the data stream; another hint-layer multiplier was silently replaced by the
    saved one; another label column, the classifier's size). Returns the other settings that differ, beyond
    RUN_CONTROLS, --push-to-hub and the command line itself, as "--name SAVED -> NOW": allowed (a lower --lr to finish
    a run), but no longer the uninterrupted run that the model card's command describes."""
    saved = saved_state(path).get("args", {})
    check_same_network(path, saved, vars(args))
    changed = [name for name in RESUMED_AS_SAVED if name in saved and not same_setting(name, saved[name], args)]
    if changed:
        made = ", ".join(as_flag(name, saved[name]) for name in changed)
        raise CheckpointError(f"cannot resume from {path}: it was made with {made}; resume with the same")
    now = json.loads(json.dumps(vars(args)))  # as the checkpoint holds them: tuples as lists
    others = sorted(set(saved) & set(now) - RUN_CONTROLS - set(RESUMED_AS_SAVED) - {"push_to_hub", "command", "output"})
    changed = [
        f"--{name.replace('_', '-')} {saved[name]} -> {now[name]}" for name in others if saved[name] != now[name]
    ]
    if now.get("lr_schedule") == "linear" and saved.get("steps", now["steps"]) != now["steps"]:
        changed.append(f"--steps {saved['steps']} -> {now['steps']} (where the linear schedule reaches 0)")
    return changed


def as_flag(name: str, value) -> str:
    """A setting as its flag: "--optimizer adamw", "--hint-layers-only", "no --hint-layers-only"."""
    flag = f"--{name.replace('_', '-')}"
    return flag if value is True else f"no {flag}" if value is False else f"{flag} {value}"


def network_shape(args: dict) -> dict:
    """The settings that shape the network, by flag (and the classes, by RESUMED_AS_SAVED's label column)."""
    hints = bool(args.get("hints"))
    return {
        "--width": args.get("width"),
        "--hint-conv": "on" if hints and args.get("hint_conv", True) else "off",
        "--hint-propagation": "on" if hints and args.get("hint_propagation") else "off",
    }


def check_same_network(path: Path, saved: dict, now: dict) -> None:
    """CheckpointError where the run's network would have another shape than the checkpoint's (torch's size
    mismatches said it in a 300-character list of tensors)."""
    made, wanted = network_shape(saved), network_shape(now)
    if "width" in saved and made != wanted:
        differ = ", ".join(f"{flag} {made[flag]} (now {wanted[flag]})" for flag in made if made[flag] != wanted[flag])
        raise CheckpointError(f"cannot resume from {path}: its network was made with {differ}; resume with the same")


def same_setting(name: str, saved, args) -> bool:
    """Whether the run's setting `name` is the `saved` one; datasets that are local folders compare by their real
    paths (data/, ./data and /abs/data are one)."""
    if name == "dataset":
        return list(map(dataset_key, saved)) == list(map(dataset_key, args.dataset))
    return saved == getattr(args, name)


def dataset_key(dataset: str) -> str:
    return str(Path(dataset).resolve()) if Path(dataset).exists() else dataset


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    average: WeightAverage | None = None,
) -> dict:
    """Restore what `save_checkpoint` wrote into the given objects (and the RNGs; the weight average where both
    the checkpoint and `average` have one); returns the JSON state.
    Raises CheckpointError, with the reason, for a checkpoint that does not fit them or cannot be read."""
    try:
        return restore_checkpoint(path, model, optimizer, scaler, average)
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise CheckpointError(f"cannot resume from {path}: {reason}") from error


def restore_checkpoint(path: Path, model, optimizer, scaler, average) -> dict:
    with safe_open(str(path), framework="pt", device="cpu") as file:
        saved = json.loads((file.metadata() or {})[STATE_KEY])
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    model.load_state_dict({key[6:]: value for key, value in tensors.items() if key.startswith("model/")})
    averaged = {key[8:]: value for key, value in tensors.items() if key.startswith("average/")}
    if average and averaged:
        average.model.load_state_dict(averaged)
    optimizer_tensors = {key: value for key, value in tensors.items() if key.startswith("optimizer/")}
    optimizer.load_state_dict(optimizer_state_from(optimizer_tensors, saved.pop("optimizer")))
    scaler_state = saved.pop("scaler")
    if scaler_state:  # empty from a run without fp16: this one's scaler starts fresh
        scaler.load_state_dict(scaler_state)
    restore_rng({key: value for key, value in tensors.items() if key.startswith("rng/")}, saved.pop("rng"))
    return saved
