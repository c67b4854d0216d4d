"""The network prepared for inference on a device: precision, folded BatchNorm, memory layout, compilation.

Each speed-up is a switch so that the `bench` command can measure it; `Speedups.default_for` turns on only those
measured faster than plain float32 and accurate: mean ab error against float32 under 1 Lab unit, and no more than
half a gray level of noise on the input causes (see the README's benchmark).
"""

import copy
import functools
import os
from contextlib import nullcontext
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from letcolor import tracing
from letcolor.model import GlobalOutput, LetThereBeColor


class Precision(StrEnum):
    FLOAT32 = "fp32"
    BFLOAT16_AUTOCAST = "bf16-autocast"  # float32 weights, cast op by op by torch.autocast
    BFLOAT16 = "bf16"  # bfloat16 weights and activations (CPU); autocast on CUDA


@dataclass(frozen=True)
class Speedups:
    precision: Precision = Precision.FLOAT32
    fold_batchnorm: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile: recompiles for every new input size, so for fixed-size serving only
    onednn: bool = False  # CPU: convolutions with weights packed once and ReLUs fused (`OneDNNConv`)

    @classmethod
    def default_for(cls, device: torch.device) -> "Speedups":
        """CUDA: bfloat16 autocast. CPU: folded BatchNorm, channels-last and packed oneDNN convolutions, in bfloat16
        where the CPU has it (`cpu_has_fast_bfloat16`)."""
        if device.type == "cuda":
            return cls(Precision.BFLOAT16)
        bfloat16 = Precision.BFLOAT16 if cpu_has_fast_bfloat16() else Precision.FLOAT32
        return cls(bfloat16, fold_batchnorm=True, channels_last=True, onednn=onednn_available())


def cpu_has_fast_bfloat16() -> bool:
    """bfloat16 matrix units or instructions that oneDNN may use. With AMX (an Intel Xeon), bfloat16 runs the bundled
    network 2.7x as fast as float32; with AVX512-BF16 and no AMX (an AMD EPYC), 1.8x. On the AMX CPU with oneDNN kept
    to its AVX512-BF16 instructions (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16), it took 1.6x float32's time, so a CPU
    whose AMX is kept off counts as no; elsewhere bfloat16 is emulated. torch only has private probes, so a torch
    without them counts as no."""
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    unlimited = limit in ("ALL", "DEFAULT")
    if cpu_has_amx():
        return unlimited or "AMX" in limit
    return _cpu_probe("_is_avx512_bf16_supported") and (unlimited or "BF16" in limit or "AMX" in limit)


def cpu_has_amx() -> bool:
    return _cpu_probe("_is_amx_tile_supported")


def _cpu_probe(name: str) -> bool:
    return getattr(torch.cpu, name, lambda: False)()


def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's packed convolutions (`OneDNNConv`) run in `dtype` on this CPU."""
    available = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    return available and (dtype != torch.bfloat16 or onednn_packs_bfloat16())


@functools.cache
def onednn_packs_bfloat16() -> bool:
    """oneDNN packs bfloat16 weights only on CPUs with AVX512 (BW, VL, DQ) or AVX-NE-CONVERT; elsewhere (an AVX2-only
    CPU) it raises, and torch's own bfloat16 convolutions run instead. Asked of oneDNN itself, on a 1x1 conv."""
    weight = torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16)
    try:
        torch.ops.mkldnn._reorder_convolution_weight(weight, [0, 0], [1, 1], [1, 1], 1, [1, 1, 1, 1])
    except RuntimeError:
        return False
    return True


class OneDNNConv(nn.Module):
    """A convolution, and the ReLU after it if any, as one oneDNN call with its weights packed once into oneDNN's
    blocked layout. Through nn.Conv2d, oneDNN repacks the weights on every call (at 14x14 and 7x7, the global branch,
    half of a layer's time) and a ReLU reads and writes every activation once more (40% of a layer's time at 1 MP).
    Weights packed for one input size serve every size (same outputs)."""

    PACKED_FOR_SIDE = 64

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        self.conv, self.attribute = conv, "relu" if relu else "none"
        self.geometry = (conv.padding, conv.stride, conv.dilation, conv.groups)
        side = self.PACKED_FOR_SIDE
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            conv.weight.detach(), *self.geometry, [1, conv.in_channels, side, side]
        )
        self.register_buffer("packed_weight", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed_weight, self.conv.bias, *self.geometry, self.attribute, [], ""
        )


def use_onednn(model: LetThereBeColor) -> None:
    """Replaces each convolution by a `OneDNNConv`, in place, with the ReLU that follows it (after only folded
    BatchNorms) fused into it, except in the first layer of a model with hints, whose hint conv's output joins before
    the ReLU. Convolutions kept in float32 (`Float32Layer`) are packed too."""
    joined = model.low_level.convs[0] if model.hint_channels else None
    for sequence in model.modules():
        if isinstance(sequence, nn.Sequential) and sequence is joined:
            sequence[0] = OneDNNConv(sequence[0], relu=False) if type(sequence[0]) is nn.Conv2d else sequence[0]
        elif isinstance(sequence, nn.Sequential):
            layers = [(i, layer) for i, layer in enumerate(sequence) if not isinstance(layer, nn.Identity)]
            for (i, conv), (j, after) in zip(layers, [*layers[1:], (None, None)], strict=True):
                if type(conv) is nn.Conv2d:
                    sequence[i] = OneDNNConv(conv, relu=isinstance(after, nn.ReLU))
                    if isinstance(after, nn.ReLU):
                        sequence[j] = nn.Identity()
    for layer in model.modules():
        if isinstance(layer, Float32Layer) and type(layer.layer) is nn.Conv2d:
            layer.layer = OneDNNConv(layer.layer, relu=False)


def fold_batchnorm(model: nn.Module) -> None:
    """Folds every BatchNorm that follows a conv into the conv's weights and bias, in place (eval mode only)."""
    for sequence in model.modules():
        if isinstance(sequence, nn.Sequential):
            for i in range(len(sequence) - 1):
                conv, norm = sequence[i], sequence[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    sequence[i], sequence[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()


class Float32Layer(nn.Module):
    """Runs a layer in float32 (autocast off) and hands its output on as `output_dtype`."""

    def __init__(self, layer: nn.Module, output_dtype: torch.dtype):
        super().__init__()
        self.layer, self.output_dtype = layer.float(), output_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float()).to(self.output_dtype)


def to_bfloat16(model: LetThereBeColor, cast_weights: bool) -> None:
    """Runs the model in bfloat16 (in place) except the convolutions that read its inputs and the last one, which
    stay in float32.

    The first reads the input L: bfloat16's 8 significant bits would round it by up to 0.4 L units, and that
    rounding, not the arithmetic, caused most of the ab error (measured on the paper-size network: mean 1.9 -> 0.6
    Lab units); the hints' a and b would be rounded as much. The last gives the ab logits, whose rounding would show
    as steps in the colours. They are a tiny share of the work.
    cast_weights: store the other weights in bfloat16 (else torch.autocast must be on when running it)."""
    inputs = ["low_level.convs.0.0"] + (["low_level.hint_conv"] if model.hint_channels else [])
    last = f"colorization.layers.{len(model.colorization.layers) - 2}"  # the conv before the sigmoid
    kept = {name: copy.deepcopy(model.get_submodule(name)) for name in [*inputs, last]}
    if cast_weights:
        model.to(torch.bfloat16)
    for name, layer in kept.items():
        model.set_submodule(name, Float32Layer(layer, torch.float32 if name == last else torch.bfloat16))


# On the CPU, a call's activations stay in cache up to about this many input pixels: 8 frames of 480p at once took
# 1.35x the time per frame of calls of 2 (bundled model, bfloat16, 2 threads; float32 with oneDNN kept off AMX:
# 1.06x).
CPU_CALL_PIXELS = 400_000


class InferenceNetwork:
    """A private copy of a model with the speed-ups applied; takes and returns float32 tensors."""

    def __init__(self, model: LetThereBeColor, device: torch.device, speedups: Speedups):
        self.device, self.speedups = device, speedups
        self.max_call_pixels = CPU_CALL_PIXELS if device.type == "cpu" else None  # input pixels; None: any batch
        self.model = copy.deepcopy(model).eval().to(device)
        if speedups.fold_batchnorm:
            fold_batchnorm(self.model)
        if speedups.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.autocast = speedups.precision == Precision.BFLOAT16_AUTOCAST or (
            speedups.precision == Precision.BFLOAT16 and device.type == "cuda"
        )
        if speedups.precision != Precision.FLOAT32:
            to_bfloat16(self.model, cast_weights=not self.autocast)
        self.activations_dtype = self.model.null_global.dtype
        if speedups.onednn and device.type == "cpu" and not self.autocast and onednn_available(self.activations_dtype):
            use_onednn(self.model)
        if speedups.compile:
            for name in ("low_level", "mid_level", "global_level", "fusion", "colorization"):
                setattr(self.model, name, torch.compile(getattr(self.model, name)))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext()

    def _input(self, l: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if self.speedups.channels_last else torch.contiguous_format
        return l.contiguous(memory_format=layout)

    def global_output(self, l224: torch.Tensor) -> GlobalOutput:
        """Scene vectors and logits for network inputs (N, 1, 224, 224)."""
        with tracing.calls(), self._autocast():
            output = self.model.global_features(self._input(l224))
        return GlobalOutput(output.features.float(), output.scene_logits.float())

    def mix_global(self, features: torch.Tensor, use_global: bool, strength: float) -> torch.Tensor:
        return self.model.mix_global(features, use_global, strength).float()

    def colorize(
        self, l: torch.Tensor, global_vectors: torch.Tensor, hints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigmoid ab at half resolution for network inputs (N, 1, H, W), H and W multiples of 8, and hint channels
        (N, 3, H, W) or None."""
        with tracing.calls(), self._autocast():
            ab = self.model.colorize(self._input(l), global_vectors.to(self.activations_dtype), hints)
        return ab.float().contiguous()
