"""`python -m letcolor.video_bench`: the video modes compared, on clips made by panning over the example photos.

Flicker (`letcolor.metrics.pan_flicker`: mean ab change of the same scene region between consecutive frames, which
needs no ground truth because a pan over a still photo keeps every scene point's colour) and colourfulness (Hasler
and Suesstrunk, mean over frames), read back from the encoded output; then throughput in frames/s, end to end
(decode, colorize, encode), at 480p and 720p; and peak memory for clips of different lengths.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from letcolor.images import EXAMPLES_DIR, load_image
from letcolor.memory import PeakMemory
from letcolor.metrics import colorfulness, pan_flicker
from letcolor.pipeline import Colorizer
from letcolor.video import colorize_video, ffmpeg_path, read_frames

PAN_PHOTOS = ["china.jpg", "coffee.png", "rocket.jpg", "historical_b.jpg", "historical_c.jpg", "historical_e.jpg"]
PAN_SIZE = (320, 240)
PAN_FRAMES = 24
PAN_STEP = (3, 1)  # px per frame (x, y): not a multiple of the network's 8 px grid, as in a real pan
FPS = 10
CLIP_CRF = 12  # x264's quality of the written clips: near lossless
MODES = {
    "frame": {"mode": "frame"},
    "shot, vector only": {"mode": "shot", "flow_blend": 0.0},
    "shot + flow (default)": {"mode": "shot"},
}
THROUGHPUT_SIZES = {"480p": (854, 480), "720p": (1280, 720)}
MEMORY_LENGTHS = (25, 100, 400)


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: int = FPS) -> None:
    """(H, W, 3) uint8 frames as an H.264 yuv420p file."""
    with av.open(ffmpeg_path(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(CLIP_CRF)})
        stream.pix_fmt = "yuv420p"
        for index, array in enumerate(frames):
            if index == 0:
                stream.height, stream.width = array.shape[:2]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode(None))


def pan_offsets(frames: int, step: tuple[int, int] = PAN_STEP) -> torch.Tensor:
    """(frames, 2) integer (x, y) of each frame's top-left corner in the photo."""
    return torch.arange(frames)[:, None] * torch.tensor(step)


def write_pan(photo: Path, path: Path, size=PAN_SIZE, frames=PAN_FRAMES, step=PAN_STEP) -> torch.Tensor:
    """A clip panning over the photo (enlarged if it is too small for the pan); returns the frames' offsets."""
    offsets = pan_offsets(frames, step)
    needed_width, needed_height = size[0] + int(offsets[-1, 0]), size[1] + int(offsets[-1, 1])
    image = load_image(photo).convert("RGB")
    scale = max(1.0, needed_width / image.width, needed_height / image.height)
    if scale > 1:
        image = image.resize((round(image.width * scale + 0.5), round(image.height * scale + 0.5)), Image.LANCZOS)
    array = np.asarray(image)
    width, height = size
    write_clip(path, (array[y : y + height, x : x + width] for x, y in offsets.tolist()))
    return offsets


def frames_tensor(path: Path) -> torch.Tensor:
    """The video's frames as (T, 3, H, W) floats in [0, 1]."""
    return torch.stack([torch.from_numpy(frame).permute(2, 0, 1) for frame in read_frames(path)]).float() / 255


def measure_pan(colorizer: Colorizer, clip: Path, offsets: torch.Tensor, output: Path, **mode) -> tuple[float, float]:
    """(mean flicker, mean colourfulness) of the clip colorized in a mode."""
    colorize_video(colorizer, clip, output, **mode)
    rgb = frames_tensor(output)
    return pan_flicker(rgb, offsets).mean().item(), colorfulness(rgb).mean().item()


def throughput(colorizer: Colorizer, clip: Path, output: Path, frames: int, repeats: int, **mode):
    """Median frames per wall-clock second and per CPU second (all threads of this process), end to end."""
    colorize_video(colorizer, clip, output, **mode)  # warm-up: oneDNN picks its kernels for the new size
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        colorize_video(colorizer, clip, output, **mode)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return frames / statistics.median(wall), frames / statistics.median(cpu)


def flicker_table(colorizer: Colorizer, directory: Path, photos: list[str]) -> str:
    results = {name: [] for name in MODES}
    for photo in photos:
        clip = directory / f"pan-{Path(photo).stem}.mp4"
        offsets = write_pan(EXAMPLES_DIR / photo, clip)
        for name, mode in MODES.items():
            results[name].append(measure_pan(colorizer, clip, offsets, directory / "out.mp4", **mode))
    baseline_flicker = statistics.mean(f for f, _ in results["frame"])
    baseline_colour = statistics.mean(c for _, c in results["frame"])
    table = "| mode | flicker (ab) | vs frame | colourfulness | vs frame |\n|---|---|---|---|---|\n"
    for name, rows in results.items():
        flicker, colour = statistics.mean(f for f, _ in rows), statistics.mean(c for _, c in rows)
        table += f"| {name} | {flicker:.3f} | {flicker / baseline_flicker:.2f}x | {colour:.1f} | "
        table += f"{colour / baseline_colour:.2f}x |\n"
    return table


def throughput_table(colorizer: Colorizer, directory: Path, frames: int, repeats: int) -> str:
    table = "| size | " + " | ".join(MODES) + " |\n|---|" + "---|" * len(MODES) + "\n"
    for label, size in THROUGHPUT_SIZES.items():
        clip = directory / f"clip-{label}.mp4"
        write_pan(EXAMPLES_DIR / PAN_PHOTOS[0], clip, size=size, frames=frames)
        speeds = [throughput(colorizer, clip, directory / "out.mp4", frames, repeats, **m) for m in MODES.values()]
        cells = (f"{wall:.1f} ({cpu:.1f})" for wall, cpu in speeds)
        table += f"| {label} ({size[0]}x{size[1]}) | " + " | ".join(cells) + " |\n"
    return table


def memory_table(colorizer: Colorizer, directory: Path) -> str:
    """Peak memory above idle of the default mode on pans of different lengths: it must not grow with the length."""
    table = "| frames (320x240) | peak memory above idle (MB) |\n|---|---|\n"
    for index, frames in enumerate(MEMORY_LENGTHS):
        clip = directory / f"long-{frames}.mp4"
        write_pan(EXAMPLES_DIR / PAN_PHOTOS[3], clip, frames=frames, step=(1, 1))
        if index == 0:
            colorize_video(colorizer, clip, directory / "out.mp4")  # warm-up: oneDNN's kernels and caches for this size
        with PeakMemory(colorizer.device) as memory:
            colorize_video(colorizer, clip, directory / "out.mp4")
        peak = "n/a" if memory.peak_bytes is None else f"{memory.peak_bytes / 2**20:.0f}"
        table += f"| {frames} | {peak} |\n"
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m letcolor.video_bench", description=__doc__)
    parser.add_argument("--model", help="model directory or Hub id (default: $LETCOLOR_MODEL, then the bundled one)")
    parser.add_argument("--photos", default=",".join(PAN_PHOTOS), help="comma-separated example photos to pan over")
    parser.add_argument("--frames", type=int, default=24, help="frames per throughput clip (default 24)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per throughput measurement (median)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--skip-throughput", action="store_true", help="no throughput table")
    parser.add_argument("--skip-flicker", action="store_true", help="no flicker table")
    parser.add_argument("--skip-memory", action="store_true", help="no memory table")
    args = parser.parse_args(argv)
    colorizer = Colorizer.from_pretrained(args.model, args.device)
    setup = f"{colorizer.device}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as directory:
        photos = args.photos.split(",")
        if not args.skip_flicker:
            print(f"Pans of {PAN_FRAMES} frames at {PAN_SIZE[0]}x{PAN_SIZE[1]}, {PAN_STEP} px/frame, over "
                  f"{len(photos)} photos; means over frames and photos:\n")  # fmt: skip
            print(flicker_table(colorizer, Path(directory), photos))
        if not args.skip_memory:
            print(f"Memory, default mode; {setup}:\n")
            print(memory_table(colorizer, Path(directory)))
        if not args.skip_throughput:
            print(f"Throughput, end to end (decode, colorize, encode): frames per second (per CPU second of all this "
                  f"process's threads); {args.frames} frames, median of {args.repeats}; {setup}:\n")  # fmt: skip
            print(throughput_table(colorizer, Path(directory), args.frames, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
