"""letcolor: automatic colorization of black-and-white photos (Iizuka et al., Let there be Color!, SIGGRAPH 2016)."""

from letcolor.model import LetThereBeColor

__all__ = ["LetThereBeColor"]
