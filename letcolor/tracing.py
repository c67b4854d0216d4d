"""Module calls and traces kept apart across threads. Tracing a model (FX's, for the int8 engine; torch.onnx's
export) patches `torch.nn.Module.__call__` and global state for the whole process: a Colorizer colorizing in another
thread meanwhile failed ("module is not installed as a submodule"), as did two builds at once. Engines call their
modules inside `calls()`, which many threads hold at once; a build traces inside `tracing()`, alone."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = threading.Condition()
_calls = 0  # threads inside calls() (each counted once, however deep)
_tracer: int | None = None  # the thread inside tracing()
_tracers_waiting = 0
_depth = threading.local()  # this thread's calls() nesting


@contextmanager
def calls() -> Iterator[None]:
    """Held while an engine calls its modules: waits while a trace runs or waits (a tracing thread passes)."""
    global _calls
    depth = getattr(_depth, "value", 0)
    counted = depth == 0 and _tracer != threading.get_ident()
    if counted:
        with _state:
            _state.wait_for(lambda: _tracer is None and not _tracers_waiting)
            _calls += 1
    _depth.value = depth + 1
    try:
        yield
    finally:
        _depth.value = depth
        if counted:
            with _state:
                _calls -= 1
                _state.notify_all()


@contextmanager
def tracing() -> Iterator[None]:
    """Held while a model is traced: waits until no other thread calls modules or traces. Not re-entrant."""
    global _tracer, _tracers_waiting
    with _state:
        _tracers_waiting += 1
        try:
            _state.wait_for(lambda: _tracer is None and _calls == 0)
        finally:  # (interrupted while waiting: calls must not wait for it for ever)
            _tracers_waiting -= 1
        _tracer = threading.get_ident()
    try:
        yield
    finally:
        with _state:
            _tracer = None
            _state.notify_all()
