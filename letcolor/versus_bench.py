"""`python -m letcolor.versus_bench [--commit 8679dfb]`: this checkout against an earlier commit, end to end, in
separate processes taking turns.

Each turn runs, for each checkout in turn, a fresh Python process that loads the bundled model and times, with
2 torch threads: a 1 MP JPEG (1224x816, from an example photo) in colour and in gray, decoded, colorized and encoded
(JPEG 95), median of 15 after 3 warm-ups; and a 48-frame 480p clip panning over an example photo, colorized in the
default mode (frames/s, median of 3). The earlier commit is checked out with `git worktree` in a temporary folder
(so this needs a git checkout). Prints one table: each checkout's range over the turns and the ratio of medians.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from letcolor.bench import write_inputs
from letcolor.images import EXAMPLES_DIR
from letcolor.video_bench import PAN_PHOTOS, write_pan

ROOT = Path(__file__).resolve().parent.parent
PHOTO_SIZE = (1224, 816)
CLIP_SIZE, CLIP_FRAMES = (854, 480), 48

# Uses only what both checkouts have: Colorizer.from_pretrained, calling it, and colorize_video.
TIMER = """
import io, statistics, sys, time
import letcolor  # before torch, as the CLI and the app import it (letcolor.threads)
import torch
torch.set_num_threads(2)
from letcolor.pipeline import Colorizer
from letcolor.video import colorize_video
kind, path, scratch = sys.argv[1:]
colorizer = Colorizer.from_pretrained(None)
def photo():
    colorizer(path).image.save(io.BytesIO(), format="JPEG", quality=95)
def video():
    colorize_video(colorizer, path, scratch)
once, runs = (photo, 15) if kind == "photo" else (video, 3)
for _ in range(3 if kind == "photo" else 1):
    once()
times = []
for _ in range(runs):
    start = time.perf_counter()
    once()
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def inputs(folder: Path) -> dict[str, tuple[str, Path]]:
    """The timed inputs: (kind, path) by label."""
    colour = write_inputs(EXAMPLES_DIR / "historical_c.jpg", [PHOTO_SIZE], folder)[PHOTO_SIZE]
    gray = folder / "gray.jpg"
    Image.open(colour).convert("L").save(gray, quality=95)
    clip = folder / "clip-480p.mp4"
    write_pan(EXAMPLES_DIR / PAN_PHOTOS[0], clip, size=CLIP_SIZE, frames=CLIP_FRAMES)
    return {
        "1 MP colour JPEG (ms)": ("photo", colour),
        "1 MP gray JPEG (ms)": ("photo", gray),
        "480p video, 48 frames (frames/s)": ("video", clip),
    }


def measure(checkout: Path, kind: str, path: Path, scratch: Path) -> float:
    """ms per photo, or frames/s, in a fresh process running `checkout`'s code."""
    environment = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", TIMER, kind, str(path), str(scratch / "out.mp4")], cwd=checkout,
                            env=environment, capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"timing {path.name} with {checkout} failed:\n{result.stderr[-3000:]}")
    seconds = float(result.stdout.split()[-1])
    return seconds * 1000 if kind == "photo" else CLIP_FRAMES / seconds


def turns(earlier: Path, timed: dict[str, tuple[str, Path]], count: int, scratch: Path) -> dict[str, tuple]:
    """For each input, the earlier checkout's and this one's results, `count` turns each, alternating."""
    results = {label: ([], []) for label in timed}
    for _ in range(count):
        for label, (kind, path) in timed.items():
            for checkout, column in zip((earlier, ROOT), results[label], strict=True):
                column.append(measure(checkout, kind, path, scratch))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="8679dfb", help="the earlier commit (default 8679dfb, 2026-11-30)")
    parser.add_argument("--turns", type=int, default=3, help="turns (default 3)")
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    if not (ROOT / ".git").exists():  # (an installed package: git's own message said only "not a git repository")
        raise SystemExit(f"versus_bench compares git checkouts of letcolor, and {ROOT} is not one: run it in a clone")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        earlier = scratch / "earlier"
        git = ["git", "-C", str(ROOT), "worktree"]
        added = subprocess.run([*git, "add", "--detach", str(earlier), args.commit], capture_output=True, text=True)
        if added.returncode != 0:
            raise SystemExit(f"git worktree add {args.commit} failed: {added.stderr.strip()}")
        try:
            results = turns(earlier, inputs(scratch), args.turns, scratch)
        finally:
            subprocess.run([*git, "remove", "--force", str(earlier)])
    print(f"{args.turns} turns, separate processes, 2 threads")
    print(f"| input | {args.commit} | this checkout | this / {args.commit} |")
    print("|---|---|---|---|")
    for label, (before, now) in results.items():
        ratio = statistics.median(now) / statistics.median(before)
        print(f"| {label} | {min(before):.1f}-{max(before):.1f} | {min(now):.1f}-{max(now):.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
