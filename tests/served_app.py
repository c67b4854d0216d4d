"""app.py's demo served on 127.0.0.1 inside a test, with a given model directory as $LETCOLOR_MODEL."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import app


@contextmanager
def served_app(model_dir: Path) -> Iterator[str]:
    """Yields the app's URL; the model is loaded once, as `python app.py` does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LETCOLOR_MODEL", str(model_dir))
        demo = app.build_demo(*app.load_colorizer())
    app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
