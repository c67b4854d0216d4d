"""app.py served on 127.0.0.1 inside a test: its demo in this process, or `python app.py` as a user runs it."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import app
from letcolor.bench_app import AppStartError, app_server


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


@contextmanager
def app_process(**env: str) -> Iterator[str]:
    """Runs `python app.py` from the repository root with `env` added to the environment; yields its URL."""
    with ExitStack() as stack:
        try:
            url, _ = stack.enter_context(app_server(env, timeout=120))
        except AppStartError as error:
            pytest.fail(str(error))
        yield url
