"""Peak memory of a block of code, for the benchmarks."""

import ctypes
import gc
import threading
from pathlib import Path

import torch

SAMPLE_SECONDS = 0.002


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
