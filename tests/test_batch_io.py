"""The web app's result files: names, the batch folder that nothing half-made outlives, the sweep of stale ones."""

import os
import time
import zipfile

import pytest
from PIL import Image

from letcolor.batch_io import BatchFolder, new_result_folder, remove_stale_folders, result_name, save_result


@pytest.mark.parametrize(
    ("photo_name", "expected"),
    [
        ("photo.jpg", "photo_color.png"),
        ("../../etc/passwd", "passwd_color.png"),
        ("scan\x00\n.tif", "scan_color.png"),
        (".jpg", ".jpg_color.png"),  # a dot file's stem is its whole name
        ("", "photo_color.png"),
        ("x" * 300 + ".png", "x" * 100 + "_color.png"),
        ("写" * 83 + ".jpg", "写" * 33 + "_color.png"),  # 3 bytes each: within 100 bytes (it was cut at 100 characters)
    ],
)
def test_results_are_named_after_the_photo(photo_name, expected):
    assert result_name(photo_name) == expected


def test_a_result_is_written_as_a_png_named_after_the_photo(examples_dir, tmp_path):
    image = Image.open(examples_dir / "coffee.png")
    path = save_result(image, "my photo.jpeg", tmp_path)
    assert path.name == "my photo_color.png" and path.parent.parent == tmp_path
    assert Image.open(path).format == "PNG" and Image.open(path).size == image.size
    assert save_result(image, "写" * 83 + ".jpg", tmp_path).exists()  # a 253-byte name: its result was 259 (OSError)


def test_a_completed_batch_keeps_its_zip_and_previews(examples_dir, tmp_path):
    photos = [Image.open(examples_dir / name) for name in ("coffee.png", "chelsea.png")]
    with BatchFolder(tmp_path) as batch:
        for name, image in zip(("coffee.png", "coffee.png"), photos, strict=True):
            batch.add(name, image)
    with zipfile.ZipFile(batch.zip.path) as results:
        assert results.namelist() == ["coffee_color.png", "coffee_color_2.png"]
    assert [(path.name, name) for path, name in batch.previews] == [
        ("coffee_color.webp", "coffee_color.png"),
        ("coffee_color_2.webp", "coffee_color_2.png"),
    ]


def test_a_batch_that_fails_midway_leaves_nothing_behind(examples_dir, tmp_path):
    with pytest.raises(RuntimeError, match="disk full"), BatchFolder(tmp_path) as batch:
        batch.add("coffee.png", Image.open(examples_dir / "coffee.png"))
        assert batch.zip.path.exists()
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_stale_result_folders_are_swept_and_fresh_ones_kept(tmp_path):
    stale, fresh = new_result_folder(tmp_path, "batch"), new_result_folder(tmp_path, "photo")
    (stale / "letcolor-results.zip").write_bytes(b"partial")
    other = tmp_path / "someone-elses"
    other.mkdir()
    two_hours_ago = time.time() - 7200
    for folder in (stale, other):
        os.utime(folder, (two_hours_ago, two_hours_ago))
    remove_stale_folders(tmp_path, max_age_seconds=3600)
    assert sorted(tmp_path.iterdir()) == sorted([fresh, other])
