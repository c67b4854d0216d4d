"""The Gradio app through its API, as a program uses it: a server on 127.0.0.1, gradio_client, raw HTTP and an MCP
client."""

import asyncio
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from conftest import ROOT
from crafted import DAMAGED_EXIF, png_with_exif
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from PIL import ExifTags, Image
from served_app import app_process, served_app
from video_clips import audio_packets, re_encoded, size_switching, slow_clip, truncated_faststart, with_sine

import app
from letcolor.batch_io import FOLDER_PREFIX
from letcolor.bench_app import app_server
from letcolor.pipeline import BUNDLED_MODEL_DIR, Colorizer
from letcolor.video import colorize_video, probe, read_frames
from letcolor.video_bench import write_clip, write_pan
from letcolor.webapp import DEFAULT_MAX_MEGAPIXELS, MAX_BATCH_FILES, Settings, Upload, WebColorizer

CAMVID_CUT = ROOT / "tests" / "data" / "camvid_drive_cut.mp4"
DEFAULTS = {
    "use_global": True,
    "strength": 1.0,
    "reference": None,
    "palette_strength": 0.0,
    "max_side": 256,
    "refine": False,
}


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    """The app's own upload and result folder, so that what it leaves there can be checked."""
    return tmp_path_factory.mktemp("gradio-uploads")


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, upload_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(upload_dir))
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


def colorize_batch(client: Client, photos: list[Path], **settings):
    """(zip path, gallery, report) from /colorize_batch."""
    return client.predict([handle_file(p) for p in photos], **(DEFAULTS | settings), api_name="/colorize_batch")


def header_only_jpeg(path: Path, width: int, height: int) -> Path:
    """A valid few-hundred-byte JPEG whose header declares width x height (decoding it would allocate them all)."""
    small = io.BytesIO()
    Image.new("L", (8, 8), 128).save(small, format="JPEG")
    data = bytearray(small.getvalue())
    frame = data.index(b"\xff\xc0")  # start of frame: marker, length, precision, height, width
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def two_frame_gif(examples_dir, path: Path) -> Path:
    first = Image.open(examples_dir / "chelsea_gray.png").convert("L")
    first.save(path, save_all=True, append_images=[first.transpose(Image.Transpose.ROTATE_180)])
    return path


def result_files(upload_dir: Path) -> set[Path]:
    """The app's result folders and every zip under its upload folder."""
    return set(upload_dir.glob(f"{FOLDER_PREFIX}*")) | set(upload_dir.rglob("*.zip"))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"use_global": False, "max_side": 320},
        {"strength": 1.7, "reference": "coffee.png", "palette_strength": 0.6},
        {"refine": True},
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
        refine=settings["refine"],
    )
    assert image.format == "PNG"
    assert Path(image.filename).name == "chelsea_gray_color.png"  # downloads are named after the photo
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
    settings = ["use_global", "strength", "reference", "palette_strength", "max_side", "refine"]
    for name, first, last in [("/colorize", "image", ["hints"]), ("/colorize_batch", "files", []),
                              ("/colorize_video", "video", ["mode"])]:  # fmt: skip
        parameters = endpoints[name]["parameters"]
        assert [p["parameter_name"] for p in parameters] == [first, *settings, *last]
        assert [p["parameter_has_default"] for p in parameters] == [False] + [True] * (len(settings) + len(last))
    assert [r["component"] for r in endpoints["/colorize"]["returns"]] == ["Image", "Label"]
    assert [r["component"] for r in endpoints["/colorize_batch"]["returns"]] == ["File", "Gallery", "Markdown"]
    assert [r["component"] for r in endpoints["/colorize_video"]["returns"]] == ["Video"]


def test_a_corrupt_file_is_a_clear_error_and_the_server_carries_on(client, examples_dir, tmp_path, capfd):
    capfd.readouterr()
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
    log = capfd.readouterr().err  # the server's: one line for each refused request, not 70 lines of tracebacks
    assert "Traceback" not in log and log.count("refused: ") == 3 and "broken.jpg: not a readable image" in log


@pytest.mark.slow
def test_concurrent_calls_all_succeed_and_match_serial_results(client, examples_dir):
    photos = [examples_dir / name for name in ["chelsea_gray.png", "rocket_gray.png", "coffee.png", "china_gray.png"]]
    photos *= 2
    serial = [pixels(colorize(client, photo)[0]) for photo in photos[:4]] * 2
    with ThreadPoolExecutor(len(photos)) as pool:
        concurrent = list(pool.map(lambda photo: pixels(colorize(client, photo)[0]), photos))
    for expected, got in zip(serial, concurrent, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_batch_returns_a_zip_with_one_png_per_photo_and_a_gallery(client, examples_dir, tmp_path):
    namesake = tmp_path / "coffee.png"  # a second photo of the same name
    Image.open(examples_dir / "chelsea_gray.png").save(namesake)
    photos = [examples_dir / "coffee.png", examples_dir / "rocket_gray.png", namesake]
    archive, gallery, report = colorize_batch(client, photos)
    names = ["coffee_color.png", "rocket_gray_color.png", "coffee_color_2.png"]
    assert report == "Colorized 3 of 3 photos."
    assert [item["caption"] for item in gallery] == names
    with zipfile.ZipFile(archive) as results:
        assert results.namelist() == names
        for photo, name, item in zip(photos, names, gallery, strict=True):
            with results.open(name) as entry:
                result = Image.open(entry)
                np.testing.assert_array_equal(pixels(result), pixels(colorize(client, photo)[0]))
                preview = Image.open(item["image"])
                assert max(preview.size) == min(512, max(result.size))  # a preview, the zip has full resolution
                assert preview.size[0] / preview.size[1] == pytest.approx(result.size[0] / result.size[1], rel=0.01)


def test_batch_skips_and_reports_bad_photos_and_colorizes_the_rest(client, examples_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list")
    photos = [examples_dir / "coffee.png", broken, examples_dir / "rocket_gray.png", notes]
    archive, gallery, report = colorize_batch(client, photos)
    with zipfile.ZipFile(archive) as results:
        assert results.namelist() == ["coffee_color.png", "rocket_gray_color.png"]
    assert [item["caption"] for item in gallery] == ["coffee_color.png", "rocket_gray_color.png"]
    lines = report.splitlines()
    assert lines[:3] == ["Colorized 2 of 4 photos.", "", "Skipped:"]
    assert lines[3].startswith("- `broken.jpg`: not a readable image")  # (Markdown: names as code)
    assert lines[4].startswith("- `notes.png`: not a readable image")
    assert "/tmp" not in report and str(tmp_path) not in report


def test_batch_results_of_names_that_differ_in_case_only_are_two_files_anywhere(client, examples_dir, tmp_path):
    """Photo.png and photo.png gave Photo_color.png and photo_color.png: one file where case is ignored (Windows,
    macOS)."""
    photos = [tmp_path / "Photo.png", tmp_path / "photo.png"]
    Image.open(examples_dir / "coffee.png").save(photos[0])
    Image.open(examples_dir / "rocket_gray.png").save(photos[1])
    archive, _, _ = colorize_batch(client, photos)
    with zipfile.ZipFile(archive) as results:
        assert results.namelist() == ["Photo_color.png", "photo_color_2.png"]


def test_a_failing_batch_leaves_no_zip_behind(client, examples_dir, tmp_path, upload_dir):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    before = result_files(upload_dir)
    with pytest.raises(AppError, match=r"Colorized 0 of 2 photos\.(.|\n)*- broken\.jpg: not a readable image"):
        colorize_batch(client, [broken, header_only_jpeg(tmp_path / "huge.jpg", 10000, 10000)])
    assert result_files(upload_dir) == before


def test_a_batch_over_the_file_limit_is_refused_before_any_is_colorized(client, tmp_path, upload_dir):
    photo = tmp_path / "small.png"
    Image.new("L", (16, 16), 90).save(photo)
    before = result_files(upload_dir)
    with pytest.raises(AppError, match=rf"^At most {MAX_BATCH_FILES} photos per batch; got {MAX_BATCH_FILES + 1}\.$"):
        colorize_batch(client, [photo] * (MAX_BATCH_FILES + 1))
    assert result_files(upload_dir) == before


def test_batch_colorizes_a_photo_whose_exif_is_damaged_and_notes_it(client, examples_dir, tmp_path):
    """Pillow's bare "not a TIFF file" for a PNG's damaged EXIF failed the whole batch."""
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(png_with_exif((examples_dir / "chelsea_gray.png").read_bytes(), DAMAGED_EXIF["byte order"]))
    _, _, report = colorize_batch(client, [examples_dir / "coffee.png", damaged])
    assert report.splitlines() == [
        "Colorized 2 of 2 photos.",
        "",
        "Notes:",
        "- `damaged.png`: its EXIF data is damaged and was ignored (the photo is taken as stored, not turned)",
    ]


def test_batch_reports_an_animation_whose_first_frame_was_used(client, examples_dir, tmp_path):
    _, _, report = colorize_batch(client, [two_frame_gif(examples_dir, tmp_path / "walk.gif")])
    assert report.splitlines() == [
        "Colorized 1 of 1 photos.",
        "",
        "Notes:",
        "- `walk.gif`: has 2 frames (animated or multi-page); only the first was colorized",
    ]


def test_colorize_warns_that_only_the_first_frame_of_an_animation_was_used(client, examples_dir, tmp_path):
    job = client.submit(
        handle_file(two_frame_gif(examples_dir, tmp_path / "walk.gif")), **DEFAULTS, api_name="/colorize"
    )

    async def logged_messages():
        return [update.log async for update in job if update.type == "status" and update.log]

    assert asyncio.run(logged_messages()) == [
        ("walk.gif: has 2 frames (animated or multi-page); only the first was colorized", "warning")
    ]
    assert Path(job.result()[0]).name == "walk_color.png"


def test_a_reference_animation_is_a_warning_for_a_photo_a_batch_and_a_video(client, examples_dir, tmp_path):
    """The photo's own warnings were shown, the reference's never."""
    settings = DEFAULTS | {"reference": handle_file(two_frame_gif(examples_dir, tmp_path / "walk.gif"))}
    warning = "walk.gif: has 2 frames (animated or multi-page); only the first was used"
    photo = handle_file(examples_dir / "coffee.png")

    async def logged_messages(job):
        return [update.log async for update in job if update.type == "status" and update.log]

    colorized = client.submit(photo, **settings, api_name="/colorize")
    assert asyncio.run(logged_messages(colorized)) == [(warning, "warning")]
    _, _, report = client.predict([photo, photo], **settings, api_name="/colorize_batch")
    assert report.splitlines()[2:] == ["Notes:", f"- `walk.gif`: {warning.removeprefix('walk.gif: ')}"]
    write_clip(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3)
    video = client.submit(handle_file(tmp_path / "clip.mp4"), **settings, api_name="/colorize_video")
    assert asyncio.run(logged_messages(video)) == [(warning, "warning")]
    assert len(list(read_frames(video_path(video.result())))) == 3


def test_a_photo_over_the_apps_pixel_limit_is_refused_from_its_header(client, examples_dir, tmp_path):
    bomb = header_only_jpeg(tmp_path / "bomb.jpg", 10000, 10000)
    assert bomb.stat().st_size < 1000 and Image.open(bomb).size == (10000, 10000)
    limit = f"bomb.jpg: 10000x10000 is 100 MP, over the {DEFAULT_MAX_MEGAPIXELS} MP limit"
    with pytest.raises(AppError, match=limit):
        colorize(client, bomb)
    with pytest.raises(AppError, match=limit):
        colorize(client, examples_dir / "coffee.png", reference=bomb)
    _, _, report = colorize_batch(client, [bomb, examples_dir / "coffee.png"])
    assert report.splitlines()[:4] == ["Colorized 1 of 2 photos.", "", "Skipped:", f"- `bomb.jpg`{limit[8:]}"]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("max_side", None, "max_side must be a finite number, got None"),
        ("max_side", "512", "max_side must be a finite number, got '512'"),
        ("max_side", True, "max_side must be a finite number, got True"),
        ("max_side", 100, "max_side must be from 256 to 1024 (pixels), got 100"),
        ("max_side", 10**400, "max_side must be a finite number, got 1000000"),  # was OverflowError's message
        ("strength", None, "strength must be a finite number, got None"),
        ("strength", 3, "strength must be a number in [0, 2], got 3.0"),  # named global_strength
        ("palette_strength", 0.5, "palette_strength > 0 needs a reference image"),
        ("use_global", "yes", "use_global must be True or False, got 'yes'"),
        ("refine", 1, "refine must be True or False, got 1"),
        ("hints", {"path": None}, "1 validation error for FileData"),  # refused by Gradio
        ("image", {"url": "https://example.com/photo.jpg"}, "image: expected an uploaded file"),
        ("image", "photo.jpg", "1 validation error for ImageData"),  # refused by Gradio before the app sees it
        ("image", None, "Upload a photo first."),
        ("reference", {"path": None}, "reference: expected an uploaded file"),
    ],
)
def test_bad_values_over_the_api_get_a_clear_message(client, examples_dir, setting, value, message):
    arguments = {"image": handle_file(examples_dir / "coffee.png")} | DEFAULTS | {setting: value}
    with pytest.raises(AppError) as error:
        client.predict(*arguments.values(), api_name="/colorize")
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("value", ["Infinity", "NaN", "-Infinity"])
def test_non_finite_numbers_in_raw_json_get_a_clear_message(app_url, examples_dir, value):
    """gradio_client cannot send inf or NaN; a hand-written request can (Python's JSON reads `Infinity`)."""
    photo = examples_dir / "coffee.png"
    path = httpx.post(f"{app_url}gradio_api/upload", files={"files": (photo.name, photo.read_bytes())}).json()[0]
    image = json.dumps({"path": path, "meta": {"_type": "gradio.FileData"}})
    body = f'{{"data": [{image}, true, 1.0, null, 0.0, {value}, false, null]}}'
    call = f"{app_url}gradio_api/call/colorize"
    event = httpx.post(call, content=body, headers={"content-type": "application/json"}).json()["event_id"]
    stream = httpx.get(f"{call}/{event}", timeout=60).text
    assert "event: error" in stream
    assert f"max_side must be a finite number, got {float(value)}" in stream


def test_the_server_refuses_files_over_the_size_limit(app_url):
    upload = f"{app_url}gradio_api/upload"
    refused = httpx.post(upload, files={"files": ("huge.png", bytes(26 * 1024 * 1024))})
    assert refused.status_code == 413
    assert httpx.post(upload, files={"files": ("big.png", bytes(24 * 1024 * 1024))}).status_code == 200


def test_colorize_takes_hints_as_json_points_or_a_paint_layer_and_refuses_bad_ones(examples_dir, tmp_path):
    photo = examples_dir / "chelsea_gray.png"  # 451 x 300
    points = tmp_path / "points.json"
    points.write_text(json.dumps([[x, y, "#1f4e9c"] for x in range(100, 200, 10) for y in range(60, 100, 10)]))
    layer = Image.new("RGBA", (451, 300))
    layer.paste((31, 78, 156, 255), (100, 60, 200, 100))
    layer.save(tmp_path / "layer.png")
    colorizer = Colorizer.from_pretrained(BUNDLED_MODEL_DIR)
    with served_app(BUNDLED_MODEL_DIR) as url:
        client = Client(url, verbose=False)
        for hints in (points, tmp_path / "layer.png"):
            result, _ = colorize(client, photo, hints=handle_file(hints))
            expected = colorizer(photo, hints=str(hints), max_side=256).image
            assert np.array_equal(pixels(result), pixels(expected))
            assert not np.array_equal(pixels(result), pixels(colorizer(photo, max_side=256).image))
        (tmp_path / "outside.json").write_text(json.dumps([[451, 10, "#ff0000"]]))
        Image.new("RGBA", (300, 451)).save(tmp_path / "turned.png")
        for bad, message in (
            ("outside.json", r"hint 1 at \(451, 10\) is outside the 451x300 photo"),
            ("turned.png", "turned.png is 300x451, not the photo's 451x300"),
        ):
            with pytest.raises(AppError, match=message):
                colorize(client, photo, hints=handle_file(tmp_path / bad))


def test_the_editors_paint_becomes_one_hint_layer_of_the_upright_photos_size(tmp_path):
    stored = tmp_path / "turned.jpg"  # stored 40 wide and 30 high, shown turned: 30 wide and 40 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("L", (40, 30), 128).save(stored, exif=exif)
    strokes, dots = Image.new("RGBA", (60, 80)), Image.new("RGBA", (60, 80))  # the editor's canvas, at 2x
    strokes.paste((200, 30, 30, 255), (0, 0, 20, 10))
    strokes.paste((30, 200, 30, 40), (40, 60, 60, 80))  # a faint brush rim: not a hint
    dots.paste((30, 30, 200, 255), (10, 0, 20, 10))  # the upper layer covers part of the stroke
    paths = [tmp_path / "strokes.png", tmp_path / "dots.png"]
    for layer, path in zip((strokes, dots), paths, strict=True):
        layer.save(path)
    web = WebColorizer(Colorizer.from_pretrained(BUNDLED_MODEL_DIR), 10_000, tmp_path)
    painted = Image.open(web.painted_hints(Upload(stored, "turned.jpg"), [Upload(p, p.name) for p in paths]))
    assert painted.size == (30, 40)
    assert painted.getpixel((2, 2)) == (200, 30, 30, 255) and painted.getpixel((7, 2)) == (30, 30, 200, 255)
    assert painted.getchannel("A").getbbox() == (0, 0, 10, 5)  # the rim is gone
    Image.new("RGBA", (60, 80)).save(tmp_path / "empty.png")
    assert web.painted_hints(Upload(stored, "turned.jpg"), [Upload(tmp_path / "empty.png", "empty.png")]) is None
    blind = Image.new("RGBA", (80, 80))  # the editor's square canvas once "clear canvas" took the photo away
    blind.paste((30, 200, 30, 255), (30, 30, 50, 32))
    blind.save(tmp_path / "blind.png")
    with pytest.raises(ValueError, match="not over the photo .* was the editor's canvas cleared"):  # it was scaled
        web.painted_hints(Upload(stored, "turned.jpg"), [Upload(tmp_path / "blind.png", "blind.png")])


def test_a_result_is_shown_beside_the_photo_it_was_made_from_only(colorizer, examples_dir, tmp_path, monkeypatch):
    """A photo changed while the last one was colorized was shown as "before" beside the last one's colours, and the
    download offered them; the browser's copy of a photo still an earlier one's (made one at a time for all users)
    was paired with the new photo's result."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    endpoints = app.Endpoints(colorizer, "", 10_000_000)
    result = {"path": "/out/old_color.png"}
    endpoints._photo_of.add(result["path"], "/up/old.tif")  # as /colorize records its results
    new = {"photo": "/up/new.png", "shown": "/up/new.png"}
    shown, download, scenes, _ = endpoints.before_after({"path": "/up/new.png"}, "/up/old.png", new, result)
    assert shown is None and not download.interactive and scenes is None
    shown, download, scenes, _ = endpoints.before_after({"path": "/up/new.png"}, "/up/new.png", new, result)
    assert shown is None and not download.interactive and scenes is None  # pressed for the new one, the old result
    old = {"photo": "/up/old.tif", "shown": "/shown/old.png"}
    shown, download, _, kept = endpoints.before_after({"path": "/up/old.tif"}, "/up/old.tif", old, result)
    assert shown == ("/shown/old.png", "/out/old_color.png") and download.interactive  # as the browser shows it
    assert kept == gr.skip()
    scan = tmp_path / "scan.tif"
    Image.open(examples_dir / "chelsea_gray.png").save(scan)
    scan_result = {"path": "/out/scan_color.png"}
    endpoints._photo_of.add(scan_result["path"], str(scan))
    shown, download, _, kept = endpoints.before_after({"path": str(scan)}, str(scan), old, scan_result)
    assert shown[0].endswith("scan.png") and Image.open(shown[0]).size == (451, 300) and download.interactive
    assert kept == {"photo": str(scan), "shown": shown[0]}  # not made again


def test_a_turned_webp_is_shown_upright_and_a_turned_jpeg_as_it_is(colorizer, examples_dir, tmp_path):
    """Browsers draw a WebP as stored, whatever its EXIF orientation (JPEG and PNG they turn): the slider showed it
    turned against its result, and paint on it was refused as "not over the photo"."""
    web = WebColorizer(colorizer, 10_000_000, tmp_path)
    stored = Image.open(examples_dir / "chelsea_gray.png")  # 451 x 300
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # a quarter turn: upright, 300 x 451
    for name in ("turned.webp", "turned.jpg", "plain.webp"):
        stored.save(tmp_path / name, exif=exif if name.startswith("turned") else Image.Exif())
    shown = web.shown_photo(Upload(tmp_path / "turned.webp", "turned.webp"))
    assert shown.suffix == ".png" and Image.open(shown).size == (300, 451)
    for name in ("turned.jpg", "plain.webp"):
        assert web.shown_photo(Upload(tmp_path / name, name)) == tmp_path / name


def test_the_hint_editor_takes_only_the_current_photos_copy():
    """The editor's photo and strokes were replaced only when the photo's copy was made, one at a time for all users:
    strokes on the last photo were colorized with a new photo of nearly its shape."""
    current = {"path": "/up/b.png"}
    assert app.photo_to_paint_on(current, {"photo": "/up/a.png", "shown": "/up/a.png"}) == gr.skip()
    assert app.photo_to_paint_on(current, {"photo": "/up/b.png", "shown": "/up/b.png"})["background"] == "/up/b.png"
    last = {"photo": "/up/a.png", "shown": "/up/a.png"}
    assert app.nothing_to_paint_on(current, last) == (None, None)  # cleared at once, and its copy forgotten
    assert app.nothing_to_paint_on(None, last) == (None, None)
    assert app.nothing_to_paint_on(current, None) == (gr.skip(), gr.skip())  # an empty editor is not redrawn
    # nor one that holds this photo: one new photo is reported as changed 2-3 times, and the strokes went
    assert app.nothing_to_paint_on(current, {"photo": "/up/b.png", "shown": "/up/b.png"}) == (gr.skip(), gr.skip())


def test_a_photo_reported_as_changed_again_keeps_its_result_and_its_copy(colorizer):
    """Gradio's Image reports one new photo as changed 2-3 times, some after Colorize was pressed for it: its result
    was cleared, and its browser copy made again for each."""
    photo = {"path": "/up/b.png"}
    assert app.result_of_another_photo(photo, "/up/b.png") == (gr.skip(),) * 3
    assert app.result_of_another_photo(photo, "/up/a.png")[0] is None  # another photo's: cleared
    assert app.result_of_another_photo(None, "/up/b.png")[0] is None
    endpoints = app.Endpoints(colorizer, "", 10_000_000)
    assert endpoints.photo_to_show(photo, {"photo": "/up/b.png", "shown": "/up/b.png"}) == gr.skip()


def test_strokes_on_the_blank_editor_of_a_removed_photo_are_not_hints(colorizer, examples_dir, tmp_path, monkeypatch):
    """Painted after "Remove Image", they reached the next photo where it was colorized before its copy was set in
    the editor (a square photo passed the shape check): hints the user never saw on it."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    endpoints = app.Endpoints(colorizer, "", 10_000_000)
    stroke = Image.new("RGBA", (512, 512))
    stroke.paste((200, 30, 30, 255), (300, 300, 400, 330))
    stroke.save(tmp_path / "layer.png")
    photo = {"path": str(examples_dir / "astronaut_gray.png")}
    layers = [{"path": str(tmp_path / "layer.png")}]
    shown = {"photo": photo["path"], "shown": photo["path"]}
    assert endpoints.painted_hints(photo, {"background": None, "layers": layers, "composite": None}, shown) is None
    background = {"path": str(examples_dir / "astronaut_gray.png")}
    assert endpoints.painted_hints(photo, {"background": background, "layers": layers, "composite": None}, shown)


def test_strokes_painted_on_the_last_photo_are_not_hints_for_the_next(colorizer, examples_dir, tmp_path, monkeypatch):
    """Colorize pressed while a new photo uploaded took the strokes still in the editor, painted on the last photo
    (in view: `shown`): the new photo came out with them, or with an error about paint "not over the photo"."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    endpoints = app.Endpoints(colorizer, "", 10_000_000)
    stroke = Image.new("RGBA", (512, 512))
    stroke.paste((200, 30, 30, 255), (300, 300, 400, 330))
    stroke.save(tmp_path / "layer.png")
    last, new = str(examples_dir / "astronaut.png"), {"path": str(examples_dir / "astronaut_gray.png")}
    editor = {"background": {"path": last}, "layers": [{"path": str(tmp_path / "layer.png")}], "composite": None}
    assert endpoints.painted_hints(new, editor, {"photo": last, "shown": last}) is None
    assert endpoints.painted_hints(new, editor, None) is None


def test_an_upload_that_is_gone_is_named_by_the_users_file_name(colorizer, tmp_path):
    """A video upload removed by the hourly sweep (or never there) gave FileNotFoundError with the server's path."""
    web = WebColorizer(colorizer, 10_000, tmp_path)
    gone = Upload(tmp_path / "uploads" / "a1b2" / "clip.mp4", "clip.mp4")
    settings = Settings.from_api(True, 1.0, 0.0, 512, False)
    with pytest.raises(ValueError, match=r"^clip\.mp4: the uploaded file is gone; upload it again$"):
        web.colorize_video(gone, None, settings, "shot")


def test_hints_for_a_model_without_hint_inputs_are_a_clear_error(client, examples_dir, tmp_path):
    (tmp_path / "points.json").write_text(json.dumps([[10, 10, "#ff0000"]]))
    with pytest.raises(AppError, match="this model takes no colour hints"):
        colorize(client, examples_dir / "chelsea_gray.png", hints=handle_file(tmp_path / "points.json"))


@pytest.mark.slow
def test_without_a_model_the_page_says_so_and_the_endpoints_raise(examples_dir, tmp_path):
    with app_process(LETCOLOR_MODEL=str(tmp_path / "no-model-here"), HF_HUB_OFFLINE="1") as url:
        config = httpx.get(f"{url}config").text
        assert "No colorization model is available" in config
        with pytest.raises(AppError, match="No colorization model is available"):
            Client(url, verbose=False).predict(handle_file(examples_dir / "coffee.png"), api_name="/colorize")


async def call_mcp_tool(app_url: str, tool: str, arguments: dict, with_progress: bool):
    """(the tools listed, the call's result) from the app's MCP server, through the MCP Python client."""
    progress = []

    async def on_progress(done, total, message):
        progress.append(message)

    async with (
        streamable_http_client(f"{app_url}gradio_api/mcp/") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {each.name: each for each in (await session.list_tools()).tools}
        result = await session.call_tool(tool, arguments, progress_callback=on_progress if with_progress else None)
    return tools, result


def data_uri(photo: Path) -> str:
    return f"data:image/png;base64,{base64.b64encode(photo.read_bytes()).decode()}"


@pytest.mark.parametrize("with_progress", [True, False], ids=["progress", "no progress"])
def test_an_mcp_client_colorizes_a_photo(app_url, colorizer, examples_dir, with_progress):
    photo = examples_dir / "chelsea_gray.png"
    arguments = {"image": data_uri(photo), "max_side": 320}
    tools, result = asyncio.run(call_mcp_tool(app_url, "colorize", arguments, with_progress))
    assert set(tools) == {"colorize", "colorize_batch", "colorize_video"}
    assert tools["colorize"].description.startswith("Colorize a black-and-white photo")
    assert tools["colorize"].inputSchema["required"] == ["image"]
    hints = tools["colorize"].inputSchema["properties"]["hints"]["description"]  # were cut at the docstring's lines
    assert "a PNG of the photo's size whose painted pixels are hints of their colour" in hints
    video_mode = tools["colorize_video"].inputSchema["properties"]["mode"]["description"]
    assert video_mode.endswith('or "frame" (each frame on its own)')
    assert not result.isError
    texts = " ".join(item.text for item in result.content if item.type == "text")
    url = re.search(r"http://\S+?_color\.png", texts).group()  # the full-resolution PNG, named after the upload
    images = [item for item in result.content if item.type == "image"]
    if with_progress:  # Gradio 6.31 returns the image itself only to a client that asks for progress
        assert [item.mimeType for item in images] == ["image/png"]
        image = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    else:
        image = Image.open(io.BytesIO(httpx.get(url).content))
    expected = colorizer(photo, max_side=320)
    np.testing.assert_array_equal(pixels(image), pixels(expected.image))
    assert next(iter(expected.scenes)) in texts


def test_an_mcp_client_gets_a_clear_error(app_url, examples_dir):
    arguments = {"image": data_uri(examples_dir / "LICENSES.md"), "max_side": 320}
    _, result = asyncio.run(call_mcp_tool(app_url, "colorize", arguments, with_progress=True))
    assert result.isError
    assert "not a readable image" in result.content[0].text


def model_with(problem: str, tiny_model_dir: Path, directory: Path) -> Path:
    shutil.copytree(tiny_model_dir, directory)
    if problem == "corrupt weights":
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        config = json.loads((directory / "config.json").read_text()) | {"colour_space": "lab"}
        (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.slow
@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("corrupt weights", "not a valid letcolor model: Error while deserializing header"),
        ("unknown config key", "config.json has unknown keys ['colour_space']"),
    ],
)
def test_with_an_invalid_model_python_app_py_starts_and_the_page_says_why(
    examples_dir, tiny_model_dir, tmp_path, problem, reason
):
    model = model_with(problem, tiny_model_dir, tmp_path / "model")
    with app_process(LETCOLOR_MODEL=str(model), HF_HUB_OFFLINE="1") as url:
        page = httpx.get(f"{url}config").json()
        notes = [c["props"].get("value", "") for c in page["components"] if c["type"] == "markdown"]
        assert any("No colorization model is available" in note and reason in note for note in notes)
        with pytest.raises(AppError, match=re.escape(reason)):
            Client(url, verbose=False).predict(handle_file(examples_dir / "coffee.png"), api_name="/colorize")


@pytest.mark.slow
def test_the_pixel_limit_is_configurable_and_stated_on_the_page(examples_dir, tiny_model_dir):
    with app_process(LETCOLOR_MODEL=str(tiny_model_dir), LETCOLOR_APP_MAX_MEGAPIXELS="0.2") as url:
        page = httpx.get(f"{url}config").json()
        limits = next(c["props"]["value"] for c in page["components"] if c["props"].get("elem_id") == "limits")
        assert limits.startswith("Photos up to 0.2 megapixels and 25MB")
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match=r"coffee.png: 600x400 is 0.24 MP, over the 0.2 MP limit"):
            client.predict(handle_file(examples_dir / "coffee.png"), api_name="/colorize")
        result, _ = client.predict(handle_file(examples_dir / "chelsea_gray.png"), api_name="/colorize")  # 451x300
        assert Image.open(result).size == (451, 300)


@pytest.mark.slow
def test_a_bad_pixel_limit_stops_python_app_py_with_a_clear_message(tiny_model_dir):
    env = os.environ | {"LETCOLOR_MODEL": str(tiny_model_dir), "LETCOLOR_APP_MAX_MEGAPIXELS": "lots"}
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "app.py: LETCOLOR_APP_MAX_MEGAPIXELS must be a number of megapixels in [0.01, 100], got 'lots'"
    )


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
    colorize_video(colorizer, with_sound, expected, max_side=256)
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
    truncated = truncated_faststart(CAMVID_CUT, tmp_path / "truncated.mp4")
    switching = size_switching(tmp_path / "switching.ts", [(320, 240, 20), (1920, 1080, 2)])  # header: 320x240
    long_sound = with_sine(CAMVID_CUT, tmp_path / "long_sound.mp4", seconds=25)  # 12 frames, 25 s of sound
    write_clip(tmp_path / "still.mp4", [np.zeros((32, 32, 3), np.uint8)] * 210)
    write_clip(tmp_path / "still.mkv", [np.zeros((32, 32, 3), np.uint8)] * 210)  # Matroska declares no frame count
    over_by_a_frame = tmp_path / "over_by_a_frame.mkv"  # 20.033 s: it said "20.0 s; the limit is 20 s"
    write_clip(over_by_a_frame, [np.zeros((32, 32, 3), np.uint8)] * (app.MAX_VIDEO_FRAMES + 1), fps=30)
    raw = re_encoded(tmp_path / "still.mp4", tmp_path / "raw.h264", "h264")  # 21 s at 10 frames/s; no duration declared
    for bad, reason in [(large, "1920x1080 is over the 1280x720 limit"), (long, "601 frames"),
                        (long_sound, r"long_sound.mp4: 25\.\d s, 12 frames"), (raw, "longer than the limit of 20 s"),
                        (tmp_path / "still.mkv", r"still.mkv: 21\.0 s; the limit is 20 s"),
                        (over_by_a_frame, r"over_by_a_frame.mkv: 20\.033 s; the limit is 20 s"),
                        (notes, r"notes.mp4: not a readable video \(not a video file, or truncated or damaged\)$"),
                        (truncated, "ends after 4 of the 12 frames"),
                        (switching, "frame 21 is 1920x1080, not the 320x240")]:  # fmt: skip
        with pytest.raises(AppError, match=reason) as error:
            client.predict(handle_file(bad), api_name="/colorize_video")
        assert bad.name in str(error.value) and str(tmp_path) not in str(error.value)


def started_then_cancelled(client: Client, upload_dir: Path, kind: str, *inputs, api_name: str) -> set[Path]:
    """Submits the call, cancels it once it has reported progress and made its result folder (`kind`), and gives
    the app's result folders of that kind that are left 10 s later."""
    folders = lambda: set(upload_dir.glob(f"{FOLDER_PREFIX}{kind}-*"))  # noqa: E731
    before, settings = folders(), DEFAULTS | {"max_side": 1024, "refine": True}  # slow
    job = client.submit(*inputs, **settings, api_name=api_name)
    deadline = time.monotonic() + 60
    while not (job.status().progress_data and folders() - before) and not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not job.done() and folders() - before, "the call did not start"
    job.cancel()
    deadline = time.monotonic() + 10  # the whole call takes far longer
    while folders() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    return folders() - before


def test_a_cancelled_video_or_batch_stops_and_leaves_nothing_behind(client, upload_dir, examples_dir, tmp_path):
    """Gradio frees a cancelled event's concurrency slot at once, but cannot stop a function that runs: a cancelled
    video was colorized to its end beside the next one, past VIDEO_CONCURRENCY (one client ran four at once)."""
    clip, small = tmp_path / "long.mp4", tmp_path / "small.mp4"
    slow_clip(clip)
    assert started_then_cancelled(client, upload_dir, "video", handle_file(clip), api_name="/colorize_video") == set()
    photos = [handle_file(examples_dir / "china.jpg")] * MAX_BATCH_FILES
    assert started_then_cancelled(client, upload_dir, "batch", photos, api_name="/colorize_batch") == set()
    write_clip(small, [np.zeros((48, 64, 3), np.uint8)] * 3)  # and the next call runs
    result = video_path(client.predict(handle_file(small), **DEFAULTS, api_name="/colorize_video"))
    assert len(list(read_frames(result))) == 3


def test_a_video_cancelled_before_its_first_frames_stops_too(client, upload_dir, tmp_path):
    """A call was taken for cancelled only where an earlier check had seen it running: cancelled while its reference
    photo was read, before any frame, a video was colorized to its end."""
    clip, reference = tmp_path / "long.mp4", tmp_path / "reference.png"
    slow_clip(clip)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (3000, 4000), np.uint8)).save(reference)  # slow to read
    before = set(upload_dir.glob(f"{FOLDER_PREFIX}video-*"))
    settings = DEFAULTS | {"max_side": 1024, "refine": True, "reference": handle_file(reference)}
    job, deadline = client.submit(handle_file(clip), **settings, api_name="/colorize_video"), time.monotonic() + 60
    while job.status().code.name not in ("PROCESSING", "PROGRESS", "FINISHED") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status().code.name == "PROCESSING" and not job.status().progress_data, "not running, or frames done"
    job.cancel()
    time.sleep(15)  # the whole video takes far longer
    assert set(upload_dir.glob(f"{FOLDER_PREFIX}video-*")) == before


def resident_megabytes(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the process's memory from /proc")
def test_python_app_py_returns_to_its_memory_after_refused_4k_streams(tmp_path):
    """A 4K stream that a 320x240 header hid used to leave the server 60 to 85 MB larger for good: glibc kept the
    decoded 4K frames' freed buffers in its heap."""
    good = size_switching(tmp_path / "good.ts", [(320, 240, 24)])
    hidden_4k = size_switching(tmp_path / "hidden.ts", [(320, 240, 20), (3840, 2160, 3)])
    with app_server({}) as (url, pid):
        client = Client(url, verbose=False)
        for _ in range(2):
            client.predict(handle_file(good), api_name="/colorize_video")
        settled = resident_megabytes(pid)
        after_refusals = []
        for _ in range(4):
            with pytest.raises(AppError, match="3840x2160"):
                client.predict(handle_file(hidden_4k), api_name="/colorize_video")
            after_refusals.append(resident_megabytes(pid))
    assert max(after_refusals) - settled < 30, (settled, after_refusals)
