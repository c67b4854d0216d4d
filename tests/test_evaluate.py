"""`python -m letcolor evaluate` on real photos: a folder with bad inputs in it, and the shared corpus."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset
from PIL import Image, ImageCms

from letcolor import BUNDLED_MODEL_DIR, Colorizer, evaluate, hint_plot, metrics
from letcolor.color import rgb_to_lab
from letcolor.model import LetThereBeColor
from letcolor.pipeline import batches_within

MAX_SIDE = "128"


EVERYDAY_CUT = Path(__file__).parent / "data" / "letcolor-everyday" / "data" / "validation-00000-of-00001.parquet"


def run_evaluate(*argv) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args([str(arg) for arg in argv])
    code = evaluate.run(args)
    return code, json.loads(args.output.read_text()) if code == 0 else {}


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).unsqueeze(0).float() / 255


def pixel_mean_ab(images) -> list[float]:
    ab = torch.cat([rgb_to_lab(as_tensor(image))[0, 1:].flatten(1) for image in images], dim=1)
    return ab.double().mean(1).tolist()


@pytest.fixture
def photo_folder(tmp_path, examples_dir):
    """Two colour photos, a black-and-white one, a truncated JPEG, and a file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "chelsea_gray.png"):  # at half size, to keep the test quick
        image = Image.open(examples_dir / name)
        image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC).save(folder / name)
    (folder / "broken.jpg").write_bytes((examples_dir / "china.jpg").read_bytes()[:4000])
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.mark.parametrize("form", ["file", "bytes"])
def test_a_photo_is_read_as_every_entry_point_reads_it(examples_dir, tmp_path, form):
    """A dataset row's bytes were opened by plain PIL: an icon was decoded whole as it opened (a 0.5 MB ICO holding a
    13000x13000 PNG took 1 GB before its size was checked), and a TIFF skipped libtiff."""
    icon = tmp_path / "icon.ico"
    Image.open(examples_dir / "chelsea.png").save(icon, sizes=[(64, 64)])
    with pytest.raises(evaluate.BadImage, match="icons \\(ICO, ICNS\\) and EPS are not read"):
        evaluate.open_color_photo(icon if form == "file" else icon.read_bytes())
    chelsea = examples_dir / "chelsea.png"
    photo = evaluate.open_color_photo(chelsea if form == "file" else chelsea.read_bytes())
    assert np.array_equal(np.asarray(photo), np.asarray(Image.open(chelsea).convert("RGB")))


def test_a_large_photo_is_scored_reduced_and_batches_hold_so_many_pixels(examples_dir, tiny_model_dir, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    """Every metric ran at full resolution for every method at once: a 24 MP photo took 11 GB, a 100 MP one ran out
    of memory; and a batch held 16 photos whatever their size."""
    monkeypatch.setattr(evaluate, "MAX_SCORED_PIXELS", 200 * 150)
    (tmp_path / "large").mkdir()
    (tmp_path / "reduced").mkdir()
    chelsea = Image.open(examples_dir / "chelsea.png").convert("RGB")  # 451 x 300
    chelsea.save(tmp_path / "large" / "chelsea.png")
    chelsea.resize((212, 141), Image.Resampling.BOX).save(tmp_path / "reduced" / "chelsea.png")
    options = ["--model", tiny_model_dir, "--max-side", MAX_SIDE, "--no-ablation"]
    reports = [
        run_evaluate(*options, "--images", tmp_path / folder, "-o", tmp_path / f"{folder}.json")[1]
        for folder in ("large", "reduced")
    ]
    assert reports[0]["per_image"][0]["model"] == reports[1]["per_image"][0]["model"]
    assert reports[0]["settings"]["max_scored_pixels"] == 200 * 150
    photos = [
        evaluate.Sample(str(i), -1, Image.new("RGB", size)) for i, size in enumerate([(100, 100)] * 3 + [(300, 300)])
    ]
    sizes = [[sample.id for sample in chunk] for chunk in batches_within(photos, 2, 250 * 250, evaluate.photo_pixels)]
    assert sizes == [["0", "1"], ["2"], ["3"]]  # two photos at most, and a larger one alone


def test_a_photo_with_a_colour_profile_is_scored_in_srgb(examples_dir, tiny_model_dir, tmp_path):
    """The model read it through its profile (Adobe RGB), but its scores compared with the raw pixels: worse."""
    tagged = ImageCms.getOpenProfile(str(Path(__file__).parent / "data" / "compatibleWithAdobeRGB1998.icc"))
    chelsea = Image.open(examples_dir / "chelsea.png").convert("RGB")
    adobe = ImageCms.profileToProfile(chelsea, ImageCms.createProfile("sRGB"), tagged, outputMode="RGB")
    for folder, photo, profile in [("adobe", adobe, tagged.tobytes()), ("srgb", ImageCms.profileToProfile(
            adobe, tagged, ImageCms.createProfile("sRGB"), outputMode="RGB"), None)]:  # fmt: skip
        (tmp_path / folder).mkdir()
        photo.save(tmp_path / folder / "chelsea.png", icc_profile=profile)
    options = ["--model", tiny_model_dir, "--max-side", MAX_SIDE, "--no-ablation"]
    rows = [run_evaluate(*options, "--images", tmp_path / folder, "-o", tmp_path / f"{folder}.json")[1]["per_image"]
            for folder in ("adobe", "srgb")]  # fmt: skip
    assert rows[0][0]["model"] == rows[1][0]["model"] and rows[0][0]["gray"] == rows[1][0]["gray"]


def test_a_folder_is_scored_against_the_originals_with_both_baselines(photo_folder, tiny_model_dir, tmp_path, capsys):
    code, report = run_evaluate(
        "--model", tiny_model_dir, "--images", photo_folder, "--max-side", MAX_SIDE, "-o", tmp_path / "report.json"
    )
    assert code == 0
    assert [row["id"] for row in report["per_image"]] == ["chelsea.png", "coffee.png"]
    reasons = {skip["id"]: skip["reason"] for skip in report["skipped"]}
    assert reasons.keys() == {"broken.jpg", "chelsea_gray.png"}
    assert reasons["broken.jpg"].startswith("cannot decode") and reasons["chelsea_gray.png"].startswith("grayscale")

    photos = [Image.open(photo_folder / name).convert("RGB") for name in ("chelsea.png", "coffee.png")]
    assert "evaluated photos" in report["mean_ab"]["source"]  # no --mean-ab-from: the folder's own mean
    assert [report["mean_ab"]["a"], report["mean_ab"]["b"]] == pytest.approx(pixel_mean_ab(photos), abs=1e-3)

    colorizer = Colorizer.from_pretrained(tiny_model_dir, speedups=evaluate.EXACT_SPEEDUPS)
    for photo, row in zip(photos, report["per_image"], strict=True):
        for method, use_global in (("model", True), ("model_no_global", False)):
            colorized = as_tensor(colorizer(photo, use_global=use_global, max_side=int(MAX_SIDE)).image)
            assert row[method]["psnr"] == pytest.approx(metrics.psnr(colorized, as_tensor(photo)).item(), abs=1e-4)
            assert row[method]["auc"] == pytest.approx(metrics.ab_auc(colorized, as_tensor(photo)).item(), abs=1e-6)
        # Lab's a = b = 0 is neutral; color.py's rounded D65 white leaves a rare pixel one 8-bit level off gray.
        assert row["gray"]["colorfulness"] == pytest.approx(0, abs=0.05)
        assert row["gray"]["colorfulness_gap"] == pytest.approx(-row["ground_truth_colorfulness"], abs=0.05)
        assert row["top1"] is None and row["label"] is None  # a folder has no scene labels
        assert 0 < row["mean_ab"]["ssim"] < 1 and 10 < row["gray"]["psnr"] < metrics.PSNR_CAP

    averages = report["averages"]
    assert averages["model"]["psnr"] == pytest.approx(np.mean([row["model"]["psnr"] for row in report["per_image"]]))
    assert averages["model"]["top1"] is None and averages["model"]["scene_labelled"] == 0
    table = capsys.readouterr().out
    for title in ("| model |", "| model, no global features (4.4) |", "| gray (ab = 0) |", "| mean ab (a = "):
        assert title in table
    assert "2 photos from" in table and "2 skipped" in table


def test_the_figure_shows_gray_model_and_original_for_each_photo(photo_folder, tiny_model_dir, tmp_path):
    figure = tmp_path / "figure.png"
    code, report = run_evaluate(
        "--model", tiny_model_dir, "--images", photo_folder, "--max-side", MAX_SIDE, "--no-ablation",
        "--figure", figure, "--figure-photos", "1", "-o", tmp_path / "report.json",
    )  # fmt: skip
    assert code == 0 and len(report["per_image"]) == 2
    sheet = Image.open(figure).convert("RGB")
    original = Image.open(photo_folder / "chelsea.png").convert("RGB")
    tile_width = round(original.width * sheet.height / original.height)
    assert sheet.height == 192 and sheet.width == 3 * tile_width + 2 * 4  # one row: the first photo only
    left_edges = [i * (tile_width + 4) for i in range(3)]
    gray, model, truth = (sheet.crop((left, 0, left + tile_width, 192)) for left in left_edges)
    assert metrics.colorfulness(as_tensor(gray)).item() < 1
    assert metrics.colorfulness(as_tensor(truth)).item() > 20
    assert np.abs(np.asarray(truth, float) - np.asarray(original.resize(truth.size), float)).mean() < 3
    assert not np.array_equal(np.asarray(model), np.asarray(gray))


def test_the_mean_ab_can_come_from_a_dataset(photo_folder, tiny_model_dir, scenes_dataset, everyday_dataset, tmp_path):
    """Of a folder's photos, or a dataset's (where --mean-ab-from was ignored without a word: its own was taken)."""
    train = load_dataset(str(scenes_dataset), split="train", streaming=True).take(6)
    expected = pixel_mean_ab(row["image"] for row in train)
    for images in (photo_folder, everyday_dataset):
        code, report = run_evaluate(
            "--model", tiny_model_dir, "--images", images, "--limit", 3, "--max-side", MAX_SIDE, "--no-ablation",
            "--mean-ab-from", scenes_dataset, "--mean-ab-limit", 6, "-o", tmp_path / "report.json",
        )  # fmt: skip
        assert code == 0
        assert [report["mean_ab"]["a"], report["mean_ab"]["b"]] == pytest.approx(expected, abs=1e-3)
        assert f"{scenes_dataset} split train, first 6 photos" in report["mean_ab"]["source"]
        assert report["averages"].keys() == {"model", "gray", "mean_ab", "ground_truth"}


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing", "missing: no such folder"),  # these were asked of the Hub (offline: 26 s of retries)
        ("photo.jpg", "photo.jpg: a file; give a folder of colour photos or a dataset"),
        ("notes", "notes: holds no image files, nor a dataset's data files"),  # "Bad split: validation ['train']"
        ("parquet", "not a folder of images, nor a dataset with a 'validation' split"),
        ("no images", "the dataset has no image column"),  # these two were tracebacks (ValueError, ArrowInvalid)
        ("empty", "split 'train' cannot be read (BatchSize must be greater than 0"),
    ],
)
def test_an_input_that_is_neither_a_folder_nor_a_dataset_is_a_usage_error(tmp_path, tiny_model_dir, capsys, name,
                                                                          message):  # fmt: skip
    Image.new("RGB", (32, 32), "red").save(tmp_path / "photo.jpg")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no photos here")
    (tmp_path / "parquet" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "parquet" / "data" / "train-00000.parquet")  # no validation
    for split in ("train", "validation"):
        (tmp_path / "no images" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": ["a"]}), tmp_path / "no images" / "data" / f"{split}-00000.parquet")
        (tmp_path / "empty" / "data").mkdir(parents=True, exist_ok=True)  # one row group of no rows
        pq.write_table(pq.read_table(EVERYDAY_CUT).slice(0, 0), tmp_path / "empty" / "data" / f"{split}-00000.parquet")
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", tmp_path / name, "-o", tmp_path / "report.json")
    assert code == 2
    assert message in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_before_the_run(photo_folder, tiny_model_dir, tmp_path, capsys,
                                                                    monkeypatch):  # fmt: skip
    """A report in a missing folder, a figure without an image extension: tracebacks after the whole run, the report
    lost. Now the first folder is made, the second name refused at once; as is a network side below 8."""
    monkeypatch.setattr("letcolor.evaluate.evaluation_report", lambda *args: pytest.fail("the run started"))
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--figure", tmp_path / "figure")
    assert code == 2 and f"--figure {tmp_path / 'figure'}: name it with an image extension" in capsys.readouterr().err
    (tmp_path / "taken").write_text("a file where a folder would be")
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "-o", tmp_path / "taken" / "r.json")
    assert code == 2 and "cannot create its folder" in capsys.readouterr().err
    photo = next(path for path in sorted(photo_folder.iterdir()) if path.suffix == ".png")
    before = photo.read_bytes()
    for option in ("-o", "--figure"):  # the report or the figure written over a photo (a dataset's parquet too)
        code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, option, photo)
        assert code == 2 and f"{photo}: a file of the inputs ({photo_folder})" in capsys.readouterr().err
    assert photo.read_bytes() == before
    mean_from, model = tmp_path / "mean", shutil.copytree(tiny_model_dir, tmp_path / "model")
    mean_from.mkdir()  # written over with exit 0: a photo of the mean ab's folder, the model's files
    shutil.copy(photo, mean_from / photo.name)
    for path, holder in ((mean_from / photo.name, mean_from), (model / "config.json", model)):
        kept = path.read_bytes()
        code, _ = run_evaluate("--model", model, "--images", photo_folder, "--mean-ab-from", mean_from, "-o", path)
        assert code == 2 and f"{path}: a file of the inputs ({holder})" in capsys.readouterr().err
        assert path.read_bytes() == kept
    same = tmp_path / "same.png"  # the figure replaced the report
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "-o", same, "--figure", same)
    assert code == 2 and "-o and --figure: the same file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--max-side", "4")
    assert "must be at least 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a numpy traceback after the first batch
        run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--hints", "2", "--hint-seed", "-1")
    assert "--hint-seed: must be 0 or more" in capsys.readouterr().err
    monkeypatch.undo()
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--hints", "10001")  # was a traceback
    assert code == 2 and "--hints: point counts must be from 0 to 10000" in capsys.readouterr().err
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--device", "tpu")  # was a traceback
    assert code == 2 and "unknown device 'tpu'" in capsys.readouterr().err
    code, report = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--no-ablation", "-o",
                                tmp_path / "new" / "folder" / "report.json")  # fmt: skip
    assert code == 0 and report["per_image"]
    os.link(photo, tmp_path / "linked.png")  # a hard link of a photo, outside its folder: it was written through
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", photo_folder, "--no-ablation", "--figure",
                           tmp_path / "linked.png", "-o", tmp_path / "report.json")  # fmt: skip
    assert code == 0 and photo.read_bytes() == before and (tmp_path / "linked.png").read_bytes() != before


def test_an_output_that_cannot_show_the_tables_arrows_still_gets_the_table_and_the_report(
    photo_folder, tiny_model_dir, tmp_path
):
    """Under an encoding without them (a file on Windows, PYTHONIOENCODING=ascii) the table's arrows were a
    UnicodeEncodeError after the whole run, and -o's report was never written."""
    command = [sys.executable, "-m", "letcolor", "evaluate", "--images", str(photo_folder), "--max-side", MAX_SIDE]
    command += ["--model", str(tiny_model_dir), "-o", str(tmp_path / "report.json")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONIOENCODING": "ascii"},
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| PSNR (dB) ?" in result.stdout  # the arrow, replaced
    assert json.loads((tmp_path / "report.json").read_text())["per_image"]


def test_a_dataset_that_datasets_cannot_cache_is_one_line_and_exit_2(tiny_model_dir, tmp_path):
    """A HOME that cannot be written (here: its cache's folder is a file) was a PermissionError's traceback."""
    (tmp_path / "home").write_text("not a folder")
    environment = {**os.environ, "HF_HOME": str(tmp_path / "home" / "huggingface")}
    environment.pop("HF_DATASETS_CACHE", None)
    command = [sys.executable, "-m", "letcolor", "evaluate", "--images", str(EVERYDAY_CUT.parent.parent)]
    command += ["--model", str(tiny_model_dir), "--limit", "2"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "cannot be read (" in result.stderr and "datasets keeps a cache in" in result.stderr


def test_a_row_without_an_image_is_skipped_and_reported(tmp_path, tiny_model_dir, capsys):
    """A null image cell (or empty bytes and no path) was a TypeError traceback, in the photos scored and in the rows
    read for the mean ab."""
    dataset = shutil.copytree(EVERYDAY_CUT.parent.parent, tmp_path / "everyday")
    for path in sorted((dataset / "data").glob("*.parquet")):
        table = pq.read_table(path)
        cells = table.column("image").to_pylist()
        cells[0] = None if path.name.startswith("validation") else {"bytes": b"", "path": None}
        pq.write_table(table.set_column(0, "image", pa.array(cells, table.schema.field("image").type)), path)
    code, report = run_evaluate("--model", tiny_model_dir, "--images", dataset, "--limit", "4", "--no-ablation",
                                "-o", tmp_path / "report.json")  # fmt: skip
    assert code == 0 and len(report["per_image"]) == 3
    assert "no image in its row" in capsys.readouterr().err


def test_no_usable_photo_is_an_error(tmp_path, examples_dir, tiny_model_dir, capsys):
    (tmp_path / "broken.png").write_bytes((examples_dir / "coffee.png").read_bytes()[:3000])
    code, _ = run_evaluate("--model", tiny_model_dir, "--images", tmp_path, "-o", tmp_path / "report.json")
    assert code == 1
    assert "no usable photos" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_a_dataset_split_with_scene_labels_is_reproducible(scenes_dataset, tmp_path):
    names = load_dataset(str(scenes_dataset), split="validation", streaming=True).features["label"].names
    torch.manual_seed(0)
    model_dir = tmp_path / "model"  # the dataset's classes in another order: labels are matched by name
    LetThereBeColor(num_classes=len(names), class_names=names[::-1], width=0.125).eval().save_pretrained(model_dir)
    argv = ["--model", model_dir, "--images", scenes_dataset, "--limit", 12, "--mean-ab-limit", 8, "--batch-size", 5]
    code, report = run_evaluate(*argv, "--max-side", MAX_SIDE, "-o", tmp_path / "first.json")
    assert code == 0 and report["evaluated"] == 12 and report["split"] == "validation"

    validation = list(load_dataset(str(scenes_dataset), split="validation", streaming=True).take(12))
    assert [row["id"] for row in report["per_image"]] == [row["id"] for row in validation]
    for row, original in zip(report["per_image"], validation, strict=True):
        if original["label"] == -1:
            assert row["label"] is None and row["top1"] is None
        else:
            assert row["label"] == names[original["label"]]
            assert row["top1"] == (row["predicted_scene"] == row["label"])
    labelled = [row for row in report["per_image"] if row["label"] is not None]
    assert report["averages"]["model"]["scene_labelled"] == len(labelled) > 0
    assert report["averages"]["model"]["top1"] == pytest.approx(np.mean([row["top1"] for row in labelled]))
    assert report["averages"]["model"]["top5"] >= report["averages"]["model"]["top1"]

    _, again = run_evaluate(*argv, "--max-side", MAX_SIDE, "-o", tmp_path / "second.json")
    assert again == report


def test_scene_labels_are_matched_to_model_classes_by_name():
    assert evaluate.scene_label_map(("sea", "forest", "desert"), ["forest", "sea"]) == {0: 1, 1: 0}


def test_scores_agree_with_scikit_images_psnr_ssim_and_lab(photo_folder, tiny_model_dir, tmp_path):
    """An independent reference: scikit-image's PSNR, SSIM and CIE Lab, on the same photos and outputs."""
    from skimage.color import lab2rgb, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    code, report = run_evaluate(
        "--model", tiny_model_dir, "--images", photo_folder, "--max-side", MAX_SIDE, "--no-ablation", "--refine",
        "-o", tmp_path / "report.json",
    )  # fmt: skip
    assert code == 0
    colorizer = Colorizer.from_pretrained(tiny_model_dir, speedups=evaluate.EXACT_SPEEDUPS)
    for row in report["per_image"]:
        truth = np.asarray(Image.open(photo_folder / row["id"]).convert("RGB"))
        lab = rgb2lab(truth)
        lab[..., 1:] = 0
        gray = np.round(np.clip(lab2rgb(lab), 0, 1) * 255).astype(np.uint8)
        model, refined = (
            np.asarray(colorizer(Image.fromarray(truth), max_side=int(MAX_SIDE), refine=refine).image)
            for refine in (False, True)
        )
        assert not np.array_equal(model, refined)
        for method, output in (("gray", gray), ("model", model), (evaluate.REFINED, refined)):
            assert row[method]["psnr"] == pytest.approx(
                peak_signal_noise_ratio(truth, output, data_range=255), abs=0.02
            )
            reference_ssim = structural_similarity(
                truth,
                output,
                channel_axis=2,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            )  # fmt: skip  (Wang et al.'s settings, as metrics.ssim)
            assert row[method]["ssim"] == pytest.approx(reference_ssim, abs=2e-3)
        assert row["ground_truth_colorfulness"] > 10 and row["gray"]["psnr"] < row["model"]["psnr"] + 10


def test_hints_are_scored_for_the_model_and_the_propagation_baseline(photo_folder, tmp_path):
    from test_hints import live_hint_model

    model_dir = tmp_path / "model"
    live_hint_model().save_pretrained(model_dir)
    code, report = run_evaluate(
        "--model", model_dir, "--images", photo_folder, "--max-side", MAX_SIDE, "--no-ablation",
        "--hints", "0", "1", "4", "--hint-seed", "3", "-o", tmp_path / "report.json",
    )  # fmt: skip
    assert code == 0 and report["settings"]["hints"] == [0, 1, 4] and report["settings"]["hint_seed"] == 3
    colorizer = Colorizer.from_pretrained(model_dir, speedups=evaluate.EXACT_SPEEDUPS)
    for row in report["per_image"]:
        photo = Image.open(photo_folder / row["id"]).convert("RGB")
        points = evaluate.simulated_points(evaluate.Sample(row["id"], -1, photo), 4, seed=3)
        assert points[:1] == evaluate.simulated_points(evaluate.Sample(row["id"], -1, photo), 1, seed=3)
        assert points != evaluate.simulated_points(evaluate.Sample(row["id"], -1, photo), 4, seed=0)
        hinted = colorizer(photo, hints=points, max_side=int(MAX_SIDE)).image
        assert row["model_hints4"]["psnr"] == pytest.approx(
            metrics.psnr(as_tensor(hinted), as_tensor(photo)).item(), abs=1e-4
        )
        output_ab = [rgb_to_lab(as_tensor(hinted)[0, :, y, x], dim=0)[1:] for x, y, _ in points]
        hint_ab = [rgb_to_lab(torch.tensor(colour) / 255.0, dim=0)[1:] for _, _, colour in points]
        distances = [float((out - hint).norm()) for out, hint in zip(output_ab, hint_ab, strict=True)]
        assert row["model_hints4"]["hint_error"] == pytest.approx(np.mean(distances), abs=1e-3)
        assert row["model_hints4"]["hinted_within_10"] == np.mean([d <= 10 for d in distances])
        # The baseline moves the automatic colours toward the hints: nearer to them at the hinted pixels.
        for count in (1, 4):
            propagation, model = row[f"propagation_hints{count}"], row["model"]
            assert propagation["hint_error"] < hint_fidelity_of_automatic(photo, colorizer, points[:count])
            assert propagation["psnr"] != model["psnr"]
    table = evaluate.markdown_table(report)
    assert "| propagation baseline, 4 hints |" in table and "| all | 2 | 4 |" in table
    check_hint_plot(report, tmp_path)


def check_hint_plot(report: dict, tmp_path) -> None:
    """The plot of PSNR against N has a point for each N of each line, at its PSNR."""
    hint_plot.main([str(tmp_path / "report.json"), "-o", str(tmp_path / "hints.png")])
    plot = np.asarray(Image.open(tmp_path / "hints.png").convert("RGB"))
    assert plot.shape == (hint_plot.SIZE[1], hint_plot.SIZE[0], 3)
    lines = hint_plot.curves(report)
    assert [n for n, _ in lines["model"]] == [0, 1, 4] and lines["model"][2][1] == report["averages"]["model_hints4"][
        "psnr"
    ]
    assert (plot == hint_plot.COLOURS[0]).all(axis=2).sum() > 200  # the photo folder's lines are drawn
    # Two reports of one dataset (two models compared) each get lines: the second replaced the first.
    better = {method: {**scores, "psnr": scores.get("psnr", 0) + 1} for method, scores in report["averages"].items()}
    other = tmp_path / "other-model.json"
    other.write_text(json.dumps({**report, "model": "runs/other", "averages": better}))
    hint_plot.main([str(tmp_path / "report.json"), str(other), "-o", str(tmp_path / "two.png")])
    plot = np.asarray(Image.open(tmp_path / "two.png").convert("RGB"))
    assert all((plot == colour).all(axis=2).sum() > 200 for colour in hint_plot.COLOURS[:2])
    assert hint_plot.legend_names([report, {**report, "model": "runs/other"}])[1].endswith(", other")


def test_hint_plot_refuses_what_it_cannot_draw_in_one_line(tmp_path, capsys):
    """Each was a traceback: a report without hints (ZeroDivisionError), a missing report, a missing folder or an
    output that is not a PNG."""
    automatic = tmp_path / "automatic.json"
    automatic.write_text(json.dumps({"input": "x", "averages": {"model": {"psnr": 25.0}}}))
    cases = [
        ([str(automatic), "-o", str(tmp_path / "p.png")], "a report without hinted scores"),
        ([str(tmp_path / "missing.json"), "-o", str(tmp_path / "p.png")], "not a readable JSON report"),
        ([str(automatic), "-o", str(tmp_path / "no-folder" / "p.png")], "no folder"),
        ([str(automatic), "-o", str(tmp_path / "p.json")], "the plot is a PNG"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_status:
            hint_plot.main(argv)
        assert exit_status.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [automatic]


def hint_fidelity_of_automatic(photo, colorizer, points) -> float:
    automatic = as_tensor(colorizer(photo, max_side=int(MAX_SIDE)).image)
    return evaluate.hint_fidelity(automatic, points)["hint_error"]


@pytest.mark.parametrize("size", [(3000, 11), (11, 3000), (600, 400)])
def test_the_propagation_baseline_moves_the_colours_toward_the_hints_at_any_shape(size):
    """A photo over 256 times wider than high was shrunk to 0 rows: a traceback, and the whole report lost."""
    width, height = size
    automatic = torch.full((1, 3, height, width), 0.5)
    points = [(width - 1, height - 1, (200, 40, 40)), (0, 0, (40, 40, 200))]
    baseline = evaluate.hint_fidelity(evaluate.propagated(automatic, points), points)["hint_error"]
    assert baseline < 0.5 * evaluate.hint_fidelity(automatic, points)["hint_error"]


def test_hints_need_a_model_that_takes_them(photo_folder, tiny_model_dir, tmp_path, capsys):
    code, _ = run_evaluate(
        "--model", tiny_model_dir, "--images", photo_folder, "--hints", "5", "-o", tmp_path / "report.json"
    )
    assert code == evaluate.EXIT_USAGE and "takes no colour hints" in capsys.readouterr().err


def test_the_report_names_the_model_and_the_engine_that_made_it(examples_dir, tmp_path, monkeypatch, capsys):
    """The engine was not recorded (onnxruntime-int8 scored 0.25 dB apart from torch with the same settings), and the
    bundled model was recorded as null."""
    monkeypatch.delenv("LETCOLOR_MODEL", raising=False)
    (tmp_path / "photos").mkdir()
    Image.open(examples_dir / "chelsea.png").convert("RGB").save(tmp_path / "photos" / "chelsea.png")
    options = ["--images", tmp_path / "photos", "--no-ablation", "--max-side", MAX_SIDE, "--engine", "torch"]
    code, report = run_evaluate(*options, "-o", tmp_path / "report.json")
    assert code == 0 and report["settings"]["engine"] == "torch"
    assert report["model"] == str(BUNDLED_MODEL_DIR)
    assert f"model {BUNDLED_MODEL_DIR} on torch; " in " ".join(capsys.readouterr().out.split())
