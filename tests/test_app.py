"""The Gradio app through its API, as a program uses it: a server on 127.0.0.1 and gradio_client."""

import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from served_app import app_process, served_app
from video_clips import audio_packets, with_sine

import app
from letcolor.pipeline import Colorizer
from letcolor.video import probe, read_frames
from letcolor.video_bench import write_clip, write_pan

DEFAULTS = {"use_global": True, "strength": 1.0, "reference": None, "palette_strength": 0.0, "max_side": 256}


@pytest.fixture(scope="module")
def app_url(tiny_model_dir):
    with served_app(tiny_model_dir) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def colorizer(tiny_model_dir):
    return Colorizer.from_pretrained(tiny_model_dir)


def colorize(client: Client, photo: Path, **settings):
    """(result image, scenes) from /colorize."""
    settings = DEFAULTS | settings
    if settings["reference"]:
        settings["reference"] = handle_file(settings["reference"])
    result_path, scenes = client.predict(handle_file(photo), **settings, api_name="/colorize")
    return Image.open(result_path), scenes


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"use_global": False, "max_side": 320},
        {"strength": 1.7, "reference": "coffee.png", "palette_strength": 0.6},
    ],
)
def test_colorize_matches_the_pipeline(client, colorizer, examples_dir, settings):
    photo = examples_dir / "chelsea_gray.png"
    settings = DEFAULTS | settings
    if settings["reference"]:
        settings["reference"] = examples_dir / settings["reference"]
    image, scenes = colorize(client, photo, **settings)
    expected = colorizer(
        photo,
        use_global=settings["use_global"],
        global_strength=settings["strength"],
        reference=settings["reference"],
        palette_strength=settings["palette_strength"],
        max_side=settings["max_side"],
    )
    assert image.format == "PNG"
    assert image.size == Image.open(photo).size
    np.testing.assert_array_equal(pixels(image), pixels(expected.image))
    assert {c["label"]: pytest.approx(c["confidence"]) for c in scenes["confidences"]} == expected.scenes
    assert len(scenes["confidences"]) == 5


@pytest.mark.slow
def test_large_photo_comes_back_at_full_size(client, examples_dir, tmp_path):
    large = tmp_path / "large.jpg"
    Image.open(examples_dir / "rocket_gray.png").resize((2400, 1600), Image.Resampling.LANCZOS).save(large)
    image, _ = colorize(client, large, max_side=256)
    assert image.size == (2400, 1600)


def test_api_lists_the_three_endpoints_with_their_parameters(app_url):
    info = httpx.get(f"{app_url}gradio_api/info").json()
    assert info["unnamed_endpoints"] == {}
    endpoints = info["named_endpoints"]
    assert set(endpoints) == {"/colorize", "/colorize_batch", "/colorize_video"}  # UI-only steps are not listed
    settings = ["use_global", "strength", "reference", "palette_strength", "max_side"]
    for name, first, last in [("/colorize", "image", []), ("/colorize_batch", "files", []),
                              ("/colorize_video", "video", ["mode"])]:  # fmt: skip
        parameters = endpoints[name]["parameters"]
        assert [p["parameter_name"] for p in parameters] == [first, *settings, *last]
        assert [p["parameter_has_default"] for p in parameters] == [False] + [True] * (len(settings) + len(last))
    assert [r["component"] for r in endpoints["/colorize"]["returns"]] == ["Image", "Label"]
    assert [r["component"] for r in endpoints["/colorize_batch"]["returns"]] == ["File"]
    assert [r["component"] for r in endpoints["/colorize_video"]["returns"]] == ["Video"]


def test_a_corrupt_file_is_a_clear_error_and_the_server_carries_on(client, examples_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((examples_dir / "rocket.jpg").read_bytes()[:5000])
    for bad in (broken, truncated):
        with pytest.raises(AppError, match=bad.name) as error:
            colorize(client, bad)
        assert str(tmp_path) not in str(error.value)
        assert "/tmp/gradio" not in str(error.value)
    with pytest.raises(AppError, match="broken.jpg"):
        colorize(client, examples_dir / "chelsea_gray.png", reference=broken)
    image, _ = colorize(client, examples_dir / "coffee.png")
    assert image.size == (600, 400)


@pytest.mark.slow
def test_concurrent_calls_all_succeed_and_match_serial_results(client, examples_dir):
    photos = [examples_dir / name for name in ["chelsea_gray.png", "rocket_gray.png", "coffee.png", "china_gray.png"]]
    photos *= 2
    serial = [pixels(colorize(client, photo)[0]) for photo in photos[:4]] * 2
    with ThreadPoolExecutor(len(photos)) as pool:
        concurrent = list(pool.map(lambda photo: pixels(colorize(client, photo)[0]), photos))
    for expected, got in zip(serial, concurrent, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_batch_returns_a_zip_with_one_png_per_photo(client, examples_dir, tmp_path):
    namesake = tmp_path / "coffee.png"  # a second photo of the same name
    Image.open(examples_dir / "chelsea_gray.png").save(namesake)
    photos = [examples_dir / "coffee.png", examples_dir / "rocket_gray.png", namesake]
    archive = client.predict([handle_file(p) for p in photos], **DEFAULTS, api_name="/colorize_batch")
    with zipfile.ZipFile(archive) as results:
        assert results.namelist() == ["coffee_color.png", "rocket_gray_color.png", "coffee_color_2.png"]
        for photo, name in zip(photos, results.namelist(), strict=True):
            with results.open(name) as entry:
                result = Image.open(entry)
                np.testing.assert_array_equal(pixels(result), pixels(colorize(client, photo)[0]))


def test_batch_names_a_bad_file(client, examples_dir, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("shopping list")
    with pytest.raises(AppError, match="notes.png"):
        client.predict(
            [handle_file(examples_dir / "coffee.png"), handle_file(bad)], **DEFAULTS, api_name="/colorize_batch"
        )


def test_the_server_refuses_files_over_the_size_limit(app_url):
    upload = f"{app_url}gradio_api/upload"
    refused = httpx.post(upload, files={"files": ("huge.png", bytes(26 * 1024 * 1024))})
    assert refused.status_code == 413
    assert httpx.post(upload, files={"files": ("big.png", bytes(24 * 1024 * 1024))}).status_code == 200


@pytest.mark.slow
def test_without_a_model_the_page_says_so_and_the_endpoints_raise(examples_dir, tmp_path):
    with app_process(LETCOLOR_MODEL=str(tmp_path / "no-model-here"), HF_HUB_OFFLINE="1") as url:
        config = httpx.get(f"{url}config").text
        assert "No colorization model is available" in config
        with pytest.raises(AppError, match="No colorization model is available"):
            Client(url, verbose=False).predict(handle_file(examples_dir / "coffee.png"), api_name="/colorize")


def video_path(result) -> Path:
    """gradio_client gives a Video output as {"video": path, "subtitles": ...}."""
    return Path(result["video"] if isinstance(result, dict) else result)


@pytest.mark.slow
def test_colorize_video_matches_the_pipeline_and_keeps_the_sound(client, colorizer, examples_dir, tmp_path):
    clip = tmp_path / "pan.mp4"
    write_pan(examples_dir / "coffee.png", clip, size=(128, 96), frames=8)
    with_sound = with_sine(clip, tmp_path / "street.mp4")
    result = video_path(client.predict(handle_file(with_sound), **DEFAULTS, mode="shot", api_name="/colorize_video"))
    assert result.name == "street_color.mp4"
    expected = tmp_path / "expected.mp4"
    colorizer.video(with_sound, expected, max_side=256)
    got, want = list(read_frames(result)), list(read_frames(expected))
    assert len(got) == 8
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    assert audio_packets(result) == audio_packets(with_sound)
    assert probe(result).fps == probe(with_sound).fps


def test_colorize_video_refuses_videos_over_the_limits_by_name(client, app_url, tmp_path):
    assert app.VIDEO_LIMITS in httpx.get(f"{app_url}config").text  # stated on the page
    large, long, notes = tmp_path / "large.mp4", tmp_path / "long.mp4", tmp_path / "notes.mp4"
    write_clip(large, [np.zeros((1080, 1920, 3), np.uint8)] * 2)
    write_clip(long, [np.zeros((32, 32, 3), np.uint8)] * (app.MAX_VIDEO_FRAMES + 1), fps=60)
    notes.write_text("shopping list")
    for bad, reason in [(large, "1920x1080 is over the 1280x720 limit"), (long, "601 frames"),
                        (notes, "notes.mp4: not a readable video")]:  # fmt: skip
        with pytest.raises(AppError, match=reason) as error:
            client.predict(handle_file(bad), api_name="/colorize_video")
        assert bad.name in str(error.value) and str(tmp_path) not in str(error.value)
