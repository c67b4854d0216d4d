"""Peak memory of the web app: `python app.py` serving the largest photo it accepts, measured from outside.

    python -m letcolor.bench_app            # from the repository root (it runs app.py); prints a Markdown table

Each scenario runs in a fresh `python app.py` (the bundled model unless --model or $LETCOLOR_MODEL says otherwise):
one small photo first (start-up and first-call costs), then the scenario's requests through gradio_client. The
table gives the process's resident memory after that warm-up and its peak (VmHWM, Linux) over the whole run. The
photo is a real one fitted to the largest size under the app's pixel limit (3:2, JPEG quality 90); the video pans
over it at the largest frame size the app takes.
"""

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

try:
    import httpx
    from gradio_client import Client, handle_file
except ImportError as error:  # an installed letcolor without the app: this tool serves a checkout's app.py
    raise SystemExit(
        f"python -m letcolor.bench_app runs in a checkout, with pip install -r requirements.txt ({error})"
    ) from None

from letcolor.bench import BENCH_PHOTO, write_inputs
from letcolor.images import EXAMPLES_DIR
from letcolor.video_bench import write_pan
from letcolor.webapp import MAX_PIXELS_ENV_VAR, MAX_SIDE_RANGE, MAX_VIDEO_SIDES, max_pixels_from_environment

APP = Path(__file__).resolve().parent.parent / "app.py"
WARM_UP_PHOTO = EXAMPLES_DIR / "chelsea_gray.png"
START_TIMEOUT_SECONDS = 300
CLIP_SIZE, CLIP_FRAMES = MAX_VIDEO_SIDES, 150  # the largest frames the app takes, 15 s at 10 frames/s


def largest_size(max_pixels: int) -> tuple[int, int]:
    """The largest width x height of aspect ratio 3:2 within `max_pixels`."""
    height = math.isqrt(int(max_pixels / 1.5))
    width = int(height * 1.5)
    while width * height > max_pixels:
        width -= 1
    return width, height


def status_kib(pid: int, field: str) -> int:
    """A memory figure (kB) from /proc/<pid>/status: VmRSS now, VmHWM the peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status (Linux only)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppStartError(RuntimeError):
    """`python app.py` exited or did not serve in time; the message ends with its output."""


@contextmanager
def app_server(env: dict[str, str], timeout: float = START_TIMEOUT_SECONDS) -> Iterator[tuple[str, int]]:
    """`python app.py` from the repository root with `env` added; yields its URL and process id."""
    if not APP.is_file():
        raise SystemExit(f"{APP} not found: run this from a checkout of the repository")
    port = free_port()
    env = os.environ | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)} | env
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile("w+") as output:
        server = subprocess.Popen(
            [sys.executable, str(APP)], cwd=APP.parent, env=env, stdout=output, stderr=subprocess.STDOUT, text=True
        )
        try:
            _wait_until_serving(url, server, output, timeout)
            yield url, server.pid
        finally:
            server.terminate()
            server.wait(timeout=60)


def _wait_until_serving(url: str, server: subprocess.Popen, output, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while server.poll() is None:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
    output.seek(0)
    state = f"exited with {server.returncode}" if server.poll() is not None else f"did not serve {url} in {timeout} s"
    raise AppStartError(f"python app.py {state}:\n{output.read()[-5000:]}")


def colorize(client: Client, photo: Path, max_side: int) -> None:
    client.predict(handle_file(photo), max_side=max_side, api_name="/colorize")


def colorize_batch(client: Client, photos: list[Path], max_side: int) -> None:
    client.predict([handle_file(p) for p in photos], max_side=max_side, api_name="/colorize_batch")


def colorize_video(client: Client, clip: Path, max_side: int) -> None:
    client.predict(handle_file(clip), max_side=max_side, api_name="/colorize_video")


def scenarios(photo: Path, clip: Path, low: int, high: int) -> dict[str, Callable[[Client], None]]:
    """name -> the requests it makes (a client in, nothing out)."""

    # as many requests as the app runs at a time: 2 photos and a batch, and a video in its own slot
    def at_once(client: Client, video: bool = False) -> None:
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(colorize, client, photo, high) for _ in range(2)]
            jobs.append(pool.submit(colorize_batch, client, [photo] * 3, high))
            if video:
                jobs.append(pool.submit(colorize_video, client, clip, high))
            for job in jobs:
                job.result()

    return {
        f"1 photo, max_side {low}": lambda client: colorize(client, photo, low),
        f"1 photo, max_side {high}": lambda client: colorize(client, photo, high),
        f"batch of 3, max_side {high}": lambda client: colorize_batch(client, [photo] * 3, high),
        f"2 photos + batch of 3 at once, max_side {high}": at_once,
        f"a {CLIP_SIZE[0]}x{CLIP_SIZE[1]} video of {CLIP_FRAMES} frames, max_side {high}": (
            lambda client: colorize_video(client, clip, high)
        ),
        f"2 photos + batch of 3 + that video at once, max_side {high}": lambda client: at_once(client, video=True),
    }


def measure(env: dict[str, str], requests) -> tuple[float, float, float]:
    """(resident MB after the warm-up, peak MB, seconds for the requests) in a fresh app process."""
    with app_server(env) as (url, pid):
        client = Client(url, verbose=False)
        colorize(client, WARM_UP_PHOTO, MAX_SIDE_RANGE[0])
        warm = status_kib(pid, "VmRSS") / 1024
        start = time.perf_counter()
        requests(client)
        seconds = time.perf_counter() - start
        return warm, status_kib(pid, "VmHWM") / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m letcolor.bench_app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory or Hub id (default: $LETCOLOR_MODEL, else the bundled one)")
    parser.add_argument("--photo", type=Path, default=BENCH_PHOTO, help="the photo fitted to the largest size")
    parser.add_argument("--only", help="run only the scenarios whose name contains this text")
    args = parser.parse_args(argv)
    if not APP.is_file():
        parser.error(f"runs in a checkout of letcolor: it serves its app.py, and {APP} is not there")
    max_pixels = max_pixels_from_environment()
    env = {MAX_PIXELS_ENV_VAR: str(max_pixels / 1e6)} | ({"LETCOLOR_MODEL": args.model} if args.model else {})
    size = largest_size(max_pixels)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        photo = write_inputs(args.photo, [size], Path(directory))[size]
        clip = Path(directory) / "pan.mp4"
        for name, requests in scenarios(photo, clip, *MAX_SIDE_RANGE).items():
            if args.only and args.only not in name:
                continue
            if "video" in name and not clip.exists():
                write_pan(args.photo, clip, size=CLIP_SIZE, frames=CLIP_FRAMES)
            warm, peak, seconds = measure(env, requests)
            print(f"{name}: peak {peak:.0f} MB", file=sys.stderr)
            rows.append(f"| {name} | {warm:.0f} | {peak:.0f} | {peak - warm:.0f} | {seconds:.1f} |")
        file_mb = photo.stat().st_size / 2**20
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    print(
        f"Peak resident memory of `python app.py`; photo {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP, "
        f"JPEG {file_mb:.1f} MB; limit {max_pixels / 1e6:g} MP); threads: {threads}.\n\n"
        "| scenario | after warm-up (MB) | peak (MB) | peak - warm-up (MB) | requests (s) |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
