"""python -m train.bench: training throughput (images/s) and model FLOP utilisation of the data pipeline alone,
the model alone on synthetic batches, and the two together, with the trainer's own code paths.

    python -m train.bench --dataset ../shared/data/letcolor-scenes --width 1.0 --batch-size 128 [--compile]
"""

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from train.__main__ import PLACES365, default_workers, parse_args
from train.data import train_loader
from train.distributed import Distributed
from train.loop import Trainer

DATA_ONLY = "data pipeline alone"
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' datasheets, matched against torch.cuda.get_device_name.
BF16_PEAK = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12,
             "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12}  # fmt: skip


def device_peak(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def training_flops_per_image(model: torch.nn.Module, device: torch.device) -> float:
    """Matmul and convolution FLOPs of a training forward and backward pass (the eager model), per image."""
    l_input = torch.rand(2, 1, 224, 224, device=device)
    with FlopCounterMode(display=False) as counter:
        ab, logits = model(l_input)
        (ab.float().sum() + logits.float().sum()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(l_input)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(run_step: Callable[[], int], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        run_step()
    synchronize(device)
    started, images = time.perf_counter(), 0
    for _ in range(steps):
        images += run_step()
    synchronize(device)
    return images / (time.perf_counter() - started)


def data_only(batches: Iterator) -> Callable[[], int]:
    return lambda: len(next(batches).images)


def model_only(trainer: Trainer, batch_size: int) -> Callable[[], int]:
    images = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8)
    images = images.pin_memory() if trainer.device.type == "cuda" else images
    labels = torch.randint(0, trainer.model.num_classes, (batch_size,))

    def step() -> int:
        trainer.train_step(images, labels)
        return batch_size

    return step


def end_to_end(trainer: Trainer, batches: Iterator) -> Callable[[], int]:
    def step() -> int:
        batch = next(batches)
        trainer.train_step(batch.images, batch.labels)
        return len(batch.images)

    return step


def print_table(rows: list[tuple[str, float]], flops_per_image: float, peak: float | None) -> None:
    """images/s per measurement; for those that run the model, achieved TFLOP/s and MFU (achieved / peak)."""
    print(f"{'measurement':<28} {'images/s':>10} {'TFLOP/s':>9} {'MFU':>7}")
    for name, rate in rows:
        achieved = rate * flops_per_image if name != DATA_ONLY else None
        tflops = f"{achieved / 1e12:9.3f}" if achieved else f"{'-':>9}"
        utilisation = f"{100 * achieved / peak:6.1f}%" if achieved and peak else f"{'n/a' if achieved else '-':>7}"
        print(f"{name:<28} {rate:>10.1f} {tflops} {utilisation}")


def parse_bench_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__)
    parser.add_argument("--dataset", action="append", help=f"repeat for a mix (default {PLACES365})")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU where it is not known")
    return parser.parse_args()


def build_trainer(bench: argparse.Namespace, output: str) -> Trainer:
    options = [f"--dataset={dataset}" for dataset in bench.dataset or [PLACES365]]
    options += ["--output", output, "--width", str(bench.width), "--global-dropout", "0.1"]
    options += ["--batch-size", str(bench.batch_size), "--workers", str(bench.workers), "--precision", bench.precision]
    return Trainer(parse_args(options + (["--compile"] if bench.compile else [])), Distributed())


def measure(trainer: Trainer, bench: argparse.Namespace) -> list[tuple[str, float]]:
    batches = iter(train_loader(trainer.train_spec, bench.batch_size, bench.workers, trainer.device.type == "cuda"))
    steps = {
        DATA_ONLY: data_only(batches),
        "model alone (synthetic)": model_only(trainer, bench.batch_size),
        "end to end": end_to_end(trainer, batches),
    }
    return [(name, images_per_second(step, bench.steps, bench.warmup, trainer.device)) for name, step in steps.items()]


def main() -> None:
    bench = parse_bench_args()
    with tempfile.TemporaryDirectory() as output:
        trainer = build_trainer(bench, output)
        flops = training_flops_per_image(trainer.model, trainer.device)
        rows = measure(trainer, bench)
    peak = device_peak(trainer.device, bench.peak_tflops)
    device = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "CPU"
    print(f"device {device}, {torch.get_num_threads()} threads, precision {trainer.precision}, width {bench.width}, "
          f"batch {bench.batch_size}, {bench.workers} workers, compile {bench.compile}")  # fmt: skip
    peak_text = f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown (give --peak-tflops for MFU)"
    print(f"training FLOPs per image: {flops / 1e9:.2f} GFLOP (forward + backward); device peak: {peak_text}")
    print_table(rows, flops, peak)


if __name__ == "__main__":
    main()
