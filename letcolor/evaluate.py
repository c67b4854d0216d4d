"""`python -m letcolor evaluate`: colorize colour photos from their lightness and score them against the originals.

Every photo is scored four ways in the same run: the model, the model without global features (paper 4.4), and two
baselines that keep the photo's lightness: gray (a = b = 0) and one constant a,b (the mean over training photos).
With `--hints N ...`, a model that takes colour hints is also given N points per photo at random pixels with their
true colours (a fixed seed; the first N of the same draw for every N), and a non-learned propagation baseline gets
the same points: it shifts the automatic result's a,b toward each hint, weighted by distance and by likeness of L.
"""

import argparse
import errno
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from letcolor import metrics
from letcolor.color import lab_to_rgb, rgb_to_lab, rgb_to_lightness
from letcolor.engines import DEFAULT_ENGINE, ENGINES
from letcolor.hints import MAX_POINTS, colour_ab, points_from_truth
from letcolor.images import InvalidImageError, image_suffixes, in_srgb, load_image, read_image_bytes
from letcolor.inference import Precision, Speedups
from letcolor.model import NO_HINTS_MESSAGE, is_local_path
from letcolor.outputs import save_image_whole, write_whole
from letcolor.pipeline import Colorizer, ModelNotFoundError, batches_within, model_source

IMAGE_METRICS = ("psnr", "ssim", "auc", "colorfulness", "colorfulness_gap")
HINT_METRICS = ("hint_error", "hinted_within_10")
MODEL, NO_GLOBAL, GRAY, MEAN_AB = "model", "model_no_global", "gray", "mean_ab"
REFINED = "model_refined"
HINTED, PROPAGATION = "model_hints", "propagation_hints"  # + the number of points, e.g. model_hints10
HINT_FIDELITY_UNITS = 10  # Lab ab units
FIGURE_ROW_HEIGHT = 192  # pixels
# The propagation baseline's weights: a gaussian in distance (sigma a share of the longer side) times a gaussian in
# L difference; the automatic colour keeps weight PROPAGATION_PRIOR, so far from every hint nothing changes.
PROPAGATION_SIDE = 256  # the shift is computed at most at this size, then upsampled
PROPAGATION_DISTANCE = 0.1
PROPAGATION_LIGHTNESS = 10.0
PROPAGATION_PRIOR = 0.05
EXIT_NOTHING_USABLE, EXIT_USAGE = 1, 2  # as the rest of the CLI
DATASET_SUFFIXES = image_suffixes() | {".parquet", ".arrow", ".csv", ".jsonl"}  # what a local dataset holds
# Speed-ups that keep float32 arithmetic (folded BatchNorm and memory layout change only rounding).
EXACT_SPEEDUPS = Speedups(Precision.FLOAT32, fold_batchnorm=True, channels_last=True)
MAX_SCORED_PIXELS = 4_000_000  # larger photos are scored reduced to this (the network reads them at --max-side)
SCORED_BATCH_PIXELS = 16_000_000  # and a batch holds at most this many pixels of photos
SCORED_AT_ONCE_PIXELS = 4_000_000  # a photo's methods are scored together up to this many pixels in all


class BadImage(Exception):
    """An input that cannot be evaluated; the message says why."""


class NoUsablePhotos(Exception):
    """Nothing to evaluate, or nothing to take the mean ab from."""


class InputNotFound(Exception):
    """--images or --mean-ab-from is neither a folder of images nor a dataset with the split asked for."""


@dataclass
class Sample:
    id: str
    label: int  # scene class in the input's own label list; -1 where unlabelled
    image: Image.Image | None = None  # RGB; None when the input could not be used
    problem: str = ""
    source: str | None = None  # the dataset's `source` column, where it has one


@dataclass
class ImageSource:
    """Where photos come from: a folder of image files, or one split of a `datasets` dataset."""

    location: str
    split: str | None = None  # None for a folder
    label_names: tuple[str, ...] = ()  # the dataset's scene classes, in label order

    @classmethod
    def parse(cls, location: str, split: str) -> "ImageSource":
        """InputNotFound, without asking the Hub, for a file or a path that is not there."""
        path = Path(location)
        if is_image_folder(path):
            return cls(location)
        if path.is_file():
            raise InputNotFound(f"{location}: a file; give a folder of colour photos or a dataset")
        if not path.exists() and is_local_path(location):
            raise InputNotFound(f"{location}: no such folder")
        if path.is_dir() and not any(each.suffix.lower() in DATASET_SUFFIXES for each in path.rglob("*")):
            raise InputNotFound(f"{location}: holds no image files, nor a dataset's data files")
        return cls(location, split, dataset_label_names(location, split))

    def samples(self) -> Iterator[Sample]:
        return folder_samples(Path(self.location)) if self.split is None else dataset_samples(self.location, self.split)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def network_side(text: str) -> int:
    value = int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8 (pixels), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory or Hugging Face Hub id (default: $LETCOLOR_MODEL, bundled)")
    parser.add_argument("--images", required=True, help="folder of colour photos, or a datasets dataset (path or id)")
    parser.add_argument("--split", default="validation", help="dataset split to evaluate (default: validation)")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N inputs")
    parser.add_argument("-o", "--output", type=Path, help="write the per-image and average scores here (JSON)")
    parser.add_argument("--train-split", default="train", help="split the mean-ab baseline is taken from")
    parser.add_argument(
        "--mean-ab-limit", type=positive_int, default=2000, help="photos read for the mean ab (default: 2000)"
    )
    parser.add_argument(
        "--mean-ab-from",
        help="dataset whose --train-split gives the mean ab (default: that of --images where it is a dataset; for a "
        "folder, the folder's own photos, an optimistic baseline)",
    )
    parser.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the model without global features (paper 4.4; on by default)",
    )
    parser.add_argument(
        "--refine", action="store_true", help="also score the model with edge-aware colour refinement (letcolor.refine)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=16, help="photos per model call (default: 16)")
    parser.add_argument(
        "--max-side", type=network_side, default=512, help="longest side the network sees (default: 512)"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="use the app's speed-ups for the device (bfloat16 where the hardware is fast at it); by default the "
        "network runs in float32, so that the scores do not depend on the CPU or the thread count",
    )
    parser.add_argument(
        "--hints",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also score the model (it must take hints) and the propagation baseline given N points per photo at "
        "random pixels with their true colours (e.g. --hints 1 2 5 10 20)",
    )
    parser.add_argument("--hint-seed", type=seed, default=0, help="seed of the simulated points (default: 0)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--engine", choices=ENGINES, default=DEFAULT_ENGINE, help=f"what runs the network (default {DEFAULT_ENGINE})"
    )
    parser.add_argument("--figure", type=Path, help="also write a PNG of the first photos: gray | model | original")
    parser.add_argument("--figure-photos", type=positive_int, default=6, help="rows of --figure (default: 6)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads (default: 1; the per-photo work is small, and extra threads mostly wait on a busy CPU)",
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    figure_rows = []
    try:
        prepare_outputs(args)
        report = evaluation_report(args, figure_rows)
    except (InputNotFound, NoUsablePhotos, OutputNotWritable) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOTHING_USABLE if isinstance(error, NoUsablePhotos) else EXIT_USAGE
    print(markdown_table(report))
    try:
        if args.output:
            write_whole(args.output, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
        if args.figure:
            save_image_whole(comparison_figure(figure_rows), args.figure)
    except OSError as error:  # a full disk: the table above holds the figures
        print(f"error: cannot write the report or the figure: {error}", file=sys.stderr)
        return 1
    return 0


class OutputNotWritable(ValueError):
    pass


def prepare_outputs(args: argparse.Namespace) -> None:
    """Before any photo is scored: the folders of -o and --figure made, and a format known for --figure's name;
    OutputNotWritable where they cannot be written (a report lost after an hour's run), would overwrite an input or
    each other."""
    Image.init()
    if args.figure and args.figure.suffix.lower() not in Image.registered_extensions():
        raise OutputNotWritable(f"--figure {args.figure}: name it with an image extension, such as .png")
    if args.output and args.figure and args.output.resolve() == args.figure.resolve():
        raise OutputNotWritable(f"-o and --figure: the same file ({args.output}); the figure would replace the report")
    inputs = [location for location in (args.images, args.mean_ab_from, model_location(args.model)) if location]
    for path in (args.output, args.figure):
        if path is None:
            continue
        if path.is_file() and (overwritten := input_holding(path, inputs)):
            raise OutputNotWritable(f"{path}: a file of the inputs ({overwritten}), which it would overwrite")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputNotWritable(f"{path}: cannot create its folder ({error.strerror or error})") from error
        if path.is_dir() or not os.access(path.parent, os.W_OK):
            raise OutputNotWritable(f"{path}: cannot be written (a folder, or in a folder not writable)")


def model_location(name_or_path: str | None) -> str | Path | None:
    """The model's directory or Hub id, None where there is none (an error where the model is loaded)."""
    try:
        return model_source(name_or_path)
    except ModelNotFoundError:
        return None


def input_holding(path: Path, inputs: list) -> str | Path | None:
    """The input location (a file or folder: --images, --mean-ab-from, --model) that `path` is or lies in, if any."""
    resolved = path.expanduser().resolve()
    for location in inputs:
        held = Path(location).expanduser().resolve()
        if resolved == held or held in resolved.parents:
            return location
    return None


def evaluation_report(args: argparse.Namespace, figure_rows: list | None = None) -> dict:
    """The per-image scores of every method, their averages, the skipped inputs and the run's settings."""
    if not all(0 <= count <= MAX_POINTS for count in args.hints):
        raise InputNotFound(f"--hints: point counts must be from 0 to {MAX_POINTS}")
    speedups = None if args.fast else EXACT_SPEEDUPS
    try:
        colorizer = Colorizer.from_pretrained(args.model, args.device, speedups=speedups, engine=args.engine)
    except ValueError as error:  # a device that is not there, a model that is not valid
        raise InputNotFound(str(error)) from error
    if any(args.hints) and not colorizer.takes_hints:
        raise InputNotFound(f"--hints: {NO_HINTS_MESSAGE}")
    source = ImageSource.parse(args.images, args.split)
    mean_ab, mean_ab_origin = baseline_mean_ab(args, source)
    rows, skipped = score_photos(colorizer, source, args, mean_ab, figure_rows if figure_rows is not None else [])
    if not rows:
        raise NoUsablePhotos(f"no usable photos in {source.location}")
    return {
        "model": str(model_source(args.model)),
        "input": source.location,
        "split": source.split,
        "settings": {
            "limit": args.limit,
            "max_side": args.max_side,
            "ablation": args.ablation,
            "fast": args.fast,
            "device": str(colorizer.device),
            "engine": colorizer.engine,
            "hints": args.hints,
            "hint_seed": args.hint_seed,
            "max_scored_pixels": MAX_SCORED_PIXELS,
        },
        "mean_ab": {"a": mean_ab[0], "b": mean_ab[1], "source": mean_ab_origin},
        "ssim": "per RGB channel on 8-bit values, then averaged; gaussian window 11, sigma 1.5, K1 0.01, K2 0.03",
        "evaluated": len(rows),
        "skipped": skipped,
        "averages": averages(rows),
        "by_kind": group_averages(rows),
        "per_image": rows,
    }


# Inputs


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and bool(image_files(path))


def image_files(folder: Path) -> list[Path]:
    """The folder's image files (by extension, not recursive), in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in image_suffixes())


def open_color_photo(source: Path | bytes) -> Image.Image:
    """A file or encoded image -> an upright RGB image; raises BadImage for undecodable, tiny or grayscale inputs."""
    try:
        image = load_image(source) if isinstance(source, Path) else read_image_bytes(source, "the photo")[0].image
    except InvalidImageError as error:
        raise BadImage(f"cannot decode: {error}") from error
    rgb = within_scored_pixels(in_srgb(image.convert("RGB")))  # the truth as the model reads it, profile applied
    if min(rgb.size) < metrics.SSIM_WINDOW:
        raise BadImage(f"smaller than {metrics.SSIM_WINDOW}x{metrics.SSIM_WINDOW} px ({rgb.width}x{rgb.height})")
    pixels = np.asarray(rgb)
    if (pixels.max(axis=2) == pixels.min(axis=2)).all():
        raise BadImage("grayscale: no colour to compare with")
    return rgb


def within_scored_pixels(rgb: Image.Image) -> Image.Image:
    """The photo, reduced (area average) to at most MAX_SCORED_PIXELS: every metric is computed at full resolution in
    float32 for each method at once (a 24 MP photo took 11 GB and 2 minutes; 100 MP ran out of memory)."""
    if rgb.width * rgb.height <= MAX_SCORED_PIXELS:
        return rgb
    scale = math.sqrt(MAX_SCORED_PIXELS / (rgb.width * rgb.height))
    return rgb.resize((max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale))), Image.Resampling.BOX)


def photo_pixels(sample: Sample) -> int:
    return sample.image.width * sample.image.height


def load_sample(sample_id: str, encoded: Path | bytes, label: int, source: str | None = None) -> Sample:
    try:
        return Sample(sample_id, label, open_color_photo(encoded), source=source)
    except BadImage as error:
        return Sample(sample_id, label, problem=str(error), source=source)


def folder_samples(folder: Path) -> Iterator[Sample]:
    for path in image_files(folder):
        yield load_sample(path.name, path, -1)


def stream_split(name: str, split: str):
    from datasets import config, load_dataset

    try:
        return load_dataset(name, split=split, streaming=True)
    except (FileNotFoundError, ConnectionError, ValueError) as error:  # ValueError: no such split
        problem = f"{name}: not a folder of images, nor a dataset with a {split!r} split ({error})"
        raise InputNotFound(problem) from error
    except OSError as error:  # the Hub's HTTP errors too
        problem = f"{name}: cannot be read ({error})"
        if isinstance(error, PermissionError | NotADirectoryError) or error.errno in (errno.EROFS, errno.ENOSPC):
            problem += f"; datasets keeps a cache in {config.HF_DATASETS_CACHE} (HF_DATASETS_CACHE or HF_HOME moves it)"
        raise InputNotFound(problem) from error


def image_column(features) -> str:
    from datasets import Image as ImageFeature

    columns = [name for name, feature in (features or {}).items() if isinstance(feature, ImageFeature)]
    if not columns:
        raise InputNotFound("the dataset has no image column")
    return columns[0]


def dataset_label_names(name: str, split: str) -> tuple[str, ...]:
    """The names of the `label` column's classes; () if it has none."""
    from datasets import ClassLabel

    label = (stream_split(name, split).features or {}).get("label")
    return tuple(label.names) if isinstance(label, ClassLabel) else ()


def dataset_samples(name: str, split: str) -> Iterator[Sample]:
    """The split's rows, streamed, with images decoded here so that one bad image does not end the stream."""
    import pyarrow
    from datasets import Image as ImageFeature

    dataset = stream_split(name, split)
    column = image_column(dataset.features)
    dataset = dataset.cast_column(column, ImageFeature(decode=False))
    rows = enumerate(dataset)
    while True:
        try:
            index, row = next(rows)
        except StopIteration:
            return
        except pyarrow.ArrowException as error:  # an empty parquet file: "BatchSize must be greater than 0"
            raise InputNotFound(f"{name}: split {split!r} cannot be read ({error})") from error
        sample_id, label, source = str(row.get("id", index)), row.get("label"), row.get("source")
        label, cell = -1 if label is None else label, row[column] or {}
        encoded = cell.get("bytes") or (Path(cell["path"]) if cell.get("path") else None)
        if encoded is None:  # a null cell, or empty bytes and no path
            yield Sample(sample_id, label, problem="no image in its row", source=source)
        else:
            yield load_sample(sample_id, encoded, label, source)


def usable(samples: Iterable[Sample], skipped: list[dict]) -> Iterator[Sample]:
    """The samples with an image; the others are reported on stderr and recorded in `skipped`."""
    for sample in samples:
        if sample.image is None:
            tqdm.write(f"skipped {sample.id}: {sample.problem}", file=sys.stderr)
            skipped.append({"id": sample.id, "reason": sample.problem})
        else:
            yield sample


# Baselines


def mean_ab_of(images: Iterable[Image.Image]) -> tuple[float, float]:
    """The mean a and b over every pixel of the images."""
    total, pixels = torch.zeros(2, dtype=torch.float64), 0
    for image in images:
        ab = rgb_to_lab(metrics.image_tensor(image))[0, 1:].flatten(1)
        total += ab.double().sum(1)
        pixels += ab.shape[1]
    if not pixels:
        raise NoUsablePhotos("no usable photos to take the mean ab from")
    a, b = (total / pixels).tolist()
    return a, b


def baseline_mean_ab(args: argparse.Namespace, source: ImageSource) -> tuple[tuple[float, float], str]:
    """The mean-ab baseline's colour, and where it came from (for the report)."""
    if source.split is None and not args.mean_ab_from:
        samples, origin = islice(source.samples(), args.limit), f"the evaluated photos in {source.location}"
    else:
        dataset = args.mean_ab_from or source.location
        samples = islice(dataset_samples(dataset, args.train_split), args.mean_ab_limit)
        origin = f"{dataset} split {args.train_split}, first {args.mean_ab_limit} photos"
    photos = (sample.image for sample in samples if sample.image is not None)
    return mean_ab_of(tqdm(photos, desc="mean ab", unit="img", leave=False)), origin


def with_constant_ab(lightness: torch.Tensor, ab: tuple[float, float]) -> torch.Tensor:
    """L* (N, 1, H, W) with one a,b everywhere, as sRGB rounded to 8 bits like a saved image."""
    n, _, height, width = lightness.shape
    ab_map = torch.tensor(ab, dtype=lightness.dtype).view(1, 2, 1, 1).expand(n, 2, height, width)
    return (lab_to_rgb(torch.cat((lightness, ab_map), dim=1)) * 255).round() / 255


# Scoring


def scene_label_map(label_names: tuple[str, ...], class_names: list[str]) -> dict[int, int]:
    """Input label -> model class, matched by name; labels the model does not know are left out."""
    return {label: class_names.index(name) for label, name in enumerate(label_names) if name in class_names}


def score_image(target: torch.Tensor, predictions: dict[str, torch.Tensor]) -> dict:
    """Per-method metrics of one photo (1, 3, H, W) against its colorizations, as many methods at once as
    SCORED_AT_ONCE_PIXELS allows (all at once, a 4 MP photo's SSIM maps of a dozen methods took 3 GB)."""
    truth = metrics.colorfulness(target).item()
    methods, per_method = list(predictions), {}
    at_once = max(1, SCORED_AT_ONCE_PIXELS // (target.shape[-2] * target.shape[-1]))
    for start in range(0, len(methods), at_once):
        group = methods[start : start + at_once]
        per_method |= method_scores(torch.cat([predictions[method] for method in group]), target, truth, group)
    return {"ground_truth_colorfulness": truth, **per_method}


def method_scores(candidates: torch.Tensor, target: torch.Tensor, truth: float, methods: list[str]) -> dict:
    """The metrics of each candidate (N, 3, H, W) against the target, by method name."""
    scores = {
        "psnr": metrics.psnr(candidates, target),
        "ssim": metrics.ssim(candidates, target),
        "auc": metrics.ab_auc(candidates, target),
        "colorfulness": metrics.colorfulness(candidates),
    }
    scores["colorfulness_gap"] = scores["colorfulness"] - truth
    return {
        method: {metric: values[row].item() for metric, values in scores.items()} for row, method in enumerate(methods)
    }


def scene_scores(probabilities: np.ndarray, label: int, label_map: dict[int, int], class_names: list[str]) -> dict:
    """Top-1/top-5 correctness (None where the photo has no label the model knows) and the predicted scene."""
    scores = torch.from_numpy(probabilities).unsqueeze(0)
    predicted = int(scores.argmax())
    known = {"predicted_scene": class_names[predicted] if class_names else predicted}
    if label not in label_map:
        return {**known, "top1": None, "top5": None}
    truth = torch.tensor([label_map[label]])
    return {**known, **{f"top{k}": bool(metrics.topk_correct(scores, truth, k)) for k in (1, 5)}}


def score_photos(
    colorizer: Colorizer, source: ImageSource, args: argparse.Namespace, mean_ab, figure_rows: list
) -> tuple[list, list]:
    """Per-image rows for every usable photo, and the inputs skipped (with why). The first photos' (gray, model,
    original) images are appended to `figure_rows`, up to --figure-photos when --figure is set."""
    label_map = scene_label_map(source.label_names, colorizer.class_names)
    skipped, rows = [], []
    photos = usable(islice(source.samples(), args.limit), skipped)
    with tqdm(desc="evaluate", unit="img") as progress:
        for batch in batches_within(photos, args.batch_size, SCORED_BATCH_PIXELS, photo_pixels):
            rows += score_batch(colorizer, batch, args, mean_ab, label_map, source.label_names, figure_rows)
            progress.update(len(batch))
    return rows, skipped


def score_batch(
    colorizer, batch: list[Sample], args, mean_ab, label_map, names: tuple[str, ...], figure_rows: list
) -> list[dict]:
    images = [sample.image for sample in batch]
    runs = {MODEL: colorizer.batch(images, use_global=True, max_side=args.max_side)}
    if args.ablation:
        runs[NO_GLOBAL] = colorizer.batch(images, use_global=False, max_side=args.max_side)
    if args.refine:
        runs[REFINED] = colorizer.batch(images, max_side=args.max_side, refine=True)
    counts = sorted(set(args.hints) - {0})
    points = [simulated_points(sample, max(counts), args.hint_seed) for sample in batch] if counts else []
    for count in counts:
        hints = [each[:count] for each in points]
        runs[f"{HINTED}{count}"] = colorizer.batch(images, hints=hints, max_side=args.max_side)
    rows = []
    for index, sample in enumerate(batch):
        target = metrics.image_tensor(sample.image)
        lightness = rgb_to_lightness(target)
        predictions = {method: metrics.image_tensor(results[index].image) for method, results in runs.items()}
        predictions |= {GRAY: with_constant_ab(lightness, (0.0, 0.0)), MEAN_AB: with_constant_ab(lightness, mean_ab)}
        for count in counts:
            predictions[f"{PROPAGATION}{count}"] = propagated(predictions[MODEL], points[index][:count])
        if args.figure and len(figure_rows) < args.figure_photos:
            figure_rows.append((predictions[GRAY], predictions[MODEL], target))
        label = {"label": names[sample.label] if 0 <= sample.label < len(names) else None, "source": sample.source}
        scene = scene_scores(runs[MODEL][index].scene_probabilities, sample.label, label_map, colorizer.class_names)
        scores = score_image(target, predictions)
        for method, prediction in predictions.items():
            if method.startswith((HINTED, PROPAGATION)):
                scores[method] |= hint_fidelity(prediction, points[index][: int(method.rsplit("hints", 1)[1])])
        rows.append({"id": sample.id, **label, **scene, **scores})
    return rows


def simulated_points(sample: Sample, count: int, seed: int) -> list:
    """`count` points from the photo's true colours, the same for this photo id and seed in every run."""
    rng = np.random.default_rng([seed, zlib.crc32(sample.id.encode())])
    return points_from_truth(sample.image, count, rng)


def point_arrays(points: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The points' x (K,), y (K,) and the a,b of their colours (2, K)."""
    xs, ys, colours = zip(*points, strict=True)
    return torch.tensor(xs), torch.tensor(ys), colour_ab(torch.tensor(colours))


def hint_fidelity(prediction: torch.Tensor, points: list) -> dict:
    """The mean ab distance between each hinted pixel of a colorized photo (1, 3, H, W) and its hint, and the share
    within HINT_FIDELITY_UNITS."""
    xs, ys, hint_ab = point_arrays(points)
    output_ab = rgb_to_lab(prediction[0, :, ys, xs], dim=0)[1:]
    distances = (output_ab - hint_ab).norm(dim=0)
    return {
        "hint_error": distances.mean().item(),
        "hinted_within_10": (distances <= HINT_FIDELITY_UNITS).float().mean().item(),
    }


def propagated(automatic: torch.Tensor, points: list) -> torch.Tensor:
    """The propagation baseline: the automatic result (1, 3, H, W) with its a,b shifted toward each point's hint by
    weights that fall with distance and with difference in L (computed at PROPAGATION_SIDE, then upsampled)."""
    lab = rgb_to_lab(automatic)
    height, width = lab.shape[-2:]
    scale = min(1.0, PROPAGATION_SIDE / max(height, width))
    size = (max(1, math.floor(height * scale)), max(1, math.floor(width * scale)))  # (a 3000x11 strip's 0 rows)
    small = torch.nn.functional.interpolate(lab, size=size, mode="area") if scale < 1 else lab
    xs, ys, hint_ab = point_arrays(points)
    residual = (hint_ab - lab[0, 1:, ys, xs]).T  # (K, 2): how far each hint is from the automatic colour there
    rows, columns = torch.meshgrid(torch.arange(small.shape[-2]), torch.arange(small.shape[-1]), indexing="ij")
    sigma = PROPAGATION_DISTANCE * max(small.shape[-2:])
    distance = (rows[None] - ys[:, None, None] * scale).square() + (columns[None] - xs[:, None, None] * scale).square()
    likeness = (small[0, 0][None] - lab[0, 0, ys, xs][:, None, None]).square()
    weights = torch.exp(-distance / (2 * sigma**2) - likeness / (2 * PROPAGATION_LIGHTNESS**2))  # (K, h, w)
    shift = torch.einsum("khw,kc->chw", weights, residual) / (PROPAGATION_PRIOR + weights.sum(0))
    shift = torch.nn.functional.interpolate(shift[None], size=(height, width), mode="bilinear", align_corners=False)
    shifted = torch.cat((lab[:, :1], lab[:, 1:] + shift), dim=1)
    return (lab_to_rgb(shifted) * 255).round() / 255


def comparison_figure(rows: list[tuple[torch.Tensor, ...]]) -> Image.Image:
    """Rows of images side by side, each scaled to FIGURE_ROW_HEIGHT, on a white sheet."""
    height = FIGURE_ROW_HEIGHT
    tiles = [[tensor_to_image(image) for image in row] for row in rows]
    tiles = [[tile.resize((round(tile.width * height / tile.height), height)) for tile in row] for row in tiles]
    gap = 4
    width = max(sum(tile.width + gap for tile in row) for row in tiles) - gap
    sheet = Image.new("RGB", (width, len(tiles) * (height + gap) - gap), "white")
    for index, row in enumerate(tiles):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, index * (height + gap)))
            x += tile.width + gap
    return sheet


def tensor_to_image(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> RGB PIL image."""
    return Image.fromarray(metrics.to_8bit(image)[0].permute(1, 2, 0).numpy().astype(np.uint8))


def mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def method_averages(rows: list[dict], method: str) -> dict:
    present = [metric for metric in (*IMAGE_METRICS, *HINT_METRICS) if metric in rows[0][method]]
    scores = {metric: mean([row[method][metric] for row in rows]) for metric in present}
    scores["colorfulness_abs_gap"] = mean([abs(row[method]["colorfulness_gap"]) for row in rows])
    return scores


def scored_methods(row: dict) -> list[str]:
    """The methods a row holds scores of, in the order they were scored."""
    return [key for key, value in row.items() if isinstance(value, dict)]


def hint_counts(row: dict) -> list[int]:
    """The numbers of simulated points a row was scored with (besides none)."""
    return [int(method.removeprefix(HINTED)) for method in scored_methods(row) if method.startswith(HINTED)]


def averages(rows: list[dict]) -> dict:
    """Each method's mean metrics, the ground truth's mean colourfulness, and scene accuracy over labelled photos."""
    result = {method: method_averages(rows, method) for method in scored_methods(rows[0])}
    labelled = [row for row in rows if row["top1"] is not None]
    result[MODEL] |= {f"top{k}": mean([row[f"top{k}"] for row in labelled]) for k in (1, 5)}
    result[MODEL]["scene_labelled"] = len(labelled)
    result["ground_truth"] = {"colorfulness": mean([row["ground_truth_colorfulness"] for row in rows])}
    return result


def photo_group(row: dict) -> str | None:
    """What kind of photo a row is, for the per-kind table: its class name, else its source (None for neither)."""
    return row["label"] or row["source"]


def group_averages(rows: list[dict]) -> dict:
    """`averages` for each kind of photo (see photo_group), with its photo count, in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if photo_group(row) is not None:
            groups.setdefault(photo_group(row), []).append(row)
    return {group: {"photos": len(members), **averages(members)} for group, members in groups.items()}


# Report


def method_title(method: str, report: dict) -> str:
    if method == MEAN_AB:
        mean_ab = report["mean_ab"]
        return f"mean ab (a = {mean_ab['a']:.2f}, b = {mean_ab['b']:.2f})"
    titles = {
        MODEL: "model",
        REFINED: "model, refined (edge-aware)",
        NO_GLOBAL: "model, no global features (4.4)",
        GRAY: "gray (ab = 0)",
    }
    for prefix, title in ((HINTED, "model"), (PROPAGATION, "propagation baseline")):
        if method.startswith(prefix):
            return f"{title}, {method.removeprefix(prefix)} hints"
    return titles[method]


def cell(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown_table(report: dict) -> str:
    averages_ = report["averages"]
    header = [
        "| method | PSNR (dB) ↑ | SSIM ↑ | AuC ↑ | colorfulness | colorfulness gap ↓ | top-1 ↑ | top-5 ↑ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for method in (method for method in averages_ if method != "ground_truth"):
        scores = averages_[method]
        lines.append(
            f"| {method_title(method, report)} | {scores['psnr']:.2f} | {scores['ssim']:.4f} | {scores['auc']:.4f} "
            f"| {scores['colorfulness']:.1f} | {scores['colorfulness_abs_gap']:.1f} "
            f"| {cell(scores.get('top1'), '.1%')} | {cell(scores.get('top5'), '.1%')} |"
        )
    lines.append(f"| ground truth | – | 1 | 1 | {averages_['ground_truth']['colorfulness']:.1f} | 0 | – | – |")
    split = f" ({report['split']})" if report["split"] else ""
    labelled = averages_[MODEL]["scene_labelled"]
    notes = (
        f"{report['evaluated']} photos from {report['input']}{split}, {len(report['skipped'])} skipped; model "
        f"{report['model']} on {report['settings']['engine']}; scene accuracy "
        f"over the {labelled} photos whose label the model knows. SSIM: per RGB channel. Colorfulness: Hasler and "
        "Suesstrunk (2003); gap: mean |method - ground truth|. AuC: of the per-pixel ab error CDF over 0..150."
    )
    return "\n".join([*header, *lines, "", notes, *kind_table(report["by_kind"]), *hint_table(report)])


def hint_table(report: dict) -> list[str]:
    """Per kind of photo and number of points: the model with hints against the propagation baseline and gray."""
    counts = hint_counts(report["per_image"][0])
    if not counts:
        return []
    lines = [
        "",
        f"Hints: N points per photo at random pixels with their true colours (seed {report['settings']['hint_seed']}). "
        f"Within {HINT_FIDELITY_UNITS}: the share of hinted pixels whose output is within {HINT_FIDELITY_UNITS} ab "
        "units of the hint.",
        "",
        "| kind | photos | N | PSNR model | propagation | gray | AuC model | propagation | colorfulness model "
        f"| truth | within {HINT_FIDELITY_UNITS} model | propagation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = {"all": {"photos": report["evaluated"], **report["averages"]}, **report["by_kind"]}
    for kind, scores in groups.items():
        for count in [0, *counts]:
            model = scores[f"{HINTED}{count}"] if count else scores[MODEL]
            baseline = scores[f"{PROPAGATION}{count}"] if count else scores[MODEL]
            within = [cell(each.get("hinted_within_10"), ".1%") for each in (model, baseline)]
            lines.append(
                f"| {kind} | {scores['photos']} | {count} | {model['psnr']:.2f} | {baseline['psnr']:.2f} "
                f"| {scores[GRAY]['psnr']:.2f} | {model['auc']:.4f} | {baseline['auc']:.4f} "
                f"| {model['colorfulness']:.1f} | {scores['ground_truth']['colorfulness']:.1f} "
                f"| {within[0]} | {within[1]} |"
            )
    return lines


def kind_table(by_kind: dict) -> list[str]:
    """Per kind of photo (class, else source): the model against the gray and mean-ab baselines."""
    if not by_kind:
        return []
    lines = [
        "",
        "| kind | photos | PSNR model | gray | mean ab | AuC model | gray | mean ab | colorfulness model | truth "
        "| top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, scores in sorted(by_kind.items(), key=lambda item: -item[1]["photos"]):
        model, gray, mean_ab = scores[MODEL], scores[GRAY], scores[MEAN_AB]
        lines.append(
            f"| {kind} | {scores['photos']} | {model['psnr']:.2f} | {gray['psnr']:.2f} | {mean_ab['psnr']:.2f} "
            f"| {model['auc']:.4f} | {gray['auc']:.4f} | {mean_ab['auc']:.4f} | {model['colorfulness']:.1f} "
            f"| {scores['ground_truth']['colorfulness']:.1f} | {cell(model['top1'], '.1%')} |"
        )
    return lines
