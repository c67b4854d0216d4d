"""Where a run reports: metrics.jsonl in the output directory, and TensorBoard when it is installed."""

import json
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, directory: Path):
        self.file = open(directory / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - open for the run
        self.tensorboard = tensorboard_writer(directory / "tensorboard")

    def drop_after(self, step: int) -> None:
        """Forget the rows past `step`, which a resumed run redoes (and a torn last line)."""
        self.file.close()
        path = Path(self.file.name)
        lines = path.read_text().splitlines()
        kept = [line for line in lines if (logged := row_step(line)) is not None and logged <= step]
        path.write_text("".join(f"{line}\n" for line in kept))
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the run

    def write(self, kind: str, step: int, values: dict) -> None:
        self.file.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **values}) + "\n")
        if self.tensorboard:
            self.add_scalars(kind, step, values)

    def add_scalars(self, prefix: str, step: int, values: dict) -> None:
        for name, value in values.items():
            if isinstance(value, dict):
                self.add_scalars(f"{prefix}/{name}", step, value)
            elif isinstance(value, int | float):
                self.tensorboard.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard:
            self.tensorboard.close()


def row_step(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


def tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))
