"""The `bench` command: end-to-end latency and peak memory of the pipeline, per configuration (a torch speed-up
or an engine) and input size.

End to end = decode an encoded JPEG file, colorize, encode the result (JPEG quality 95, or PNG). The
configurations take turns, one run each per round, so that a machine whose speed drifts slows them alike. Each input
is timed at the default setting (max_side = DEFAULT_MAX_SIDE) and at native resolution (max_side = None); with
--hints N and --refine, each configuration is also timed with N colour hints (a model that takes them: --model, or
random hint inputs) and with edge-aware refinement. --engine compares engines on photos of 0.26, 1 and 4 MP and on
short videos at 480p and 720p (frames/s, end to end). The model is colorize's (--model, $LETCOLOR_MODEL, else the
bundled one); with --width W instead, a network of that width with random weights, with BatchNorm statistics taken
from real photos so that activations have realistic scales: speed does not depend on the weights. Each
configuration's ab error and output PSNR against torch float32 are measured on the same photos.
"""

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from letcolor.engines import ENGINES
from letcolor.fullres import global_input, lightness
from letcolor.hints import points_from_truth
from letcolor.images import EXAMPLES_DIR, MAX_IMAGE_PIXELS, image_pixels, load_image
from letcolor.inference import Precision, Speedups, cpu_has_fast_bfloat16
from letcolor.memory import PeakMemory
from letcolor.metrics import image_tensor, psnr
from letcolor.model import NO_HINTS_MESSAGE, LetThereBeColor
from letcolor.pipeline import DEFAULT_MAX_SIDE, Colorizer, load_model, usable_device
from letcolor.video import colorize_video
from letcolor.video_bench import PAN_PHOTOS, write_pan

BENCH_PHOTO = EXAMPLES_DIR / "historical_c.jpg"
ACCURACY_PHOTOS = sorted(EXAMPLES_DIR.glob("historical_*"))
DEFAULT_SIZES = "256x256,512x512,1024x1024,2048x1536"
ENGINE_SIZES = "512x512,1152x864,2304x1728"  # 0.26, 1.0 and 4.0 MP
VIDEO_SIZES = {"480p": (854, 480), "720p": (1280, 720)}
VIDEO_FRAMES = 24
CONFIGURATIONS = {  # name: (engine, torch speed-ups; None: the engine's default for the device)
    "fp32": ("torch", Speedups()),
    "fp32 folded-BN": ("torch", Speedups(fold_batchnorm=True)),
    "fp32 folded-BN channels-last": ("torch", Speedups(fold_batchnorm=True, channels_last=True)),
    "fp32 folded-BN channels-last oneDNN": ("torch", Speedups(fold_batchnorm=True, channels_last=True, onednn=True)),
    "bf16-autocast folded-BN channels-last": ("torch", Speedups(Precision.BFLOAT16_AUTOCAST, True, True)),
    "bf16 channels-last": ("torch", Speedups(Precision.BFLOAT16, channels_last=True)),
    "bf16 folded-BN channels-last": ("torch", Speedups(Precision.BFLOAT16, True, True)),
    "bf16 folded-BN channels-last oneDNN": ("torch", Speedups(Precision.BFLOAT16, True, True, onednn=True)),
    "bf16 folded-BN channels-last compile": ("torch", Speedups(Precision.BFLOAT16, True, True, compile=True)),
    **{engine: (engine, None) for engine in ENGINES},
}
NOISE_FLOOR = "(baseline, input +-0.5 gray level noise)"


def calibrate_batchnorm(model: LetThereBeColor, photos: list[Path]) -> LetThereBeColor:
    """Sets every BatchNorm's running statistics to those of the photos' 224x224 network inputs (in place)."""
    inputs = torch.cat([global_input(lightness(image_pixels(load_image(photo)))) for photo in photos])
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one pass gives exactly these inputs' statistics
    with torch.no_grad():
        model.train()(inputs)
    return model.eval()


def random_model(width: float, photos: list[Path], seed: int = 0, hint_channels: int = 0) -> LetThereBeColor:
    """A randomly initialised model (365 classes) with BatchNorm statistics calibrated on the photos."""
    torch.manual_seed(seed)
    return calibrate_batchnorm(LetThereBeColor(width=width, hint_channels=hint_channels), photos)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def write_inputs(photo: Path, sizes: list[tuple[int, int]], directory: Path) -> dict[tuple[int, int], Path]:
    """The photo cropped and resized to each size, saved as JPEG (quality 90), as a user's file would be."""
    source = load_image(photo).convert("RGB")
    paths = {}
    for width, height in sizes:
        path = directory / f"input-{width}x{height}.jpg"
        ImageOps.fit(source, (width, height), Image.Resampling.LANCZOS).save(path, quality=90)
        paths[width, height] = path
    return paths


@dataclass
class Row:
    size: tuple[int, int]
    max_side: int | None
    video: bool = False  # a clip of VIDEO_FRAMES frames: seconds are per frame
    seconds: dict[str, float] = field(default_factory=dict)  # per configuration
    peak_bytes: dict[str, int | None] = field(default_factory=dict)

    def label(self) -> str:
        kind = f" video ({VIDEO_FRAMES} frames)" if self.video else ""
        return f"| {self.size[0]}x{self.size[1]}{kind} | {self.max_side or 'native'} | "

    def cell(self, name: str, baseline: str) -> str:
        if name not in self.seconds:
            return "n/a"
        seconds, speedup = self.seconds[name], self.seconds[baseline] / self.seconds[name]
        if self.video:
            return f"{1 / seconds:.1f} fps ({speedup:.2f}x)"
        return f"{seconds * 1000:.0f} ({speedup:.2f}x)"


@dataclass(frozen=True)
class Column:
    """One column of the tables: a configuration (its colorizer), as it is or with hints or refinement."""

    name: str
    colorizer: Colorizer
    options: Callable[[Path], dict]  # the colorizer's options for an input file


def photo_seconds(colorizer: Colorizer, path: Path, max_side: int | None, file_format: str, **options) -> float:
    """Seconds from the encoded input file to the encoded output; `options` are the colorizer's (hints, refine)."""
    start = time.perf_counter()
    result = colorizer(path, max_side=max_side, **options)
    result.image.save(io.BytesIO(), format=file_format, **({"quality": 95} if file_format == "JPEG" else {}))
    return time.perf_counter() - start


def measure_row(row: Row, columns: list[Column], path: Path, repeats: int, file_format: str) -> None:
    """Each column's median seconds (per frame for video) and peak memory for one row, into `row`. The columns take
    turns, one run each per round, in an order that rotates, so that the machine's drift reaches all of them alike;
    each is warmed up first (oneDNN picks and caches its kernels for each new shape, and compile compiles). Memory
    is measured in one more run each, untimed: `PeakMemory` hands freed memory back to the OS first, which would
    make the timed runs fault their pages in again."""
    timed = video_seconds if row.video else photo_seconds

    def run(column: Column) -> float:
        return timed(column.colorizer, path, row.max_side, file_format, **column.options(path))

    for column in columns:
        run(column)
    seconds = {column.name: [] for column in columns}
    for round_number in range(repeats):
        shift = round_number % len(columns)
        for column in columns[shift:] + columns[:shift]:
            seconds[column.name].append(run(column))
    row.seconds = {name: statistics.median(values) for name, values in seconds.items()}
    for column in columns:
        with PeakMemory(column.colorizer.device) as memory:
            run(column)
        row.peak_bytes[column.name] = memory.peak_bytes


def accuracy_inputs(photos: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The photos as float gray images at the default network size, and the same with up to half a gray level of
    noise (what 8-bit storage of the input already adds): the ab error that this noise causes is the floor by
    which a speed-up's error is judged."""
    rng = np.random.default_rng(0)
    grays = []
    for photo in photos:
        gray = load_image(photo).convert("L")
        gray.thumbnail((DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE))
        grays.append(np.asarray(gray, dtype=np.float32) / 255)
    noisy = [np.clip(gray + rng.uniform(-0.5, 0.5, gray.shape).astype(np.float32) / 255, 0, 1) for gray in grays]
    return grays, noisy


def ab_errors(predictions: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    """Mean and largest |ab - ab_reference| in Lab units."""
    differences = torch.cat([(a - b).abs().flatten().cpu() for a, b in zip(predictions, reference, strict=True)])
    return differences.mean().item(), differences.max().item()


def output_psnr(colorizer: Colorizer, reference: list[torch.Tensor]) -> float:
    """The lowest PSNR (dB) between the colorizer's RGB outputs for the accuracy photos and the reference's."""
    return min(psnr(rgb, ref).item() for rgb, ref in zip(output_rgb(colorizer), reference, strict=True))


def output_rgb(colorizer: Colorizer) -> list[torch.Tensor]:
    return [image_tensor(colorizer(photo).image) for photo in ACCURACY_PHOTOS]


def _cell_mb(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:.0f}"


def markdown_tables(rows: list[Row], names: list[str], errors: dict[str, tuple], setup: str) -> str:
    """Latency (median ms, or frames/s for video, and speed-up over the first configuration), peak memory and
    accuracy tables."""
    header = "| input | max_side | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names) + "\n"
    latency, memory = header, header
    for row in rows:
        latency += row.label() + " | ".join(row.cell(n, names[0]) for n in names) + " |\n"
        memory += row.label() + " | ".join(_cell_mb(row.peak_bytes.get(n)) for n in names) + " |\n"
    accuracy = "| configuration | mean abs ab error | max abs ab error | lowest output PSNR (dB) |\n|---|---|---|---|\n"
    accuracy += "".join(f"| {n} | {e[0]:.3f} | {e[1]:.3f} | {e[2]} |\n" for n, e in errors.items())
    return (
        f"Median end-to-end latency in ms, or frames/s for video (speed-up over {names[0]}); {setup}\n\n{latency}\n"
        f"Peak memory above idle (MB):\n\n{memory}\n"
        f"Against torch float32 over {len(ACCURACY_PHOTOS)} photos at max_side {DEFAULT_MAX_SIDE}: ab error (Lab "
        f"units) of the network's output, and PSNR of the RGB output:\n\n{accuracy}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory or Hub id (default: $LETCOLOR_MODEL, then the bundled one)")
    parser.add_argument("--width", type=float, help="instead of a model, random weights at this width (1 = paper's)")
    parser.add_argument(
        "--configs",
        help="comma-separated, the first is the baseline (default: all but compile and the engines; on a CPU without "
        f"native bfloat16, the float32 ones); known: {', '.join(CONFIGURATIONS)}",
    )
    parser.add_argument(
        "--engine",
        help=f"comma-separated engines ({', '.join(ENGINES)}; or configurations) compared instead of --configs, the "
        f"first the baseline, on photos of 0.26, 1 and 4 MP ({ENGINE_SIZES}) and on {VIDEO_FRAMES}-frame videos at "
        "480p and 720p",
    )
    parser.add_argument("--sizes", help=f"comma-separated WIDTHxHEIGHT input sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median is reported)")
    parser.add_argument("--format", choices=["JPEG", "PNG"], type=str.upper, default="JPEG", help="output encoding")
    parser.add_argument("--photo", type=Path, default=BENCH_PHOTO, help="the photo resized to each input size")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core)")
    parser.add_argument("--hints", type=int, default=0, metavar="N", help="also time each configuration with N hints")
    parser.add_argument("--refine", action="store_true", help="also time each configuration with refinement")


def run(args: argparse.Namespace) -> int:
    try:
        device = usable_device(args.device)
        named = next((each for each in (args.engine, args.configs) if each is not None), None)  # ("": an error)
        names = [name.strip() for name in (default_configurations(device) if named is None else named).split(",")]
        sizes = checked_settings(args, names)
        hint_channels = 3 if args.hints else 0
        model = random_model(args.width, ACCURACY_PHOTOS, 0, hint_channels) if args.width else load_model(args.model)
    except (ValueError, argparse.ArgumentTypeError) as error:  # ModelError and InvalidImageError are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.hints and not model.takes_hints:
        print(f"error: --hints: {NO_HINTS_MESSAGE}", file=sys.stderr)
        return 2
    rows = [Row(size, max_side) for size in sizes for max_side in (DEFAULT_MAX_SIDE, None)]
    rows += [Row(size, DEFAULT_MAX_SIDE, video=True) for size in VIDEO_SIZES.values()] if args.engine else []
    grays, noisy = accuracy_inputs(ACCURACY_PHOTOS)
    reference = Colorizer(model, device, Speedups())
    reference_ab, reference_rgb = reference.predict_ab(grays), output_rgb(reference)
    errors = {f"torch float32 {NOISE_FLOOR}": (*ab_errors(reference.predict_ab(noisy), reference_ab), "")}
    with tempfile.TemporaryDirectory() as directory:
        inputs = write_inputs(args.photo, sizes, Path(directory))
        inputs |= write_clips(Path(directory)) if args.engine else {}
        columns = []
        for name in names:
            colorizer = configured(model, device, name)
            errors[name] = (
                *ab_errors(colorizer.predict_ab(grays), reference_ab),
                f"{output_psnr(colorizer, reference_rgb):.1f}",
            )
            columns += [
                Column(column, colorizer, options) for column, options in variants(name, args.hints, args.refine)
            ]
        for row in rows:
            # hints are for photos
            row_columns = [column for column in columns if not (row.video and column.name.endswith(" hints"))]
            measure_row(row, row_columns, inputs[row.size], args.repeats, args.format)
            cells = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in row.seconds.items())
            print(f"{row.label()}: {cells}", file=sys.stderr)
    setup = (
        f"JPEG file in, {args.format} out; {args.repeats} runs; {device}, {torch.get_num_threads()} threads; "
        f"model width {model.width}{' (random weights)' if args.width else ''}."
    )
    print(markdown_tables(rows, [column.name for column in columns], errors, setup))
    return 0


def checked_settings(args: argparse.Namespace, names: list[str]) -> list[tuple[int, int]]:
    """The input sizes; ValueError (or ArgumentTypeError) for a setting that cannot be timed."""
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        raise ValueError(f"unknown configurations or engines {unknown}; known: {list(CONFIGURATIONS)}")
    if twice := sorted({name for name in names if names.count(name) > 1}):  # (one column, the other's time lost)
        raise ValueError(f"configurations or engines named twice: {twice}")
    default_sizes = ENGINE_SIZES if args.engine is not None else DEFAULT_SIZES
    sizes = [parse_size(text) for text in (default_sizes if args.sizes is None else args.sizes).split(",")]
    threads = 1 if args.threads is None else args.threads
    if min(min(size) for size in sizes) < 1 or args.repeats < 1 or args.hints < 0 or threads < 1:
        raise ValueError("--sizes must be at least 1x1, --repeats and --threads at least 1, --hints at least 0")
    if max(width * height for width, height in sizes) > MAX_IMAGE_PIXELS:  # (a MemoryError, or the machine's memory)
        raise ValueError(f"--sizes: at most {MAX_IMAGE_PIXELS:,} pixels a photo, as colorizing takes")
    if args.model and args.width:
        raise ValueError("--model or --width (random weights), not both")
    if args.width is not None and args.width <= 0:
        raise ValueError(f"--width must be above 0, got {args.width}")
    load_image(args.photo)  # a bad photo: refused before the model is made
    return sizes


def write_clips(directory: Path) -> dict[tuple[int, int], Path]:
    """A clip panning over an example photo at each video size."""
    clips = {}
    for label, size in VIDEO_SIZES.items():
        clips[size] = directory / f"clip-{label}.mp4"
        write_pan(EXAMPLES_DIR / PAN_PHOTOS[0], clips[size], size=size, frames=VIDEO_FRAMES)
    return clips


def video_seconds(colorizer: Colorizer, path: Path, max_side: int | None, file_format: str, **options) -> float:
    """Seconds per frame of colorizing the clip end to end (decode, colorize in the default mode, encode H.264)."""
    start = time.perf_counter()
    colorize_video(colorizer, path, path.with_name(f"{path.stem}-colorized.mp4"), max_side=max_side, **options)
    return (time.perf_counter() - start) / VIDEO_FRAMES


def default_configurations(device: torch.device) -> str:
    """Every configuration but compile and the engines; on a CPU without native bfloat16 (`cpu_has_fast_bfloat16`),
    the float32 ones only, with a notice: there bfloat16 is emulated and oneDNN cannot pack it (an AVX2-only CPU: the
    README's `bench` took 137 s with them, 12 s without)."""
    names = [name for name in CONFIGURATIONS if "compile" not in name and name not in ENGINES]
    if device.type == "cpu" and not cpu_has_fast_bfloat16():
        print(
            "bench: this CPU runs bfloat16 emulated, so its configurations are left out (--configs names them)",
            file=sys.stderr,
        )
        names = [name for name in names if CONFIGURATIONS[name][1].precision == Precision.FLOAT32]
    return ",".join(names)


def configured(model: LetThereBeColor, device: torch.device, name: str) -> Colorizer:
    engine, speedups = CONFIGURATIONS[name]
    return Colorizer(model, device, speedups, engine)


def variants(name: str, hints: int, refine: bool) -> list[tuple[str, Callable[[Path], dict]]]:
    """(column, the colorizer's options for an input file) for one configuration: as it is, with `hints` points,
    with refinement."""
    columns = [(name, lambda path: {})]
    if hints:
        columns.append((f"{name} + {hints} hints", lambda path: {"hints": bench_points(path, hints)}))
    if refine:
        columns.append((f"{name} + refine", lambda path: {"refine": True}))
    return columns


def bench_points(path: Path, count: int) -> list:
    """`count` points at fixed random pixels of the input, with its own colours."""
    return points_from_truth(load_image(path), count, np.random.default_rng(0))
