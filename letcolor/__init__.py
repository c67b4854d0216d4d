"""letcolor: automatic colorization of black-and-white photos (Iizuka et al., Let there be Color!, SIGGRAPH 2016)."""

from letcolor.images import InvalidImageError
from letcolor.model import LetThereBeColor
from letcolor.pipeline import ColorizationResult, Colorizer, InvalidModelError, ModelError, ModelNotFoundError

__all__ = [
    "ColorizationResult",
    "Colorizer",
    "InvalidImageError",
    "InvalidModelError",
    "LetThereBeColor",
    "ModelError",
    "ModelNotFoundError",
]
