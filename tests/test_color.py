"""letcolor.color against a float64 reference of the CIE formulas written here, independently of the code."""

import numpy as np
import pytest
import torch

from letcolor import color

# IEC 61966-2-1 (sRGB) primaries to XYZ, and the D65 white point (2 degree observer).
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
D65 = np.array([0.95047, 1.0, 1.08883])


def reference_rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1], shape (..., 3) -> CIE L*a*b*, float64 (CIE 15:2004 with the exact 6/29 breakpoints)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    t = (linear @ SRGB_TO_XYZ.T) / D65
    delta = 6 / 29
    f = np.where(t > delta**3, np.cbrt(t), t / (3 * delta**2) + 4 / 29)
    return np.stack((116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])), axis=-1)


def rgb_grid(steps: int) -> np.ndarray:
    """Every colour of a steps^3 grid over the sRGB cube, shape (steps^3, 3)."""
    axis = np.linspace(0, 1, steps)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


@pytest.fixture(scope="module")
def grid() -> np.ndarray:
    return rgb_grid(64)


def test_reference_matches_published_values():
    """The reference itself, against widely published sRGB (D65) values."""
    published = {(1, 1, 1): (100, 0, 0), (1, 0, 0): (53.24, 80.09, 67.20), (0, 0, 1): (32.30, 79.19, -107.86)}
    for rgb, lab in published.items():
        np.testing.assert_allclose(reference_rgb_to_lab(np.array(rgb, dtype=float)), lab, atol=0.01)


def test_rgb_to_lab_agrees_with_the_reference(grid):
    lab = color.rgb_to_lab(torch.from_numpy(grid).float(), dim=-1).numpy()
    error = np.abs(lab - reference_rgb_to_lab(grid)).max(axis=0)
    assert (error < 0.05).all(), f"max |error| in L, a, b: {error}"


def test_round_trip_over_the_whole_gamut(grid):
    rgb = torch.from_numpy(grid).float()
    back = color.lab_to_rgb(color.rgb_to_lab(rgb, dim=-1), dim=-1)
    assert (back - rgb).abs().max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_lab_to_rgb_in_other_precisions(grid, dtype):
    """Half precisions raised "linalg.inv: Low precision dtypes not supported"."""
    lab = color.rgb_to_lab(torch.from_numpy(grid).float(), dim=-1)
    back = color.lab_to_rgb(lab.to(dtype), dim=-1)
    assert back.dtype == dtype
    error = (back.double() - torch.from_numpy(grid)).abs()
    mean_tolerance = {torch.bfloat16: 0.01, torch.float16: 0.002, torch.float64: 1e-5}[dtype]  # bf16: 8-bit mantissas
    assert error.mean() < mean_tolerance and error.max() < 0.2


def test_image_layout_channels_in_dim_minus_3():
    image = torch.rand(2, 3, 5, 7)
    lab = color.rgb_to_lab(image)
    assert lab.shape == image.shape
    expected = reference_rgb_to_lab(image.permute(0, 2, 3, 1).double().numpy())
    np.testing.assert_allclose(lab.permute(0, 2, 3, 1).numpy(), expected, atol=0.05)


def test_gamut_of_ab_fits_ab_range(grid):
    ab = reference_rgb_to_lab(grid)[:, 1:]
    assert np.abs(ab).max() < color.AB_RANGE
    assert np.abs(ab).max() > 0.95 * color.AB_RANGE  # and the range is not much wider than the gamut


def test_lightness_functions_agree_with_the_reference(grid):
    reference_l = reference_rgb_to_lab(grid)[:, 0]
    l_rgb = color.rgb_to_lightness(torch.from_numpy(grid).float(), dim=-1)[:, 0].numpy()
    np.testing.assert_allclose(l_rgb, reference_l, atol=0.05)
    gray = np.linspace(0, 1, 1001)
    reference_gray = reference_rgb_to_lab(np.stack((gray, gray, gray), axis=-1))[:, 0]
    l_gray = color.gray_to_lightness(torch.from_numpy(gray).float()).numpy()
    np.testing.assert_allclose(l_gray, reference_gray, atol=0.05)


def test_gray_has_no_chroma_and_comes_back_unchanged():
    gray = torch.linspace(0, 1, 256)
    lab = torch.stack((color.gray_to_lightness(gray), torch.zeros(256), torch.zeros(256)), dim=-1)
    rgb = color.lab_to_rgb(lab, dim=-1)
    assert torch.equal((rgb * 255).round(), (gray * 255).round()[:, None].expand(-1, 3))


def test_linear_and_srgb_encodings_are_inverse():
    values = torch.linspace(0, 1, 10001, dtype=torch.float64)
    assert (color.linear_to_srgb(color.srgb_to_linear(values)) - values).abs().max() < 1e-9


def test_out_of_gamut_lab_is_clipped_to_the_cube():
    lab = torch.tensor([[50.0, 200.0, -200.0], [100.0, 0.0, 0.0], [0.0, -150.0, 150.0]])
    rgb = color.lab_to_rgb(lab, dim=-1)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert torch.allclose(rgb[1], torch.ones(3), atol=1e-4)


def test_lightness_input_scaling():
    assert torch.equal(color.lightness_to_input(torch.tensor([0.0, 50.0, 100.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_ab_target_scaling_round_trips_inside_the_range():
    ab = torch.linspace(-color.AB_RANGE, color.AB_RANGE, 441)
    target = color.ab_to_target(ab)
    assert target[0] == 0 and target[-1] == 1 and target[220] == 0.5
    assert torch.allclose(color.target_to_ab(target), ab, atol=1e-4)


def test_out_of_range_ab_is_clamped_not_wrapped():
    beyond = torch.tensor([-1000.0, -color.AB_RANGE - 1, color.AB_RANGE + 1, 1000.0])
    assert torch.equal(color.ab_to_target(beyond), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(color.target_to_ab(torch.tensor([-0.5, 1.5])), torch.tensor([-color.AB_RANGE, color.AB_RANGE]))
