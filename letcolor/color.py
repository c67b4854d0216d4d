"""sRGB (D65) <-> CIE L*a*b* in torch, and the network's input/target scalings.

Every function takes tensors of shape (..., 3, H, W), channels in dim -3, or of any shape with the channels in the
dimension its `dim` argument names (dim=-1 for colours (..., 3)). All operations are element-wise or over the channel
axis, so they run batched on any device and are differentiable.
"""

import torch

# D65 reference white (CIE 1931 2 degree observer), as used by sRGB.
WHITE_D65 = (0.95047, 1.0, 1.08883)

# Linear sRGB -> XYZ (IEC 61966-2-1), and its inverse.
RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)

LUMINANCE_WEIGHTS = RGB_TO_XYZ[1:2]  # Y from linear R, G, B

LAB_EPSILON = 216 / 24389  # (6/29)^3: where the Lab cube root turns linear
LAB_KAPPA = 24389 / 27

# The network predicts a,b through a sigmoid. The sRGB gamut spans a in [-86.2, 98.3] and
# b in [-107.9, 94.5], so [-AB_RANGE, AB_RANGE] with AB_RANGE = 110 holds every sRGB colour
# (the official code's [-100, 100] would clip saturated blues). Values outside are clamped.
AB_RANGE = 110.0
L_RANGE = 100.0


# XYZ relative to the white (XYZ = white * f^-1(f)) -> linear sRGB: inverted once, in float64 (torch inverts no
# half-precision matrix)
RELATIVE_XYZ_TO_RGB = (
    torch.linalg.inv(torch.tensor(RGB_TO_XYZ, dtype=torch.float64)) * torch.tensor(WHITE_D65, dtype=torch.float64)
).tolist()


def _matrix(rows, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def _apply_matrix(matrix: torch.Tensor, image: torch.Tensor, dim: int) -> torch.Tensor:
    moved = image.movedim(dim, -1)
    return (moved @ matrix.T).movedim(-1, dim)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light (element-wise)."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB encoding (element-wise)."""
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > LAB_EPSILON, t.clamp(min=LAB_EPSILON) ** (1 / 3), (LAB_KAPPA * t + 16) / 116)


def _lab_f_inverse(f: torch.Tensor) -> torch.Tensor:
    cube = f * f * f  # two multiplications: faster than a power, and the same to float rounding
    return torch.where(cube > LAB_EPSILON, cube, (116 * f - 16) / LAB_KAPPA)


def rgb_to_lab(rgb: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """sRGB in [0, 1] -> Lab (L in [0, 100], a and b roughly in [-110, 110]); channels along `dim`."""
    xyz = _apply_matrix(_matrix(RGB_TO_XYZ, rgb), srgb_to_linear(rgb), dim)
    white = torch.tensor(WHITE_D65, dtype=rgb.dtype, device=rgb.device)
    fx, fy, fz = _lab_f(xyz.movedim(dim, -1) / white).unbind(-1)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=dim)


def lab_to_rgb(lab: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Lab -> sRGB, clipped to [0, 1] (Lab colours outside the sRGB gamut land on its surface)."""
    return linear_to_srgb(lab_to_linear_rgb(lab, dim).clamp(0, 1))


def lab_to_linear_rgb(lab: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Lab -> linear-light RGB, not clipped (outside [0, 1] for colours outside the sRGB gamut)."""
    l, a, b = lab.movedim(dim, -1).unbind(-1)
    fy = (l + 16) / 116
    f = torch.stack((fy + a / 500, fy, fy - b / 200), dim=-1)
    return _apply_matrix(_matrix(RELATIVE_XYZ_TO_RGB, lab), _lab_f_inverse(f).movedim(-1, dim), dim)


def rgb_to_lightness(rgb: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """The L* channel alone (what a black-and-white photo keeps), with the channel axis kept."""
    return luminance_to_lightness(_apply_matrix(_matrix(LUMINANCE_WEIGHTS, rgb), srgb_to_linear(rgb), dim))


def gray_to_lightness(gray: torch.Tensor) -> torch.Tensor:
    """8-bit-style gray in [0, 1] (an sRGB-encoded luminance, as PIL's mode "L") -> L* in [0, 100]."""
    return luminance_to_lightness(srgb_to_linear(gray))


def luminance_to_lightness(luminance: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y in [0, 1] (white = 1) -> L* in [0, 100] (element-wise)."""
    return 116 * _lab_f(luminance) - 16


def lightness_to_input(l: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> the network's input in [0, 1]."""
    return l / L_RANGE


def ab_to_target(ab: torch.Tensor) -> torch.Tensor:
    """a,b in Lab units -> the sigmoid's range [0, 1]; values beyond +-AB_RANGE are clamped, not wrapped."""
    return ((ab / AB_RANGE + 1) / 2).clamp(0, 1)


def target_to_ab(target: torch.Tensor) -> torch.Tensor:
    """The network's sigmoid output in [0, 1] -> a,b in Lab units."""
    return (target.clamp(0, 1) * 2 - 1) * AB_RANGE


HINT_CHANNELS = 3  # a, b and mask


def hint_ab(ab: torch.Tensor) -> torch.Tensor:
    """A hint's a,b in Lab units -> the hint channels' scale, [-1, 1]."""
    return (ab / AB_RANGE).clamp(-1, 1)


def hint_input(ab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Local colour hints as network input: ab (N, 2, H, W) in Lab units and mask (N, 1, H, W), 1 where hinted ->
    (N, 3, H, W): a and b scaled to [-1, 1] where hinted and 0 elsewhere, then the mask. No hints is all zeros."""
    mask = mask.to(ab.dtype)
    return torch.cat((hint_ab(ab) * mask, mask), dim=-3)
