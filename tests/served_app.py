"""app.py served on 127.0.0.1 inside a test: its demo in this process, or `python app.py` as a user runs it."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import ROOT

import app


@contextmanager
def served_app(model_dir: Path) -> Iterator[str]:
    """Yields the app's URL, with `model_dir` as $LETCOLOR_MODEL; the model is loaded once, as `python app.py` does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LETCOLOR_MODEL", str(model_dir))
        demo = app.build_demo(*app.load_colorizer())
    app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"python app.py exited with {server.returncode}: {server.stdout.read()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail(f"python app.py did not serve {url} within {timeout} s")


@contextmanager
def app_process(**env: str) -> Iterator[str]:
    """Runs `python app.py` from the repository root with `env` added to the environment; yields its URL."""
    port = free_port()
    env = os.environ | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)} | env
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_up(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
