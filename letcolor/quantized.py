"""The "torch-int8" engine: the network's convolutions in int8 by torch's x86 quantization (FX graph mode, static,
weights per channel, activations per tensor), in a float32 copy of the model.

Four runs of convolutions are quantized, each with its ReLUs fused in: the low-level features after their first
layer, the mid-level features with the fusion layer's weights on them (`SplitFusion`), the global convolutions, and
the colorization network up to its last conv. The layers that read the inputs (L and the hint channels), the last
conv (the ab logits), the fully connected layers and the hint propagation stay in float32, as in
`letcolor.inference.to_bfloat16` and for the same reasons. Activation ranges are calibrated on the example photos
shipped with letcolor (`letcolor.calibration`), without hints, when the engine is first made for a model (0.5 s),
and kept in the cache: later, making the engine takes 0.2 s.
"""

import copy
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.fx.config
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.fx.utils import assert_and_get_unique_device
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from letcolor import tracing
from letcolor.cache import CACHE_ENV_VAR, cache_dir, weights_key
from letcolor.calibration import calibration_inputs
from letcolor.inference import CPU_CALL_PIXELS, fold_batchnorm, use_onednn
from letcolor.model import GlobalOutput, LetThereBeColor
from letcolor.outputs import put_whole

BACKEND = "x86"
CALIBRATION_VERSION = 2  # bump when the runs, their observers or the calibration change: new cache entries
OBSERVER = "activation_post_process"  # FX's name for the observers it inserts


def int8_available() -> bool:
    return BACKEND in torch.backends.quantized.supported_engines


class SplitFusion(nn.Module):
    """The fusion layer's 1x1 conv split in two: its weights on the mid-level features (a conv that joins the
    mid-level run, to be quantized with it) and its weights on the global vector, which is the same at every position
    and so gives a bias per image. The same function, without tiling the vector over the image."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        channels = conv.out_channels
        self.mid_projection = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.mid_projection.weight.copy_(conv.weight[:, :channels])
            self.mid_projection.bias.copy_(conv.bias)
        self.global_weights = nn.Parameter(conv.weight[:, channels:, 0, 0].detach().clone())

    def forward(self, projected_mid: torch.Tensor, global_vector: torch.Tensor) -> torch.Tensor:
        return torch.relu(projected_mid + (global_vector @ self.global_weights.T)[:, :, None, None])


def quantized_runs(model: LetThereBeColor) -> dict[str, nn.Sequential]:
    """The runs of convolutions to quantize, by name, as flat Sequentials of the model's own layers without the
    Identity left by folded BatchNorms (so that each ReLU fuses with its conv). `model.fusion` is a `SplitFusion`."""
    runs = {
        "low_level": list(model.low_level.convs)[1:],
        "mid_level": [*model.mid_level.convs, model.fusion.mid_projection],
        "global_level": list(model.global_level.convs),
        "colorization": list(model.colorization.layers)[:-2],
    }
    return {name: nn.Sequential(*_leaves(layers)) for name, layers in runs.items()}


class FunctionalUpsample(nn.Module):
    """An nn.Upsample as a call of F.interpolate, which FX quantizes: an nn.Upsample it leaves in float32, between a
    dequantize and a quantize (0.1 ms more per 1 MP photo). Nearest upsampling copies values, so int8 loses nothing."""

    def __init__(self, upsample: nn.Upsample):
        super().__init__()
        self.scale_factor, self.mode = upsample.scale_factor, upsample.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode)


def _leaves(layers: list[nn.Module]) -> list[nn.Module]:
    flat = []
    for layer in layers:
        flat += _leaves(list(layer)) if isinstance(layer, nn.Sequential) else [layer]
    return [FunctionalUpsample(layer) if isinstance(layer, nn.Upsample) else layer for layer in flat
            if not isinstance(layer, nn.Identity)]  # fmt: skip


def install_runs(model: LetThereBeColor, runs: dict[str, nn.Module]) -> None:
    """Puts `runs` (as from `quantized_runs`, or their int8 versions) in their places in the model, in place."""
    model.low_level.convs = nn.Sequential(model.low_level.convs[0], runs["low_level"])
    model.mid_level.convs = runs["mid_level"]
    model.global_level.convs = runs["global_level"]
    model.colorization.layers = nn.Sequential(runs["colorization"], *list(model.colorization.layers)[-2:])


def quantize(model: LetThereBeColor) -> LetThereBeColor:
    """A float32 copy of `model` with its runs of convolutions in int8: the runs are prepared with observers of their
    activations, which take what they saw in calibrating on this model before (`letcolor.cache`, by the weights'
    hash) or are calibrated now (and kept there), and are converted."""
    quantized = copy.deepcopy(model).float().eval()
    fold_batchnorm(quantized)
    quantized.fusion = SplitFusion(quantized.fusion.conv)
    torch.backends.quantized.engine = BACKEND
    kept = cache_dir("int8") / f"{weights_key(model, ['int8', CALIBRATION_VERSION, torch.__version__])}.safetensors"
    not_kept = None
    with tracing.tracing(), warnings.catch_warnings(), _no_stack_traces():
        warnings.simplefilter("ignore")  # torch.ao's notices of its coming deprecation
        observed = {name: _observed(run) for name, run in quantized_runs(quantized).items()}
        if not _load_observers(observed, kept):
            _calibrate(quantized, observed)
            not_kept = _keep_observers(observed, kept)
        install_runs(quantized, {name: convert_fx(run) for name, run in observed.items()})
        assert_and_get_unique_device.cache_clear()  # torch.ao keeps every module it saw (7 MB a Colorizer) in it
    if not_kept:  # (here: the block above ignores warnings)
        warnings.warn(f"cannot keep the int8 calibration in {kept.parent} ({not_kept}): it is made again at each "
                      f"start (a few seconds); ${CACHE_ENV_VAR} names another folder", stacklevel=2)  # fmt: skip
    use_onednn(quantized)  # the convolutions left in float32
    return quantized


def _calibrate(quantized: LetThereBeColor, observed: dict[str, nn.Module]) -> None:
    """The observed runs see what they read when the model colorizes the calibration photos once, on one thread: the
    activations' last bits depend on how many threads sum them, and the ranges kept would depend on the process that
    calibrated first (at 1 and 2 threads, 14 of 88 observer tensors differed)."""
    install_runs(quantized, observed)
    with torch.inference_mode(), _one_thread():
        for each in calibration_inputs():
            quantized.colorize(each.l, quantized.global_features(each.l224).features)


def _observer_state(observed: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The observers' buffers by run and name (copies: runs share an observer between an upsampling and its input)."""
    return {
        f"{name}.{key}": value.clone()
        for name, run in observed.items()
        for key, value in run.state_dict().items()
        if OBSERVER in key
    }


def _load_observers(observed: dict[str, nn.Module], path: Path) -> bool:
    """Whether the observers took the state kept in `path`: not when there is none, or it is unreadable, not of
    these runs, not finite, or not as a calibration leaves it (`_as_calibrated`)."""
    try:
        kept = load_file(path)
    except (OSError, SafetensorError):
        return False
    expected = _observer_state(observed)
    if kept.keys() != expected.keys() or any(kept[key].shape != expected[key].shape for key in kept):
        return False
    if not all(value.isfinite().all() for value in kept.values() if value.is_floating_point()):
        return False  # (NaN ranges would quantize every photo to gray)
    if not _as_calibrated(kept):
        return False
    for name, run in observed.items():
        run.load_state_dict({key.removeprefix(f"{name}."): kept[key] for key in kept if key.startswith(f"{name}.")},
                            strict=False)  # fmt: skip
    return True


def _as_calibrated(kept: dict[str, torch.Tensor]) -> bool:
    """Whether observer states are as a calibration leaves them: each range in order, each histogram of counts, not
    empty (zeroed, a photo took 33 s and came out in other colours; negated, torch failed on the range)."""
    for key, value in kept.items():
        if key.endswith("min_val") and (value > kept[key.removesuffix("min_val") + "max_val"]).any():
            return False
        if key.endswith("histogram") and ((value < 0).any() or value.sum() <= 0):
            return False
    return True


def _keep_observers(observed: dict[str, nn.Module], path: Path) -> OSError | None:
    """The observers' state kept in `path`; the error where it cannot be (calibrated again next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        put_whole(path, lambda partial: save_file(_observer_state(observed), partial))
    except OSError as error:
        return error
    return None


def _observed(run: nn.Sequential) -> nn.Module:
    """The run with observers of its activations (a traced copy; any input of its channel count traces it)."""
    example = torch.zeros((1, run[0].in_channels, 16, 16))
    return prepare_fx(run, get_default_qconfig_mapping(BACKEND), example_inputs=(example,))


@contextmanager
def _one_thread():
    """torch on one thread in this thread (OpenMP's count is per thread), its count restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextmanager
def _no_stack_traces():
    """FX records a stack trace per traced node unless told not to: the first trace then took over a second."""
    saved = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = saved


class Int8Network:
    """The int8 model on the CPU; takes and returns float32 tensors, as `letcolor.inference.InferenceNetwork` does."""

    max_call_pixels = CPU_CALL_PIXELS

    def __init__(self, model: LetThereBeColor):
        self.device, self.model = torch.device("cpu"), quantize(model)

    def global_output(self, l224: torch.Tensor) -> GlobalOutput:
        """Scene vectors and logits for network inputs (N, 1, 224, 224)."""
        with tracing.calls(), torch.inference_mode():
            output = self.model.global_features(_channels_last(l224))
        return GlobalOutput(output.features, output.scene_logits)

    def mix_global(self, features: torch.Tensor, use_global: bool, strength: float) -> torch.Tensor:
        return self.model.mix_global(features, use_global, strength)

    def colorize(
        self, l: torch.Tensor, global_vectors: torch.Tensor, hints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigmoid ab at half resolution for network inputs (N, 1, H, W) and hint channels (N, 3, H, W) or None."""
        with tracing.calls(), torch.inference_mode():
            ab = self.model.colorize(_channels_last(l), global_vectors.float(), hints)
        return ab.contiguous()


def _channels_last(l: torch.Tensor) -> torch.Tensor:
    return l.float().contiguous(memory_format=torch.channels_last)
