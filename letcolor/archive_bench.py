"""`python -m letcolor.archive_bench`: `colorize-dataset` on a local Ray against the plain `colorize` command, on
the same folders of photos, at 1 and 2 CPUs.

The folders hold gray copies of the example photos, cycled, in two sizes: as they are (0.2-0.7 MP; N = 100) and
enlarged to about 1 MP (N = 50); each size has a folder of N photos and one of 4N. Each run starts from an empty
destination. The plain command runs in this process with torch on as many threads as CPUs; Ray is started first
(not timed), then `colorize_dataset` runs with as many model actors as CPUs (one thread each). A run's time
includes its start (loading the model and, for Ray, starting the actors: a worker process each). The throughput
once started is the marginal rate, 3N / (time for 4N - time for N), in which the start cancels out. Prints one
table, medians of `--repeats`, with the ratio of each throughput once started to the plain command's.
"""

import argparse
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from letcolor import cli
from letcolor.archive import Job, colorize_dataset
from letcolor.images import EXAMPLES_DIR

SIZES = {"as is": (None, 100), "1 MP": (1_000_000, 50)}  # (pixels, N)


def example_photos() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix in {".jpg", ".png"} and "_gray" not in p.stem)


def make_folder(folder: Path, count: int, pixels: int | None) -> None:
    """`count` gray JPEGs cycled from the example photos, in 4 subfolders, enlarged to about `pixels` if given."""
    photos = [Image.open(path).convert("L") for path in example_photos()]
    for index in range(count):
        photo = photos[index % len(photos)]
        if pixels:
            scale = (pixels / (photo.width * photo.height)) ** 0.5
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
        path = folder / f"box{index % 4}" / f"photo{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(path, quality=90)


def run_plain(folder: Path, output: Path, cpus: int, model: str | None) -> None:
    torch.set_num_threads(cpus)
    inputs = [str(p) for p in sorted(folder.rglob("*.jpg"))]
    if cli.main(["colorize", *inputs, "-o", str(output), *(["--model", model] if model else [])]) != 0:
        raise RuntimeError("colorize failed")


def run_ray(folder: Path, output: Path, cpus: int, model: str | None, images: bool) -> None:
    job = Job(str(folder), str(output), images, model, concurrency=cpus, num_cpus=cpus)
    summary = colorize_dataset(job, progress=False)
    if summary.errors or summary.rows != summary.todo:
        raise RuntimeError(f"colorize-dataset: {summary.line()}")


def timed(command, output: Path) -> float:
    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    command(output)
    return time.perf_counter() - start


def median_rates(folders: dict[int, Path], scratch: Path, cpus: int, model: str | None, repeats: int) -> dict:
    """For each command, with `cpus` CPUs: the median photos/s of the longer run whole, and once started (the
    marginal rate between the two runs)."""
    (short, short_folder), (long, long_folder) = sorted(folders.items())
    runs = {
        "colorize (plain CLI)": lambda folder, out: run_plain(folder, out, cpus, model),
        "colorize-dataset --images": lambda folder, out: run_ray(folder, out, cpus, model, True),
        "colorize-dataset (parquet)": lambda folder, out: run_ray(folder, out, cpus, model, False),
    }
    result = {}
    for name, command in runs.items():
        pairs = [(partial(command, short_folder), partial(command, long_folder)) for _ in range(repeats)]
        times = [(timed(first, scratch / "out"), timed(second, scratch / "out")) for first, second in pairs]
        short_seconds, long_seconds = (statistics.median(column) for column in zip(*times, strict=True))
        result[name] = long / long_seconds, (long - short) / (long_seconds - short_seconds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median; default 3)")
    parser.add_argument("--cpus", default="1,2", help="CPU counts to compare (default 1,2)")
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    args = parser.parse_args()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, (pixels, photos) in SIZES.items():
            folders = {n: Path(scratch) / f"{label.replace(' ', '')}-{n}" for n in (photos, 4 * photos)}
            for count, folder in folders.items():
                make_folder(folder, count, pixels)
            for cpus in (int(c) for c in args.cpus.split(",")):
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
                rates = median_rates(folders, Path(scratch), cpus, args.model, args.repeats)
                ray.shutdown()
                plain = rates["colorize (plain CLI)"][1]
                rows += [(f"{4 * photos} {label}", cpus, name, whole, started, started / plain)
                         for name, (whole, started) in rates.items()]  # fmt: skip
    print(f"Medians of {args.repeats} runs")
    print("| photos | CPUs | command | photos/s, whole run | photos/s once started | vs plain CLI |")
    print("|---|---|---|---|---|---|")
    for label, cpus, name, whole, started, ratio in rows:
        print(f"| {label} | {cpus} | {name} | {whole:.1f} | {started:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
