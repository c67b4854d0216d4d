"""letcolor: automatic colorization of black-and-white photos (Iizuka et al., Let there be Color!, SIGGRAPH 2016)."""

from letcolor import threads  # noqa: F401  (first: it configures OpenMP before torch loads)
from letcolor.hints import Hints, InvalidHintsError
from letcolor.images import EXAMPLES_DIR, InvalidImageError
from letcolor.model import LetThereBeColor
from letcolor.pipeline import (
    BUNDLED_MODEL_DIR,
    ColorizationResult,
    Colorizer,
    InvalidModelError,
    ModelError,
    ModelNotFoundError,
)
from letcolor.video import colorize_video

__all__ = [
    "BUNDLED_MODEL_DIR",
    "EXAMPLES_DIR",
    "ColorizationResult",
    "Colorizer",
    "Hints",
    "InvalidHintsError",
    "InvalidImageError",
    "InvalidModelError",
    "LetThereBeColor",
    "ModelError",
    "ModelNotFoundError",
    "colorize_video",
]
