"""The `bench` command: end-to-end latency and peak memory of the pipeline, per speed-up and input size.

End to end = decode an encoded JPEG file, colorize, encode the result (JPEG quality 95, or PNG). Each input is
timed at the default setting (max_side = DEFAULT_MAX_SIDE) and at native resolution (max_side = None); with
--hints N and --refine, each configuration is also timed with N colour hints (a model that takes them: --model, or
random hint inputs) and with edge-aware refinement. Without
--model the network has random weights, with BatchNorm statistics taken from real photos so that activations have
realistic scales: speed does not depend on the weights, and each speed-up's ab error against float32 is measured
on the same photos.
"""

import argparse
import ctypes
import gc
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from letcolor.color import lightness_to_input
from letcolor.fullres import lightness
from letcolor.hints import points_from_truth
from letcolor.images import image_pixels, load_image
from letcolor.inference import Precision, Speedups
from letcolor.model import GLOBAL_INPUT_SIZE, LetThereBeColor
from letcolor.pipeline import DEFAULT_MAX_SIDE, Colorizer, default_device, load_model

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
BENCH_PHOTO = EXAMPLES_DIR / "historical_c.jpg"
ACCURACY_PHOTOS = sorted(EXAMPLES_DIR.glob("historical_*"))
DEFAULT_SIZES = "256x256,512x512,1024x1024,2048x1536"
CONFIGURATIONS = {
    "fp32": Speedups(),
    "fp32 folded-BN": Speedups(fold_batchnorm=True),
    "fp32 folded-BN channels-last": Speedups(fold_batchnorm=True, channels_last=True),
    "bf16-autocast folded-BN channels-last": Speedups(Precision.BFLOAT16_AUTOCAST, True, True),
    "bf16 channels-last": Speedups(Precision.BFLOAT16, channels_last=True),
    "bf16 folded-BN channels-last": Speedups(Precision.BFLOAT16, True, True),
    "bf16 folded-BN channels-last compile": Speedups(Precision.BFLOAT16, True, True, compile=True),
    "onnxruntime": None,  # the onnxruntime engine (float32), not a torch speed-up
}
SAMPLE_SECONDS = 0.002
NOISE_FLOOR = "(baseline, input +-0.5 gray level noise)"


def calibrate_batchnorm(model: LetThereBeColor, photos: list[Path]) -> LetThereBeColor:
    """Sets every BatchNorm's running statistics to those of the photos' 224x224 network inputs (in place)."""
    inputs = torch.cat([_network_input_224(photo) for photo in photos])
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


def _network_input_224(photo: Path) -> torch.Tensor:
    full = lightness(image_pixels(load_image(photo)), torch.device("cpu"))
    size = (GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE)
    return lightness_to_input(torch.nn.functional.interpolate(full, size=size, mode="bilinear", antialias=True))


class PeakMemory:
    """Peak memory above the starting level inside the `with` block: resident memory sampled every 2 ms on Linux
    CPUs, allocated memory on CUDA; None where it cannot be measured."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes, self._stop = device, None, threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif _resident_bytes() is not None:
            _return_free_memory()
            self._start = self._peak = _resident_bytes()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._peak = max(self._peak, _resident_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif hasattr(self, "_sampler"):
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = self._peak - self._start


def _resident_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096
    except OSError:
        return None


def _return_free_memory() -> None:
    """Hands freed heap memory back to the OS (glibc), so that each measurement starts from the same level."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


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


def time_end_to_end(colorizer: Colorizer, path: Path, max_side: int | None, repeats: int, file_format: str, **options):
    """Median seconds from the encoded input file to the encoded output, and the peak memory (bytes or None);
    `options` are the colorizer's (hints, refine)."""

    def end_to_end() -> None:
        result = colorizer(path, max_side=max_side, **options)
        result.image.save(io.BytesIO(), format=file_format, **({"quality": 95} if file_format == "JPEG" else {}))

    end_to_end()  # warm-up: oneDNN picks and caches its kernels for each new shape (and compile compiles)
    seconds = []
    with PeakMemory(colorizer.device) as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            end_to_end()
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), memory.peak_bytes


def accuracy_inputs(photos: list[Path], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The photos as float gray images at the default network size, and the same with up to half a gray level of
    noise (what 8-bit storage of the input already adds): the ab error that this noise causes is the floor by
    which a speed-up's error is judged."""
    rng = np.random.default_rng(seed)
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


@dataclass
class Row:
    size: tuple[int, int]
    max_side: int | None
    seconds: dict[str, float] = field(default_factory=dict)  # per configuration
    peak_bytes: dict[str, int | None] = field(default_factory=dict)


def _cell_ms(seconds: float, baseline: float) -> str:
    return f"{seconds * 1000:.0f} ({baseline / seconds:.2f}x)"


def _cell_mb(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:.0f}"


def markdown_tables(rows: list[Row], names: list[str], errors: dict[str, tuple[float, float]], setup: str) -> str:
    """Latency (median ms, and speed-up over the first configuration), peak memory and ab error tables."""
    header = "| input | max_side | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names) + "\n"
    latency, memory = header, header
    for row in rows:
        first = f"| {row.size[0]}x{row.size[1]} | {row.max_side or 'native'} | "
        latency += first + " | ".join(_cell_ms(row.seconds[n], row.seconds[names[0]]) for n in names) + " |\n"
        memory += first + " | ".join(_cell_mb(row.peak_bytes[n]) for n in names) + " |\n"
    accuracy = "| configuration | mean abs ab error | max abs ab error |\n|---|---|---|\n"
    accuracy += "".join(f"| {n} | {errors[n][0]:.3f} | {errors[n][1]:.3f} |\n" for n in errors)
    return (
        f"Median end-to-end latency in ms (speed-up over {names[0]}); {setup}\n\n{latency}\n"
        f"Peak memory above idle (MB):\n\n{memory}\n"
        f"ab error against {names[0]} (Lab units) over {len(ACCURACY_PHOTOS)} photos at max_side {DEFAULT_MAX_SIDE}:"
        f"\n\n{accuracy}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory or Hub id (default: random weights, see --width)")
    parser.add_argument("--width", type=float, default=1.0, help="width of the random model (1.0 = the paper's)")
    parser.add_argument(
        "--configs",
        default=",".join(name for name in CONFIGURATIONS if "compile" not in name),
        help=f"comma-separated, the first is the baseline; known: {', '.join(CONFIGURATIONS)}",
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated WIDTHxHEIGHT input sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median is reported)")
    parser.add_argument("--format", choices=["JPEG", "PNG"], type=str.upper, default="JPEG", help="output encoding")
    parser.add_argument("--photo", type=Path, default=BENCH_PHOTO, help="the photo resized to each input size")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core)")
    parser.add_argument("--hints", type=int, default=0, metavar="N", help="also time each configuration with N hints")
    parser.add_argument("--refine", action="store_true", help="also time each configuration with refinement")


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.configs.split(",")]
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        print(f"unknown configurations {unknown}; known: {list(CONFIGURATIONS)}", file=sys.stderr)
        return 2
    sizes = [parse_size(text) for text in args.sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    hint_channels = 3 if args.hints else 0
    model = load_model(args.model) if args.model else random_model(args.width, ACCURACY_PHOTOS, 0, hint_channels)
    if args.hints and not model.hint_channels:
        print("--hints: this model takes no colour hints", file=sys.stderr)
        return 2
    rows = [Row(size, max_side) for size in sizes for max_side in (DEFAULT_MAX_SIDE, None)]
    grays, noisy = accuracy_inputs(ACCURACY_PHOTOS)
    baseline = configured(model, device, names[0])
    baseline_ab = baseline.predict_ab(grays)
    errors, noise_floor = {}, ab_errors(baseline.predict_ab(noisy), baseline_ab)
    with tempfile.TemporaryDirectory() as directory:
        inputs = write_inputs(args.photo, sizes, Path(directory))
        columns = []
        for name in names:
            colorizer = configured(model, device, name)
            errors[name] = ab_errors(colorizer.predict_ab(grays), baseline_ab)
            for column, options in variants(name, args.hints, args.refine):
                columns.append(column)
                for row in rows:
                    path = inputs[row.size]
                    timing = time_end_to_end(colorizer, path, row.max_side, args.repeats, args.format, **options(path))
                    row.seconds[column], row.peak_bytes[column] = timing
                    print(f"{column}, {row.size}, max_side {row.max_side}: {timing[0] * 1000:.0f} ms", file=sys.stderr)
    errors[NOISE_FLOOR] = noise_floor
    setup = (
        f"JPEG file in, {args.format} out; {args.repeats} runs; {device}, {torch.get_num_threads()} threads; "
        f"model width {model.width}{'' if args.model else ' (random weights)'}."
    )
    print(markdown_tables(rows, columns, errors, setup))
    return 0


def configured(model: LetThereBeColor, device: torch.device, name: str) -> Colorizer:
    if CONFIGURATIONS[name] is None:
        return Colorizer(model, device, engine="onnxruntime")
    return Colorizer(model, device, CONFIGURATIONS[name])


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
