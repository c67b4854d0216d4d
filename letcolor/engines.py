"""Which engine runs the network: torch (`letcolor.inference`, with its speed-ups) or ONNX Runtime
(`letcolor.onnx_engine`, on the CPU, in float32 or int8). Both take and return float32 torch tensors through the
same methods (`global_output`, `mix_global`, `colorize`), so the pipeline, video and evaluation do not depend on
the choice."""

import torch

from letcolor.inference import InferenceNetwork, Speedups
from letcolor.model import LetThereBeColor

ENGINES = ("torch", "onnxruntime", "onnxruntime-int8")
DEFAULT_ENGINE = "torch"


def make_network(model: LetThereBeColor, device: torch.device, speedups: Speedups, engine: str):
    """The network on `engine`; ValueError for an unknown engine or one that this machine cannot run."""
    if engine == "torch":
        return InferenceNetwork(model, device, speedups)
    if engine in ("onnxruntime", "onnxruntime-int8"):
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime engine runs on the CPU, not on {device}")
        try:
            from letcolor.onnx_engine import OnnxRuntimeNetwork  # imports onnxruntime: only when asked for
        except ImportError as error:
            raise ValueError(f"the onnxruntime engine needs {error.name}: pip install onnxruntime onnx") from error
        return OnnxRuntimeNetwork(model, int8=engine == "onnxruntime-int8")
    raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
