"""The model card (README.md) written next to a trained model."""

import platform
from pathlib import Path

import torch

CARD = """---
library_name: letcolor
pipeline_tag: image-to-image
license: mit
tags:
- image-colorization
- let-there-be-color
{hub_datasets}---
# letcolor: Let there be Color! ({width_text})

Automatic colorization of black-and-white photos: the network of Iizuka, Simo-Serra and Ishikawa,
*Let there be Color!* (SIGGRAPH 2016), trained with letcolor's `train` package.

```python
from letcolor.model import LetThereBeColor
model = LetThereBeColor.from_pretrained("this/repo-or-directory")
```

## Training

- {commands}
- Started from: {start}
- Data: {datasets}, split `{split}` (streamed), {images_seen}; {colour_filter}
- Scene classes: {classes}
- Optimizer: {optimizer}, learning rate {lr} ({lr_schedule}), alpha {alpha}, chroma weight {chroma_weight},
  colour spread weight {spread_weight}, rarity rebalancing mix {rebalance} (1 = plain MSE),
  per-image PSNR weighting {psnr_weighting}, global-feature dropout {global_dropout}, {hints}
- Weights: {weights}
- Hardware: {hardware}; precision {precision}
- Wall time: {wall_time}
- Weights stored as {save_dtype}

## Validation (split `{val_split}` of each dataset, center crops)

{metric_table}

PSNR is on sRGB with the photo's own lightness; colourfulness is Hasler and Suesstrunk's (truth: the originals').
"""


def hardware_description(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{world_size} x {name}" if world_size > 1 else name


def format_duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def model_card(
    args,
    model,
    step: int,
    world_size: int,
    hardware: str,
    precision: str,
    wall_seconds: float,
    metrics: dict,
    history: list[dict],
) -> str:
    hub_datasets = [dataset for dataset in args.dataset if not Path(dataset).exists()]
    weights = zip(args.dataset, args.dataset_weights, strict=True)
    weighted = [f"`{dataset}` (weight {weight:g})" for dataset, weight in weights]
    parts = run_parts(history, step, {"world_size": world_size, "batch_size": args.batch_size, "hardware": hardware})
    return CARD.format(
        datasets=", ".join(weighted) if len(weighted) > 1 else f"`{args.dataset[0]}`",
        hub_datasets="".join(f"- {dataset}\n" for dataset in hub_datasets).join(("datasets:\n", ""))
        if hub_datasets
        else "",
        width_text=f"width {args.width}",
        commands=commands_line(parts),
        start=start_line(args),
        split=args.split,
        images_seen=images_line(parts, step),
        classes=classes_line(model),
        optimizer=args.optimizer,
        lr=args.lr,
        lr_schedule="falling linearly to 0 at the last step" if args.lr_schedule == "linear" else "constant",
        alpha=args.alpha,
        chroma_weight=args.chroma_weight,
        spread_weight=args.spread_weight,
        colour_filter=f"photos with chroma std under {args.min_chroma_std} skipped"
        if args.min_chroma_std > 0
        else "every photo kept, near-gray ones too",
        rebalance=args.rebalance,
        psnr_weighting=f"on, floor {args.psnr_weighting:g} Lab units" if args.psnr_weighting else "off",
        global_dropout=args.global_dropout,
        hints=hints_line(args),
        weights=f"exponential moving average, decay {args.ema}" if args.ema else "the last step's",
        hardware=hardware_line(parts),
        precision=precision,
        wall_time=format_duration(wall_seconds),
        save_dtype=args.save_dtype,
        val_split=args.val_split,
        metric_table=metric_table(metrics),
    )


def run_parts(history: list[dict], step: int, current: dict) -> list[tuple[dict, int]]:
    """Each command's part of the run that trained steps, with its last step. What a part did not record (a checkpoint
    of an earlier version) is taken as `current`'s: this command's world size, batch size and hardware."""
    ends = [part["from_step"] for part in history[1:]] + [step]
    return [({**current, **part}, end) for part, end in zip(history, ends, strict=True) if end > part["from_step"]]


def commands_line(parts: list[tuple[dict, int]]) -> str:
    """The command that trained the model, or each command of a resumed run with its steps and the settings it
    changed (a card showed the last command's settings as the whole run's)."""
    if len(parts) == 1 and not parts[0][0]["changed"]:
        return f"Command: `{parts[0][0]['command']}`{processes(parts[0][0])}"
    described = [
        f"`{part['command']}`{processes(part)} (steps {part['from_step'] + 1}-{end}"
        + (f"; changed: {', '.join(part['changed'])})" if part["changed"] else ")")
        for part, end in parts
    ]
    return "Commands, in turn: " + "; then ".join(described)


def processes(part: dict) -> str:
    return f" on {part['world_size']} processes (torchrun)" if part["world_size"] > 1 else ""


def images_line(parts: list[tuple[dict, int]], step: int) -> str:
    """The images seen, counted part by part: a run resumed on another number of processes (or batch size) counted
    all its steps at the last part's."""
    images = sum((end - part["from_step"]) * part["batch_size"] * part["world_size"] for part, end in parts)
    shapes = {(part["batch_size"], part["world_size"]) for part, _ in parts}
    if len(shapes) == 1:
        ((batch_size, world_size),) = shapes
        each = f" on each of {world_size} processes" if world_size > 1 else ""
        return f"{images} images seen ({step} steps of {batch_size}{each})"
    steps = [f"steps {part['from_step'] + 1}-{end}: {part['batch_size']} x {part['world_size']}" for part, end in parts]
    return f"{images} images seen ({step} steps of batch size x processes, {'; '.join(steps)})"


def hardware_line(parts: list[tuple[dict, int]]) -> str:
    if len({part["hardware"] for part, _ in parts}) == 1:
        return parts[0][0]["hardware"]
    return "; ".join(f"{part['hardware']} (steps {part['from_step'] + 1}-{end})" for part, end in parts)


def start_line(args) -> str:
    if not args.init_from:
        return "random weights"
    frozen = "; only the layers that read the hints trained, the rest frozen" if args.hint_layers_only else ""
    return f"`{args.init_from}` (widened where it was narrower){frozen}"


def classes_line(model) -> str:
    if not model.class_names:
        return "none (trained without labels: no classification loss)"
    preview = ", ".join(model.class_names[:8]) + (", ..." if len(model.class_names) > 8 else "")
    return f"{model.num_classes} ({preview})"


def metric_table(metrics: dict) -> str:
    """Rows of metrics, a column per validation dataset (and their mean where there are several)."""
    columns = dict(metrics.get("datasets", {}))
    if len(columns) != 1:
        columns["mean"] = metrics
    shown = ("images", "loss", "mse", "psnr", "psnr_hints10", "colourfulness", "colourfulness_truth", "scene_accuracy")
    lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name in shown:
        lines.append(f"| {name} | " + " | ".join(format_metric(column.get(name)) for column in columns.values()) + " |")
    return "\n".join(lines)


def format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def hints_line(args) -> str:
    if not args.hints:
        return "no colour hints"
    layers = [name for name, used in (("convolution", args.hint_conv), ("propagation", args.hint_propagation)) if used]
    return (
        f"simulated colour hints: {args.hints:g} points on average, none on {args.hint_free:.0%} of images, the hint "
        f"{' and '.join(layers)} at {args.hint_layer_lr:g}x the learning rate"
    )
