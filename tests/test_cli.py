"""`python -m letcolor`: colorize files, folders and globs; clear errors; the bench command."""

import contextlib
import fcntl
import functools
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from crafted import exif_with_a_rational_description, two_frame_gif
from PIL import ExifTags, Image
from test_model import BAD_MODELS, damaged_copy
from video_clips import size_switching, truncated_faststart

import letcolor
from letcolor import bench, cli, eccv16_bench, pipeline
from letcolor.video import probe, read_frames
from letcolor.video_bench import write_pan

CAMVID_CUT = Path(__file__).resolve().parent / "data" / "camvid_drive_cut.mp4"


@pytest.fixture
def photos(examples_dir, tmp_path):
    """A folder of real photos (small copies) and one corrupt JPEG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("historical_a.png", "historical_b.jpg", "chelsea.png"):
        with Image.open(examples_dir / name) as image:
            image.thumbnail((128, 128))
            image.save(folder / name)
    (folder / "corrupt.jpg").write_bytes((examples_dir / "china.jpg").read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


@pytest.fixture
def no_default_model(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "BUNDLED_MODEL_DIR", tmp_path / "not-installed")
    monkeypatch.delenv(pipeline.MODEL_ENV_VAR, raising=False)


def test_folder_with_a_corrupt_file(photos, tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    exit_code = cli.main(["colorize", str(photos), "-o", str(output), "--model", str(tiny_model_dir)])
    assert exit_code == cli.EXIT_SOME_FAILED
    written = sorted(path.name for path in output.iterdir())
    assert written == ["chelsea.png", "historical_a.png", "historical_b.jpg"]
    for name in written:
        with Image.open(output / name) as result, Image.open(photos / name) as source:
            assert result.size == source.size
            assert result.mode == ("RGBA" if source.mode == "RGBA" else "RGB")
    errors = capsys.readouterr().err
    assert "corrupt.jpg" in errors and "colorized 3 of 4 images" in errors and "Traceback" not in errors


@pytest.mark.parametrize("max_side", ["64", "native"])
def test_files_and_globs_with_every_option(photos, tiny_model_dir, examples_dir, tmp_path, max_side):
    output = tmp_path / "out"
    arguments = [str(photos / "chelsea.png"), str(photos / "historical_*.jpg"), "-o", str(output)]
    options = ["--model", str(tiny_model_dir), "--reference", str(examples_dir / "coffee.png"), "--palette", "0.5"]
    options += ["--strength", "1.5", "--max-side", max_side, "--batch-size", "1", "--no-global"]
    assert cli.main(["colorize", *arguments, *options]) == 0
    assert sorted(path.name for path in output.iterdir()) == ["chelsea.png", "historical_b.jpg"]


def test_a_reference_is_read_once_for_every_batch(photos, tiny_model_dir, examples_dir, tmp_path, monkeypatch):
    """The network read it again, and its palette was taken again, for each batch: 20 small photos with an 8000x6000
    reference took 22 s at batch size 1."""
    calls = {"global_input": 0, "palette_of": 0}
    for name in calls:
        function = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *args, name=name, f=function: calls.update({name: calls[name] + 1})
                            or f(*args))  # fmt: skip
    arguments = [str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--batch-size", "1"]
    reference = ["--reference", str(examples_dir / "coffee.png"), "--palette", "0.5"]
    assert cli.main(["colorize", *arguments, *reference]) == cli.EXIT_SOME_FAILED  # corrupt.jpg
    assert len(list((tmp_path / "out").iterdir())) == 3
    assert calls == {"global_input": 3 + 1, "palette_of": 1}  # each photo's scene input, and the reference's


def test_a_reference_animation_is_a_warning_once(photos, tiny_model_dir, examples_dir, tmp_path, capsys):
    animation = two_frame_gif(examples_dir / "coffee.png", tmp_path / "walk.gif")
    arguments = [
        str(photos),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model_dir),
        "--reference",
        str(animation),
    ]
    assert cli.main(["colorize", *arguments]) == cli.EXIT_SOME_FAILED  # corrupt.jpg
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {animation}: has 2 frames (animated or multi-page); only the first was used"]


@pytest.mark.parametrize("pixels, batches", [(10**9, [3]), (2 * 128 * 128, [2, 1]), (1, [1, 1, 1])])
def test_a_batch_holds_at_most_so_many_pixels_or_one_photo(photos, tiny_model_dir, tmp_path, monkeypatch, pixels,
                                                          batches):  # fmt: skip
    """Batches counted photos only: four 8000x6000 photos at the default --batch-size took 2.6 GB against 1.2 GB."""
    monkeypatch.setattr(cli, "BATCH_PIXELS", pixels)
    sizes, batch = [], pipeline.Colorizer.batch
    monkeypatch.setattr(pipeline.Colorizer, "batch", lambda self, images, **o: sizes.append(len(images)) or batch(
        self, images, **o))  # fmt: skip
    arguments = [str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--batch-size", "4"]
    assert cli.main(["colorize", *arguments]) == cli.EXIT_SOME_FAILED  # corrupt.jpg
    assert sizes == batches and len(list((tmp_path / "out").iterdir())) == 3


def test_the_batch_size_does_not_change_the_colours(examples_dir, tiny_model_dir, tmp_path):
    """Three photos of one size, so that they go through the network together in a batch of 3."""
    names = [f"part_{left}.png" for left in (0, 100, 200)]
    with Image.open(examples_dir / "china.jpg") as photo:
        for name, left in zip(names, (0, 100, 200), strict=True):
            photo.crop((left, 0, left + 160, 120)).save(tmp_path / name)
    for size in ("1", "3"):
        options = ["-o", str(tmp_path / size), "--model", str(tiny_model_dir), "--batch-size", size]
        assert cli.main(["colorize", *(str(tmp_path / name) for name in names), *options]) == 0
    for name in names:
        one, three = (np.asarray(Image.open(tmp_path / size / name), dtype=int) for size in ("1", "3"))
        assert one.shape == three.shape and np.abs(one - three).max() <= 1, name


def test_same_names_from_two_folders_do_not_overwrite(photos, tiny_model_dir, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(photos, twin)
    output = tmp_path / "out"
    cli.main(
        [
            "colorize",
            str(photos / "chelsea.png"),
            str(twin / "chelsea.png"),
            "-o",
            str(output),
            "--model",
            str(tiny_model_dir),
        ]
    )
    assert sorted(path.name for path in output.iterdir()) == ["chelsea.png", "chelsea_color.png"]


def test_output_in_the_input_folder_never_replaces_a_photo(photos, tiny_model_dir, capsys):
    originals = {path.name: path.read_bytes() for path in photos.iterdir()}
    (photos / "chelsea_color.png").write_bytes(originals["chelsea.png"])  # an input with the first fallback name
    exit_code = cli.main(["colorize", str(photos), "-o", str(photos), "--model", str(tiny_model_dir)])
    assert exit_code == cli.EXIT_SOME_FAILED  # the corrupt JPEG
    assert all((photos / name).read_bytes() == data for name, data in originals.items())
    assert (photos / "chelsea_color.png").read_bytes() == originals["chelsea.png"]
    written = {path.name for path in photos.iterdir()} - set(originals) - {"chelsea_color.png"}
    assert written == {
        "historical_a_color.png",
        "historical_b_color.jpg",
        "chelsea_color-1.png",
        "chelsea_color_color.png",
    }


def test_an_output_never_replaces_an_input_under_another_name(photos, tiny_model_dir, tmp_path):
    """A hard link of the input in the output folder was written through (the input replaced), and an extension was
    lower-cased (X.JPG -> X.jpg: the input itself on a macOS or FAT disk)."""
    output = tmp_path / "out"
    output.mkdir()
    os.link(photos / "chelsea.png", output / "chelsea.png")
    shutil.copy(photos / "historical_b.jpg", tmp_path / "X.JPG")
    before = {path: path.read_bytes() for path in (photos / "chelsea.png", tmp_path / "X.JPG")}
    options = ["--model", str(tiny_model_dir)]
    assert cli.main(["colorize", str(photos / "chelsea.png"), "-o", str(output), *options]) == 0
    assert cli.main(["colorize", str(tmp_path / "X.JPG"), "-o", str(tmp_path), *options]) == 0
    assert all(path.read_bytes() == data for path, data in before.items())
    assert sorted(path.name for path in output.iterdir()) == ["chelsea.png", "chelsea_color.png"]
    assert sorted(path.name for path in tmp_path.glob("X*")) == ["X.JPG", "X_color.JPG"]  # not X.jpg


def test_an_output_replaces_a_link_of_its_name_not_the_file_it_points_at(photos, tiny_model_dir, tmp_path):
    """An output was written through a symbolic or hard link of its name in OUTDIR: a file outside it replaced."""
    precious = {name: tmp_path / name for name in ("precious.jpg", "precious2.jpg")}
    for path in precious.values():
        shutil.copy(photos / "historical_b.jpg", path)
    before = {path: path.read_bytes() for path in precious.values()}
    (tmp_path / "symbolic").mkdir()
    (tmp_path / "symbolic" / "historical_b.jpg").symlink_to(precious["precious.jpg"])
    (tmp_path / "hard").mkdir()
    os.link(precious["precious2.jpg"], tmp_path / "hard" / "historical_b.jpg")
    for folder in ("symbolic", "hard"):
        arguments = ["colorize", str(photos / "historical_b.jpg"), "-o", str(tmp_path / folder)]
        assert cli.main([*arguments, "--model", str(tiny_model_dir)]) == 0
        output = tmp_path / folder / "historical_b.jpg"
        assert not output.is_symlink() and output.stat().st_nlink == 1 and Image.open(output).mode == "RGB"
    assert all(path.read_bytes() == data for path, data in before.items())


def test_an_output_written_again_keeps_its_permissions(photos, tiny_model_dir, tmp_path):
    """Put in place under a new file, a private output (0600) became readable by all (0644)."""
    arguments = ["colorize", str(photos / "chelsea.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    assert cli.main(arguments) == 0
    (tmp_path / "out" / "chelsea.png").chmod(0o600)
    assert cli.main([*arguments, "--max-side", "64"]) == 0
    assert (tmp_path / "out" / "chelsea.png").stat().st_mode & 0o777 == 0o600


def test_a_full_disk_leaves_no_cut_short_output(examples_dir, tiny_model_dir, tmp_path):
    """On a full disk a PNG whose file failed as it was closed (Pillow had written it to the file's buffer) was left
    cut short under its name, and a JPEG's short write passed unseen. A limit on a file's size (RLIMIT_FSIZE) fails
    writes as a full disk does."""
    (tmp_path / "in").mkdir()
    Image.open(examples_dir / "chelsea_gray.png").resize((24, 16)).save(tmp_path / "in" / "tiny.png")

    def limit_file_size():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # bytes: the output's PNG is some 1,500

    command = [sys.executable, "-m", "letcolor", "colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    command += ["--model", str(tiny_model_dir), "--engine", "torch"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == cli.EXIT_SOME_FAILED, result.stderr[-2000:]
    assert list((tmp_path / "out").iterdir()) == []  # no partial, hidden or not
    assert "tiny.png: File too large" in result.stderr and "colorized 0 of 1 images" in result.stderr


def test_a_photo_keeps_its_own_name_when_another_of_the_same_stem_comes_first(examples_dir, tiny_model_dir, tmp_path):
    """x.gif, first in order, took out/x.png (a GIF comes out as PNG), and x.png's result became out/x_color.png."""
    (tmp_path / "in").mkdir()
    Image.open(examples_dir / "chelsea_gray.png").save(tmp_path / "in" / "x.png")  # 451 x 300
    Image.open(examples_dir / "chelsea_gray.png").resize((200, 100)).save(tmp_path / "in" / "x.gif")
    assert (
        cli.main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 0
    )
    assert Image.open(tmp_path / "out" / "x.png").size == (451, 300)
    assert Image.open(tmp_path / "out" / "x_color.png").size == (200, 100)


@pytest.mark.parametrize("name", ["scan.jpg", "scan.tif", "scan.png"])
def test_a_scans_resolution_and_exif_are_kept_its_orientation_applied(examples_dir, tiny_model_dir, tmp_path, name):
    """A 600-dpi scan came out at 72 (TIFF: 1) dpi, and its EXIF (a date, a caption) was dropped; then its EXIF
    colour space, "uncalibrated", was kept for an output in sRGB. (A TIFF's tags are its layout as well: written whole
    into another TIFF they made it unreadable; it keeps its resolution.)"""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.DateTime] = "1931:05:02 10:00:00"
    exif[ExifTags.Base.ImageDescription] = "Grandma at the fair"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ColorSpace] = 0xFFFF  # uncalibrated: an Adobe RGB camera's
    Image.open(examples_dir / "chelsea_gray.png").convert("L").save(tmp_path / name, exif=exif, dpi=(600, 600))
    arguments = ["colorize", str(tmp_path / name), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    assert cli.main(arguments) == 0
    with Image.open(tmp_path / "out" / name) as result:
        assert result.size == (300, 451) and tuple(map(round, result.info["dpi"])) == (600, 600)
        kept = result.getexif()
    assert kept.get(ExifTags.Base.Orientation, 1) == 1  # turned upright once: not again by a viewer
    if not name.endswith(".tif"):
        assert kept[ExifTags.Base.DateTime] == "1931:05:02 10:00:00"
        assert kept[ExifTags.Base.ImageDescription] == "Grandma at the fair"
        assert kept.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ColorSpace] == 1  # sRGB now, its profile applied


def test_an_exif_block_that_cannot_be_written_back_leaves_the_output_without_it(examples_dir, tiny_model_dir,
                                                                                  tmp_path):  # fmt: skip
    """A caption stored as a RATIONAL (Pillow reads it, cannot write it): a traceback, and no photo of the run."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    gray = Image.open(examples_dir / "chelsea_gray.png").convert("L")
    gray.save(inputs / "a_odd.jpg", exif=b"Exif\x00\x00" + exif_with_a_rational_description(1))
    gray.save(inputs / "b_good.jpg")
    assert cli.main(["colorize", str(inputs), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 0
    with Image.open(tmp_path / "out" / "a_odd.jpg") as written:
        assert written.size == gray.size and not written.getexif()
    assert (tmp_path / "out" / "b_good.jpg").is_file()


@pytest.mark.parametrize(
    ("compression", "mode", "kept"),
    [("tiff_lzw", "L", "tiff_lzw"), ("tiff_adobe_deflate", "L", "tiff_adobe_deflate"), ("raw", "L", "raw"),
     ("jpeg", "L", "jpeg"), ("group4", "1", "tiff_lzw")],
)  # fmt: skip
def test_a_tiff_keeps_its_compression_where_it_holds_colour(examples_dir, tiny_model_dir, tmp_path, compression, mode,
                                                           kept):  # fmt: skip
    """Every TIFF came out uncompressed: a 600-dpi page five times the size of its LZW input."""
    Image.open(examples_dir / "chelsea_gray.png").convert(mode).save(tmp_path / "scan.tif", compression=compression)
    arguments = ["colorize", str(tmp_path / "scan.tif"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    assert cli.main(arguments) == 0
    with Image.open(tmp_path / "out" / "scan.tif") as result:
        assert result.info["compression"] == kept and result.mode == "RGB" and result.size == (451, 300)


def test_a_photo_with_alpha_in_a_format_that_drops_it_comes_out_as_png():
    """An RGBA BMP (a 32-bit one with an alpha mask) came out as a BMP, which Pillow writes without its alpha."""
    assert [cli.image_suffix(Path(name), has_alpha=True) for name in ("a.bmp", "a.JPG", "a.TIF", "a.webp")] == [
        ".png",
        ".png",
        ".TIF",
        ".webp",
    ]
    assert cli.image_suffix(Path("a.BMP"), has_alpha=False) == ".BMP"


def test_a_folder_leaves_out_hidden_files_as_a_glob_does(photos, tiny_model_dir, tmp_path):
    """macOS's AppleDouble ._chelsea.png (no image) was read as a photo, failed, and made the run exit 1."""
    (photos / "corrupt.jpg").unlink()
    (photos / "._chelsea.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert cli.main(["colorize", str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 0
    assert not any(path.name.startswith(".") for path in (tmp_path / "out").iterdir())


def test_a_folders_subfolders_left_out_are_named(photos, tiny_model_dir, tmp_path, capsys):
    """Photos in subfolders were left out without a word (with none at the top: "no input images" in a folder of
    photos)."""
    (photos / "corrupt.jpg").unlink()
    (photos / "1950s").mkdir()
    shutil.move(photos / "chelsea.png", photos / "1950s" / "chelsea.png")
    (photos / ".git").mkdir()  # hidden: no photos of the user's
    assert cli.main(["colorize", str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 0
    pattern = photos / "**" / "*.jpg"
    assert f'note: {photos}: its subfolder is not read (1950s); a pattern such as "{pattern}" reads them' in (
        capsys.readouterr().err
    )
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["historical_a.png", "historical_b.jpg"]
    assert cli.main(["colorize", str(photos / "**" / "*.jpg"), "-o", str(tmp_path / "all"), "--model",
                     str(tiny_model_dir)]) == 0  # fmt: skip
    assert sorted(path.name for path in (tmp_path / "all").iterdir()) == ["historical_b.jpg"]
    for _ in range(2):  # the second time, the outputs' folder is there: it is not named
        assert cli.main(["colorize", str(photos), "-o", str(photos / "colored"), "--model", str(tiny_model_dir)]) == 0
        assert "its subfolder is not read (1950s);" in capsys.readouterr().err


def test_a_run_goes_on_once_its_messages_have_no_reader(photos, tiny_model_dir, tmp_path):
    """With stderr a pipe whose reader had gone (`2>&1 | head -1`), the first message (the corrupt JPEG skipped) was a
    BrokenPipeError: exit 1, no photo colorized."""
    read, write = os.pipe()
    os.close(read)
    command = [sys.executable, "-m", "letcolor", "colorize", str(photos / "corrupt.jpg"), str(photos / "chelsea.png")]
    command += ["-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    result = subprocess.run(command, stdout=write, stderr=write, timeout=300)
    os.close(write)
    assert result.returncode == cli.EXIT_SOME_FAILED
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["chelsea.png"]


def test_output_in_a_folder_of_the_inputs_never_replaces_a_photo(photos, tiny_model_dir):
    nested = photos / "colored"
    nested.mkdir()
    shutil.copy(photos / "chelsea.png", nested / "chelsea.png")  # the result of an earlier run, now an input too
    before = (nested / "chelsea.png").read_bytes()
    pattern = str(photos / "**" / "*.png")
    assert cli.main(["colorize", pattern, "-o", str(nested), "--model", str(tiny_model_dir)]) == 0
    assert (nested / "chelsea.png").read_bytes() == before
    assert sorted(path.name for path in nested.iterdir()) == [
        "chelsea.png",
        "chelsea_color-1.png",
        "chelsea_color.png",
        "historical_a.png",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--palette", "0.5"], "error: --palette > 0 needs a --reference"),
        (["--strength", "3"], "error: --strength must be a number in [0, 2], got 3.0"),
        (["--max-side", "7"], "error: --max-side must be an integer >= 8 or native, got 7"),
    ],
)
def test_bad_colour_options_are_named_by_their_flags(photos, tiny_model_dir, tmp_path, capsys, options, message):
    """They were named as the Python API names them: palette_strength, global_strength, max_side ... or None."""
    arguments = ["colorize", str(photos / "chelsea.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    assert cli.main([*arguments, *options]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("target", ["file", "unwritable"])
def test_output_that_cannot_be_a_folder_is_a_usage_error(photos, tiny_model_dir, tmp_path, capsys, target):
    output = photos / "chelsea.png" if target == "file" else Path("/proc/letcolor-output")
    exit_code = cli.main(["colorize", str(photos), "-o", str(output), "--model", str(tiny_model_dir)])
    assert exit_code == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith(f"error: -o {output}") and error.count("\n") == 1 and "Traceback" not in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_usage_error(photos, tiny_model_dir, tmp_path, capsys):
    exit_code = cli.main(
        ["colorize", str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--device", "cuda"]
    )
    assert exit_code == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert "CUDA is not available" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_model_gives_the_clear_message_and_exit_code_2(photos, tmp_path, no_default_model, capsys):
    assert cli.main(["colorize", str(photos), "-o", str(tmp_path / "out")]) == cli.EXIT_USAGE
    errors = capsys.readouterr().err
    assert "No default model is installed" in errors and "--model" in errors and "LETCOLOR_MODEL" in errors
    assert "Traceback" not in errors and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["colorize", "photo.jpg", "-o", "out"], ["evaluate", "--images", "photos"]])
def test_an_abbreviated_option_is_not_taken_for_another(command, capsys):
    """`--mode frame` was taken for `--model frame`: a model named "frame", 40 s of Hub retries, then "not found"."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--mode", "frame"])
    assert exit_info.value.code == cli.EXIT_USAGE and "unrecognized arguments: --mode frame" in capsys.readouterr().err


def test_a_max_side_that_is_not_a_number_names_what_it_takes(capsys):
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["colorize", "photo.jpg", "-o", "out", "--max-side", "abc"])
    assert exit_status.value.code == 2
    assert "--max-side: expected a number of pixels or 'native', got 'abc'" in capsys.readouterr().err  # not a name


def test_bad_reference_exits_2(photos, tiny_model_dir, tmp_path, capsys):
    arguments = ["--model", str(tiny_model_dir), "--reference", str(photos / "corrupt.jpg")]
    assert cli.main(["colorize", str(photos), "-o", str(tmp_path / "out"), *arguments]) == cli.EXIT_USAGE
    assert "corrupt.jpg" in capsys.readouterr().err


def test_nothing_to_colorize_is_a_failure(tiny_model_dir, tmp_path, capsys):
    arguments = ["colorize", str(tmp_path / "*.jpg"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    assert cli.main(arguments) == cli.EXIT_SOME_FAILED
    assert "no input images or videos" in capsys.readouterr().err


def test_a_folder_or_pattern_that_gives_no_file_is_reported_and_the_rest_written(photos, tiny_model_dir, tmp_path,
                                                                                capsys):  # fmt: skip
    """They used to vanish: the run said "colorized 1 of 1" and exited 0 over a mistyped pattern."""
    (tmp_path / "empty").mkdir()
    nothing = [str(tmp_path / "nomatch" / "*.jpg"), str(tmp_path / "empty")]
    arguments = ["colorize", str(photos / "chelsea.png"), *nothing, "-o", str(tmp_path / "out")]
    assert cli.main([*arguments, "--model", str(tiny_model_dir)]) == cli.EXIT_SOME_FAILED
    errors = capsys.readouterr().err
    assert all(f"skipped: {pattern}: no image or video files there" in errors for pattern in nothing)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["chelsea.png"]


@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_a_file_named_twice_is_colorized_once(photos, tiny_model_dir, tmp_path, capsys, batch_size):
    """Named, then again through its folder and a glob: it was counted each time, and written once or twice
    depending on the batch size."""
    chelsea = str(photos / "chelsea.png")
    arguments = ["colorize", chelsea, chelsea, str(photos), str(photos / "chelsea.*"), "-o", str(tmp_path / "out")]
    assert cli.main([*arguments, "--model", str(tiny_model_dir), "--batch-size", batch_size]) == cli.EXIT_SOME_FAILED
    assert "colorized 3 of 4 images" in capsys.readouterr().err  # the corrupt JPEG fails
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "chelsea.png", "historical_a.png", "historical_b.jpg"
    ]  # fmt: skip


def test_module_entry_point_reports_a_missing_model_without_traceback(photos, tmp_path):
    command = [sys.executable, "-m", "letcolor", "colorize", str(photos), "-o", str(tmp_path / "out")]
    completed = subprocess.run([*command, "--model", str(tmp_path / "no-model")], capture_output=True, text=True)
    assert completed.returncode == cli.EXIT_USAGE
    assert "no-model" in completed.stderr and "--model" in completed.stderr and "Traceback" not in completed.stderr


def test_cli_works_without_the_evaluate_module(monkeypatch):
    monkeypatch.delattr(letcolor, "evaluate", raising=False)
    monkeypatch.setitem(sys.modules, "letcolor.evaluate", None)  # importing it now fails as if it were missing
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert "colorize" in commands and "bench" in commands and "evaluate" not in commands


def test_evaluate_is_registered_from_its_module(monkeypatch):
    calls = []
    fake = types.ModuleType("letcolor.evaluate", "A stand-in for the evaluation.")
    fake.add_arguments = lambda parser: parser.add_argument("--data")
    fake.run = lambda args: calls.append(args.data) or 0
    monkeypatch.setitem(sys.modules, "letcolor.evaluate", fake)
    monkeypatch.setattr(letcolor, "evaluate", fake, raising=False)
    assert cli.main(["evaluate", "--data", "somewhere"]) == 0 and calls == ["somewhere"]


@pytest.mark.slow
def test_bench_leaves_out_bfloat16_where_the_cpu_emulates_it(examples_dir, monkeypatch, capsys):
    """On an AVX2-only CPU the README's bench took 137 s with the bfloat16 configurations (emulated), 12 without."""
    monkeypatch.setattr(bench, "ACCURACY_PHOTOS", [examples_dir / "historical_b.jpg"])
    arguments = ["bench", "--width", "0.125", "--sizes", "64x48", "--repeats", "1", "--device", "cpu"]
    for native, header in (
        (
            False,
            "| input | max_side | fp32 | fp32 folded-BN | fp32 folded-BN channels-last | fp32 folded-BN "
            "channels-last oneDNN |",
        ),
        (True, "| fp32 folded-BN channels-last oneDNN | bf16-autocast folded-BN channels-last | bf16 channels-last |"),
    ):
        monkeypatch.setattr(bench, "cpu_has_fast_bfloat16", lambda native=native: native)
        assert cli.main(arguments) == 0
        output = capsys.readouterr()
        assert header in output.out
        assert ("bfloat16 emulated" in output.err) != native


@pytest.mark.slow
def test_bench_prints_markdown_tables(examples_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LETCOLOR_CACHE", str(tmp_path))  # the onnxruntime engine's graphs
    photos = [examples_dir / "historical_b.jpg", examples_dir / "historical_e.jpg"]
    monkeypatch.setattr(bench, "ACCURACY_PHOTOS", photos)  # fewer photos than the real benchmark, to be quick
    arguments = [
        "bench",
        "--width",
        "0.125",
        "--sizes",
        "64x48",
        "--repeats",
        "1",
        "--configs",
        "fp32,bf16 folded-BN channels-last",
    ]
    assert cli.main(arguments) == 0
    table = capsys.readouterr().out
    assert "| input | max_side | fp32 | bf16 folded-BN channels-last |" in table
    assert "| 64x48 | 512 |" in table and "| 64x48 | native |" in table
    assert "| bf16 folded-BN channels-last |" in table  # its accuracy row
    assert cli.main([*arguments[:-2], "--configs", "fp32,onnxruntime", "--hints", "10", "--refine"]) == 0
    table = capsys.readouterr().out
    assert (
        "| input | max_side | fp32 | fp32 + 10 hints | fp32 + refine | onnxruntime | onnxruntime + 10 hints |" in table
    )
    assert "| onnxruntime |" in table  # its accuracy row


def test_bench_configurations_take_turns_in_rotating_order(photos, tiny_model_dir, monkeypatch):
    """So that a machine whose speed drifts during the run slows every configuration alike."""
    model = pipeline.load_model(tiny_model_dir)
    columns = [
        bench.Column(name, bench.configured(model, torch.device("cpu"), name), lambda path: {})
        for name in ("fp32", "torch", "onnxruntime")
    ]
    order = []

    def photo_seconds(colorizer, *args, **options):
        order.append(next(column.name for column in columns if column.colorizer is colorizer))
        return timed(colorizer, *args, **options)

    timed = bench.photo_seconds
    monkeypatch.setattr(bench, "photo_seconds", photo_seconds)
    row = bench.Row((128, 96), 256)
    bench.measure_row(row, columns, photos / "historical_b.jpg", repeats=3, file_format="JPEG")
    warm_up, rounds, memory = order[:3], [order[3:6], order[6:9], order[9:12]], order[12:]
    assert warm_up == rounds[0] == memory == ["fp32", "torch", "onnxruntime"]
    assert rounds[1:] == [["torch", "onnxruntime", "fp32"], ["onnxruntime", "fp32", "torch"]]
    assert set(row.seconds) == {"fp32", "torch", "onnxruntime"} and all(s > 0 for s in row.seconds.values())
    assert all(peak is not None for peak in row.peak_bytes.values())


@pytest.mark.slow
def test_bench_compares_engines_on_photos_and_video(examples_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LETCOLOR_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "ACCURACY_PHOTOS", [examples_dir / "historical_b.jpg"])
    monkeypatch.setattr(bench, "VIDEO_SIZES", {"small": (96, 64)})  # a short small clip, to be quick
    monkeypatch.setattr(bench, "VIDEO_FRAMES", 4)
    arguments = ["bench", "--width", "0.125", "--sizes", "64x48", "--repeats", "1", "--engine", "torch,onnxruntime"]
    assert cli.main(arguments) == 0
    table = capsys.readouterr().out
    assert "| input | max_side | torch | onnxruntime |" in table
    assert "| 64x48 | 512 | " in table
    video_row = next(line for line in table.splitlines() if line.startswith("| 96x64 video (4 frames) | 512 |"))
    assert video_row.count(" fps (") == 2
    onnxruntime_psnr = next(line for line in table.splitlines() if line.startswith("| onnxruntime |")).split("|")[4]
    assert float(onnxruntime_psnr) > 50  # float32 in both engines


@pytest.mark.slow
def test_the_eccv16_comparison_prints_its_table(monkeypatch, capsys):
    assert sum(p.numel() for p in eccv16_bench.ECCV16().parameters()) == 32_236_011  # the layers, unchanged
    monkeypatch.setattr(sys, "argv", ["eccv16_bench", "--repeats", "1", "--warmups", "0"])
    eccv16_bench.main()
    table = capsys.readouterr().out
    assert "| letcolor, paper-size network (width 1.0), engine " in table
    assert table.count("| ECCV16, ") == 3


@pytest.mark.parametrize(
    "options, message",
    [
        (["--sizes", "10x"], "expected WIDTHxHEIGHT, got '10x'"),  # each of these was a traceback and exit 1
        (["--sizes", "0x0"], "--sizes must be at least 1x1"),
        (["--sizes", "100000x100000"], "--sizes: at most 100,000,000 pixels"),  # a MemoryError
        (["--configs", "fp32,fp32"], "named twice: ['fp32']"),  # two columns, one time
        (["--repeats", "0"], "--repeats and --threads at least 1"),
        (["--threads", "0"], "--repeats and --threads at least 1"),  # ran, on the default threads
        (["--photo", "missing.jpg"], "missing.jpg"),
        (["--width", "0.5", "--model", "m"], "--model or --width"),
        (["--engine", "torch,tensorflow"], "unknown configurations or engines ['tensorflow']"),
        (["--device", "bogus"], "unknown device 'bogus': use cpu or cuda"),
        (["--device", "ipu"], "unsupported device 'ipu'"),
        (["--sizes", ""], "expected WIDTHxHEIGHT, got ''"),  # an empty value ran the default (to 2048x1536)
        (["--engine", "", "--sizes", "64x48"], "unknown configurations or engines ['']"),  # ran the configurations
        (["--configs", "", "--sizes", "64x48"], "unknown configurations or engines ['']"),
    ],
)
def test_bench_bad_settings_are_one_line_and_exit_2(options, message, capsys):
    assert cli.main(["bench", *options]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.slow
def test_bench_times_the_default_model_without_model_or_width(tiny_model_dir, examples_dir, monkeypatch, capsys):
    """It timed random weights of the paper's width, and the README's `--model letcolor/pretrained` worked only in the
    checkout's root folder."""
    monkeypatch.setenv("LETCOLOR_MODEL", str(tiny_model_dir))
    monkeypatch.setattr(bench, "ACCURACY_PHOTOS", [examples_dir / "historical_b.jpg"])
    assert cli.main(["bench", "--sizes", "64x48", "--repeats", "1", "--configs", "fp32"]) == 0
    table = capsys.readouterr().out
    assert f"model width {make_tiny_model().width}." in table and "random weights" not in table


def test_bench_hints_need_a_model_that_takes_them(tiny_model_dir, capsys):
    assert cli.main(["bench", "--model", str(tiny_model_dir), "--hints", "5"]) == 2
    assert capsys.readouterr().err.startswith("error: --hints: this model takes no colour hints")


@pytest.mark.parametrize("damage", ["corrupt weights", "absurd class count"])
def test_a_bad_model_is_one_line_and_exit_2(photos, tiny_model_dir, tmp_path, damage):
    config_change, weights_change, _ = BAD_MODELS[damage]
    model_dir = damaged_copy(tiny_model_dir, tmp_path / "model", config_change, weights_change)
    command = [sys.executable, "-m", "letcolor", "colorize", str(photos), "-o", str(tmp_path / "out")]
    result = subprocess.run([*command, "--model", str(model_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.startswith(f"error: {model_dir}: not a valid letcolor model") and result.stderr.count("\n") == 1
    )


@pytest.mark.parametrize(
    "model, message",
    [("photo", "is a file, not a model directory"), ("my-model/", "no such model directory"),
     ("./my-model", "no such model directory"), ("runs/a/final", "no such model directory")],
)  # fmt: skip
def test_a_model_that_can_only_be_a_path_is_never_asked_of_the_hub(
    photos, tmp_path, monkeypatch, capsys, model, message
):
    """Each was asked of the Hub (26 s of retries offline) and ended in a message about Hub id syntax or the Hub."""
    monkeypatch.chdir(photos)
    model = "historical_b.jpg" if model == "photo" else model
    monkeypatch.setattr(pipeline.LetThereBeColor, "_from_pretrained", lambda **_: pytest.fail("asked of the Hub"))
    assert cli.main(["colorize", "historical_b.jpg", "-o", str(tmp_path / "out"), "--model", model]) == 2
    error = capsys.readouterr().err
    assert message in error and model in error and "Hub id" not in error.splitlines()[0]


def test_a_float_image_with_nan_is_skipped_and_the_rest_written(photos, tiny_model_dir, tmp_path, capsys):
    values = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    values[10, 10] = np.nan
    Image.fromarray(values, mode="F").save(photos / "a_nan.tif")  # sorts first: the files after it must still come out
    output = tmp_path / "out"
    assert cli.main(["colorize", str(photos), "-o", str(output), "--model", str(tiny_model_dir)]) == 1
    assert sorted(path.name for path in output.iterdir()) == ["chelsea.png", "historical_a.png", "historical_b.jpg"]
    errors = capsys.readouterr().err
    assert "a_nan.tif: the image has NaN or infinite values" in errors and "Traceback" not in errors


def test_an_animated_gif_says_only_its_first_frame_was_colorized(examples_dir, tiny_model_dir, tmp_path, capsys):
    with Image.open(examples_dir / "chelsea.png") as photo:
        frames = [photo.convert("L").resize((64, 48)), photo.convert("L").resize((64, 48)).rotate(180)]
    frames[0].save(tmp_path / "cat.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    output = tmp_path / "out"
    assert cli.main(["colorize", str(tmp_path / "cat.gif"), "-o", str(output), "--model", str(tiny_model_dir)]) == 0
    assert [path.name for path in output.iterdir()] == ["cat.png"]
    assert "warning: " in (errors := capsys.readouterr().err) and "only the first was colorized" in errors


def test_videos_next_to_images_each_reported_on_its_own_line(photos, tiny_model_dir, examples_dir, tmp_path, capsys):
    clip = photos / "pan.3gp"  # a phone's container: it was called "not a readable image"
    write_pan(examples_dir / "coffee.png", clip, size=(96, 64), frames=6)
    (photos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    output = tmp_path / "out"
    options = ["--model", str(tiny_model_dir), "--video-mode", "frame", "--max-side", "64"]
    assert cli.main(["colorize", str(photos), "-o", str(output), *options]) == cli.EXIT_SOME_FAILED
    assert sorted(path.name for path in output.iterdir()) == [
        "chelsea.png",
        "historical_a.png",
        "historical_b.jpg",
        "pan.mp4",
    ]
    result, source = probe(output / "pan.mp4"), probe(clip)
    assert (result.width, result.height, result.frames, result.fps) == (source.width, source.height, 6, source.fps)
    lines = capsys.readouterr().err.splitlines()
    # Not a terminal: no progress bar, whose carriage returns used to run into these lines.
    assert all(line.startswith(("skipped: ", "colorized ")) for line in lines), lines
    assert [line for line in lines if "broken.mp4" in line or "corrupt.jpg" in line] == lines[:2]
    assert lines[-1].startswith("colorized 4 of 6 files")


def test_on_a_terminal_each_video_has_a_progress_bar_in_frames(tiny_model_dir, examples_dir, tmp_path):
    clip = tmp_path / "pan.mp4"
    write_pan(examples_dir / "coffee.png", clip, size=(96, 64), frames=6)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws to the width
    command = [sys.executable, "-m", "letcolor", "colorize", str(clip), "-o", str(tmp_path / "out")]
    options = ["--model", str(tiny_model_dir), "--video-mode", "frame", "--max-side", "64"]
    with subprocess.Popen([*command, *options], stderr=follower, stdout=subprocess.DEVNULL) as process:
        os.close(follower)
        shown = b""
        with contextlib.suppress(OSError):  # the terminal closes when the command ends
            while chunk := os.read(leader, 4096):
                shown += chunk
        assert process.wait(timeout=120) == 0
    os.close(leader)
    assert b"pan.mp4: 100%" in shown and b"6/6 [" in shown and b"frame/s" in shown


def test_crafted_videos_are_reported_skips_and_the_good_video_after_them_is_done(tiny_model_dir, tmp_path, capsys):
    inputs = tmp_path / "videos"
    inputs.mkdir()
    truncated_faststart(CAMVID_CUT, inputs / "a_truncated.mp4")
    size_switching(inputs / "b_switching.ts", [(320, 240, 20), (1280, 960, 2)])
    shutil.copy(CAMVID_CUT, inputs / "c_good.mp4")
    output = tmp_path / "out"
    assert cli.main(["colorize", str(inputs), "-o", str(output), "--model", str(tiny_model_dir)]) == 1
    assert [path.name for path in output.iterdir()] == ["c_good.mp4"]
    assert len(list(read_frames(output / "c_good.mp4"))) == 12
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"skipped: {inputs / 'a_truncated.mp4'}: the video ends after 4 of the 12 frames its header declares "
        "(truncated or damaged)",
        f"skipped: {inputs / 'b_switching.ts'}: frame 21 is 1280x960, not the 320x240 of the video's header "
        "(the frame size changes)",
        f"colorized 1 of 3 videos into {output}",
    ]


def test_a_video_in_the_output_folder_is_not_overwritten(tiny_model_dir, examples_dir, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_pan(examples_dir / "coffee.png", clip, size=(96, 64), frames=4)
    original = clip.read_bytes()
    arguments = ["colorize", str(clip), "-o", str(tmp_path), "--model", str(tiny_model_dir), "--max-side", "64"]
    assert cli.main(arguments) == 0
    assert clip.read_bytes() == original
    assert len(list(read_frames(tmp_path / "clip_color.mp4"))) == 4


def test_an_output_name_too_long_for_the_file_system_fails_that_photo_alone(tiny_model_dir, tmp_path, capsys):
    """A 251-byte name whose output, NAME_color.png, would be 257 bytes: a traceback, and the run stopped."""
    long_name = tmp_path / ("L" * 247 + ".png")
    Image.new("L", (40, 30), 100).save(long_name)
    Image.new("L", (40, 30), 100).save(tmp_path / "ok.png")
    arguments = ["colorize", str(tmp_path), "-o", str(tmp_path), "--model", str(tiny_model_dir)]
    assert cli.main(arguments) == cli.EXIT_SOME_FAILED
    assert f"could not write {tmp_path / long_name.stem}_color.png: File name too long" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([long_name.name, "ok.png", "ok_color.png"])


def test_a_video_and_an_output_folder_named_with_a_colon_relative_to_the_working_directory(
    tiny_model_dir, examples_dir, tmp_path, monkeypatch
):
    """FFmpeg took "take" for a protocol's name: the video was "not a readable video", or "could not be encoded"."""
    monkeypatch.chdir(tmp_path)
    write_pan(examples_dir / "coffee.png", tmp_path / "clip.mp4", size=(96, 64), frames=4)
    (tmp_path / "clip.mp4").rename("take:2.mp4")
    arguments = ["colorize", "take:2.mp4", "-o", "out:new", "--model", str(tiny_model_dir), "--max-side", "64"]
    assert cli.main(arguments) == 0
    assert len(list(read_frames(tmp_path / "out:new" / "take:2.mp4"))) == 4


@pytest.mark.parametrize(
    ("arguments", "api_options"),
    [
        (["--no-global"], {"use_global": False}),
        (["--strength", "1.7"], {"global_strength": 1.7}),
        (["--max-side", "64"], {"max_side": 64}),
        (["--reference", "coffee.png", "--palette", "0.6"], {"reference": "coffee.png", "palette_strength": 0.6}),
        (["--refine"], {"refine": True}),
    ],
)
def test_each_colorize_option_reaches_the_output(
    photos, tiny_model_dir, examples_dir, tmp_path, arguments, api_options
):
    """The CLI's file is the API's result with the same option, and not the result without it (the bundled model,
    whose colours depend on its global features)."""
    photo = photos / "historical_a.png"
    arguments = [str(examples_dir / arg) if arg.endswith(".png") else arg for arg in arguments]
    api_options = {key: examples_dir / v if str(v).endswith(".png") else v for key, v in api_options.items()}
    output = tmp_path / "out"
    assert (
        cli.main(["colorize", str(photo), "-o", str(output), "--model", str(letcolor.BUNDLED_MODEL_DIR), *arguments])
        == 0
    )
    written = np.asarray(Image.open(output / photo.name).convert("RGB"))
    colorizer = letcolor.Colorizer.from_pretrained(letcolor.BUNDLED_MODEL_DIR)
    with_option = np.asarray(colorizer(photo, **api_options).image.convert("RGB"))
    without = np.asarray(colorizer(photo).image.convert("RGB"))
    np.testing.assert_array_equal(written, with_option)
    assert np.abs(written.astype(int) - without).mean() > 0.5


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_video_stopped_by_sigterm_or_ctrl_c_leaves_nothing_and_says_so_in_one_line(
    tiny_model_dir, examples_dir, tmp_path, stop, code
):
    """SIGTERM (`timeout`, `kill`) left the partial output, a hidden .letcolor-*.mp4, in the output folder; Ctrl-C
    printed a KeyboardInterrupt traceback."""
    clip, output = tmp_path / "pan.mp4", tmp_path / "out"
    write_pan(examples_dir / "coffee.png", clip, size=(96, 64), frames=400)
    output.mkdir()
    command = [sys.executable, "-m", "letcolor", "colorize", str(clip), "-o", str(output), "--model"]
    command += [str(tiny_model_dir), "--video-mode", "frame", "--max-side", "64", "--engine", "torch"]
    # as a terminal starts it: SIGINT not ignored (a shell's background job would ignore it)
    restore_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint) as process:
        deadline = time.monotonic() + 120
        while not any(output.iterdir()) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        assert process.poll() is None, "the video was done before it could be stopped"
        process.send_signal(stop)
        errors = process.communicate(timeout=120)[1]
    assert process.returncode == code and "Traceback" not in errors, errors[-2000:]
    assert errors.splitlines()[-1] == ("terminated" if stop == signal.SIGTERM else "interrupted")
    assert list(output.iterdir()) == []
