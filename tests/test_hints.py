"""Colour hints: encoding points and paint layers at the network's size, bad hints, the zero-initialised hint inputs,
simulated hints, and hints through the Colorizer and the CLI (training with hints: test_train.py)."""

import json
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, PACKED_PRECISIONS
from crafted import tiled_tiff
from PIL import Image

from letcolor import Colorizer, cli
from letcolor.color import AB_RANGE, rgb_to_lab
from letcolor.hints import (
    MAX_POINTS_FILE_BYTES,
    Hints,
    InvalidHintsError,
    parse_colour,
    points_from_truth,
    simulate_hints,
)
from letcolor.inference import OneDNNConv, Speedups
from letcolor.model import HintPropagation, InvalidModelError, LetThereBeColor, slice_bins
from letcolor.pipeline import load_model
from train.loop import hint_counts
from train.widen import widened_weights

PHOTO = EXAMPLES / "china.jpg"  # 640 x 427


def lab_ab(colour) -> torch.Tensor:
    return rgb_to_lab(torch.tensor(colour, dtype=torch.float32) / 255, dim=-1)[1:]


def hinted_cells(encoded: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(cell) for cell in encoded[0, 2].nonzero().tolist()]


def square(row: int, column: int, reach: int, height: int, width: int) -> list[tuple[int, int]]:
    rows = range(max(0, row - reach), min(height, row + reach + 1))
    return [(r, c) for r in rows for c in range(max(0, column - reach), min(width, column + reach + 1))]


def test_points_hint_a_small_square_around_the_cell_that_covers_them():
    hints = Hints.from_points([(0, 0, "#ff0000"), (639.9, 426.5, (0, 0, 255)), (320, 213, [0, 128, 0])], (640, 427))
    encoded = hints.encode(80, 120)  # a shorter side of 80: squares of 3 x 3 cells, clipped at the edges
    assert encoded.shape == (1, 3, 80, 120)
    centres = [((0, 0), (255, 0, 0)), ((79, 119), (0, 0, 255)), ((40, 60), (0, 128, 0))]
    assert hinted_cells(encoded) == sorted(cell for centre, _ in centres for cell in square(*centre, 1, 80, 120))
    for centre, colour in centres:
        for row, column in square(*centre, 1, 80, 120):
            assert torch.allclose(encoded[0, :2, row, column] * AB_RANGE, lab_ab(colour), atol=1e-4)
    assert encoded[0, :2].count_nonzero() == 2 * (4 + 4 + 9)  # a and b are zero wherever there is no hint


def test_a_points_square_grows_with_the_network_input():
    """As far as the largest hint patch in training (5 px at a shorter side of 256), relative to the shorter side."""
    for (height, width), reach in (((80, 120), 1), ((256, 384), 2), ((344, 512), 3), ((1024, 1536), 8)):
        encoded = Hints.from_points([(320, 213, "#00ff00")], (640, 427)).encode(height, width)
        centre = (int(213.5 * height / 427), int(320.5 * width / 640))  # the pixel's centre
        assert hinted_cells(encoded) == square(*centre, reach, height, width)


def test_a_point_lands_on_its_pixels_centre_where_a_painted_pixel_lands():
    """A point at pixel (9, 9) of a 10x10 photo enlarged to 192x192 covered cells 170-174, the corner of the pixel's
    cells (173-191): it mostly hinted pixel 8."""
    layer = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    layer.putpixel((9, 9), (255, 0, 0, 255))
    painted = hinted_cells(Hints.from_layer(layer, (10, 10)).encode(192, 192))
    point = hinted_cells(Hints.from_points([(9, 9, "#ff0000")], (10, 10)).encode(192, 192))
    (top, left), (bottom, right) = painted[0], painted[-1]
    centre = point[len(point) // 2]
    assert centre == ((top + bottom) // 2, (left + right) // 2) == (182, 182)  # the pixel's centre: 182.4


def test_points_whose_squares_meet_give_their_mean_colour_there():
    encoded = Hints.from_points([(1, 1, "#ff0000"), (20, 20, "#00ff00")], (64, 64)).encode(8, 8)
    assert hinted_cells(encoded) == square(0, 0, 1, 8, 8) + square(2, 2, 1, 8, 8)[1:]
    red, green = lab_ab((255, 0, 0)), lab_ab((0, 255, 0))
    assert torch.allclose(encoded[0, :2, 1, 1] * AB_RANGE, (red + green) / 2, atol=1e-4)
    assert torch.allclose(encoded[0, :2, 0, 0] * AB_RANGE, red, atol=1e-4)
    assert torch.allclose(encoded[0, :2, 3, 3] * AB_RANGE, green, atol=1e-4)


def test_points_outrank_paint_in_the_cells_they_share():
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (0, 0, 64, 32))  # the top half painted red
    encoded = Hints(size=(64, 64), points=((20.0, 12.0, (0, 255, 0)),), layer=layer).encode(8, 8)
    assert encoded[0, 2, :4].all() and not encoded[0, 2, 4:].any()  # the point's square lies inside the paint
    for row, column in square(1, 2, 1, 8, 8):
        assert torch.allclose(encoded[0, :2, row, column] * AB_RANGE, lab_ab((0, 255, 0)), atol=1e-4)
    assert torch.allclose(encoded[0, :2, 3, 6] * AB_RANGE, lab_ab((255, 0, 0)), atol=1e-4)


def test_a_paint_layer_hints_where_it_is_painted_with_its_colour():
    layer = Image.new("RGBA", (640, 427), (0, 0, 0, 0))
    layer.paste((255, 140, 0, 255), (100, 100, 180, 140))  # an orange stroke
    layer.putpixel((600, 400), (0, 0, 255, 1))  # one faint blue dab: alpha > 0 counts
    encoded = Hints.from_layer(layer, (640, 427)).encode(107, 160)
    mask = encoded[0, 2]
    assert mask[25:35, 25:45].all() and mask[100, 150] == 1
    assert int(mask.sum()) == (35 - 25) * (45 - 25) + 1
    assert torch.allclose(encoded[0, :2, 30, 35] * AB_RANGE, lab_ab((255, 140, 0)), atol=1e-3)
    assert torch.allclose(encoded[0, :2, 100, 150] * AB_RANGE, lab_ab((0, 0, 255)), atol=1e-3)
    array = np.asarray(layer)
    assert torch.equal(Hints.from_layer(array, (640, 427)).encode(107, 160), encoded)


def test_hints_from_files(tmp_path):
    (tmp_path / "points.json").write_text(json.dumps([[10, 20, "#102030"], {"x": 5, "y": 6, "colour": [1, 2, 3]}]))
    hints = Hints.parse(tmp_path / "points.json", (64, 64))
    assert hints.points == ((10.0, 20.0, (16, 32, 48)), (5.0, 6.0, (1, 2, 3)))
    layer = Image.new("RGBA", (64, 64))
    layer.putpixel((3, 4), (200, 10, 10, 255))
    layer.save(tmp_path / "layer.png")
    assert hinted_cells(Hints.parse(tmp_path / "layer.png", (64, 64)).encode(64, 64)) == [(4, 3)]


@pytest.mark.parametrize(
    "hints, message",
    [
        ([(640, 10, "#ff0000")], r"hint 1 at \(640, 10\) is outside the 640x427 photo"),
        ([(1, 1, "#ff0000"), (-1, 1, "#ff0000")], "hint 2 at"),
        ([(1, 1, "red")], "'#rrggbb' or three integers"),
        ([(1, 1, (256, 0, 0))], "'#rrggbb' or three integers"),
        ([(1, 1, (1.5, 0, 0))], "'#rrggbb' or three integers"),
        ([(1, 2)], r"must be \(x, y, colour\)"),
        ([("1", 2, "#ffffff")], "must be numbers"),
        ([(float("nan"), 2, "#ffffff")], "outside"),
        ([(10**5000, -(10**20), "#ffffff")], r"hint 1 at \(~1e5000, -~1e20\) is outside"),  # str() refuses 4300+ digits
        ([(np.complex128(3 + 5j), 2, "#ffffff")], "must be numbers"),  # its imaginary part was dropped
        ({"x": 1}, "must be a list"),
        (Image.new("RGBA", (64, 64)), "the hint layer is 64x64, not the photo's 640x427"),
        (Image.new("RGB", (640, 427)), "needs an alpha channel"),
        (np.zeros((427, 640, 3), np.uint8), "HxWx4 uint8"),
        ('[[1, 1, "#ff0000"]]', r"no such file \(hints given as a string name a JSON file or an image\)"),
        (Hints((640, 427), ((700.0, 1.0, (255, 0, 0)),)), "outside the 640x427 photo"),  # made unchecked: was clamped
        (Hints((640, 427), ((1.0, 1.0, "red"),)), "'#rrggbb' or three integers"),  # failed inside torch
        (Hints((640, 427), layer=Image.new("RGB", (640, 427))), "needs an alpha channel"),  # failed inside Pillow
        (Hints((64, 64)), r"hints made for a \(64, 64\) photo given for a \(640, 427\) one"),
    ],
)
def test_bad_hints_are_clear_errors(hints, message):
    with pytest.raises(InvalidHintsError, match=message):
        Hints.parse(hints, (640, 427))


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "not a readable JSON list of hint points"),  # RecursionError
        ("[[1" + "0" * 400 + ', 5, "#ff0000"]]', r"hints.json: hint 1 at \(~1e400, 5\) is outside"),  # OverflowError
        ('[[3.5, 5, "#ff0000"]]\xff', "not a readable JSON list"),
    ],
)
def test_a_malformed_hints_file_is_a_clear_error(tmp_path, text, message):
    """Deep nesting and a 400-digit coordinate raised RecursionError and OverflowError (a traceback in the CLI); an
    error in a file's points names the file."""
    path = tmp_path / "hints.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(InvalidHintsError, match=message):
        Hints.parse(path, (640, 427))


def test_a_hints_file_with_a_byte_order_mark_is_read_and_a_huge_one_refused_unread(tmp_path, monkeypatch):
    """Windows Notepad's UTF-8 starts with a byte-order mark: refused before ("Unexpected UTF-8 BOM"). A huge file was
    read whole before its points were counted."""
    path = tmp_path / "hints.json"
    path.write_text('[[3, 5, "#ff0000"]]', encoding="utf-8-sig")
    assert Hints.parse(path, (640, 427)).points == ((3.0, 5.0, (255, 0, 0)),)
    path.write_text(" " * (MAX_POINTS_FILE_BYTES + 1) + "[]")
    monkeypatch.setattr(Path, "read_text", lambda *_, **__: pytest.fail("read"))
    with pytest.raises(InvalidHintsError, match="over 4 MB"):
        Hints.parse(path, (640, 427))


def test_colours_as_a_numpy_pixel_or_short_hex_are_taken():
    """An RGB array's `array[y, x]` and "#f00" were refused."""
    pixel = np.asarray(Image.open(PHOTO).convert("RGB"))[40, 30]
    hints = Hints.from_points([(30, 40, pixel), (1, 2, "#f80")], (640, 427))
    assert hints.points == ((30.0, 40.0, tuple(int(v) for v in pixel)), (1.0, 2.0, (255, 136, 0)))
    for bad in (np.array([0.5, 0.2, 0.1]), np.zeros((3, 1), np.uint8), "#ff00"):
        with pytest.raises(InvalidHintsError, match="'#rrggbb' or three integers"):
            parse_colour(bad)


def test_hints_made_for_a_size_given_as_a_list_are_used():
    hints = Hints.from_points([(1, 2, "#ff0000")], [640, 427])
    assert Hints.parse(hints, (640, 427)) == hints  # "hints made for a [640, 427] photo given for a (640, 427) one"


def test_bad_hint_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.json").write_text("[[1, 2,")
    (tmp_path / "notes.txt").write_text("not an image")
    for name, message in (("bad.json", "not a readable JSON"), ("notes.txt", "neither a JSON"), ("none.png", "none")):
        with pytest.raises(InvalidHintsError, match=message):
            Hints.parse(tmp_path / name, (64, 64))


def png_declaring(size: tuple[int, int], path):
    """A small PNG whose header declares `size` (its pixel data is that of a 1x1 image, so decoding it fails)."""
    Image.new("RGBA", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = size[0].to_bytes(4, "big") + size[1].to_bytes(4, "big")  # IHDR's width and height
    data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def test_a_layer_file_of_another_size_is_refused_from_its_header(tmp_path):
    png_declaring((12_000, 12_000), tmp_path / "huge.png")  # 144 MP: decoding would take 576 MB
    with pytest.raises(InvalidHintsError, match="huge.png is 12000x12000, not the photo's 64x64"):
        Hints.parse(tmp_path / "huge.png", (64, 64))


def test_a_layer_file_declaring_huge_tiles_is_refused_from_its_header(tmp_path):
    """A 226-byte TIFF of the photo's size declaring one 46336x46336 tile took 2.3 GB as a hint layer (the app's
    /colorize too), though photos and references were refused from their header."""
    (tmp_path / "layer.tif").write_bytes(tiled_tiff(451, 300, 46336))
    with pytest.raises(InvalidHintsError, match="layer.tif: a 451x300 TIFF of 46336x46336 tiles"):
        Hints.parse(tmp_path / "layer.tif", (451, 300))


def test_a_layer_file_over_pillows_own_limit_is_refused_as_over_letcolors(tmp_path):
    """It said "could be decompression bomb DOS attack"."""
    png_declaring((20_000, 10_000), tmp_path / "huge.png")
    with pytest.raises(InvalidHintsError, match="huge.png: is 200 MP, over the 100 MP limit"):
        Hints.parse(tmp_path / "huge.png", (64, 64))


def test_one_layer_opened_lazily_can_be_parsed_by_several_threads_at_once(tmp_path):
    """Pillow's lazy loading is not thread-safe: 10 tries in 10 failed ("broken PNG file")."""
    painted = np.zeros((1500, 1500, 4), np.uint8)
    painted[100:200, 100:400] = (200, 30, 30, 255)
    Image.fromarray(painted).save(tmp_path / "layer.png")
    expected = Hints.parse(tmp_path / "layer.png", (1500, 1500)).encode(64, 64)
    for _ in range(3):
        shared = Image.open(tmp_path / "layer.png")  # its pixels not read yet
        with ThreadPoolExecutor(4) as pool:
            parsed = list(pool.map(lambda layer: Hints.parse(layer, (1500, 1500)), [shared] * 4))
        assert all(torch.equal(hints.encode(64, 64), expected) for hints in parsed)


def test_a_palette_layer_of_rgba_colours_is_a_layer():
    """Pillow's quantize of a paint layer gives a palette of RGBA colours and no transparency key: it was refused as
    a layer without alpha."""
    layer = Image.new("RGBA", (64, 64))
    layer.paste((200, 30, 30, 255), (10, 10, 20, 20))
    assert torch.equal(
        Hints.parse(layer.quantize(4), (64, 64)).encode(64, 64), Hints.parse(layer, (64, 64)).encode(64, 64)
    )


def test_a_layer_file_without_alpha_says_so(tmp_path):
    """It said "neither a JSON list of points nor a readable image": the layer's own error was taken for Pillow's."""
    Image.new("RGB", (64, 64)).save(tmp_path / "opaque.png")
    with pytest.raises(InvalidHintsError) as error:
        Hints.parse(tmp_path / "opaque.png", (64, 64))
    assert "opaque.png: a hint layer needs an alpha channel (RGBA)" in str(error.value)
    assert "neither" not in str(error.value)


def test_colours_parse_strictly():
    assert parse_colour("#FF8000") == (255, 128, 0) and parse_colour([0, 1, 2]) == (0, 1, 2)
    for bad in ("#ff80", "ff8000", (True, 0, 0), (1, 2), None):
        with pytest.raises(InvalidHintsError):
            parse_colour(bad)


def hint_model_from(model: LetThereBeColor, propagation: bool = False) -> LetThereBeColor:
    """The model with hint inputs added, their filters at zero (what --init-from does with --hints), and with
    `propagation` the hint propagation too, its scale at zero (--hint-propagation)."""
    widened = LetThereBeColor(model.num_classes, model.class_names, model.width, 3, hint_propagation=propagation)
    widened.load_state_dict(widened_weights(model, widened))
    return widened.eval()


def automatic_model() -> LetThereBeColor:
    """The bundled model without its hint layers: the automatic colorization alone, a model that takes no hints."""
    bundled = load_model()
    automatic = LetThereBeColor(bundled.num_classes, bundled.class_names, bundled.width)
    weights = bundled.state_dict()
    automatic.load_state_dict({name: weights[name] for name in automatic.state_dict()})
    return automatic.eval()


def test_the_bundled_model_without_hints_colours_exactly_as_its_automatic_layers_alone():
    bundled = load_model()
    assert bundled.hint_propagation  # trained with --hint-layers-only
    for engine in ("torch", "onnxruntime"):
        plain, hinted = (Colorizer(model, "cpu", engine=engine) for model in (automatic_model(), bundled))
        assert np.array_equal(np.asarray(hinted(PHOTO).image), np.asarray(plain(PHOTO).image))


def test_a_model_run_in_inference_mode_then_trains_at_the_same_size():
    """The propagation's window matrices, cached by size, were inference tensors: the training step then failed."""
    model = load_model()
    l, l224 = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 224, 224)
    hints = Hints.from_points([(10, 10, "#ff0000")], (64, 64)).encode(64, 64)
    with torch.inference_mode():
        model(l, l224, hints=hints)
    model.train()
    output = model(l, l224, hints=hints)
    output[0].sum().backward()
    assert model.colorization.propagation.gates.weight.grad.abs().sum() > 0


def test_zero_initialised_hint_inputs_compute_todays_output_exactly():
    automatic = automatic_model()
    widened = hint_model_from(automatic)
    assert widened.low_level.hint_conv.weight.abs().sum() == 0
    points = [(50, 60, "#ff0000"), (400, 300, "#0000ff")]
    today = np.asarray(Colorizer(automatic, "cpu")(PHOTO).image)
    assert np.array_equal(np.asarray(Colorizer(widened, "cpu")(PHOTO).image), today)
    assert np.array_equal(np.asarray(Colorizer(widened, "cpu")(PHOTO, hints=points).image), today)


def test_zero_initialised_hint_propagation_computes_the_hint_models_output_exactly():
    hint_model = live_hint_model()
    propagating = hint_model_from(hint_model, propagation=True)
    assert propagating.colorization.propagation.scale == 0
    points = [(50, 60, "#ff0000"), (400, 300, "#0000ff")]
    for hints in (None, points):
        expected = np.asarray(Colorizer(hint_model, "cpu")(PHOTO, hints=hints).image)
        assert np.array_equal(np.asarray(Colorizer(propagating, "cpu")(PHOTO, hints=hints).image), expected)


@pytest.mark.parametrize("precision", PACKED_PRECISIONS)
def test_packed_onednn_convolutions_add_the_hints_before_the_first_relu(precision):
    points = [(50, 60, "#ff0000"), (400, 300, "#0000ff"), (600, 100, "#ffff00")]
    plain = Speedups(precision, fold_batchnorm=True, channels_last=True)
    model = live_hint_model()
    exact, packed = (
        Colorizer(model, "cpu", speedups, engine="torch") for speedups in (plain, replace(plain, onednn=True))
    )
    assert any(isinstance(layer, OneDNNConv) for layer in packed.network.model.modules())
    expected = np.asarray(exact(PHOTO, hints=points).image, np.int16)
    assert np.abs(np.asarray(packed(PHOTO, hints=points).image, np.int16) - expected).max() <= 1


def test_hint_propagation_spreads_a_hints_colour_over_its_neighbourhood_only():
    torch.manual_seed(0)  # the propagation's gates start from fresh random weights
    model = hint_model_from(automatic_model(), propagation=True)
    with torch.no_grad():
        model.colorization.propagation.scale.fill_(1)
    colorizer = Colorizer(model, "cpu")
    x, y, green = 600, 210, (40, 200, 60)
    hinted, plain = colorizer(PHOTO, hints=[(x, y, green)]), colorizer(PHOTO)
    ab = {name: rgb_to_lab(torch.from_numpy(np.asarray(result.image, np.float32) / 255).permute(2, 0, 1))[1:]
          for name, result in (("hinted", hinted), ("plain", plain))}  # fmt: skip
    target = rgb_to_lab(torch.tensor(green, dtype=torch.float32)[:, None, None] / 255)[1:, 0, 0]
    near = (slice(y - 8, y + 9), slice(x - 8, x + 9))
    distance = {
        name: (values[:, near[0], near[1]] - target[:, None, None]).norm(dim=0).mean() for name, values in ab.items()
    }
    assert distance["hinted"] < 0.6 * distance["plain"]
    # The widest window reaches 12 grid cells of 16 network input pixels beyond the hinted cell (192 of the network's
    # 512, 240 of the photo's 640), the hinted cell, the slicing and the upsampling up to 40 photo pixels more
    # (measured: 276 in all): beyond, nothing moves.
    far = np.asarray(hinted.image)[:, : x - 280], np.asarray(plain.image)[:, : x - 280]
    assert np.array_equal(*far)


def test_the_bundled_models_stroke_colours_the_region_under_it_not_the_whole_photo():
    # Before the propagation's reach was cut to 3/8 of the network's side and faded with distance, this band turned
    # the whole cat and the far corner blue (36 ab units there).
    photo = EXAMPLES / "chelsea_gray.png"  # 451 x 300, a close-up of a cat
    layer = np.zeros((300, 451, 4), np.uint8)
    layer[45:90, 90:203] = (31, 78, 156, 255)  # a blue band over the forehead
    colorizer = Colorizer(load_model(), "cpu")
    plain, hinted = (np.asarray(colorizer(photo, hints=hints).image) for hints in (None, Image.fromarray(layer)))
    shift = (lab_ab(hinted) - lab_ab(plain)).norm(dim=-1)
    under, corner = shift[45:90, 90:203].mean(), shift[210:, 315:].mean()
    assert under > 40 and corner < under / 5  # measured: 61.0 and 5.0


def test_hint_propagation_stops_at_edges_of_lightness_unless_its_levels_of_any_lightness_are_open():
    propagation = HintPropagation(feature_channels=1)
    like_lightness = len(propagation.RADII)  # the first levels; then the coarsest radii again, for any lightness
    any_lightness = slice(like_lightness, like_lightness + propagation.ANY_LIGHTNESS)  # then the colour level
    lightness = torch.full((1, 1, 128, 128), 0.2)
    lightness[..., 64:] = 0.8  # a bright right half
    hints = torch.zeros(1, 3, 128, 128)
    hints[:, :, 60:68, 48:56] = torch.tensor([0.6, 0.6, 1.0])[:, None, None]  # a hint on the dark side, near the edge
    ab = torch.full((1, 2, 64, 64), 0.5)
    with torch.no_grad():
        propagation.scale.fill_(1)
        propagation.gates.weight.zero_()
        propagation.gates.bias.fill_(-20)
        propagation.gates.bias[:like_lightness] = 20  # only the gates of like lightness open
        moved = propagation(ab, torch.zeros(1, 1, 64, 64), hints, lightness)
        assert torch.allclose(moved[..., :30], torch.tensor(0.8), atol=0.01)  # the hint's colour, (0.6 + 1) / 2
        assert torch.equal(moved[..., 34:], ab[..., 34:])
        propagation.gates.bias[:like_lightness], propagation.gates.bias[any_lightness] = -20, 20  # the others
        moved = propagation(ab, torch.zeros(1, 1, 64, 64), hints, lightness)
        assert torch.allclose(moved[..., 34:40], torch.tensor(0.8), atol=0.01)  # across the edge


def test_the_colour_level_replaces_blotched_colours_by_the_hints_where_a_spread_residual_keeps_them():
    propagation = HintPropagation(feature_channels=1)
    lightness = torch.full((1, 1, 128, 128), 0.5)
    hints = torch.zeros(1, 3, 128, 128)
    hints[:, :, 60:68, 60:68] = torch.tensor([0.2, 0.2, 1.0])[:, None, None]  # one hint: (0.2 + 1) / 2 = 0.6
    ab = torch.full((1, 2, 64, 64), 0.5)
    ab[..., ::8, :] = 0.3  # blotches: rows of another colour, which the network's output had
    near = (..., slice(16, 48), slice(16, 48))
    with torch.no_grad():
        propagation.scale.fill_(1)
        propagation.gates.weight.zero_()
        propagation.gates.bias.fill_(-20)
        propagation.gates.bias[: len(propagation.RADII)] = 20  # the residual's levels of like lightness
        spread_residual = propagation(ab, torch.zeros(1, 1, 64, 64), hints, lightness)
        propagation.gates.bias.fill_(-20)
        propagation.gates.bias[len(propagation.RADII) + propagation.ANY_LIGHTNESS] = 20  # the colour level alone
        replaced = propagation(ab, torch.zeros(1, 1, 64, 64), hints, lightness)
    assert spread_residual[near].std() > 0.05  # the blotches moved with the rest
    gained = 0.5 + 0.1 * (1 + propagation.COLOUR_GAIN)  # the hint's colour, its chroma times the gain
    assert torch.allclose(replaced[near], torch.tensor(gained), atol=0.01)


def test_the_palette_colours_pixels_of_its_lightness_beyond_every_window_if_the_hints_lie_across_the_photo():
    propagation = HintPropagation(feature_channels=1)
    lightness = torch.full((1, 1, 64, 512), 0.5)
    lightness[..., 448:] = 0.9  # a bright right end
    ab = torch.full((1, 2, 32, 256), 0.5)
    far, bright = (..., slice(120, 200)), (..., slice(232, 256))  # far beyond the widest window (H/2 columns)

    def moved(hints: torch.Tensor, palette_gate: float) -> torch.Tensor:
        with torch.no_grad():
            propagation.scale.fill_(1)
            propagation.gates.weight.zero_()
            propagation.gates.bias.fill_(20)  # every level open
            propagation.gates.bias[-1] = palette_gate
            return propagation(ab, torch.zeros(1, 1, 32, 256), hints, lightness)

    one_place, across = torch.zeros(1, 3, 64, 512), torch.zeros(1, 3, 64, 512)
    colour = torch.tensor([0.2, 0.2, 1.0])[:, None, None]  # (0.2 + 1) / 2 = 0.6 in the sigmoid's range
    one_place[:, :, 16:32, 8:16] = colour  # one stroke
    across[:, :, :8, 8:16], across[:, :, 56:, 8:16] = colour, colour  # the same share, at the top and the bottom
    for hints in (one_place, across):
        assert torch.equal(moved(hints, -20)[far], ab[far])
    assert torch.equal(moved(one_place, 20)[far], ab[far])  # one stroke's colour stays near it
    share = 128 / (64 * 512)  # of the photo that the hints cover
    sure = share / (share + propagation.PALETTE_HALF)
    with_palette = moved(across, 20)
    assert torch.allclose(with_palette[far], torch.tensor(0.5 + 0.1 * sure), atol=1e-3)
    assert torch.equal(with_palette[bright], ab[bright])  # 40 L brighter than the hints: not their colour


def test_the_strength_of_the_colours_follows_hints_across_the_photo_and_never_rises():
    propagation = HintPropagation(feature_channels=1)
    with torch.no_grad():
        propagation.scale.fill_(1)  # trained (0: the network's own colours, as `scale` is for every level)
    mask = torch.zeros(1, 1, 8, 64)
    across, one_place = mask.clone(), mask.clone()
    across[..., 0, :8], across[..., 7, 56:] = 1, 1  # at the top left and the bottom right
    one_place[..., 2:4, 8:16] = 1  # one stroke

    def strength(hint_colour: float, network_colour: float, hinted: torch.Tensor) -> float:
        hint_sums = 2 * (hint_colour - 0.5) * hinted.repeat(1, 2, 1, 1)  # the hint channels' scale
        network = torch.full((1, 2, 8, 64), network_colour)
        return propagation.strength(hint_sums, hinted, network, propagation.scale.detach().clamp(0, 1)).item()

    assert strength(0.5, 0.6, across) < 0.05  # gray hints: the network's colour goes
    assert strength(0.55, 0.6, across) == pytest.approx(0.5, abs=0.02)  # half as strong
    assert strength(0.4, 0.6, across) < 0.05  # the opposite hue
    assert strength(0.6, 0.6, across) == pytest.approx(1) and strength(0.7, 0.6, across) == 1  # agreeing, stronger
    assert strength(0.6, 0.5, across) == 1  # a gray network says nothing of its strength
    assert strength(0.5, 0.6, one_place) == 1  # one stroke's colour stays near it
    assert strength(0.5, 0.6, mask) == 1  # none (a photo without hints in a batch with some): not NaN


def test_gray_hints_across_a_photo_take_its_colour_out_beyond_their_reach_and_one_gray_stroke_does_not():
    colorizer = Colorizer(load_model(), "cpu")
    across = [(x, y, "#808080") for x in (64, 224, 416, 576) for y in (43, 170, 256, 384)]  # PHOTO is 640 x 427
    stroke = [(x, 43, "#808080") for x in range(64, 128)]

    def chroma(hints) -> torch.Tensor:
        rgb = torch.from_numpy(np.asarray(colorizer(PHOTO, hints=hints).image) / 255)
        return rgb_to_lab(rgb, dim=-1)[..., 1:].norm(dim=-1)

    plain = chroma(None)
    assert chroma(across).mean() < 0.1 * plain.mean()  # before the strength: 0.26x
    far = (slice(300, None), slice(420, None))  # beyond the stroke's reach (276 photo pixels: the test above)
    assert torch.equal(chroma(stroke)[far], plain[far])


def test_slicing_by_each_pixels_two_lightness_bins_is_slicing_by_the_tents():
    propagation = HintPropagation(feature_channels=1)
    generator = torch.Generator().manual_seed(0)
    lightness = torch.rand(2, 1, 6, 7, generator=generator)
    lightness[0, 0, 0, :4] = torch.tensor([0.0, 0.5, 0.9, 1.0])  # the ends, a bin centre and between two
    grid = torch.randn(2, propagation.BINS, 3, 6, 7, generator=generator)
    by_tents = (propagation.tents(lightness).unsqueeze(2) * grid).sum(1)
    assert torch.allclose(slice_bins(grid, *propagation.bin_pairs(lightness)), by_tents, atol=1e-6)
    palette = grid[..., :1, :1]  # one value per bin, as the palette's
    expected = (propagation.tents(lightness).unsqueeze(2) * palette).sum(1)
    assert torch.allclose(slice_bins(palette, *propagation.bin_pairs(lightness)), expected, atol=1e-6)


def test_a_strokes_colour_fades_with_distance_however_many_pixels_it_holds():
    propagation = HintPropagation(feature_channels=1)
    lightness = torch.full((1, 1, 64, 128), 0.5)
    for columns in (slice(10, 14), slice(10, 60)):  # a point, and a stroke of 12 times its hinted pixels
        mask = torch.zeros(1, 1, 64, 128)
        mask[..., 28:36, columns] = 1
        residual_sums, colour_sums = 0.3 * mask.repeat(1, 2, 1, 1), 0.8 * mask.repeat(1, 2, 1, 1)
        like_lightness = propagation.spread(residual_sums, colour_sums, mask, lightness)[0][0]
        middle = (propagation.BINS - 1) // 2  # L 0.5's bin
        confidence = like_lightness.confidences[0, middle, 0, 0, 16]  # at the widest radius
        steps = confidence.diff()
        assert confidence.max() > 0.95 and confidence[-1] == 0
        assert steps.abs().max() < 0.15, "the colour stops along a line"


def test_a_model_whose_propagation_alone_reads_the_hints_takes_them(tmp_path):
    torch.manual_seed(0)
    model = hint_model_from(automatic_model(), propagation=True)
    alone = LetThereBeColor(model.num_classes, model.class_names, model.width, hint_propagation=True)
    alone.load_state_dict({name: value for name, value in model.state_dict().items() if "hint_conv" not in name})
    with torch.no_grad():
        alone.colorization.propagation.scale.fill_(1)
    alone.save_pretrained(tmp_path)
    loaded = LetThereBeColor.from_pretrained(tmp_path)
    assert loaded.takes_hints and loaded.hint_propagation and loaded.low_level.hint_conv is None
    points = [(600, 210, (40, 200, 60))]
    colorizer, plain = Colorizer(loaded, "cpu"), np.asarray(Colorizer(automatic_model(), "cpu")(PHOTO).image)
    assert np.array_equal(np.asarray(colorizer(PHOTO).image), plain)
    assert not np.array_equal(np.asarray(colorizer(PHOTO, hints=points).image), plain)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hint_propagation": "yes"}))
    with pytest.raises(InvalidModelError, match="hint_propagation must be true or false"):
        LetThereBeColor.from_pretrained(tmp_path)


def test_a_model_without_hint_inputs_refuses_hints(tiny_model):
    with pytest.raises(InvalidHintsError, match="takes no colour hints"):
        Colorizer(tiny_model, "cpu")(PHOTO, hints=[(1, 1, "#ffffff")])
    with pytest.raises(ValueError, match="takes no colour hints"):
        tiny_model.colorize(torch.zeros(1, 1, 64, 64), torch.zeros(1, 32), torch.zeros(1, 3, 64, 64))


def live_hint_model() -> LetThereBeColor:
    """The automatic model with hint filters that are random: hints change its output, only near where they are."""
    model = hint_model_from(automatic_model())
    with torch.no_grad():
        torch.manual_seed(1)
        model.low_level.hint_conv.weight.normal_(0, 20)
    return model


def test_hints_reach_the_network_where_they_are_at_any_size():
    colorizer = Colorizer(live_hint_model(), "cpu")
    for max_side in (256, None):
        result = colorizer(PHOTO, hints=[(600, 400, "#00ff00")], max_side=max_side)
        baseline = colorizer(PHOTO, max_side=max_side)
        changed = np.abs(np.asarray(result.image, float) - np.asarray(baseline.image, float)).max(axis=2) > 2
        rows, columns = changed.nonzero()
        assert changed[400, 600] and rows.min() > 250 and columns.min() > 400  # around the hint, not elsewhere
        assert result.image.size == (640, 427)


def test_batch_hints_go_to_their_own_image_and_work_with_a_reference():
    colorizer = Colorizer(live_hint_model(), "cpu")
    photos = [PHOTO, EXAMPLES / "coffee.png"]
    plain = colorizer.batch(photos, max_side=128)
    hinted = colorizer.batch(photos, hints=[None, [(10, 10, "#0000ff")]], max_side=128)
    assert np.array_equal(np.asarray(hinted[0].image), np.asarray(plain[0].image))
    assert not np.array_equal(np.asarray(hinted[1].image), np.asarray(plain[1].image))
    propagating = Colorizer(load_model(), "cpu")  # same-size photos: one network call, the propagation's too
    one_batch = propagating.batch([PHOTO, PHOTO], hints=[None, [(10, 10, "#0000ff")]], max_side=128)
    assert np.array_equal(np.asarray(one_batch[0].image), np.asarray(propagating(PHOTO, max_side=128).image))
    styled = colorizer(PHOTO, hints=[(10, 10, "#0000ff")], reference=EXAMPLES / "coffee.png", max_side=128)
    assert styled.image.size == (640, 427)
    with pytest.raises(ValueError, match="palette strength cannot be used with colour hints"):  # it moved them
        colorizer(PHOTO, hints=[(10, 10, "#0000ff")], reference=EXAMPLES / "coffee.png", palette_strength=0.5)
    with pytest.raises(InvalidHintsError, match="one entry"):
        colorizer.batch(photos, hints=[None])


def test_simulated_hints_hold_the_true_patch_colours():
    ab = torch.zeros(3, 2, 32, 48)
    ab[:, 0, :, :24], ab[:, 1, :, 24:] = 40.0, -30.0  # left half a = 40, right half b = -30
    hints = simulate_hints(ab, torch.tensor([0, 1, 12]), torch.Generator().manual_seed(0), max_patch=1)
    assert hints[0].abs().sum() == 0
    assert int(hints[1, 2].sum()) == 1 and int(hints[2, 2].sum()) <= 12
    hinted = hints[:, 2] > 0
    assert torch.equal(hints[:, :2].permute(1, 0, 2, 3)[:, hinted] * AB_RANGE, ab.permute(1, 0, 2, 3)[:, hinted])
    patches = simulate_hints(ab, torch.tensor([1, 1, 1]), torch.Generator().manual_seed(3), max_patch=5)
    assert {int(area) for area in patches[:, 2].sum((1, 2))} <= {1, 4, 6, 9, 12, 15, 16, 20, 25}


def test_hint_counts_follow_the_hint_free_share_and_the_mean():
    counts = hint_counts(20_000, 7.0, 0.25, torch.Generator().manual_seed(0)).float()
    assert (counts == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert counts[counts > 0].mean().item() == pytest.approx(7.0, abs=0.2)


def test_points_from_truth_take_the_photos_own_colours():
    photo = Image.open(PHOTO).convert("RGB")
    points = points_from_truth(photo, 5, np.random.default_rng(0))
    assert len(points) == 5 and all(photo.getpixel((x, y)) == colour for x, y, colour in points)


def test_cli_hints_for_one_photo(tmp_path, capsys):
    model_dir = tmp_path / "model"
    live_hint_model().save_pretrained(model_dir)
    (tmp_path / "hints.json").write_text(json.dumps([[600, 400, "#00ff00"]]))
    command = [sys.executable, "-m", "letcolor", "colorize", "--model", str(model_dir), "--max-side", "256", str(PHOTO)]
    for name, extra in (("plain", []), ("hinted", ["--hints", str(tmp_path / "hints.json")])):
        subprocess.run([*command, "-o", str(tmp_path / name), *extra], check=True, capture_output=True)
    plain, hinted = (np.asarray(Image.open(tmp_path / name / "china.jpg"), float) for name in ("plain", "hinted"))
    assert np.abs(plain - hinted)[380:420, 580:620].max() > 10 and np.abs(plain - hinted)[:200, :300].max() < 4
    other = PHOTO.with_name("coffee.png")
    two = subprocess.run([*command, str(other), "-o", str(tmp_path / "two"), "--hints", str(tmp_path / "hints.json")],
                         capture_output=True, text=True)  # fmt: skip
    assert two.returncode == 2 and "exactly one input photo" in two.stderr
    (tmp_path / "far.json").write_text(json.dumps([[9999, 1, "#00ff00"]]))
    far = subprocess.run([*command, "-o", str(tmp_path / "far"), "--hints", str(tmp_path / "far.json")],
                         capture_output=True, text=True)  # fmt: skip
    assert far.returncode == 2 and "outside the 640x427 photo" in far.stderr and not (tmp_path / "far").exists()
    video = Path(__file__).parent / "data" / "camvid_drive_cut.mp4"
    hinted_video = ["colorize", str(video), "-o", str(tmp_path / "video"), "--hints", str(tmp_path / "hints.json")]
    assert cli.main([*hinted_video, "--model", str(model_dir)]) == cli.EXIT_USAGE
    assert f"--hints: hints are for photos, and {video} is a video" in capsys.readouterr().err  # "1 inputs given"
    (tmp_path / "torn.jpg").write_bytes(PHOTO.read_bytes()[:2000])  # the photo fails, as it would without hints
    torn = [str(tmp_path / "torn.jpg"), "-o", str(tmp_path / "torn"), "--hints", str(tmp_path / "hints.json")]
    assert cli.main(["colorize", *torn, "--model", str(model_dir)]) == cli.EXIT_SOME_FAILED  # was 2, a usage error
    assert "torn.jpg" in capsys.readouterr().err


def test_cli_never_writes_over_its_hints_or_reference(tmp_path):
    """A paint layer or a reference in the output folder, under the name the output would take, was replaced by the
    colorized photo: only the input photos were kept from the outputs' names."""
    photo = tmp_path / "photo.png"
    Image.open(PHOTO).convert("L").resize((160, 107)).save(photo)
    layer = Image.new("RGBA", (160, 107))
    layer.paste((0, 200, 0, 255), (20, 20, 50, 50))
    for option, kept_file in (("--hints", layer), ("--reference", Image.open(EXAMPLES / "coffee.png"))):
        output = tmp_path / option.strip("-")
        output.mkdir()
        kept_file.save(output / "photo.png")
        before = (output / "photo.png").read_bytes()
        assert cli.main(["colorize", str(photo), "-o", str(output), option, str(output / "photo.png")]) == 0
        assert (output / "photo.png").read_bytes() == before
        assert Image.open(output / "photo_color.png").size == (160, 107)
    arguments = [
        "colorize",
        str(photo),
        "-o",
        str(tmp_path / "palette"),
        "--hints",
        str(tmp_path / "hints" / "photo.png"),
    ]
    assert cli.main([*arguments, "--reference", str(EXAMPLES / "coffee.png"), "--palette", "0.5"]) == cli.EXIT_USAGE
    assert not (tmp_path / "palette").exists()
