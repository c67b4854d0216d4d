"""An exponential moving average of the model's weights (Polyak averaging), validated and shipped instead of the
last step's weights, which with Adadelta at a constant learning rate jump by tenths of a dB of validation PSNR
from one validation to the next."""

import copy

import torch


def floating_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and float buffers (BatchNorm running statistics), in a fixed order."""
    return [tensor for tensor in model.state_dict().values() if tensor.is_floating_point()]


class WeightAverage:
    """`model` is a copy of the trained network whose weights (and BatchNorm statistics) follow the network's
    as an exponential moving average with `decay`, which ramps up from 0.1 over the first updates as in
    TensorFlow's ExponentialMovingAverage, so that the average of a fresh run does not stay anchored at its random
    start."""

    def __init__(self, network: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(network).requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        torch._foreach_lerp_(floating_tensors(self.model), floating_tensors(network), 1 - self.current_decay())
        self.updates += 1

    def restart_from(self, network: torch.nn.Module) -> None:
        """The average becomes `network`'s weights (a resumed run that had no average)."""
        self.model.load_state_dict(network.state_dict())
        self.updates = 0
