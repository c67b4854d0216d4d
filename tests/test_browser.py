"""The page in a real browser: Debian's chromium, driven by Playwright, uploads a photo or a video and colorizes it.

The screenshot is kept in test-artifacts/ for a person to look at."""

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from served_app import served_app

from letcolor.video_bench import write_pan

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No network here: without these, chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(tiny_model_dir):
    with served_app(tiny_model_dir) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        yield page
        browser.close()


@pytest.mark.slow
def test_upload_colorize_and_see_the_result_in_the_slider(page, examples_dir):
    photo = examples_dir / "chelsea_gray.png"
    page.locator("#photo input[type=file]").set_input_files(photo)
    expect(page.locator("#photo img")).to_be_visible()
    page.get_by_role("button", name="Colorize", exact=True).click()

    slider_images = page.locator("#comparison img")
    expect(slider_images).to_have_count(2, timeout=30_000)
    before, after = (slider_images.nth(i).get_attribute("src") for i in range(2))
    assert before.endswith(photo.name)
    assert after.endswith(".png") and after != before
    assert after_width(slider_images.nth(1)) == Image.open(photo).width  # full resolution, not a preview
    download_button = page.get_by_role("button", name="Download full-resolution PNG")
    expect(download_button).to_be_enabled()
    expect(page.locator("#scenes")).to_contain_text("scene_")
    with page.expect_download() as download:
        download_button.click()
    assert download.value.suggested_filename == "chelsea_gray_color.png"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "app-colorized.png", full_page=True)

    page.locator("#photo").get_by_role("button", name="Remove Image").click()  # clearing the photo clears its result
    expect(slider_images).to_have_count(0)
    expect(download_button).to_be_disabled()
    expect(page.locator("#scenes")).not_to_contain_text("scene_")


@pytest.mark.slow
def test_an_animation_gets_a_visible_warning(page, examples_dir, tmp_path):
    first = Image.open(examples_dir / "chelsea_gray.png").convert("L")
    walk = tmp_path / "walk.gif"
    first.save(walk, save_all=True, append_images=[first.transpose(Image.Transpose.ROTATE_180)])
    page.get_by_role("tab", name="Photo").click()
    page.locator("#photo input[type=file]").set_input_files(walk)
    page.get_by_role("button", name="Colorize", exact=True).click()
    warning = "walk.gif: has 2 frames (animated or multi-page); only the first was colorized"
    expect(page.get_by_text(warning)).to_be_visible(timeout=30_000)


@pytest.mark.slow
def test_batch_shows_a_gallery_a_report_and_the_zip_and_clearing_clears_them(page, examples_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    page.get_by_role("tab", name="Batch").click()
    files = page.locator("#batch-files")
    photos = [examples_dir / "coffee.png", broken, examples_dir / "rocket.jpg"]
    files.locator("input[type=file]").set_input_files(photos)
    expect(files.get_by_role("button", name="Remove this file")).to_have_count(3)  # all uploaded
    page.get_by_role("button", name="Colorize all").click()

    report = page.locator("#batch-report")
    expect(report).to_contain_text("Colorized 2 of 3 photos.", timeout=60_000)
    expect(report).to_contain_text("broken.jpg: not a readable image")
    gallery = page.locator("#batch-gallery")
    expect(gallery.locator("img")).to_have_count(2)
    expect(gallery).to_contain_text("coffee_color.png")
    expect(gallery).to_contain_text("rocket_color.png")
    expect(page.locator("#batch-zip")).to_contain_text("letcolor-results")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "app-batch.png", full_page=True)

    files.get_by_role("button", name="Clear").click()
    expect(gallery.locator("img")).to_have_count(0)
    expect(report).not_to_contain_text("Colorized")
    expect(page.locator("#batch-zip")).not_to_contain_text("letcolor-results")


def after_width(image) -> int:
    image.evaluate("img => img.decode()")
    return image.evaluate("img => img.naturalWidth")


@pytest.mark.slow
def test_video_tab_colorizes_a_clip_that_the_browser_plays(page, examples_dir, tmp_path):
    clip = tmp_path / "drive.mp4"
    write_pan(examples_dir / "coffee.png", clip, size=(128, 96), frames=10)
    page.get_by_role("tab", name="Video").click()
    expect(page.get_by_text("Videos up to")).to_be_visible()
    page.locator("#video input[type=file]").set_input_files(clip)
    page.get_by_role("button", name="Colorize video").click()

    result = page.locator("#video-result video")
    expect(result).to_have_attribute("src", re.compile(r"drive_color\.mp4$"), timeout=60_000)
    # The browser decodes the H.264 MP4: its metadata loads, with the clip's length (10 frames at 10 fps).
    duration = result.evaluate(
        "v => v.readyState >= 1 ? v.duration : new Promise(done => v.addEventListener('loadedmetadata', "
        "() => done(v.duration), {once: true}))"
    )
    assert duration == pytest.approx(1.0, abs=0.05)
    expect(page.get_by_role("button", name="Download MP4")).to_be_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "app-video.png", full_page=True)
