"""The training run: model, optimizer, data stream, steps, validation, checkpoints and the final model."""

import contextlib
import copy
import itertools
import math
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from letcolor.color import HINT_CHANNELS
from letcolor.hints import simulate_hints
from letcolor.inference import cpu_has_fast_bfloat16
from letcolor.model import WEIGHTS_NAME, LetThereBeColor
from letcolor.pipeline import ModelNotFoundError
from train.average import WeightAverage
from train.card import hardware_description, model_card
from train.checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    dataset_key,
    load_checkpoint,
    save_checkpoint,
    saved_state,
)
from train.data import (
    DEFAULT_LABEL_COLUMN,
    DataError,
    Source,
    StreamSpec,
    loading,
    open_stream,
    positions_fit,
    source_class_names,
    train_loader,
    validation_images,
)
from train.distributed import Distributed, any_rank, gather_objects, init_distributed, mean_over_ranks, shutdown
from train.hub import PushError, push_to_hub
from train.losses import ColourRarity, ab_histogram, colorization_losses, lab_batch
from train.monitor import MetricsLog
from train.validate import mean_metrics, save_grid, validate
from train.widen import warm_start_model, widened_weights

T = TypeVar("T")
DEFAULT_LR = {"adadelta": 1.0, "adamw": 1e-3}
MAX_HINT_POINTS = 64  # per training image; the geometric draw is cut here
VALIDATION_HINT_POINTS = 10


class SetupError(ValueError):
    """A run that cannot start as asked (e.g. --init-from a model that does not fit the run)."""


class DivergedError(RuntimeError):
    """The weights stopped being finite numbers: nothing more is saved."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(context: Distributed) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.backends.cudnn.benchmark = True  # fixed 224x224 shapes: let cuDNN pick the fastest kernels once
    return torch.device("cuda", context.local_rank)


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto`: bf16 where the hardware has it (on CPU, AMX/AVX512-BF16 made training ~3x faster; the same test as
    inference's, `cpu_has_fast_bfloat16`: where bfloat16 is only emulated it is slower), else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bfloat16() else "fp32"


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def hint_weights(model: LetThereBeColor) -> list[torch.nn.Parameter]:
    """The weights of the layers that read the hint inputs: their conv, and the propagation's gates and scale."""
    hint_layers = [model.low_level.hint_conv, model.colorization.propagation]
    return [p for layer in hint_layers if layer is not None for p in layer.parameters()]


def freeze_all_but_hint_layers(model: LetThereBeColor) -> None:
    """Only the hint layers learn: the other weights get no gradient, and BatchNorm runs on its saved statistics
    (eval mode before every forward pass), so that the model without hints computes exactly what it computed."""
    trained = hint_weights(model)
    for parameter in model.parameters():
        parameter.requires_grad_(any(parameter is weight for weight in trained))
    model.register_forward_pre_hook(batchnorm_in_eval_mode)


def batchnorm_in_eval_mode(model: torch.nn.Module, inputs) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def build_optimizer(name: str, model: LetThereBeColor, lr: float, hint_conv_scale: float = 1.0):
    """The optimizer, with the layers that read the hint inputs (if any) learning at `hint_conv_scale` x lr: the hint
    conv and the propagation's scale start at zero, and at the base rate an adaptive optimizer takes thousands of
    steps to grow them. Frozen weights are left out."""
    hint_layer_weights = hint_weights(model)
    others = [p for p in model.parameters() if p.requires_grad and not any(p is w for w in hint_layer_weights)]
    groups = [
        {"params": hint_layer_weights, "lr_scale": hint_conv_scale},
        {"params": others, "lr_scale": 1.0},
    ]
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    if name == "adadelta":
        return torch.optim.Adadelta(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)


def scheduled_lr(base_lr: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of the step after `step` steps: constant, or falling linearly to 0 at `total_steps`."""
    if schedule == "constant":
        return base_lr
    return base_lr * max(0.0, 1 - step / total_steps)


def model_for(args, names: list[str]) -> LetThereBeColor:
    num_classes = len(names) or 1  # without labels the classifier is unused but keeps the model's shape
    hint_channels = HINT_CHANNELS if args.hints and args.hint_conv else 0
    return LetThereBeColor(
        num_classes=num_classes,
        class_names=names,
        width=args.width,
        hint_channels=hint_channels,
        hint_propagation=args.hint_propagation,
    )


def hint_counts(batch_size: int, mean_points: float, hint_free: float, generator: torch.Generator) -> torch.Tensor:
    """Points per image: none with probability `hint_free`, else 1 + a geometric draw, `mean_points` on average."""
    uniform = torch.rand(batch_size, generator=generator).clamp(min=1e-12)
    extra = torch.floor(uniform.log() / math.log1p(-1 / mean_points)) if mean_points > 1 else torch.zeros(batch_size)
    hinted = torch.rand(batch_size, generator=generator) >= hint_free
    return (1 + extra).clamp(max=MAX_HINT_POINTS).long() * hinted


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The hint simulation's random numbers for one step: the same on a resumed run as on an uninterrupted one."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


class StopRequest:
    """Within `with`, SIGTERM/SIGINT set a flag that the loop checks between steps, so it can checkpoint and exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_number = 0
        self.previous_handlers = {}

    def __enter__(self) -> "StopRequest":
        self.previous_handlers = {number: signal.signal(number, self.request) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self.previous_handlers.items():
            signal.signal(number, handler)

    def request(self, signal_number, frame) -> None:
        self.signal_number = signal_number


class TrainingWindow:
    """Loss sums since the last log, kept on the device so that steps need no host sync."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, device=device)
        self.steps, self.started = 0, time.perf_counter()

    def add(self, losses: torch.Tensor) -> None:
        self.sums += losses
        self.steps += 1

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def take(self) -> torch.Tensor:
        """The sums, and a fresh window."""
        sums = self.sums.clone()
        self.sums.zero_()
        self.steps, self.started = 0, time.perf_counter()
        return sums


class Trainer:
    def __init__(self, args, context: Distributed):
        self.args, self.context = args, context
        self.device = pick_device(context)
        self.precision = resolve_precision(args.precision, self.device)
        self.autocast = autocast_for(self.device, self.precision)
        self.output = Path(args.output)
        check_output(self.output, args.resume, [*args.dataset, *([args.init_from] if args.init_from else [])])
        sources, names = self.labelled_sources()
        self.train_spec = StreamSpec(
            sources, args.split, args.image_column, args.seed, context.rank, context.world_size, args.min_chroma_std
        )
        seed_everything(args.seed)
        self.model = model_for(args, names)
        self.start(self.resumed_state())
        if args.hint_layers_only:
            freeze_all_but_hint_layers(self.model)
        self.model = self.model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(args.optimizer, self.model, args.lr, args.hint_layer_lr)
        self.average = WeightAverage(self.model, args.ema) if args.ema else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step, self.worker_states, self.skipped = 0, {}, {}
        self.skipped_before: dict[str, int] = {}  # this rank's skipped photos in the parts of the run before --resume
        self.wall_seconds = 0.0
        self.history = [self.history_part([])]  # each command's part of the run
        self.finished = False  # the final validation and checkpoint are done (a resume then has nothing to do)
        self.val_metrics: dict = {}
        self.training_model = self.wrap_model()
        self.rarity = self.colour_rarity() if args.rebalance < 1 else None
        for split, source in itertools.product((args.split, args.val_split), sources):
            open_stream(StreamSpec([source], split, args.image_column), source)  # DataError: no such split or column
        if context.is_main:  # once the data and the model are known to fit: a setup error leaves no empty folder
            self.output.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(self.output) if context.is_main else None

    def labelled_sources(self) -> tuple[list[Source], list[str]]:
        """One source per --dataset, and the model's class names: the first dataset's label names, then each next
        dataset's new ones (a name two datasets share is one class). A dataset without a ClassLabel column trains
        the colours only."""
        sources, names = [], []
        for dataset, weight in zip(self.args.dataset, self.args.dataset_weights, strict=True):
            source = Source(dataset, self.args.label_column, weight)
            dataset_names = source_class_names(source, self.args.split)
            names += [name for name in dict.fromkeys(dataset_names) if name not in names]
            source.class_ids = [names.index(name) for name in dataset_names]
            if source.label_column and not dataset_names:
                self.print(
                    f"warning: {dataset} has no ClassLabel column {source.label_column!r}: its photos train the "
                    "colours only (no classification loss)"
                )
                source.label_column = None
            sources.append(source)
        if self.args.label_column not in (None, "", DEFAULT_LABEL_COLUMN) and not names:  # named, and nowhere
            raise DataError(f"--label-column {self.args.label_column!r}: no dataset has such a ClassLabel column")
        return sources, names

    def resumed_state(self) -> dict | None:
        """The state of the checkpoint that --resume continues; None where there is none."""
        path = self.output / CHECKPOINT_NAME
        return saved_state(path) if self.args.resume and path.is_file() else None

    def start(self, resumed: dict | None) -> None:
        """The model's classes and first weights: --init-from's model; or, where --resume continues a checkpoint that
        holds every weight and the classes, the checkpoint's, and that model is not read (it may be gone)."""
        if resumed and "class_names" in resumed:  # (a checkpoint of an earlier version lacks them)
            self.keep_the_runs_start(resumed["args"].get("init_from"))
            if resumed["class_names"] and not self.model.class_names:  # a colour-only run kept its start's classes
                self.model = model_for(self.args, resumed["class_names"])
        elif self.args.init_from:
            self.start_from(self.args.init_from)
        if self.args.hint_layers_only and not self.args.init_from:
            raise SetupError(
                "--hint-layers-only needs --init-from: the layers that do not read the hints would stay "
                "random (--resume found no checkpoint that names it)"
            )

    def keep_the_runs_start(self, started_from: str | None) -> None:
        """--init-from as the resumed run had it, for the card: a model given now is not read (the weights are the
        checkpoint's), and the card named it as the run's start."""
        given, self.args.init_from = self.args.init_from, started_from
        if given and (not started_from or dataset_key(given) != dataset_key(started_from)):
            self.print(f"--resume: --init-from {given} is not read: the weights are the checkpoint's, whose run "
                       f"started from {started_from or 'scratch'}")  # fmt: skip

    def start_from(self, name_or_path: str) -> None:
        """Warm start from a saved model of this width or narrower whose class names are this run's or their
        beginning (a run that adds a dataset keeps the classifier's rows for the old classes; new rows start fresh).
        A narrower model is widened so that the network starts out computing exactly what it computed; hint layers
        that this run lacks are left out (the saved model's automatic network starts it)."""
        try:
            pretrained, earlier_propagation = warm_start_model(name_or_path)
        except ModelNotFoundError as error:  # its advice is inference's (--model, LETCOLOR_MODEL)
            raise SetupError(f"--init-from: {str(error).splitlines()[0]}") from error
        known = pretrained.class_names
        if known and not self.model.class_names:  # a colour-only run keeps the saved classes (it does not train them)
            self.model = model_for(self.args, known)
        classes_fit = (
            known == self.model.class_names[: len(known)] if known else pretrained.num_classes <= self.model.num_classes
        )
        if pretrained.width > self.model.width or not classes_fit:
            raise SetupError(
                f"--init-from {name_or_path}: width {pretrained.width} and {pretrained.num_classes} classes, but this "
                f"run has width {self.model.width} and {self.model.num_classes} classes (from the datasets): the saved "
                "width must be at most the run's, and the saved classes must be the run's first ones"
            )
        self.model.load_state_dict(widened_weights(pretrained, self.model))
        widened = f", widened from width {pretrained.width}" if pretrained.width < self.model.width else ""
        left_out = []
        if pretrained.hint_channels and not self.model.hint_channels:
            left_out.append("hint inputs (no --hints, or --no-hint-conv)")
        if pretrained.hint_propagation and not self.model.hint_propagation:
            left_out.append("hint propagation (no --hint-propagation)")
        dropped = f"; its {' and '.join(left_out)} left out" if left_out else ""
        fitted = "; its hint propagation of an earlier layout fitted, new levels fresh" if earlier_propagation else ""
        self.print(
            f"weights from {name_or_path} (classifier rows for its {len(known)} classes{widened}{dropped}{fitted})"
        )

    def history_part(self, changed: list[str]) -> dict:
        """This command's part of the run, from the current step, as the model card tells it."""
        world_size = self.context.world_size
        return {
            "from_step": self.step,
            "command": self.args.command,
            "changed": changed,
            "world_size": world_size,
            "batch_size": self.args.batch_size,
            "hardware": hardware_description(self.device, world_size),
        }

    def colour_rarity(self) -> ColourRarity:
        """Rarity weights from the ab histogram of the first --prior-images training crops (the same every start)."""
        spec = replace(self.train_spec, rank=0, world_size=1)
        loader = train_loader(spec, self.args.batch_size, self.args.workers, self.device.type == "cuda")
        with loading(loader) as batches:
            first = itertools.islice(batches, max(1, self.args.prior_images // self.args.batch_size))
            histograms = [ab_histogram(lab_batch(batch.images.to(self.device).float() / 255)[2]) for batch in first]
        if not histograms:  # (an AttributeError deep in the weights)
            names = ", ".join(source.dataset for source in spec.sources)
            raise DataError(f"{names}: split {spec.split!r} has no usable images (for --rebalance's colour prior)")
        return ColourRarity(sum(histograms), self.args.rebalance)

    def wrap_model(self) -> torch.nn.Module:
        model = self.model
        if self.context.enabled:
            # The null global vector only gets gradients when global-feature dropout is on.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=self.args.global_dropout == 0
            )
        return torch.compile(model) if self.args.compile else model

    def resume(self) -> None:
        path = self.output / CHECKPOINT_NAME
        if not path.is_file():
            self.print(f"--resume: no {path} yet, starting from step 0")
            return
        changed = check_resumable(path, self.args)
        if changed:
            self.print(f"--resume: settings changed since the checkpoint: {', '.join(changed)}")
        saved = load_checkpoint(path, self.model, self.optimizer, self.scaler, self.average)
        self.step, self.wall_seconds = saved["step"], saved["wall_seconds"]
        if self.average and "average_updates" in saved:
            self.average.updates = saved["average_updates"]
        elif self.average:
            self.average.restart_from(self.model)
            self.print("--resume: the checkpoint has no weight average (--ema); it starts from the resumed weights")
        if self.log:
            self.log.drop_after(self.step)
        self.val_metrics = saved.get("val_metrics", {})
        self.finished = saved.get("finished", False)
        first = {"from_step": 0, "command": saved.get("args", {}).get("command", "?"), "changed": []}
        history = saved.get("history", [first])
        if history[-1].get("world_size", self.context.world_size) != self.context.world_size:
            changed.append(f"processes {history[-1]['world_size']} -> {self.context.world_size}")
            self.print(f"--resume: {changed[-1]} (the card counts each part's images)")
        self.history = [*history, self.history_part(changed)]
        streams = saved.get("data_streams", [])
        if len(streams) != self.context.world_size or saved.get("workers") != self.args.workers:
            self.print("--resume: different ranks or workers than the checkpoint, the data stream restarts")
        else:
            states = {int(worker): state for worker, state in streams[self.context.rank].items()}
            if positions_fit(self.train_spec, states, self.args.workers):
                self.worker_states = states
            else:
                self.print("--resume: the datasets' files changed since the checkpoint, the data stream restarts")
        skipped = saved.get("skipped", [])
        self.skipped_before = dict(skipped[self.context.rank]) if self.context.rank < len(skipped) else {}
        seed_everything(self.args.seed + self.step + self.context.rank)  # fresh randomness past the saved point
        self.print(f"resumed from {path} at step {self.step}")

    def print(self, message: str) -> None:
        if self.context.is_main:
            tqdm.write(message)

    def checkpoint(self) -> None:
        self.check_finite()
        streams = gather_objects(self.context, {str(w): s for w, s in self.worker_states.items()})
        skipped = gather_objects(self.context, self.skipped_in_all())
        self.on_main(lambda: self.save_state(streams, skipped))

    def save_state(self, streams: list[dict], skipped: list[dict]) -> None:
        state = {
            "step": self.step,
            "wall_seconds": self.wall_seconds,
            "data_streams": streams,
            "skipped": skipped,
            "workers": self.args.workers,
            "val_metrics": self.val_metrics,
            "finished": self.finished,
            "args": vars(self.args),
            "history": self.history,
            "class_names": list(self.model.class_names or []),
        }
        if self.average:
            state["average_updates"] = self.average.updates
        save_checkpoint(self.output, self.model, self.optimizer, self.scaler, state, self.average)

    def network_batch(
        self, images: torch.Tensor, draw: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """uint8 RGB crops -> (network input L, ab target, hints simulated for draw `draw` (default: this step) or
        None), on the device."""
        lab, l_input, target = lab_batch(images.to(self.device, non_blocking=True).float() / 255)
        if self.device.type == "cuda":
            l_input = l_input.contiguous(memory_format=torch.channels_last)
        hints = None
        if self.args.hints:
            generator = step_generator(self.args.seed, self.step if draw is None else draw, self.context.rank)
            counts = hint_counts(len(images), self.args.hints, self.args.hint_free, generator)
            hints = simulate_hints(lab[:, 1:], counts, generator)
        return l_input, target, hints

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        l_input, target, hints = self.network_batch(images)
        labels = labels.to(self.device, non_blocking=True)
        with self.autocast:
            ab, logits = self.training_model(l_input, global_dropout=self.args.global_dropout, hints=hints)
        loss, mse, cross_entropy = colorization_losses(
            ab.float(),
            target,
            logits.float(),
            labels,
            self.args.alpha,
            self.args.chroma_weight,
            self.rarity,
            psnr_floor=self.args.psnr_weighting,
            spread_weight=self.args.spread_weight,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for group in self.optimizer.param_groups:
            lr = scheduled_lr(self.args.lr, self.args.lr_schedule, self.step, self.args.steps)
            group["lr"] = lr * group["lr_scale"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average:
            self.average.update(self.model)
        return torch.stack((loss, mse, cross_entropy)).detach()

    def run(self) -> None:
        if self.args.resume:
            self.resume()
        if self.step == 0 and self.log:
            self.log.drop_after(0)  # the rows of a run stopped before its first checkpoint
        if self.finished and (self.step >= self.args.steps or self.out_of_time()):
            self.print(
                f"the run finished at step {self.step}: nothing left to do (raise --steps or --max-minutes to train on)"
            )
            self.on_main(self.save_final_once)
            return
        validation_sets = self.on_main(self.load_validation) or {}
        with StopRequest() as stop:
            if self.step < self.args.steps and not self.out_of_time():
                self.finished = False
                self.train_steps(stop, validation_sets)
            self.finish(stop, validation_sets)

    def train_steps(self, stop: StopRequest, validation_sets: dict[str, tuple]) -> None:
        loader = train_loader(
            self.train_spec, self.args.batch_size, self.args.workers, self.device.type == "cuda", self.worker_states
        )
        progress = tqdm(
            total=self.args.steps, initial=self.step, disable=not self.context.is_main, unit="step", dynamic_ncols=True
        )
        window = TrainingWindow(self.device)
        started = time.perf_counter() - self.wall_seconds
        first_step = self.step
        ran_out = True  # unless the loop below stops it
        with loading(loader, self.skipped) as batches:
            for batch in batches:
                window.add(self.train_step(batch.images, batch.labels))
                self.worker_states[batch.worker] = batch.stream_state
                self.step += 1
                progress.update()
                self.wall_seconds = time.perf_counter() - started
                if self.step % self.args.log_every == 0:
                    self.log_training(window, progress)
                if self.step % self.args.val_every == 0 and self.step < self.args.steps:
                    self.run_validation(validation_sets)
                signalled, out_of_time = self.stop_flags(stop)
                if signalled:
                    if window.steps:  # the steps since the last row (with other ranks, a signal stops at a row)
                        self.log_training(window, progress)
                    self.stop_on_signal(stop, progress)
                if self.step >= self.args.steps or out_of_time:
                    ran_out = False
                    break
                if self.step % self.args.checkpoint_every == 0:
                    self.checkpoint()
        if window.steps:
            self.log_training(window, progress)
        progress.close()
        datasets, skipped = ", ".join(self.args.dataset), self.skipped_in_all() or "none"
        if self.step == first_step:  # (else it exited 0 with an untrained model, "0 images seen")
            raise DataError(f"no usable photo in --split {self.args.split!r} of {datasets} (skipped: {skipped})")
        if ran_out:  # (it saved a model of fewer steps, exit 0)
            raise DataError(f"the photos ran out at step {self.step} of {self.args.steps}: one of {datasets} has "
                            f"no usable photo left in --split {self.args.split!r} (skipped: {skipped})")  # fmt: skip

    def finish(self, stop: StopRequest, validation_sets: dict[str, tuple]) -> None:
        """PreciseBN, the last validation, the checkpoint and the final model; a signal stops it between the parts."""
        self.precise_batchnorm(stop)
        self.stop_if_signalled(stop)
        self.run_validation(validation_sets, stop)
        self.stop_if_signalled(stop)
        self.finished = True
        self.checkpoint()
        self.on_main(self.save_final)

    def save_final_once(self) -> None:
        """The final model of a finished run, where it is not saved yet; else its upload that failed, again."""
        if (self.output / "final" / WEIGHTS_NAME).is_file():
            self.publish(self.output / "final")
        else:
            self.save_final()

    def on_main(self, work: Callable[[], T]) -> T | None:
        """`work` on rank 0 alone, called by every rank: where it fails, rank 0 raises its error and the others leave
        quietly, with exit code 0 so that torchrun names rank 0's failure (they went on to their next collective, or
        to the last barrier, and crashed there with gloo's "Connection closed by peer", named as the run's failure)."""
        result, error = None, None
        if self.context.is_main:
            try:
                result = work()
            except Exception as failure:  # raised below, once the other ranks know
                error = failure
        (failed,) = any_rank(self.context, (error is not None,), self.device)
        if error is not None:
            raise error
        if failed:
            raise SystemExit(0)
        return result

    @property
    def shipped_model(self) -> LetThereBeColor:
        """The weights that validation measures and the run saves: the weight average with --ema, else the last."""
        return self.average.model if self.average else self.model

    def precise_batchnorm(self, stop: StopRequest) -> None:
        """Re-estimate BatchNorm statistics as a true average over --precise-bn-batches training batches (PreciseBN,
        Wu and Johnson 2021): the running averages kept while training follow the last few batches, so the final
        step's statistics can be far off. Without global-feature dropout, as at inference."""
        model = self.shipped_model
        norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or not self.args.precise_bn_batches or self.args.hint_layers_only:
            return
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches below
        loader = train_loader(self.train_spec, self.args.batch_size, self.args.workers, self.device.type == "cuda")
        model.train()
        done = 0
        with torch.no_grad(), self.autocast, loading(loader) as batches:
            for batch in itertools.islice(batches, self.args.precise_bn_batches):
                if stop.signal_number:
                    break
                l_input, _, hints = self.network_batch(batch.images, draw=self.step + done)
                model(l_input, hints=hints)
                done += 1
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        if done < self.args.precise_bn_batches:
            self.print(
                f"BatchNorm re-estimation interrupted after {done} of {self.args.precise_bn_batches} batches: it "
                "starts again from scratch when the run is resumed"
            )
        else:
            self.print(f"BatchNorm statistics re-estimated over {done} training batches")

    def stop_if_signalled(self, stop: StopRequest) -> None:
        if any_rank(self.context, (bool(stop.signal_number),), self.device)[0]:
            self.stop_on_signal(stop)

    def stop_on_signal(self, stop: StopRequest, progress: tqdm | None = None) -> None:
        self.checkpoint()
        if progress:
            progress.close()
        self.print(f"stopped by signal {stop.signal_number} at step {self.step}; checkpoint saved, --resume continues")
        raise SystemExit(128 + (stop.signal_number or signal.SIGTERM))

    def out_of_time(self) -> bool:
        return self.args.max_minutes is not None and self.wall_seconds >= 60 * self.args.max_minutes

    def stop_flags(self, stop: StopRequest) -> tuple[bool, bool]:
        """(signalled, out of time). Alone, checked every step; with other ranks all must agree, so they decide
        together at log intervals (a collective, hence a host sync)."""
        flags = (bool(stop.signal_number), self.out_of_time())
        if not self.context.enabled:
            return flags
        if self.step % self.args.log_every:
            return False, False
        return any_rank(self.context, flags, self.device)

    def load_validation(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each dataset's first --val-images usable photos of --val-split, by dataset name: (images, labels)."""
        validation_sets = {}
        for source in self.train_spec.sources:
            spec = StreamSpec(
                [source], self.args.val_split, self.args.image_column, min_chroma_std=self.args.min_chroma_std
            )
            images, labels, skipped = validation_images(spec, self.args.val_images)
            self.print(f"validation: {len(images)} images of {source.dataset} {self.args.val_split!r} ({skipped=})")
            name, copies = dataset_name(source.dataset), 1
            while name in validation_sets:  # org1/places and org2/places: places, places-2
                copies += 1
                name = f"{dataset_name(source.dataset)}-{copies}"
            validation_sets[name] = images, labels
        return validation_sets

    def run_validation(self, validation_sets: dict[str, tuple], stop: StopRequest | None = None) -> None:
        self.on_main(lambda: self.measure_validation(validation_sets, stop))

    def measure_validation(self, validation_sets: dict[str, tuple], stop: StopRequest | None) -> None:
        """Metrics on each dataset's validation photos and their mean over the datasets; one grid of them all."""
        per_dataset, grid_truth, grid_predictions = {}, [], []
        for name, (images, labels) in validation_sets.items():
            if stop and stop.signal_number:
                return
            metrics, predictions = validate(
                self.shipped_model, images, labels, self.device, self.autocast, self.args.batch_size, self.args.alpha
            )
            if self.shipped_model.takes_hints:
                hinted, _ = validate(
                    self.shipped_model,
                    images,
                    labels,
                    self.device,
                    self.autocast,
                    self.args.batch_size,
                    self.args.alpha,
                    VALIDATION_HINT_POINTS,
                )
                metrics[f"psnr_hints{VALIDATION_HINT_POINTS}"] = hinted["psnr"]
            per_dataset[name] = metrics
            grid_truth.append(images[: len(predictions)])
            grid_predictions.append(predictions)
        save_grid(
            self.output / "validation" / f"step-{self.step:07d}.png", torch.cat(grid_truth), torch.cat(grid_predictions)
        )
        self.val_metrics = {**mean_metrics(list(per_dataset.values())), "datasets": per_dataset}
        self.log.write("validation", self.step, self.val_metrics)
        for name, metrics in per_dataset.items():
            shown = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items() if value)
            self.print(f"step {self.step} validation {name}: {shown}")

    def check_finite(self) -> None:
        """DivergedError where a weight is NaN or infinite (checked where the loss is logged and before anything is
        saved: the last checkpoint stays the last good one)."""
        if not torch.stack([parameter.isfinite().all() for parameter in self.model.parameters()]).all():
            raise DivergedError(f"the weights are no longer finite at step {self.step}: training diverged (a lower "
                                "--lr?); nothing was saved from this step on")  # fmt: skip

    def log_training(self, window: "TrainingWindow", progress: tqdm) -> None:
        self.check_finite()
        steps, seconds = window.steps, window.seconds()
        loss, mse, cross_entropy = (mean_over_ranks(self.context, window.take()) / steps).tolist()
        images_per_second = steps * self.args.batch_size * self.context.world_size / seconds
        if not self.context.is_main:
            return
        skipped = {f"skipped_{reason}": count for reason, count in self.skipped_in_all().items()}
        values = {"loss": loss, "mse": mse, "cross_entropy": cross_entropy, "images_per_s": images_per_second}
        self.log.write("train", self.step, {**values, "lr": self.optimizer.param_groups[-1]["lr"], **skipped})
        progress.set_postfix(loss=f"{loss:.4g}", img_s=f"{images_per_second:.1f}")

    def skipped_in_all(self) -> dict[str, int]:
        """This rank's skipped photos by reason, over its DataLoader workers and the run's parts."""
        skipped = dict(self.skipped_before)
        for counts in self.skipped.values():
            for reason, count in counts.items():
                skipped[reason] = skipped.get(reason, 0) + count
        return skipped

    def save_final(self) -> None:
        self.check_finite()
        directory, partial = self.output / "final", self.output / ".final.partial"
        shutil.rmtree(partial, ignore_errors=True)  # written whole, then renamed: never a half-written final/
        dtype = getattr(torch, self.args.save_dtype)
        stored = copy.deepcopy(self.shipped_model).to(device="cpu", dtype=dtype, memory_format=torch.contiguous_format)
        stored.save_pretrained(partial)
        hardware = hardware_description(self.device, self.context.world_size)
        card = model_card(
            self.args,
            self.model,
            self.step,
            self.context.world_size,
            hardware,
            self.precision,
            self.wall_seconds,
            self.val_metrics,
            self.history,
        )
        (partial / "README.md").write_text(card)
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
        self.log.close()
        self.print(f"saved the model to {directory}")
        self.publish(directory)

    def publish(self, directory: Path) -> None:
        """Upload the final model where --push-to-hub asks; a PushError says how to try again."""
        if not self.args.push_to_hub:
            return
        try:
            url = push_to_hub(directory, self.args.push_to_hub)
        except PushError as error:
            again = "the same command with --resume uploads it"
            raise PushError(f"{error}\nthe model is saved in {directory}: {again}") from error
        self.print(f"pushed the model to {url}")


def dataset_name(dataset: str) -> str:
    """A short name for a dataset id or directory: its last path part."""
    return dataset.rstrip("/").rsplit("/", 1)[-1]


def check_output(output: Path, resume: bool, inputs: list[str]) -> None:
    """SetupError where --output is a file, holds a saved model, is or lies in a local input (a dataset, the
    --init-from model: the run's files were written among them), or holds a run (a checkpoint or a final model)
    that a new run without --resume would overwrite."""
    if output.exists() and not output.is_dir():
        raise SetupError(f"--output {output}: is a file, not a folder")
    if (output / WEIGHTS_NAME).is_file():  # (the bundled model's folder took a run's files, shipped with the package)
        raise SetupError(f"--output {output}: holds a model ({WEIGHTS_NAME}); choose a folder of its own")
    for folder in (Path(each).resolve() for each in inputs if Path(each).is_dir()):
        if output.resolve() == folder or folder in output.resolve().parents:
            raise SetupError(f"--output {output}: inside an input, {folder}; choose a folder of its own")
    if not resume and ((output / CHECKPOINT_NAME).is_file() or (output / "final").exists()):
        raise SetupError(f"--output {output} holds a run already: continue it with --resume, or choose another folder")
    if resume and not (output / CHECKPOINT_NAME).is_file() and (output / "final").exists():
        raise SetupError(
            f"--output {output} holds a finished model but no {CHECKPOINT_NAME}: --resume cannot continue it (it would "
            "train from scratch over it); choose another folder"
        )


def train(args) -> None:
    context = init_distributed()
    finished = False
    try:
        Trainer(args, context).run()
        finished = True
    finally:
        shutdown(context, finished)
