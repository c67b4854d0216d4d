"""The photos that int8 engines are calibrated on: the example photos shipped with letcolor (never the validation
splits), as network inputs: L at 224x224 for the global branch and at a longer side of CALIBRATION_SIDE for the local
path."""

from typing import NamedTuple

import torch

from letcolor.fullres import global_input, lightness, network_input
from letcolor.images import EXAMPLES_DIR, image_pixels, load_image

CALIBRATION_PHOTOS = sorted(path for path in EXAMPLES_DIR.iterdir() if path.suffix in (".jpg", ".png"))
CALIBRATION_SIDE = 256


class CalibrationInput(NamedTuple):
    l224: torch.Tensor  # (1, 1, 224, 224)
    l: torch.Tensor  # (1, 1, h, w), h and w multiples of 8, the longer side CALIBRATION_SIDE


def calibration_inputs() -> list[CalibrationInput]:
    """The network inputs of each calibration photo."""
    inputs = []
    for photo in CALIBRATION_PHOTOS:
        full = lightness(image_pixels(load_image(photo)))
        height, width = full.shape[-2:]
        scale = CALIBRATION_SIDE / max(height, width)
        size = (max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8))
        inputs.append(CalibrationInput(global_input(full), network_input(full, size)))
    return inputs
