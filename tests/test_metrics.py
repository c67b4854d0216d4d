"""Colorization metrics on real photos and on images whose answer is known by hand."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from letcolor import metrics
from letcolor.color import lab_to_rgb, rgb_to_lab

SIZE = (160, 120)  # the photos are resized to one size so that they batch


def load_photo(examples_dir, name: str, size=SIZE) -> torch.Tensor:
    """A real photo as a (1, 3, H, W) float tensor on the 8-bit levels / 255."""
    image = Image.open(examples_dir / name).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float() / 255


@pytest.fixture
def photos(examples_dir) -> torch.Tensor:
    return torch.cat([load_photo(examples_dir, name) for name in ("chelsea.png", "coffee.png", "china.jpg")])


def grayed(rgb: torch.Tensor) -> torch.Tensor:
    return rgb.mean(1, keepdim=True).expand_as(rgb)


def jpeg_roundtrip(rgb: torch.Tensor, quality: int) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(metrics.to_8bit(rgb[0]).byte().permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).unsqueeze(0).float() / 255


def test_identical_photos_score_perfectly(photos):
    assert metrics.psnr(photos, photos).tolist() == [metrics.PSNR_CAP] * 3
    assert metrics.ssim(photos, photos).tolist() == [1.0] * 3
    assert metrics.ab_auc(photos, photos).tolist() == [1.0] * 3


def test_psnr_of_a_constant_offset_is_exact(photos):
    offsets = torch.tensor([1.0, 4.0, 20.0]).view(3, 1, 1, 1) / 255
    target = photos.clamp(max=1 - offsets)  # room for the offset, so that nothing clips
    expected = [20 * math.log10(255 / d) for d in (1, 4, 20)]
    assert metrics.psnr(target + offsets, target).tolist() == pytest.approx(expected, abs=1e-4)


def test_ssim_of_flat_images_is_the_luminance_term():
    flat_100, flat_110 = torch.full((1, 3, 16, 16), 100 / 255), torch.full((1, 3, 16, 16), 110 / 255)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)  # the contrast-structure term is C2 / C2 = 1
    assert metrics.ssim(flat_100, flat_110).item() == pytest.approx(expected, abs=1e-4)  # float32 variances


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM written out from Wang et al. (2004) with an explicit 2-D window, for one channel of 8-bit values."""
    offsets = np.arange(11) - 5
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()

    def local_mean(values):
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(values, (11, 11)), window)

    mx, my = local_mean(x), local_mean(y)
    vx, vy, cxy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def test_ssim_matches_the_written_out_definition_on_a_compressed_photo(photos):
    photo = photos[:1]
    compressed = jpeg_roundtrip(photo, quality=10)
    x, y = (metrics.to_8bit(image[0]).numpy() for image in (compressed, photo))
    expected = np.mean([reference_ssim(x[c], y[c]) for c in range(3)])
    assert metrics.ssim(compressed, photo).item() == pytest.approx(expected, abs=1e-4)
    assert 0.5 < expected < metrics.ssim(jpeg_roundtrip(photo, quality=90), photo).item() < 1


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(torch.zeros(1, 3, 10, 40), torch.zeros(1, 3, 10, 40))


def test_a_gray_photo_has_no_colorfulness(photos):
    assert metrics.colorfulness(grayed(photos)).tolist() == [0.0] * 3
    assert (metrics.colorfulness(photos) > 10).all()


def test_colorfulness_of_a_red_and_a_blue_pixel_by_hand():
    red_blue = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(1, 3, 1, 2)
    # rg = R - G = (255, 0); yb = (R + G) / 2 - B = (127.5, -255)
    std_rg, std_yb, mean_rg, mean_yb = 127.5, 191.25, 127.5, -63.75
    expected = math.sqrt(std_rg**2 + std_yb**2) + 0.3 * math.sqrt(mean_rg**2 + mean_yb**2)  # 272.6189...
    assert metrics.colorfulness(red_blue).item() == pytest.approx(expected, rel=1e-6)


def test_colorfulness_of_a_photo_matches_numpy(photos):
    r, g, b = (photos[1] * 255).double().numpy()
    rg, yb = r - g, (r + g) / 2 - b
    expected = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert metrics.colorfulness(photos[1:2]).item() == pytest.approx(expected, rel=1e-6)


def test_a_pure_hue_shift_has_the_chord_as_ab_error(photos):
    lightness = rgb_to_lab(photos)[:, :1].clamp(30, 70)  # where chroma 10 is inside the sRGB gamut at every hue
    chroma, turn = 10.0, math.pi / 2

    def with_hue(angle):
        ab = torch.tensor([chroma * math.cos(angle), chroma * math.sin(angle)]).view(1, 2, 1, 1)
        return lab_to_rgb(torch.cat((lightness, ab.expand(3, 2, *lightness.shape[-2:])), dim=1))

    original, shifted = with_hue(0.3), with_hue(0.3 + turn)
    assert torch.allclose(rgb_to_lab(shifted.double())[:, 1:].norm(dim=1), torch.tensor(chroma).double(), atol=1e-3)
    chord = 2 * chroma * math.sin(turn / 2)  # 14.142...: every pixel is off by this much
    assert torch.allclose(metrics.ab_error(shifted, original), torch.tensor(chord), atol=1e-3)
    assert metrics.ab_auc(shifted, original).tolist() == pytest.approx([(151 - 15) / 151] * 3, abs=1e-6)


def test_ab_auc_matches_its_definition_on_gray_photos(photos):
    error = metrics.ab_error(grayed(photos), photos).flatten(1)
    thresholds = torch.arange(151, dtype=error.dtype)
    cdf = (error.unsqueeze(-1) <= thresholds).double().mean(1)  # (N, 151): fraction of pixels within each threshold
    auc = metrics.ab_auc(grayed(photos), photos)
    assert auc.tolist() == pytest.approx(cdf.mean(1).tolist(), abs=1e-6)
    assert (auc < 1).all() and (auc > 0.5).all()


def test_one_target_is_compared_with_every_prediction(photos):
    target, predictions = photos[:1], torch.cat((photos[:1], grayed(photos[:1]), photos[1:2]))
    for metric in (metrics.psnr, metrics.ssim, metrics.ab_auc):
        assert metric(predictions, target).tolist() == metric(predictions, target.expand(3, -1, -1, -1)).tolist()


def test_topk_correct():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    labels = torch.tensor([2, 2, 2])
    assert metrics.topk_correct(scores, labels, 1).tolist() == [False, False, True]
    assert metrics.topk_correct(scores, labels, 2).tolist() == [True, False, True]
    assert metrics.topk_correct(scores, labels, 5).tolist() == [True, True, True]  # more than the 3 classes


def pan(photo: torch.Tensor, offsets: torch.Tensor, size=(96, 64)) -> torch.Tensor:
    """Crops (T, 3, H, W) of a (1, 3, H, W) photo at (x, y) offsets."""
    width, height = size
    return torch.cat([photo[..., y : y + height, x : x + width] for x, y in offsets.tolist()])


def test_pan_flicker_is_zero_for_a_still_photo_and_measures_colour_changes(examples_dir):
    photo = load_photo(examples_dir, "china.jpg", size=(320, 240))
    offsets = torch.tensor([[0, 0], [3, 1], [7, 1], [5, 4], [20, 9]])  # any direction, any step
    frames = pan(photo, offsets)
    assert metrics.pan_flicker(frames, offsets) == pytest.approx(torch.zeros(4), abs=1e-3)
    assert (metrics.pan_flicker(frames, torch.zeros_like(offsets)) > 1).all()  # misaligned: not the same points
    lab = rgb_to_lab(frames)
    lab[1::2, 1] += 6  # every other frame 6 units redder
    shifted = lab_to_rgb(lab).clamp(0, 1)
    assert metrics.pan_flicker(shifted, offsets) == pytest.approx(torch.full((4,), 6.0), abs=0.5)


def test_pan_flicker_refuses_frames_that_share_no_block(examples_dir):
    frames = pan(load_photo(examples_dir, "china.jpg", size=(320, 240)), torch.tensor([[0, 0], [0, 0]]))
    with pytest.raises(ValueError, match="share less than one"):
        metrics.pan_flicker(frames, torch.tensor([[0, 0], [90, 0]]))
