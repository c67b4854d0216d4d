"""Which engine runs the network: torch (`letcolor.inference`, with its speed-ups, or `letcolor.quantized` in int8 on
the CPU) or ONNX Runtime (`letcolor.onnx_engine`, on the CPU, in float32 or int8), or "auto", the fastest that is
installed for the device. All take and return float32 torch tensors through the same methods (`global_output`,
`mix_global`, `colorize`), so the pipeline, video and evaluation do not depend on the choice."""

import warnings

import torch

from letcolor.inference import InferenceNetwork, Speedups, cpu_has_amx, cpu_has_fast_bfloat16
from letcolor.model import LetThereBeColor
from letcolor.quantized import Int8Network, int8_available

ENGINES = ("auto", "torch", "torch-int8", "onnxruntime", "onnxruntime-int8")
DEFAULT_ENGINE = "auto"
NO_ONNXRUNTIME = (
    "letcolor: onnxruntime is not installed, so the network runs on torch "
    "(pip install onnxruntime onnx for the faster engine on this CPU)"
)


def resolve_engine(engine: str, device: torch.device) -> str:
    """The engine that `engine` names on `device`. "auto" is the fastest measured (`bench --engine`, README Speed):
    torch on CUDA and on CPUs with AMX, where it runs in bfloat16; elsewhere torch-int8 where torch has its x86
    quantized kernels (on an AMD EPYC with AVX512-BF16 and no AMX, 0.6x the time of torch in bfloat16 for the network,
    0.7x-0.9x end to end; on one with only AVX2, 0.86x-0.91x the time of ONNX Runtime in float32 end to end); then
    torch in bfloat16 where the CPU runs it natively; else ONNX Runtime in float32, or torch with a one-line notice
    where onnxruntime is not installed."""
    if engine != "auto":
        return engine
    if device.type != "cpu" or (cpu_has_amx() and cpu_has_fast_bfloat16()):
        return "torch"
    if int8_available():
        return "torch-int8"
    if cpu_has_fast_bfloat16():
        return "torch"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        warnings.warn(NO_ONNXRUNTIME, stacklevel=3)
        return "torch"
    return "onnxruntime"


def make_network(model: LetThereBeColor, device: torch.device, speedups: Speedups, engine: str):
    """The network on `engine` (already resolved); ValueError for an unknown engine or one that this machine cannot
    run."""
    if engine == "torch":
        return InferenceNetwork(model, device, speedups)
    if engine == "torch-int8":
        if device.type != "cpu" or not int8_available():
            raise ValueError(f"the torch-int8 engine runs on a CPU with torch's x86 quantized kernels, not on {device}")
        return Int8Network(model)
    if engine in ("onnxruntime", "onnxruntime-int8"):
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime engine runs on the CPU, not on {device}")
        try:
            from letcolor.onnx_engine import OnnxRuntimeNetwork  # imports onnxruntime: only when asked for
        except ImportError as error:
            raise ValueError(f"the onnxruntime engine needs {error.name}: pip install onnxruntime onnx") from error
        return OnnxRuntimeNetwork(model, int8=engine == "onnxruntime-int8")
    raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
