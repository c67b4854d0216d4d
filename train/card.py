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

- Command: `{command}`
- Data: `{dataset}`, split `{split}` (streamed), {images} images seen ({steps} steps of {batch_size})
- Scene classes: {num_classes} ({class_preview})
- Optimizer: {optimizer}, learning rate {lr}, alpha {alpha}, chroma weight {chroma_weight},
  global-feature dropout {global_dropout}
- Hardware: {hardware}; precision {precision}
- Wall time: {wall_time}
- Weights stored as {save_dtype}

## Validation (split `{val_split}`, {val_images} center crops)

| metric | value |
|---|---|
{metric_rows}

PSNR is on sRGB with the photo's own lightness; colourfulness is Hasler and Suesstrunk's (truth: {truth_colour}).
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
    args, model, step: int, world_size: int, hardware: str, precision: str, wall_seconds: float, metrics: dict
) -> str:
    shown = ("loss", "mse", "psnr", "colourfulness", "scene_accuracy")
    rows = "\n".join(f"| {name} | {format_metric(metrics.get(name))} |" for name in shown)
    return CARD.format(
        dataset=args.dataset,
        hub_datasets="" if Path(args.dataset).exists() else f"datasets:\n- {args.dataset}\n",
        width_text=f"width {args.width}",
        command=args.command,
        split=args.split,
        images=step * args.batch_size * world_size,
        steps=step,
        batch_size=args.batch_size,
        num_classes=model.num_classes,
        class_preview=", ".join(model.class_names[:8]) + (", ..." if len(model.class_names) > 8 else ""),
        optimizer=args.optimizer,
        lr=args.lr,
        alpha=args.alpha,
        chroma_weight=args.chroma_weight,
        global_dropout=args.global_dropout,
        hardware=hardware,
        precision=precision,
        wall_time=format_duration(wall_seconds),
        save_dtype=args.save_dtype,
        val_split=args.val_split,
        val_images=metrics.get("images", 0),
        metric_rows=rows,
        truth_colour=format_metric(metrics.get("colourfulness_truth")),
    )


def format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
