"""The cache of what letcolor derives once from a model's weights and keeps (ONNX graphs, int8 calibrations):
`$LETCOLOR_CACHE`, else `$XDG_CACHE_HOME/letcolor` or `~/.cache/letcolor`, one folder per kind, entries named by a
SHA-256 of the weights."""

import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path

import torch

from letcolor.model import LetThereBeColor

CACHE_ENV_VAR = "LETCOLOR_CACHE"
# The model's config: its __init__ arguments, each kept on the model under its own name.
CONFIG_NAMES = [name for name in inspect.signature(LetThereBeColor.__init__).parameters if name != "self"]


def cache_dir(kind: str) -> Path:
    """The folder of one kind of entries: under $LETCOLOR_CACHE, else $XDG_CACHE_HOME/letcolor, else
    ~/.cache/letcolor, else (a user without a home directory, as a container run under a bare user id) the temporary
    folder's letcolor-cache."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]) / kind
    if os.path.isabs(os.environ.get("XDG_CACHE_HOME", "")):  # the XDG rule: a relative path is ignored
        return Path(os.environ["XDG_CACHE_HOME"]) / "letcolor" / kind
    try:
        return Path.home() / ".cache" / "letcolor" / kind
    except RuntimeError:  # no HOME and no password entry to find one in
        return Path(tempfile.gettempdir()) / "letcolor-cache" / kind


def weights_key(model: LetThereBeColor, version: object) -> str:
    """SHA-256 of the weights (names, shapes, dtypes, bytes), the config and `version` (JSON: how what is cached is
    made, so that a change there makes new entries)."""
    config = [getattr(model, name) for name in CONFIG_NAMES]
    digest = hashlib.sha256(json.dumps([version, config]).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
