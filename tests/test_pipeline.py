"""The inference pipeline on real photos: modes, sizes, options, bad inputs, model loading, speed-ups."""

import dataclasses
import io
import math
import os
import struct
import subprocess
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PACKED_PRECISIONS, make_tiny_model
from crafted import DAMAGED_EXIF, png_with_exif, tiled_tiff, two_frame_gif
from huggingface_hub import constants as hub_constants
from PIL import EpsImagePlugin, ExifTags, GifImagePlugin, Image, ImageCms, ImageOps, PngImagePlugin, TiffImagePlugin

from letcolor import color, fullres, inference, pipeline, threads
from letcolor.bench import calibrate_batchnorm
from letcolor.hints import Hints, InvalidHintsError
from letcolor.images import (
    MAX_IMAGE_PIXELS,
    InvalidImageError,
    check_image_file,
    exif_orientation,
    image_pixels,
    image_suffixes,
    load_image,
    read_image,
    read_image_bytes,
    upright_size,
)
from letcolor.inference import OneDNNConv, Precision, Speedups
from letcolor.pipeline import Colorizer, ModelNotFoundError, network_size

SIDE = 160  # the test photos' long side


@pytest.fixture(scope="module")
def model(examples_dir):
    """The tiny model with BatchNorm statistics of real photos, so that its outputs depend on the input."""
    return calibrate_batchnorm(make_tiny_model(), sorted(examples_dir.glob("historical_*")))


@pytest.fixture(scope="module")
def colorizer(model):
    return Colorizer(model)


def photo(examples_dir, name: str) -> Image.Image:
    image = load_image(examples_dir / name)
    image.thumbnail((SIDE, SIDE))
    return image


def lightness_of(image: Image.Image) -> np.ndarray:
    """L* of an upright image, computed here from its pixels (gray modes as gray, the others as sRGB)."""
    if image.mode in ("I;16", "I", "F"):
        scale = 1.0 if image.mode == "F" else 65535.0
        gray = torch.from_numpy(np.asarray(image, dtype=np.float32) / scale).clamp(0, 1)
        return color.gray_to_lightness(gray).numpy()
    if image.mode in ("1", "L", "LA"):
        return color.gray_to_lightness(torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255)).numpy()
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)
    return color.rgb_to_lightness(rgb, dim=-1)[..., 0].numpy()


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def make_mode_files(examples_dir, directory) -> dict[str, tuple]:
    """name -> (file, the upright image it shows): one file per input mode, made from the real examples."""
    gray = photo(examples_dir, "historical_b.jpg").convert("L")
    colour = photo(examples_dir, "chelsea.png")
    la = gray.copy()
    la.putalpha(Image.linear_gradient("L").resize(gray.size))
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)
    palette = colour.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    keyed = np.asarray(gray).copy()
    keyed[:20, :30] = 0  # transparent where 0, by a PNG's colour key (tRNS)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise from how it is stored
    files = {
        "L": save(gray, directory / "gray.png"),
        "LA": save(la, directory / "gray-alpha.png"),
        "RGB": save(colour, directory / "colour.jpg", quality=95),
        "RGBA": examples_dir / "historical_a.png",
        "P": save(palette, directory / "palette.png"),
        "P+transparency": save(palette, directory / "palette-t.png", transparency=0),
        "L+transparency": save(Image.fromarray(keyed), directory / "gray-t.png", transparency=0),
        "RGB+transparency": save(
            Image.fromarray(np.stack([keyed] * 3, -1)), directory / "rgb-t.png", transparency=(0, 0, 0)
        ),
        "I;16+transparency": save(
            Image.fromarray(keyed.astype(np.uint16) * 257), directory / "sixteen-t.png", transparency=0
        ),
        "CMYK": save(colour.convert("CMYK"), directory / "cmyk.jpg", quality=95),
        "I;16": save(sixteen, directory / "sixteen.png"),
        "I": save(sixteen.convert("I"), directory / "int32.tif"),
        "F": save(Image.fromarray(np.asarray(gray, dtype=np.float32) / 255), directory / "float.tif"),
        "1": save(gray.convert("1"), directory / "bilevel.png"),
        "EXIF": save(colour.transpose(Image.Transpose.ROTATE_90), directory / "exif.jpg", exif=exif, quality=95),
    }
    return {name: (path, ImageOps.exif_transpose(Image.open(path))) for name, path in files.items()}


@pytest.fixture(scope="module")
def mode_files(examples_dir, tmp_path_factory):
    return make_mode_files(examples_dir, tmp_path_factory.mktemp("modes"))


MODES = ["L", "LA", "RGB", "RGBA", "P", "P+transparency", "CMYK", "I;16", "I", "F", "1", "EXIF"]
KEYED = ["L+transparency", "RGB+transparency", "I;16+transparency"]  # came out opaque


@pytest.mark.parametrize("mode", MODES + KEYED)
def test_output_keeps_size_mode_alpha_and_lightness(colorizer, mode_files, mode):
    path, shown = mode_files[mode]
    with Image.open(path) as stored:
        assert mode in ("EXIF", "P+transparency") or stored.mode == mode.removesuffix("+transparency")
    output = colorizer(path).image
    assert output.size == shown.size
    has_alpha = shown.mode in ("LA", "RGBA") or "transparency" in shown.info
    assert output.mode == ("RGBA" if has_alpha else "RGB")
    if shown.mode in ("LA", "RGBA"):
        assert np.array_equal(np.asarray(output.getchannel("A")), np.asarray(shown.getchannel("A")))
    if mode in KEYED:
        key = np.asarray(shown)[..., 0] if shown.mode == "RGB" else np.asarray(shown)
        transparent = key == (shown.info["transparency"][0] if shown.mode == "RGB" else shown.info["transparency"])
        assert np.array_equal(np.asarray(output.getchannel("A")), np.where(transparent, 0, 255))
    # The output keeps the input's L (up to 8-bit rounding and gamut clipping), so it also has its orientation.
    output_l, input_l = lightness_of(output), lightness_of(shown)
    assert np.corrcoef(output_l.ravel(), input_l.ravel())[0, 1] > 0.95
    if mode != "1":  # black and white only: colour at L* = 0 or 100 is all out of gamut, so clipping changes L*
        assert np.median(np.abs(output_l - input_l)) < 0.5


def test_a_palette_image_of_rgba_colours_keeps_its_alpha(colorizer, examples_dir):
    """Pillow's quantize of an RGBA image gives a palette of RGBA colours and no transparency key: it came out RGB."""
    photo = Image.open(examples_dir / "chelsea.png").convert("RGBA")
    photo.putalpha(Image.linear_gradient("L").resize(photo.size))
    palette = photo.quantize(16)
    output = colorizer(palette).image
    assert output.mode == "RGBA"
    assert np.array_equal(np.asarray(output.getchannel("A")), np.asarray(palette.convert("RGBA").getchannel("A")))


PROFILES = Path(__file__).resolve().parent / "data"  # ICC profiles of icc-profiles-free (Zlib licence)


@pytest.mark.parametrize(
    "name, profile", [("china.jpg", "compatibleWithAdobeRGB1998.icc"), ("china_gray.png", "Gray-CIE_L.icc")]
)
def test_a_photo_with_a_colour_profile_is_read_in_srgb(examples_dir, tmp_path, colorizer, name, profile):
    """Pixels were read as sRGB whatever the photo's profile said: an Adobe RGB photo came out duller, a scan whose
    gray levels are L* darker. The photo is re-encoded in the profile's space and tagged with it, as an editor saves
    it: it must read as the original."""
    original, tagged = Image.open(examples_dir / name), ImageCms.getOpenProfile(str(PROFILES / profile))
    encoded = ImageCms.profileToProfile(
        original.convert("RGB"), ImageCms.createProfile("sRGB"), tagged, outputMode=original.mode
    )
    encoded.save(tmp_path / "tagged.png", icc_profile=tagged.tobytes())
    truth = image_pixels(original).values.int()  # china_gray.png's sRGB profile is an RGB one: not for gray, unread
    assert (torch.from_numpy(np.array(encoded)).int() - truth.movedim(0, -1).squeeze(-1)).abs().float().mean() > 2.5
    read = image_pixels(load_image(tmp_path / "tagged.png")).values.int()
    assert (read - truth).abs().float().mean() < 0.7 and (read - truth).abs().max() <= 4
    del encoded.info["icc_profile"]  # (the transform's output is tagged)
    encoded.save(tmp_path / "untagged.png")  # its pixels taken as sRGB, as they were
    gray = np.asarray(original.convert("L"), dtype=float)  # which the output keeps
    tagged, untagged = (np.asarray(colorizer(tmp_path / f"{kind}.png").image.convert("L"), dtype=float) - gray
                        for kind in ("tagged", "untagged"))  # fmt: skip
    assert np.abs(tagged).mean() < 0.7 and np.abs(untagged).mean() > 2


def test_a_profile_named_srgb_is_applied_unless_it_maps_as_srgb(examples_dir, tmp_path):
    """A profile whose name began with "sRGB" was taken for sRGB and left unapplied: Elle Stone's linear
    "sRGB-elle-V4-g10" too (its photos much too dark); here Adobe RGB's under such a name."""
    original = Image.open(examples_dir / "china.jpg").convert("RGB")
    adobe = (PROFILES / "compatibleWithAdobeRGB1998.icc").read_bytes()
    renamed = adobe.replace(b"Compatible with Adobe RGB (1998)", b"sRGB (in fact Adobe RGB, 1998)..")
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(renamed))).startswith("sRGB")
    for profile in (adobe, renamed):
        encoded = ImageCms.profileToProfile(
            original, ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(profile)), outputMode="RGB"
        )
        encoded.save(tmp_path / "tagged.png", icc_profile=profile)
        read = image_pixels(load_image(tmp_path / "tagged.png")).values.int()
        assert (read - image_pixels(original).values.int()).abs().float().mean() < 0.7
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    original.save(tmp_path / "srgb.png", icc_profile=srgb)  # sRGB's own: as stored
    assert torch.equal(image_pixels(load_image(tmp_path / "srgb.png")).values, image_pixels(original).values)


def test_a_16_bit_gray_scan_with_a_colour_profile_is_read_in_srgb(examples_dir, tmp_path):
    """16-bit gray images' profiles were left unapplied: a 16-bit scan whose levels are L* (as the profile says) read
    darker than the same scan in 8 bits. Encoded here from the CIE's formula, not through a profile."""
    truth = np.asarray(Image.open(examples_dir / "china_gray.png").convert("L"), dtype=float)
    srgb = truth / 255
    luminance = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    lightness = np.where(luminance > (6 / 29) ** 3, 116 * np.cbrt(luminance) - 16, 24389 / 27 * luminance)
    profile = (PROFILES / "Gray-CIE_L.icc").read_bytes()
    Image.fromarray(np.round(lightness / 100 * 65535).astype(np.uint16)).save(
        tmp_path / "scan.png", icc_profile=profile
    )
    read = image_pixels(load_image(tmp_path / "scan.png"))
    assert read.white_level == 65535
    levels = read.values[0].numpy() / 257
    assert np.abs(levels - truth).mean() < 0.1 and np.abs(levels - truth).max() < 0.6
    keyed = np.full((4, 4), 30000, np.uint16)
    keyed[0] = 20000  # a PNG's colour key (tRNS) marks the stored level 20000 transparent, not the level it becomes
    Image.fromarray(keyed).save(tmp_path / "keyed.png", transparency=20000, icc_profile=profile)
    assert np.asarray(image_pixels(load_image(tmp_path / "keyed.png")).alpha)[:, 0].tolist() == [0, 255, 255, 255]


def test_a_colour_profile_that_cannot_be_read_or_is_not_the_images_leaves_the_pixels_as_they_are(examples_dir):
    """A colour space of bytes that are not ASCII raised a UnicodeDecodeError (a traceback in the CLI, a whole app
    batch refused); a CMYK photo's RGB profile was applied to Pillow's plain conversion of it (28 levels off)."""
    original = Image.open(examples_dir / "china.jpg")
    adobe = (Path(__file__).resolve().parent / "data" / "compatibleWithAdobeRGB1998.icc").read_bytes()
    as_is = torch.from_numpy(np.array(original)).permute(2, 0, 1)
    for profile in (adobe[:100], adobe[:16] + b"\xa7GB " + adobe[20:]):  # cut short; a colour space not in ASCII
        damaged = original.copy()
        damaged.info["icc_profile"] = profile
        assert torch.equal(image_pixels(damaged).values, as_is)
    cmyk = original.convert("CMYK")
    cmyk.info["icc_profile"] = adobe
    plain = torch.from_numpy(np.array(original.convert("CMYK").convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(image_pixels(cmyk).values, plain)


def test_exif_rotated_file_shows_the_original_upright(mode_files, examples_dir):
    path, shown = mode_files["EXIF"]
    original = photo(examples_dir, "chelsea.png")
    with Image.open(path) as stored:
        assert stored.size == original.size[::-1] and shown.size == original.size
    correlation = np.corrcoef(lightness_of(shown).ravel(), lightness_of(original).ravel())[0, 1]
    assert correlation > 0.99  # so the test above checks that the output is upright too


@pytest.mark.parametrize("damage", DAMAGED_EXIF)
def test_a_photo_whose_exif_is_damaged_is_colorized_as_stored_with_a_warning(colorizer, examples_dir, tmp_path, damage):
    """Pillow's bare "not a TIFF file" or struct.error for a PNG's damaged EXIF block failed the photo, and with it a
    whole batch in the app."""
    gray = photo(examples_dir, "chelsea_gray.png").convert("L")
    path = tmp_path / "damaged.png"
    path.write_bytes(png_with_exif(save(gray, tmp_path / "plain.png").read_bytes(), DAMAGED_EXIF[damage]))
    assert upright_size(path) == gray.size and exif_orientation(path) == 1
    result = colorizer(path)
    assert result.warnings == (
        f"{path}: its EXIF data is damaged and was ignored (the photo is taken as stored, not turned)",
    )
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(colorizer(gray).image))


def test_an_exif_block_that_is_not_written_back_needs_no_warning(colorizer, examples_dir, tmp_path):
    """Only a photo to turn upright has its EXIF block written back: one as stored, whose block Pillow could not
    write back, needs no warning (nor does a TIFF, whose tags are not written back)."""
    gray = photo(examples_dir, "chelsea_gray.png").convert("L")
    as_stored = DAMAGED_EXIF["not writable"].replace(
        bytes.fromhex("01120003000000010006"), bytes.fromhex("01120003000000010001")
    )
    path = tmp_path / "as_stored.png"
    path.write_bytes(png_with_exif(save(gray, tmp_path / "plain.png").read_bytes(), as_stored))
    result = colorizer(path)
    assert result.warnings == ()
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(colorizer(gray).image))


def test_reading_in_threads_leaves_the_process_settings_as_they_were(examples_dir, tmp_path):
    """Each read changes the warning filters and Pillow's TIFF decoder switch for a moment: threads restored each
    other's copies, which left a filter behind (the program's own large images no longer warned) and the switch on,
    and rarely read a turned TIFF with the wrong decoder (not upright)."""
    upright = photo(examples_dir, "chelsea_gray.png").convert("L").resize((120, 80))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    turned = save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "turned.tif", exif=exif)
    plain = save(upright, tmp_path / "plain.png")
    filters, switch = list(warnings.filters), TiffImagePlugin.READ_LIBTIFF
    with ThreadPoolExecutor(4) as pool:
        sizes = set(pool.map(lambda index: load_image(turned if index % 2 else plain).size, range(800)))
    assert sizes == {upright.size}
    assert warnings.filters == filters and TiffImagePlugin.READ_LIBTIFF == switch


@pytest.mark.parametrize("compression", ["tiff_lzw", "raw"])
def test_a_tiff_of_a_quarter_turn_orientation_reads_upright(examples_dir, tmp_path, compression):
    """Pillow (12.3) reports such a TIFF's size turned already: `upright_size` turned it back (a hint at the photo's
    right was "outside" it); and an uncompressed one was decoded into stripes of the wrong size, by path and then (a
    caller's image, opened with Pillow's own decoder) as a PIL image."""
    upright = Image.open(examples_dir / "chelsea_gray.png").convert("L")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter counter-clockwise
    path = tmp_path / "turned.tif"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, compression=compression)
    assert upright_size(path) == upright.size
    assert np.array_equal(np.asarray(load_image(path).convert("L")), np.asarray(upright))
    with Image.open(path) as callers:
        assert np.array_equal(np.asarray(load_image(callers).convert("L")), np.asarray(upright))


def test_a_callers_exif_rotated_image_is_turned_upright_without_being_changed(mode_files):
    path, shown = mode_files["EXIF"]
    with Image.open(path) as stored:
        stored.load()
        stored_pixels = np.asarray(stored).copy()
        upright = load_image(stored)
        assert upright.size == shown.size and np.array_equal(np.asarray(upright), np.asarray(shown))
        assert stored.size == shown.size[::-1] and np.array_equal(np.asarray(stored), stored_pixels)


def test_gray_input_with_zero_ab_comes_back_unchanged(model, mode_files):
    zero_ab = make_tiny_model()
    zero_ab.load_state_dict(model.state_dict())
    output_conv = zero_ab.colorization.layers[-2]
    torch.nn.init.zeros_(output_conv.weight), torch.nn.init.zeros_(output_conv.bias)  # sigmoid(0) = 0.5: ab = 0
    path, gray = mode_files["L"]
    output = np.asarray(Colorizer(zero_ab)(path).image)
    assert np.array_equal(output, np.repeat(np.asarray(gray)[..., None], 3, axis=2))


ARRAYS = {
    "HxW uint8": lambda g: g,
    "HxWx1 uint8": lambda g: g[..., None],
    "HxWx3 uint8": lambda g: np.repeat(g[..., None], 3, axis=2),
    "HxWx4 uint8": lambda g: np.dstack((g, g, g, np.full_like(g, 200))),
    "HxW uint16": lambda g: g.astype(np.uint16) * 257,
    "HxW big-endian uint16": lambda g: (g.astype(np.uint16) * 257).astype(">u2"),  # was "unsupported type >u2"
    "HxWx3 big-endian float32": lambda g: np.repeat(g[..., None], 3, axis=2).astype(">f4") / 255,
    "HxWx3 uint16": lambda g: np.repeat(g[..., None], 3, axis=2).astype(np.uint16) * 257,
    "HxW float": lambda g: g / 255.0,
    "HxWx3 float32": lambda g: np.repeat(g[..., None], 3, axis=2).astype(np.float32) / 255,
}


@pytest.mark.parametrize("kind", ARRAYS)
def test_numpy_arrays_of_every_layout(colorizer, mode_files, kind):
    gray = np.asarray(mode_files["L"][1])
    result = colorizer(ARRAYS[kind](gray))
    assert result.image.size == (gray.shape[1], gray.shape[0])
    assert result.image.mode == ("RGBA" if "x4" in kind else "RGB")
    difference = np.abs(lightness_of(result.image) - lightness_of(Image.fromarray(gray)))
    assert np.median(difference) < 0.5


@pytest.mark.parametrize("height, width", [(1, 1), (7, 13), (225, 333)])
def test_odd_sizes_through_the_pipeline(colorizer, mode_files, height, width):
    gray = mode_files["L"][1].resize((width, height))
    result = colorizer(gray, max_side=None)
    assert result.image.size == (width, height)
    (ab,) = colorizer.predict_ab([gray], max_side=None)
    network_height, network_width = network_size(height, width, None)
    assert ab.shape == (1, 2, network_height // 2, network_width // 2)


@pytest.mark.parametrize("max_side", [8, 256, 512, None])
def test_network_size_respects_max_side_and_the_pixel_budget(max_side):
    thin = [(1, 4_000_000), (5, 20_000_000), (80_000, 1)]  # (8, 4000000) at native size: 8x the budget
    for height, width in [(1, 1), (7, 13), (100, 60), (427, 640), (1536, 2048), (9000, 12000), *thin]:
        network_height, network_width = network_size(height, width, max_side)
        assert network_height % 8 == 0 and network_width % 8 == 0 and min(network_height, network_width) >= 8
        limit = min(max(8, max_side or max(height, width)), pipeline.MAX_NETWORK_SIDE)
        assert max(network_height, network_width) <= limit + 4  # within max_side (None: the native size) + rounding
        assert network_height * network_width <= pipeline.NETWORK_PIXEL_BUDGET * 1.01
        if min(network_height, network_width) > 64:
            assert abs(network_height / network_width - height / width) < 0.05


def test_hints_on_a_thin_strip_at_native_size_keep_the_network_input_small():
    """A 1x80000 strip (a few kB as PNG) with one hint took 3.9 GB at native size: the network saw 8x80000 and the
    hint propagation's window matrices grow with the square of a side."""
    colorizer = Colorizer.from_pretrained(pipeline.BUNDLED_MODEL_DIR, engine="torch")
    strip = Image.fromarray(np.full((1, 80_000), 128, np.uint8))
    (ab,) = colorizer.predict_ab([strip], max_side=None)
    assert ab.shape[-1] * 2 <= pipeline.MAX_NETWORK_SIDE
    hinted = colorizer(strip, hints=[(40_000, 0, "#ff0000")], max_side=None).image
    assert hinted.size == strip.size and hinted.getpixel((40_000, 0))[0] > hinted.getpixel((40_000, 0))[2] + 20


def test_small_photos_are_enlarged_to_the_minimum_side_within_max_side():
    assert pipeline.MIN_NETWORK_SIDE == 192
    assert network_size(150, 150, 512) == (192, 192)
    assert network_size(150, 300, 512) == (192, 384)
    assert network_size(150, 300, 256) == (128, 256)  # the longer side stays within max_side
    assert network_size(200, 300, 512) == (200, 304)  # large enough already: only rounded
    assert network_size(150, 150, None) == (152, 152)  # the native size


def test_a_small_photo_is_colorized_at_the_minimum_side(colorizer, examples_dir):
    small = photo(examples_dir, "chelsea.png")
    assert small.size == (160, 106)
    (ab,) = colorizer.predict_ab([small])
    assert ab.shape == (1, 2, 96, 144)  # the network saw it at 288 x 192
    result = colorizer(small)
    assert result.image.size == small.size


def test_options_each_change_the_output(colorizer, examples_dir):
    image, reference = photo(examples_dir, "historical_c.jpg"), photo(examples_dir, "coffee.png")
    plain = np.asarray(colorizer(image).image, dtype=float)
    variants = {
        "no global": colorizer(image, use_global=False),
        "strength 0.5": colorizer(image, global_strength=0.5),
        "reference": colorizer(image, reference=reference),
        "palette": colorizer(image, reference=reference, palette_strength=0.5),
    }
    for name, result in variants.items():
        assert np.abs(np.asarray(result.image, dtype=float) - plain).mean() > 0.5, name
    assert np.array_equal(np.asarray(colorizer(image, global_strength=1.0).image), plain)
    no_global, strength_0 = colorizer(image, use_global=False).image, colorizer(image, global_strength=0.0).image
    assert np.array_equal(np.asarray(no_global), np.asarray(strength_0))


def test_a_reference_read_once_colorizes_as_the_photo_itself(colorizer, examples_dir, tmp_path):
    image, path = photo(examples_dir, "historical_c.jpg"), examples_dir / "coffee.png"
    reference = colorizer.reference(path)
    for options in ({}, {"palette_strength": 0.5}, {"use_global": False, "palette_strength": 1.0}):
        from_path = colorizer(image, reference=path, **options).image
        assert np.array_equal(np.asarray(colorizer(image, reference=reference, **options).image), np.asarray(from_path))
    (tmp_path / "corrupt.png").write_bytes(path.read_bytes()[:500])
    with pytest.raises(InvalidImageError, match="corrupt.png"):
        colorizer.reference(tmp_path / "corrupt.png")
    with pytest.raises(ValueError, match="read by another Colorizer"):  # its vector is another network's
        Colorizer(make_tiny_model(seed=1))(image, reference=reference)
    scan = Image.fromarray(np.linspace(0, 65535, 300 * 400).astype(np.uint16).reshape(300, 400))  # 16-bit gray
    for options in ({}, {"palette_strength": 0.5}):  # its palette failed ("image has wrong mode") when read whole
        assert colorizer(image, reference=scan, **options).image.size == image.size


def test_a_reference_animations_first_frame_used_is_a_warning(colorizer, examples_dir, tmp_path):
    """It was read without a word: the photo's own warnings were reported, the reference's not."""
    animation = two_frame_gif(examples_dir / "coffee.png", tmp_path / "walk.gif")
    image = photo(examples_dir, "historical_c.jpg")
    expected = f"{animation}: has 2 frames (animated or multi-page); only the first was used"
    assert colorizer.batch([image, image], reference=animation)[1].warnings == (expected,)
    read = colorizer.reference(Image.open(animation))  # read once: the warnings are its own, not each result's
    assert read.warnings == ("the reference image: has 2 frames (animated or multi-page); only the first was used",)
    assert colorizer(image, reference=read).warnings == ()
    assert colorizer(image, reference=examples_dir / "coffee.png").warnings == ()


def scene_vectors_given(colorizer, monkeypatch, image, **options) -> torch.Tensor:
    """The scene vectors that reach the local path when colorizing `image` with these options."""
    seen, colorize = [], colorizer.network.colorize
    monkeypatch.setattr(colorizer.network, "colorize", lambda l, g, hints: seen.append(g) or colorize(l, g, hints))
    colorizer(image, **options)
    monkeypatch.setattr(colorizer.network, "colorize", colorize)
    return torch.cat(seen)


def test_the_scene_vector_is_mixed_with_the_null_one_by_the_strength(examples_dir, monkeypatch):
    """g_null + s (g - g_null) (paper 4.4), the null vector alone without global features; a reference's own vector
    in place of the photo's (paper 4.5)."""
    model = calibrate_batchnorm(make_tiny_model(), sorted(examples_dir.glob("historical_*")))
    with torch.no_grad():
        model.null_global.uniform_(-1, 1)  # a trained model's is not zero
    colorizer = Colorizer(model)
    image, reference = photo(examples_dir, "historical_c.jpg"), photo(examples_dir, "coffee.png")
    own = scene_vectors_given(colorizer, monkeypatch, image)
    null = model.null_global.expand_as(own)
    assert not torch.allclose(own, null, atol=1e-3)
    assert torch.allclose(scene_vectors_given(colorizer, monkeypatch, image, use_global=False), null)
    for strength in (0.5, 1.5, 2.0):
        mixed = scene_vectors_given(colorizer, monkeypatch, image, global_strength=strength)
        assert torch.allclose(mixed, null + strength * (own - null), atol=1e-5), strength
    from_reference = scene_vectors_given(colorizer, monkeypatch, image, reference=reference)
    assert torch.allclose(from_reference, scene_vectors_given(colorizer, monkeypatch, reference), atol=1e-5)
    assert not torch.allclose(from_reference, own, atol=1e-3)


def ab_statistics(ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ab.mean((0, 2, 3)), ab.std((0, 2, 3), correction=0)


def test_palette_strength_moves_ab_mean_and_spread_to_the_references(colorizer, examples_dir):
    image, reference = photo(examples_dir, "historical_c.jpg"), photo(examples_dir, "coffee.png")
    statistics = {
        p: ab_statistics(colorizer.predict_ab([image], reference=reference, palette_strength=p)[0])
        for p in (0.0, 0.5, 1.0)
    }
    reference_ab = color.rgb_to_lab(torch.from_numpy(np.asarray(reference, dtype=np.float32) / 255), dim=-1)[..., 1:]
    assert torch.allclose(statistics[1.0][0], reference_ab.mean((0, 1)), atol=1.0)
    assert torch.allclose(statistics[1.0][1], reference_ab.std((0, 1), correction=0), atol=1.0)
    for own, halfway, target in zip(statistics[0.0], statistics[0.5], statistics[1.0], strict=True):
        assert torch.allclose(halfway, (own + target) / 2, atol=1e-3)


def test_a_cut_out_references_palette_is_its_opaque_pixels(colorizer, examples_dir):
    """The coffee photo's left half on a transparent black canvas: its black pixels counted, and the palette was a
    grayer mean with a spread from the black."""
    image, coffee = photo(examples_dir, "historical_c.jpg"), photo(examples_dir, "coffee.png")
    half = coffee.crop((0, 0, coffee.width // 2, coffee.height))
    cut_out = Image.new("RGBA", coffee.size, (0, 0, 0, 0))
    cut_out.paste(half, (0, 0))
    ab = colorizer.predict_ab([image], reference=cut_out, palette_strength=1.0)[0]
    half_ab = color.rgb_to_lab(torch.from_numpy(np.asarray(half, dtype=np.float32) / 255), dim=-1)[..., 1:]
    mean, spread = ab_statistics(ab)
    assert torch.allclose(mean, half_ab.mean((0, 1)), atol=1.0)
    assert torch.allclose(spread, half_ab.std((0, 1), correction=0), atol=1.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"global_strength": 2.5}, "global_strength"),
        ({"global_strength": -0.1}, "global_strength"),
        ({"global_strength": "1"}, "global_strength must be a number"),  # a TypeError
        ({"global_strength": None}, "global_strength must be a number"),
        ({"palette_strength": 0.5}, "needs a reference"),
        ({"palette_strength": 1.5, "reference": np.zeros((8, 8), np.uint8)}, "palette_strength"),
        ({"max_side": 4}, "max_side"),
        ({"max_side": 256.0}, "max_side"),
        ({"use_global": "no"}, "use_global"),
        ({"use_global": False, "reference": np.zeros((8, 8), np.uint8)}, "which use_global=False turns off"),  # ignored
    ],
)
def test_bad_options_raise_clear_value_errors(colorizer, options, message):
    with pytest.raises(ValueError, match=message):
        colorizer(np.zeros((8, 8), np.uint8), **options)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path, width: int, height: int):
    """A gray PNG whose header claims width x height, with one compressed row: a decompression bomb's first bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = png_chunk(b"IDAT", zlib.compress(bytes(width + 1)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + row + png_chunk(b"IEND", b""))
    return path


BAD_FILES = {
    "corrupt": lambda examples, d: d.joinpath("corrupt.jpg").write_bytes(
        b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(4000)
    ),
    "truncated": lambda examples, d: d.joinpath("truncated.jpg").write_bytes(
        (examples / "china.jpg").read_bytes()[:20000]
    ),
    "zero-size": lambda examples, d: d.joinpath("empty.png").write_bytes(b""),
    "not an image": lambda examples, d: d.joinpath("notes.png").write_bytes((examples / "LICENSES.md").read_bytes()),
    "over our limit": lambda examples, d: png_header_only(d / "large.png", 12000, 9000),
    "decompression bomb": lambda examples, d: png_header_only(d / "bomb.png", 100000, 100000),
    "missing": lambda examples, d: None,
    "truncated TIFF": lambda examples, d: half_of(examples / "chelsea_gray.png", d / "cut.tif"),  # ValueError
    "truncated PPM": lambda examples, d: half_of(examples / "chelsea_gray.png", d / "cut.ppm"),  # ValueError
    "truncated QOI": lambda examples, d: half_of(examples / "chelsea_gray.png", d / "cut.qoi"),  # IndexError
    "icon holding a large PNG": lambda examples, d: icon_of(png_header_only(d / "large.png", 6000, 6000), d),
}


def half_of(photo: Path, path: Path) -> None:
    """`photo` saved in `path`'s format, the file then cut to half its bytes: Pillow raised ValueError or IndexError
    from decoding, which passed as neither a clear error nor a photo that a batch skips."""
    Image.open(photo).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def icon_of(png: Path, folder: Path) -> None:
    """An ICO file whose one image is `png` (Pillow decoded it whole while opening the file: 650 MB for 13000x13000)."""
    data = png.read_bytes()
    png.unlink()
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(data), 22)
    folder.joinpath("icon.ico").write_bytes(struct.pack("<HHH", 0, 1, 1) + entry + data)


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_files_raise_invalid_image_error(colorizer, examples_dir, tmp_path, kind):
    BAD_FILES[kind](examples_dir, tmp_path)
    path = next(tmp_path.iterdir(), tmp_path / "missing.jpg")
    with pytest.raises(InvalidImageError, match=str(path.name)):
        colorizer(path)


def test_an_icon_is_refused_before_pillow_decodes_its_image(tmp_path, monkeypatch):
    """Pillow decodes an ICO's PNG while opening the file, before any size check: a 657 KB icon holding a 13000x13000
    PNG took 650 MB in every app endpoint (photo, batch, reference, hint layer)."""
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: pytest.fail("the icon's PNG was decoded"))
    icon_of(png_header_only(tmp_path / "large.png", 13000, 13000), tmp_path)
    for read in (load_image, lambda path: read_image_bytes(path.read_bytes(), path.name)):
        with pytest.raises(InvalidImageError, match=r"icon.ico: not a readable image .*icons \(ICO, ICNS\)"):
            read(tmp_path / "icon.ico")
    with pytest.raises(InvalidHintsError, match="icon.ico: neither a JSON list of points nor a readable image"):
        Hints.parse(tmp_path / "icon.ico", (13000, 13000))


def test_a_video_given_as_a_photo_is_named_a_video(tmp_path):
    """It was "not a readable image (not a format letcolor reads, or corrupt...)": a video is neither."""
    clip = Path(__file__).resolve().parent / "data" / "camvid_drive_cut.mp4"
    videos = {"clip.mp4": clip.read_bytes(), "clip.mkv": b"\x1a\x45\xdf\xa3" + bytes(60)}
    photos = {"photo.heic": b"\x00\x00\x00\x18ftypheic" + bytes(60), "notes.png": b"no photo here"}  # unread ones
    for name, data in (videos | photos).items():
        (tmp_path / name).write_bytes(data)
        said = "a video, not a photo: colorize it as a video" if name in videos else "not a readable image"
        with pytest.raises(InvalidImageError, match=f"{name}: {said}"):
            load_image(tmp_path / name)
        with pytest.raises(InvalidImageError, match=f"{name}: {said}"):
            read_image_bytes(data, name)


def test_an_eps_file_is_refused_without_running_ghostscript(tmp_path, monkeypatch):
    """Pillow runs Ghostscript on an EPS file to decode it: a PostScript program from whoever sent the file."""
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: pytest.fail("Ghostscript was run"))
    path = tmp_path / "drawing.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 setgray 0 0 16 16 rectfill showpage\n")
    with Image.open(path) as opened:
        assert opened.format == "EPS"  # what Pillow would open
    with pytest.raises(InvalidImageError, match=r"drawing.eps: not a readable image .*and EPS are not read"):
        load_image(path)
    assert ".eps" not in image_suffixes()  # not taken for a photo in a folder


def test_the_pixel_limit_is_the_documented_one(tmp_path):
    assert 12000 * 9000 > MAX_IMAGE_PIXELS > Image.MAX_IMAGE_PIXELS  # ours is checked, PIL's only warns below 2x
    with pytest.raises(InvalidImageError, match=f"is 108 MP, over the {MAX_IMAGE_PIXELS / 1e6:.3g} MP limit"):
        load_image(png_header_only(tmp_path / "large.png", 12000, 9000))
    huge = png_header_only(tmp_path / "huge.png", 20000, 10000)  # over Pillow's own limit: its "DOS attack" message
    with pytest.raises(InvalidImageError, match=f"huge.png: is 200 MP, over the {MAX_IMAGE_PIXELS / 1e6:.3g} MP limit"):
        load_image(huge)
    with pytest.raises(InvalidImageError, match="huge.png: is 200 MP, over the 25 MP limit"):  # the app's
        check_image_file(huge, 25_000_000)


def frames_of(examples_dir) -> list[Image.Image]:
    return [photo(examples_dir, name).convert("L") for name in ("historical_b.jpg", "historical_c.jpg")]


@pytest.mark.parametrize("suffix", [".gif", ".tif", ".webp"])
def test_an_animated_or_multipage_file_gives_its_first_frame_and_says_so(colorizer, examples_dir, tmp_path, suffix):
    first, second = frames_of(examples_dir)
    path = save(first, tmp_path / f"frames{suffix}", save_all=True, append_images=[second.resize(first.size)])
    assert Image.open(path).n_frames == 2
    result = colorizer(path)
    frames = "several" if suffix == ".tif" else 2  # (a TIFF's pages are not counted)
    assert result.warnings == (f"{path}: has {frames} frames (animated or multi-page); only the first was colorized",)
    expected = colorizer(Image.open(path).copy())  # the first frame, as a single image
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(expected.image))


def test_a_tiff_of_many_pages_is_not_counted_and_a_psd_has_no_frames(colorizer, tmp_path):
    """Pillow counts a TIFF's pages by reading each one's tags, in time that grows with their square (100,000 pages
    of 1x1, 10 MB: 72 s) and with the tags' size, in every entry point, the app's too, for a warning. A PSD's layers
    were taken for frames: "has 0 frames; only frame 2 was colorized"."""
    pages = [Image.new("L", (8, 8), level % 256) for level in range(1200)]
    path = save(pages[0], tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    warning = f"{path}: has several frames (animated or multi-page); only the first was colorized"
    assert colorizer(path).warnings == (warning,)
    composite = np.arange(64 * 96, dtype=np.uint8).reshape(64, 96)
    header = b"8BPS" + struct.pack(">H", 1) + bytes(6) + struct.pack(">HIIHH", 1, 64, 96, 8, 1) + bytes(12)
    (tmp_path / "flat.psd").write_bytes(header + struct.pack(">H", 0) + composite.tobytes())  # gray, no layers
    result = colorizer(tmp_path / "flat.psd")
    assert result.warnings == ()
    assert np.array_equal(np.asarray(result.image), np.asarray(colorizer(Image.fromarray(composite)).image))


def test_a_tiffs_preview_of_an_image_in_a_sub_image_is_colorized_with_a_warning(colorizer, examples_dir, tmp_path):
    """A DNG-like TIFF (a small preview first, marked reduced-resolution, the image in a SubIFD, which Pillow does not
    read) gave its preview as if it were the photo, without a word."""
    preview = photo(examples_dir, "china_gray.png").resize((160, 107))
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[254], tags[330] = 1, 8  # NewSubfileType: reduced resolution; SubIFDs (Pillow reads no further)
    preview.save(tmp_path / "scan.tif", tiffinfo=tags)
    result = colorizer(tmp_path / "scan.tif")
    assert result.image.size == (160, 107)
    assert result.warnings == (f"{tmp_path / 'scan.tif'}: its 160x107 image is a reduced-resolution preview of one in "
                               "a sub-image (as in a DNG raw file, which letcolor does not read); the preview was "
                               "colorized",)  # fmt: skip
    preview.save(tmp_path / "page.tif")
    assert colorizer(tmp_path / "page.tif").warnings == ()


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_a_multipage_uncompressed_tiff_of_a_quarter_turn_is_read_upright(colorizer, tmp_path, orientation):
    """Its first page was set up again by Pillow's own decoder when later pages were counted, and came out 200x60,
    garbled, where its header said 60x200."""
    gray = np.zeros((60, 200), np.uint8)
    gray[:, 100:], gray[:20] = 220, 128
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[ExifTags.Base.Orientation] = orientation
    path = tmp_path / "scan.tif"
    Image.fromarray(gray).save(path, tiffinfo=tags, save_all=True, append_images=[Image.new("L", (50, 30))])
    one_page = tmp_path / "one.tif"  # read right alone
    Image.fromarray(gray).save(one_page, tiffinfo=tags)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(one_page)))
    assert load_image(path).size == (60, 200) == upright_size(path)
    assert colorizer(path).image.size == (60, 200)


def test_a_tiff_of_tiles_far_larger_than_itself_is_refused_from_its_header(tmp_path):
    """libtiff allocates a tile whole: a 226-byte 64x64 TIFF declaring one 46336x46336 tile took 2.3 GB."""
    (tmp_path / "bomb.tif").write_bytes(tiled_tiff(64, 64, 46336))
    for read in (check_image_file, load_image):
        with pytest.raises(InvalidImageError, match="64x64 TIFF of 46336x46336 tiles"):
            read(tmp_path / "bomb.tif")
    (tmp_path / "small.tif").write_bytes(tiled_tiff(64, 64, 256))  # a usual tile, larger than a small image
    assert load_image(tmp_path / "small.tif").size == (64, 64)


def test_a_12_bit_tiff_is_read_with_its_own_white(colorizer, tmp_path):
    """Pillow reads it as I;16 of values to 4095, which were taken as 16-bit: its white came out 6% gray."""
    levels = np.tile(np.linspace(0, 4095, 256).round().astype(np.uint16), (32, 1))
    pairs = levels.reshape(-1, 2).astype(np.uint32)  # two 12-bit samples in three bytes, first the high bits
    packed = np.stack([pairs[:, 0] >> 4, (pairs[:, 0] & 15) << 4 | pairs[:, 1] >> 8, pairs[:, 1] & 255], 1)
    entries = [(256, 256), (257, 32), (258, 12), (259, 1), (262, 1), (273, 8 + 2 + 12 * 8 + 4), (278, 32),
               (279, packed.size)]  # fmt: skip
    directory = struct.pack("<H", 8) + b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries)
    (tmp_path / "scan12.tif").write_bytes(
        b"II*\0" + struct.pack("<I", 8) + directory + bytes(4) + packed.astype(np.uint8).tobytes()
    )
    gray = np.asarray(colorizer(tmp_path / "scan12.tif").image.convert("L"), dtype=float)
    assert np.abs(gray - levels / 4095 * 255).max() <= 1.5


def test_32_bit_integer_pixels_beyond_16_bits_are_refused_not_clipped(colorizer, tmp_path):
    """They were read with white at 65535 and clipped: a TIFF of 0 to 1,000,000 came out 88% white, no warning."""
    for name, low, high in [("bright", 0, 1_000_000), ("negative", -50_000, 20_000)]:
        Image.fromarray(np.linspace(low, high, 64 * 64, dtype=np.int32).reshape(64, 64), "I").save(
            tmp_path / f"{name}.tif"
        )
        with pytest.raises(InvalidImageError, match=f"32-bit integer pixels from {low} to {high}"):
            colorizer(tmp_path / f"{name}.tif")
    Image.fromarray(np.full((64, 64), 65535, np.int32), "I").save(tmp_path / "white.tif")
    assert np.asarray(colorizer(tmp_path / "white.tif").image.convert("L")).min() >= 254  # read as white


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_a_file_whose_later_frames_are_damaged_gives_its_first_frame_and_says_so(colorizer, examples_dir, tmp_path,
                                                                                  suffix):  # fmt: skip
    """Counting its frames raised IndexError, struct.error, SyntaxError or TypeError: one such file in a folder ended
    the whole CLI run with a traceback."""
    first, second = (frame.resize((64, 48)) for frame in frames_of(examples_dir))
    data = save(first, tmp_path / f"whole{suffix}", save_all=True, append_images=[second]).read_bytes()
    damaged, warned = tmp_path / f"damaged{suffix}", []
    for cut in range(len(data) // 2, len(data), 3):  # cuts from inside the first frame to inside the second
        damaged.write_bytes(data[:cut])
        try:
            warnings = read_image(damaged).warnings
        except InvalidImageError:
            continue
        warned += warnings
    said = "frames after the first are damaged" if suffix == ".gif" else "has several frames"  # (TIFF: pages unread)
    assert any(said in warning for warning in warned)
    assert all(warning.endswith("only the first was colorized") for warning in warned)


def test_the_warning_names_the_frame_a_callers_image_was_moved_to(colorizer, examples_dir, tmp_path):
    first, second = frames_of(examples_dir)
    path = save(first, tmp_path / "frames.gif", save_all=True, append_images=[second.resize(first.size)])
    image = Image.open(path)
    image.seek(1)
    assert colorizer(image).warnings == ("the input image: has 2 frames (animated or multi-page); only frame 2 was "
                                         "colorized",)  # fmt: skip


def test_a_callers_image_interrupted_as_its_frames_are_counted_stays_on_its_frame(colorizer, examples_dir, tmp_path,
                                                                                   monkeypatch):  # fmt: skip
    """Pillow counts a GIF's frames by seeking to its last: interrupted, the caller's image was left on a later frame,
    and the next call colorized that one."""
    first, second = frames_of(examples_dir)
    frames = [first, second.resize(first.size), first.transpose(Image.Transpose.FLIP_LEFT_RIGHT), first.rotate(180)]
    path = save(frames[0], tmp_path / "frames.gif", save_all=True, append_images=frames[1:])
    image = Image.open(path)
    image.seek(1)
    expected = colorizer(on_frame(path, 1))
    seek = GifImagePlugin.GifImageFile._seek

    def interrupted(self, frame, update_image=True):
        if frame == 3:  # the image is on frame 2 by then, on its way to the last
            raise KeyboardInterrupt
        return seek(self, frame, update_image)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(GifImagePlugin.GifImageFile, "_seek", interrupted)
        colorizer(image)
    assert image.tell() == 1
    again = colorizer(image)
    assert again.warnings == expected.warnings
    assert np.array_equal(np.asarray(again.image), np.asarray(expected.image))


def on_frame(path: Path, frame: int) -> Image.Image:
    image = Image.open(path)
    image.seek(frame)
    return image


def test_single_frame_files_and_camera_mpo_files_give_no_warning(colorizer, examples_dir, tmp_path):
    first, second = frames_of(examples_dir)
    mpo = save(first.convert("RGB"), tmp_path / "camera.mpo", format="MPO", save_all=True, append_images=[second])
    assert Image.open(mpo).format == "MPO" and Image.open(mpo).n_frames == 2
    for source in [save(first, tmp_path / "one.gif"), save(first, tmp_path / "one.tif"), mpo, first]:
        assert colorizer(source).warnings == ()


@pytest.mark.parametrize(
    "source",
    [
        np.zeros((0, 5), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4), np.int64),
        np.full((4, 4), np.nan),
        Image.fromarray(np.array([[0.5, np.nan], [0.1, 0.2]], np.float32), mode="F"),
        Image.fromarray(np.array([[0.5, np.inf], [0.1, 0.2]], np.float32), mode="F"),
        np.array([[0.0, 128.0], [255.0, 30.0]], np.float32),  # 8-bit values as floats: came out a white photo
        Image.fromarray(np.array([[0.0, 128.0], [255.0, 30.0]], np.float32), mode="F"),  # as convert("F") makes them
        Image.new("L", (0, 3)),
        Image.new("HSV", (4, 4)),
        42,
    ],
    ids=[
        "empty array",
        "two channels",
        "int64",
        "NaN",
        "mode F NaN",
        "mode F inf",
        "floats of 0-255",
        "mode F of 0-255",
        "empty image",
        "HSV mode",
        "not an image type",
    ],
)
def test_bad_in_memory_inputs_raise_invalid_image_error(colorizer, source):
    with pytest.raises(InvalidImageError):
        colorizer(source)


def test_batch_of_one_image_rather_than_a_list_is_a_type_error(colorizer, examples_dir):
    """A path given to batch was read character by character: 'l: not a readable image'."""
    for one in (str(examples_dir / "chelsea.png"), examples_dir / "chelsea.png", photo(examples_dir, "chelsea.png")):
        with pytest.raises(TypeError, match="batch takes a list of images"):
            colorizer.batch(one)


def test_a_misspelt_option_names_the_call_that_was_made(colorizer, examples_dir):
    """It said "Colorizer.batch() got an unexpected keyword argument" for `colorizer(image, max_size=256)`."""
    with pytest.raises(TypeError, match=r"^Colorizer: unknown options \['max_size'\]; the options are .*'max_side'"):
        colorizer(examples_dir / "chelsea.png", max_size=256)


def test_invalid_image_error_is_a_value_error():
    assert issubclass(InvalidImageError, ValueError)


def test_batch_equals_single_calls_and_batches_same_sizes(model, examples_dir, monkeypatch):
    colorizer = Colorizer(model, speedups=Speedups())  # float32: batching changes only the order of additions
    images = [photo(examples_dir, name) for name in ("historical_b.jpg", "historical_c.jpg", "rocket.jpg")]
    images.append(images[1].transpose(Image.Transpose.FLIP_LEFT_RIGHT))  # the same size as images[1]
    singles = [np.asarray(colorizer(image).image, dtype=int) for image in images]
    calls = []
    original = colorizer.network.colorize
    counted = lambda l, g, hints: calls.append(len(l)) or original(l, g, hints)  # noqa: E731
    monkeypatch.setattr(colorizer.network, "colorize", counted)
    batched = colorizer.batch(images)
    assert sorted(calls) == [1, 1, 2]
    for single, result in zip(singles, batched, strict=True):
        assert np.abs(np.asarray(result.image, dtype=int) - single).max() <= 1
    assert colorizer.batch([]) == []


def test_same_size_inputs_go_to_the_network_in_calls_of_its_pixel_limit(model, examples_dir, monkeypatch):
    colorizer = Colorizer(model, "cpu", speedups=Speedups())
    images = [photo(examples_dir, "historical_c.jpg").rotate(angle) for angle in range(5)]  # 5 of one size
    whole = colorizer.batch(images, max_side=256)
    calls = []
    original = colorizer.network.colorize
    counted = lambda l, g, hints: calls.append(len(l)) or original(l, g, hints)  # noqa: E731
    monkeypatch.setattr(colorizer.network, "colorize", counted)
    network_pixels = math.prod(colorizer.predict_ab(images[:1], max_side=256)[0].shape[-2:]) * 4  # ab is at half size
    monkeypatch.setattr(colorizer.network, "max_call_pixels", 2 * network_pixels)
    chunked = colorizer.batch(images, max_side=256)
    assert calls == [1, 2, 2, 1]  # predict_ab's single image, then 5 in calls of at most 2
    for a, b in zip(whole, chunked, strict=True):
        assert np.abs(np.asarray(a.image, dtype=int) - np.asarray(b.image, dtype=int)).max() <= 1


def test_scenes_are_the_top_five_probabilities(colorizer, model, examples_dir):
    result = colorizer(photo(examples_dir, "china.jpg"))
    probabilities = result.scene_probabilities
    assert probabilities.shape == (model.num_classes,) and abs(probabilities.sum() - 1) < 1e-5
    with torch.no_grad():  # the global branch's own softmax, on the photo's L at 224 x 224
        l224 = fullres.global_input(fullres.lightness(image_pixels(photo(examples_dir, "china.jpg"))))
        expected = model.global_features(l224).scene_logits.softmax(dim=1)[0].numpy()
    assert np.allclose(probabilities, expected, atol=0.01)  # the default engine runs the global branch in int8
    top = np.argsort(probabilities)[::-1][: pipeline.TOP_SCENES]
    assert list(result.scenes) == [model.class_names[i] for i in top]
    assert list(result.scenes.values()) == pytest.approx(probabilities[top].tolist())
    unnamed = make_tiny_model()
    unnamed.class_names = []
    assert Colorizer(unnamed)(photo(examples_dir, "china.jpg")).scenes == {}


def test_from_pretrained_loads_a_directory(tiny_model, tiny_model_dir, mode_files):
    path = mode_files["L"][0]
    from_directory = Colorizer.from_pretrained(tiny_model_dir)(path).image
    assert np.array_equal(np.asarray(from_directory), np.asarray(Colorizer(tiny_model)(path).image))


def test_a_path_given_to_the_colorizer_itself_says_to_use_from_pretrained(tiny_model_dir):
    """Colorizer("letcolor/pretrained") failed with "'str' object has no attribute 'class_names'"."""
    for name in (str(tiny_model_dir), tiny_model_dir):
        with pytest.raises(TypeError, match=r"not a (str|PosixPath): .* use Colorizer.from_pretrained\(name_or_path\)"):
            Colorizer(name)


def test_default_model_comes_from_the_environment_then_the_bundled_directory(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "BUNDLED_MODEL_DIR", tmp_path / "not-installed")
    monkeypatch.delenv(pipeline.MODEL_ENV_VAR, raising=False)
    with pytest.raises(ModelNotFoundError, match="No default model is installed") as error:
        Colorizer.from_pretrained()
    assert "--model" in str(error.value) and pipeline.MODEL_ENV_VAR in str(error.value)
    monkeypatch.setenv(pipeline.MODEL_ENV_VAR, str(tiny_model_dir))
    assert Colorizer.from_pretrained().class_names == make_tiny_model().class_names
    monkeypatch.delenv(pipeline.MODEL_ENV_VAR)
    monkeypatch.setattr(pipeline, "BUNDLED_MODEL_DIR", tiny_model_dir)
    assert Colorizer.from_pretrained().class_names == make_tiny_model().class_names


def test_an_empty_model_name_is_an_error_not_the_default_model(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(pipeline, "BUNDLED_MODEL_DIR", tiny_model_dir)
    for empty in ("", "  "):
        with pytest.raises(ModelNotFoundError, match="model name is empty"):
            Colorizer.from_pretrained(empty)


def test_missing_directory_or_uncached_hub_model_offline_is_model_not_found(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="--model"):
        Colorizer.from_pretrained(tmp_path / "no-such-model")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError, match="letcolor/no-such-model"):
        Colorizer.from_pretrained("letcolor/no-such-model")


def test_default_speedups_stay_within_one_lab_unit_of_float32(model, examples_dir):
    photos = [photo(examples_dir, name) for name in ("historical_d.jpg", "historical_e.jpg", "astronaut.png")]
    reference = Colorizer(model, speedups=Speedups()).predict_ab(photos)
    fast = Colorizer(model, engine="torch").predict_ab(photos)  # int8: test_quantized
    error = torch.cat([(a - b).abs().flatten() for a, b in zip(fast, reference, strict=True)])
    assert error.mean() < 1.0


def test_folded_batchnorm_and_channels_last_are_exact(model, examples_dir):
    photos = [photo(examples_dir, "historical_d.jpg")]
    reference = Colorizer(model, speedups=Speedups()).predict_ab(photos)[0]
    folded = Colorizer(model, speedups=Speedups(fold_batchnorm=True, channels_last=True)).predict_ab(photos)[0]
    assert (folded - reference).abs().max() < 0.01


@pytest.mark.parametrize("precision", PACKED_PRECISIONS)
def test_packed_onednn_convolutions_compute_what_torch_convolutions_do(model, examples_dir, precision):
    photos = [photo(examples_dir, name) for name in ("historical_d.jpg", "astronaut.png")]
    plain = Speedups(precision, fold_batchnorm=True, channels_last=True)
    reference = Colorizer(model, "cpu", plain).predict_ab(photos, max_side=256)
    packed = Colorizer(model, "cpu", dataclasses.replace(plain, onednn=True))
    assert any(isinstance(layer, OneDNNConv) for layer in packed.network.model.modules())
    for fast, exact in zip(packed.predict_ab(photos, max_side=256), reference, strict=True):
        assert (fast - exact).abs().max() < 1e-3


def test_bfloat16_runs_torch_convolutions_where_onednn_cannot_pack_it(model, examples_dir, monkeypatch):
    """An AVX2-only CPU: oneDNN refuses bfloat16 weights, so those convolutions stay torch's (float32 ones are
    packed)."""
    monkeypatch.setattr(inference, "onednn_packs_bfloat16", lambda: False)
    photos = [photo(examples_dir, "historical_d.jpg")]
    for precision, packs in ((Precision.BFLOAT16, False), (Precision.FLOAT32, True)):
        plain = Speedups(precision, fold_batchnorm=True, channels_last=True)
        packed = Colorizer(model, "cpu", dataclasses.replace(plain, onednn=True))
        assert any(isinstance(layer, OneDNNConv) for layer in packed.network.model.modules()) == packs
        expected = Colorizer(model, "cpu", plain).predict_ab(photos, max_side=256)[0]
        assert (packed.predict_ab(photos, max_side=256)[0] - expected).abs().max() < 1e-3


@pytest.mark.parametrize("whole_upsample_pixels", [0, fullres.WHOLE_UPSAMPLE_PIXELS])
def test_full_resolution_conversions_match_the_colour_functions(examples_dir, whole_upsample_pixels, monkeypatch):
    monkeypatch.setattr(fullres, "STRIP_PIXELS", 1000)  # many strips
    monkeypatch.setattr(fullres, "WHOLE_UPSAMPLE_PIXELS", whole_upsample_pixels)
    monkeypatch.setattr(fullres, "LIGHTNESS_STRIP_PIXELS", 1000)
    rgb = photo(examples_dir, "coffee.png")
    l = fullres.lightness(image_pixels(rgb))
    expected_l = color.rgb_to_lightness(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255), dim=-1)
    assert (l[0, 0] - expected_l[..., 0]).abs().max() < 1e-3
    assert_composed_as_lab_to_rgb(l, torch.randn(1, 2, 13, 17) * 30)


def assert_composed_as_lab_to_rgb(l: torch.Tensor, ab: torch.Tensor) -> None:
    upsampled = F.interpolate(ab, size=l.shape[-2:], mode="bilinear", align_corners=False)
    expected = color.lab_to_rgb(torch.cat((l, upsampled), dim=1))[0].permute(1, 2, 0).mul(255).round()
    output = torch.from_numpy(np.asarray(fullres.compose(l, ab, None), dtype=np.float32))
    difference = (output - expected).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


@pytest.mark.parametrize("whole_upsample_pixels", [0, fullres.WHOLE_UPSAMPLE_PIXELS])  # in strips, at once
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 300), (300, 1), (40, 60)])
def test_compose_of_thin_tiny_and_enlarged_images(height, width, whole_upsample_pixels, monkeypatch):
    monkeypatch.setattr(fullres, "STRIP_PIXELS", 100)
    monkeypatch.setattr(fullres, "WHOLE_UPSAMPLE_PIXELS", whole_upsample_pixels)
    generator = torch.Generator().manual_seed(height * width)
    l = torch.rand(1, 1, height, width, generator=generator) * 100
    for ab_size in [(64, 64), (3, 2), (height, width)]:  # larger than the image, much smaller, the same
        assert_composed_as_lab_to_rgb(l, torch.randn(1, 2, *ab_size, generator=generator) * 40)


@pytest.mark.parametrize(
    ("setting", "imports", "expected"),
    [
        ({}, "import letcolor", threads.SPIN_COUNT),
        ({"GOMP_SPINCOUNT": "5"}, "import letcolor", "5"),
        ({"OMP_WAIT_POLICY": "passive"}, "import letcolor", None),
        ({}, "import torch, letcolor", None),  # too late: libgomp read its settings when torch loaded
    ],
)
def test_importing_letcolor_shortens_openmp_spinning_unless_too_late_or_chosen(setting, imports, expected):
    environment = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | setting
    code = f"{imports}; import os; print(os.environ.get('GOMP_SPINCOUNT'))"
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(expected)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 300), (300, 1), (400, 600)])
def test_the_8bit_composition_of_video_frames_is_within_a_few_levels_of_the_float_one(height, width, examples_dir):
    rgb = photo(examples_dir, "coffee.png").resize((width, height))
    l = fullres.lightness(image_pixels(rgb))
    # the bundled model's colours: far out of the sRGB gamut (random ab) the two paths clip differently
    ab = Colorizer.from_pretrained(None).predict_ab([rgb])[0]
    exact = torch.from_numpy(fullres.compose_rgb(l, ab)).float()
    fast = torch.from_numpy(fullres.compose_rgb_8bit(l, ab)).float()
    assert (fast - exact).abs().max() <= 4
    if height * width > 1:  # (one pixel 2 levels off, as on a CPU with bf16, is 47 dB)
        assert 10 * torch.log10(255**2 / (fast - exact).square().mean()) > 48


def gray_round_trip_error(output: Image.Image, gray: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(output.convert("L"), np.int16) - np.asarray(gray, np.int16))


@pytest.mark.parametrize("source", ["gray", "colour", "gray 16-bit"])
def test_the_output_converted_to_gray_gives_the_input_back(examples_dir, source):
    """Its L* was the gray taken as luminance: a colour's Rec. 601 luma came out 1 to 1.5 levels off on average, 5% of
    pixels over 5 levels and some 9 (saturated colours darkened), with 10 hints on the validation photos; then, where
    a channel clipped, up to 9 levels off (a saturated red hint, white with some colour)."""
    truth = photo(examples_dir, "chelsea.png").convert("RGB")  # a ginger cat: saturated orange
    gray = truth.convert("L")
    image = {"gray": gray, "colour": truth, "gray 16-bit": Image.fromarray(np.asarray(gray, np.uint16) * 257)}[source]
    hints = [(80, 50, "#d08030"), (10, 10, "#40a040"), (60, 90, "#ff0000"), (100, 20, "#0000ff")]
    error = gray_round_trip_error(Colorizer.from_pretrained(None)(image, hints=hints).image, gray)
    assert error.mean() < 0.6 and error.max() <= 1  # rounding: each channel to a level, luma by PIL's


def test_video_frames_keep_their_gray_too(examples_dir):
    truth = photo(examples_dir, "coffee.png").convert("RGB")
    pixels = image_pixels(truth)
    ab = Colorizer.from_pretrained(None).predict_ab([truth])[0]
    rgb = fullres.compose_rgb_8bit(fullres.lightness(pixels), ab, fullres.input_luma(pixels))
    error = gray_round_trip_error(Image.fromarray(rgb), truth.convert("L"))
    assert error.mean() < 0.6 and (error > 1).mean() < 0.01


def test_a_gray_photo_saved_as_rgb_has_the_lightness_of_its_gray_channel(examples_dir):
    gray = photo(examples_dir, "historical_d.jpg").convert("L")
    as_rgb = gray.convert("RGB")
    l_rgb = fullres.lightness(image_pixels(as_rgb))[0, 0]
    assert torch.equal(l_rgb, fullres.lightness(image_pixels(gray))[0, 0])
    expected = color.rgb_to_lightness(torch.from_numpy(np.asarray(as_rgb, dtype=np.float32) / 255), dim=-1)[..., 0]
    assert (l_rgb - expected).abs().max() < 1e-3


def test_a_colour_photo_whose_first_rows_are_gray_is_read_as_colour(examples_dir):
    array = np.array(photo(examples_dir, "coffee.png").convert("RGB"))
    array[:3] = array[:3, :, :1]  # a gray border above the colour
    l = fullres.lightness(image_pixels(Image.fromarray(array)))[0, 0]
    expected = color.rgb_to_lightness(torch.from_numpy(array.astype(np.float32) / 255), dim=-1)[..., 0]
    assert (l - expected).abs().max() < 1e-3


@pytest.mark.parametrize("mode", ["L", "I;16", "I", "F"])
def test_gray_lightness_tables_match_gray_to_lightness(mode_files, mode):
    image = ImageOps.exif_transpose(Image.open(mode_files[mode][0]))
    l = fullres.lightness(image_pixels(image))[0, 0].numpy()
    assert np.abs(l - lightness_of(image)).max() < 1e-3


def test_a_full_batch_is_handed_out_before_the_next_photo_is_read():
    """The photo after a full batch was read (decoded whole) before the batch was colorized: an 8000x6000 photo was
    held beside the one being colorized."""
    taken = []

    def photos():
        for area in (100, 100, 500, 50, 50, 50):
            taken.append(area)
            yield area

    handed_out = [(batch, len(taken)) for batch in pipeline.batches_within(photos(), 2, 300, lambda area: area)]
    assert handed_out == [([100, 100], 2), ([500], 3), ([50, 50], 5), ([50], 6)]


def test_one_photo_opened_lazily_can_be_colorized_by_several_threads_at_once(colorizer, examples_dir):
    """Pillow's lazy loading is not thread-safe: 11 calls in 20 failed ("cannot decode the image (I/O operation on
    closed file)", or an AssertionError), as photos and as references, though the file was whole."""
    expected = np.asarray(colorizer(examples_dir / "china_gray.png", max_side=64).image)
    for _ in range(3):
        shared = Image.open(examples_dir / "china_gray.png")  # its pixels not read yet
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda photo: colorizer(photo, max_side=64), [shared] * 4))
        assert all(np.array_equal(np.asarray(result.image), expected) for result in results)
