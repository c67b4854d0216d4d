"""The network as ONNX graphs run by ONNX Runtime: export, a cache keyed by the weights, and the engine.

Two graphs per model: the global branch on (N, 1, 224, 224) inputs, giving the scene vectors and class logits, and
the local path on (N, 1, H, W) inputs with the scene vectors (and, for a model with hints, the hint channels), giving
the sigmoid ab at (N, 2, H/2, W/2); N, H and W are dynamic. A model with hints has a third: its local path without
hint inputs, for photos without hints, which so skip the hint layers' work as they do in torch. They are exported
once per model and kept in the cache (`letcolor.cache`), under the SHA-256 of the weights, the config and
EXPORT_VERSION, with a manifest of the graphs' sizes and hashes written last (`_cached_graphs`).
The engine takes and returns float32 torch tensors, as `letcolor.inference.InferenceNetwork` does.

int8 (`int8=True`): every graph quantized statically by ONNX Runtime (QDQ, weights per channel), calibrated on the
example photos shipped with letcolor; the convolutions that read the inputs and the last one stay in float32, as in
`letcolor.inference.to_bfloat16` and for the same reasons, and so do the hint layers, as in `letcolor.quantized`.
Cached beside the float32 graphs.
"""

import atexit
import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch
from torch import nn

from letcolor import tracing
from letcolor.cache import cache_dir, weights_key
from letcolor.color import HINT_CHANNELS
from letcolor.model import GLOBAL_INPUT_SIZE, NO_HINTS_MESSAGE, GlobalOutput, LetThereBeColor, mix_global

EXPORT_VERSION = 9  # bump when the graphs (their inputs, outputs, layers), the export or the quantization change
# The scene vectors that int8 calibration sees, at each global_strength (0: the null vector alone): calibrated at 1
# only, a vector at 2 was clipped (31 dB from float32 on the historical photos, against 49 at 1).
CALIBRATED_STRENGTHS = (0.0, 1.0, 2.0)
OPSET = 17
GLOBAL_GRAPH, LOCAL_GRAPH, AUTOMATIC_GRAPH = "global.onnx", "colorize.onnx", "colorize_automatic.onnx"
GRAPH_NAMES = (GLOBAL_GRAPH, LOCAL_GRAPH, AUTOMATIC_GRAPH)
MANIFEST = "complete.json"  # an entry's graphs and their sizes, written last
SCRATCH_PREFIX = ".partial-"
STALE_SCRATCH_SECONDS = 3600
_LOGGING_SETTING = threading.Lock()  # `_without_warnings` changes the process's logging for a moment


class _GlobalBranch(nn.Module):
    def __init__(self, model: LetThereBeColor):
        super().__init__()
        self.model = model

    def forward(self, l224: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model.global_features(l224)
        return output.features, output.scene_logits


class _LocalPath(nn.Module):
    def __init__(self, model: LetThereBeColor):
        super().__init__()
        self.model = model

    def forward(self, l: torch.Tensor, vectors: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.colorize(l, vectors, hints)


def export(model: LetThereBeColor, directory: str | Path) -> Path:
    """Writes the model's two graphs into `directory` (created); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).float().eval()  # a trace runs forward passes: never on the caller's model
    l224 = torch.zeros((1, 1, GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE))
    l, vectors = torch.zeros((1, 1, 64, 64)), torch.zeros((1, model.null_global.shape[-1]))
    local_inputs, local_names = (l, vectors), ["l", "vectors"]
    if model.takes_hints:
        local_inputs, local_names = (l, vectors, torch.zeros((1, HINT_CHANNELS, 64, 64))), [*local_names, "hints"]
    spatial = {0: "n", 2: "height", 3: "width"}
    local_axes = {"l": spatial, "vectors": {0: "n"}, "ab": {0: "n", 2: "half_height", 3: "half_width"}}
    if model.takes_hints:
        local_axes["hints"] = spatial
    with tracing.tracing(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _GlobalBranch(model).eval(), (l224,), directory / GLOBAL_GRAPH, input_names=["l224"],
            output_names=["features", "scene_logits"], dynamic_axes={"l224": {0: "n"}, "features": {0: "n"},
            "scene_logits": {0: "n"}}, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
        torch.onnx.export(
            _LocalPath(model).eval(), local_inputs, directory / LOCAL_GRAPH, input_names=local_names,
            output_names=["ab"], dynamic_axes=local_axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
        if model.takes_hints:
            local_axes.pop("hints")
            torch.onnx.export(
                _LocalPath(model).eval(), (l, vectors), directory / AUTOMATIC_GRAPH, input_names=["l", "vectors"],
                output_names=["ab"], dynamic_axes=local_axes, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
    return directory


def graph_names(folder: Path) -> list[str]:
    """The graphs exported into `folder`: the global and local ones, and the automatic one of a model with hints."""
    return [name for name in GRAPH_NAMES if (folder / name).is_file()]


def cached_export(model: LetThereBeColor, cache: Path | None = None) -> Path:
    """The folder of the model's graphs in the cache, exported first if it is not there (`_cached_graphs`)."""
    folder = (cache or cache_dir("onnx")) / weights_key(model, EXPORT_VERSION)
    return _cached_graphs(folder, lambda destination: export(model, destination))


def cached_int8(model: LetThereBeColor, cache: Path | None = None) -> Path:
    """The folder of the model's int8 graphs in the cache, quantized first if it is not there."""
    float_graphs = cached_export(model, cache)
    folder = float_graphs.with_name(f"{float_graphs.name}-int8")
    null = model.null_global.detach().float()
    return _cached_graphs(folder, lambda destination: _quantize(float_graphs, destination, model.takes_hints, null))


def _cached_graphs(folder: Path, make: Callable[[Path], object]) -> Path:
    """`folder` where it holds a whole entry (`_whole`), else made by `make(destination)` in a scratch folder beside
    it and renamed, so that concurrent processes never read half an entry; a broken entry (a graph missing or cut
    short, an interrupted copy) is replaced. Where the cache cannot be written (read-only, full, not a folder), the
    graphs are made for this process only, in a temporary folder, with a warning."""
    if _whole(folder):
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(folder.parent)
        with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=folder.parent) as scratch:
            _put(_made(Path(scratch) / "graphs", make), folder)
    except OSError as error:
        if _whole(folder):
            return folder
        warnings.warn(f"cannot keep ONNX graphs in {folder.parent} ({error}): made for this process only", stacklevel=3)
        private = _process_folder() / folder.name
        return private if _whole(private) else _made(private, make)
    return folder


def _made(destination: Path, make: Callable[[Path], object]) -> Path:
    """`make(destination)`, then the manifest of what it wrote (each graph's size and SHA-256), written last."""
    destination.mkdir(parents=True, exist_ok=True)
    make(destination)
    graphs = {
        name: [(destination / name).stat().st_size, _digest(destination / name)] for name in graph_names(destination)
    }
    (destination / MANIFEST).write_text(json.dumps(graphs))
    return destination


def _whole(folder: Path) -> bool:
    """Whether `folder` holds the global and local graphs and every graph its manifest names, of the size and SHA-256
    it names (a graph's size alone passed one zero-filled by a power cut, or overwritten)."""
    try:
        graphs = json.loads((folder / MANIFEST).read_text())
        if not {GLOBAL_GRAPH, LOCAL_GRAPH} <= graphs.keys():
            return False
        sized = all((folder / name).stat().st_size == size for name, (size, _) in graphs.items())
        return sized and all(_digest(folder / name) == digest for name, (_, digest) in graphs.items())
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _put(made: Path, folder: Path) -> None:
    """Renames `made` to `folder`; a broken entry there is moved aside first, one that another process just made
    whole is kept."""
    try:
        os.replace(made, folder)
        return
    except OSError:
        if _whole(folder):
            return
    broken = folder.with_name(f"{SCRATCH_PREFIX}broken-{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):  # another process moved it first
        os.replace(folder, broken)
    _remove(broken)
    try:
        os.replace(made, folder)
    except OSError:
        if not _whole(folder):
            raise


def _remove_stale_scratch(parent: Path) -> None:
    """Scratch folders (or files) that a killed process left (an export takes seconds: an hour-old one is abandoned)."""
    oldest = time.time() - STALE_SCRATCH_SECONDS
    for scratch in parent.glob(f"{SCRATCH_PREFIX}*"):
        with contextlib.suppress(OSError):
            if scratch.stat().st_mtime < oldest:
                _remove(scratch)


def _remove(path: Path) -> None:
    """A folder and what it holds, or a file (an entry's name taken by a file: rmtree left it)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@functools.cache
def _process_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="letcolor-graphs-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _quantize(float_graphs: Path, destination: Path, takes_hints: bool, null: torch.Tensor) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: list[dict]):
            self.feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    # quantize_static writes a shape-inferred copy beside each graph it reads, under a fixed name: it reads private
    # copies, never the shared float32 entry (two processes quantizing at once deleted each other's copy)
    float_graphs = Path(shutil.copytree(float_graphs, f"{destination}-float32", dirs_exist_ok=True))
    global_feeds, local_feeds = _calibration_feeds(float_graphs, takes_hints, null)
    automatic_feeds = [{"l": feeds["l"], "vectors": feeds["vectors"]} for feeds in local_feeds]
    all_feeds = {GLOBAL_GRAPH: global_feeds, LOCAL_GRAPH: local_feeds, AUTOMATIC_GRAPH: automatic_feeds}
    for name in graph_names(float_graphs):
        feeds = all_feeds[name]
        nodes = onnx.load(str(float_graphs / name)).graph.node
        # as in torch-int8, every node of the hint layers stays in float32: calibrated without hints, the
        # propagation's activations would have a zero range, and the hints would be lost
        hint_nodes = [node.name for node in nodes if "hint_conv" in node.name or "propagation" in node.name]
        convs = [node.name for node in nodes if node.op_type == "Conv" and node.name not in hint_nodes]
        kept = [convs[0], *hint_nodes, *([convs[-1]] if name != GLOBAL_GRAPH else [])]  # the inputs', ab logits'
        with _without_warnings():  # "Please consider to run pre-processing", on the root logger, at every graph
            quantize_static(
                str(float_graphs / name), str(destination / name), Feeds(feeds), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=kept,
            )  # fmt: skip


@contextlib.contextmanager
def _without_warnings():
    """Log records up to warnings dropped, one thread at a time, and the program's own setting restored."""
    with _LOGGING_SETTING:
        saved = logging.root.manager.disable
        logging.disable(max(saved, logging.WARNING))
        try:
            yield
        finally:
            logging.disable(saved)


def _calibration_feeds(float_graphs: Path, takes_hints: bool, null: torch.Tensor) -> tuple[list[dict], list[dict]]:
    """The graphs' inputs for the calibration photos (`letcolor.calibration`): L at 224x224, and L with its scene
    vector mixed with the `null` one at each of CALIBRATED_STRENGTHS (and no hints)."""
    from letcolor.calibration import calibration_inputs

    session = onnxruntime.InferenceSession(float_graphs / GLOBAL_GRAPH, providers=["CPUExecutionProvider"])
    global_feeds, local_feeds = [], []
    for each in calibration_inputs():
        l224 = each.l224.numpy()
        global_feeds.append({"l224": l224})
        features = torch.from_numpy(session.run(None, {"l224": l224})[0])
        for strength in CALIBRATED_STRENGTHS:
            feeds = {"l": each.l.numpy(), "vectors": mix_global(null, features, True, strength).numpy()}
            if takes_hints:
                feeds["hints"] = torch.zeros((1, HINT_CHANNELS, *each.l.shape[-2:])).numpy()
            local_feeds.append(feeds)
    return global_feeds, local_feeds


def check(folder: Path) -> None:
    """onnx.checker on every graph (ValueError naming the graph if one is invalid)."""
    import onnx

    for name in graph_names(folder):
        try:
            onnx.checker.check_model(str(folder / name), full_check=True)
        except onnx.checker.ValidationError as error:
            raise ValueError(f"{folder / name}: not a valid ONNX graph ({error})") from error


class OnnxRuntimeNetwork:
    """The model's graphs in ONNX Runtime sessions (CPU); float32 torch tensors in and out."""

    # Whole batches (unlike torch, `letcolor.inference.CPU_CALL_PIXELS`): 480p video took 0.95x the time with 8 frames
    # per call than with 2 (on a Xeon with oneDNN kept off AMX).
    max_call_pixels = None

    def __init__(
        self, model: LetThereBeColor, int8: bool = False, threads: int | None = None, cache: Path | None = None
    ):
        folder = cached_int8(model, cache) if int8 else cached_export(model, cache)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._global = onnxruntime.InferenceSession(folder / GLOBAL_GRAPH, options, providers=providers)
        self._local = onnxruntime.InferenceSession(folder / LOCAL_GRAPH, options, providers=providers)
        self._automatic = (
            onnxruntime.InferenceSession(folder / AUTOMATIC_GRAPH, options, providers=providers)
            if model.takes_hints
            else self._local
        )
        self.device, self.folder = torch.device("cpu"), folder
        self._null_global = model.null_global.detach().float().cpu()
        self._takes_hints = model.takes_hints

    def global_output(self, l224: torch.Tensor) -> GlobalOutput:
        features, logits = self._global.run(None, {"l224": l224.float().numpy()})
        return GlobalOutput(torch.from_numpy(features), torch.from_numpy(logits))

    def mix_global(self, features: torch.Tensor, use_global: bool, strength: float) -> torch.Tensor:
        return mix_global(self._null_global, features, use_global, strength)

    def colorize(self, l: torch.Tensor, vectors: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"l": l.float().contiguous().numpy(), "vectors": vectors.float().contiguous().numpy()}
        if hints is None:
            return torch.from_numpy(self._automatic.run(None, feeds)[0])
        if not self._takes_hints:
            raise ValueError(NO_HINTS_MESSAGE)
        feeds["hints"] = hints.float().contiguous().numpy()
        return torch.from_numpy(self._local.run(None, feeds)[0])
