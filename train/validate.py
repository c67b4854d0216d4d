"""In-training validation: loss, PSNR, colourfulness and scene accuracy on a fixed set of validation crops,
plus a PNG grid (gray | prediction | truth), with letcolor.metrics' PSNR and colourfulness. The full evaluation
is `python -m letcolor evaluate`."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from letcolor.color import lab_to_rgb, target_to_ab
from letcolor.hints import simulate_hints
from letcolor.metrics import colorfulness, psnr
from train.losses import colorization_losses, lab_batch

GRID_ROWS = 8


def predicted_rgb(lab: torch.Tensor, ab_half: torch.Tensor) -> torch.Tensor:
    """The photo's own L with the predicted ab (upsampled from H/2, as at test time) back in sRGB."""
    ab = F.interpolate(target_to_ab(ab_half.float()), size=lab.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat((lab[:, :1], ab), dim=1))


@torch.no_grad()
def validate(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    device,
    autocast,
    batch_size: int,
    alpha: float,
    hint_points: int = 0,
):
    """Metrics over all `images` (uint8, on the host) and the RGB predictions of the first GRID_ROWS; with
    `hint_points`, each image gets that many hints simulated from its true colours (the same every time)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(6, device=device)  # loss, mse, psnr, colourfulness, true colourfulness, correct
    labelled = int((labels >= 0).sum())
    grid_predictions = []
    for start in range(0, len(images), batch_size):
        rgb = images[start : start + batch_size].to(device, non_blocking=True).float() / 255
        batch_labels = labels[start : start + batch_size].to(device, non_blocking=True)
        lab, l_input, target = lab_batch(rgb)
        hints = None
        if hint_points:
            counts = torch.full((len(rgb),), hint_points)
            hints = simulate_hints(lab[:, 1:], counts, torch.Generator().manual_seed(start))
        with autocast:
            ab_half, logits = model(l_input, hints=hints)
        loss, mse, _ = colorization_losses(ab_half.float(), target, logits.float(), batch_labels, alpha)
        prediction = predicted_rgb(lab, ab_half)
        correct = ((logits.argmax(1) == batch_labels) & (batch_labels >= 0)).sum()
        count = len(rgb)
        totals += torch.stack(
            (
                loss * count,
                mse * count,
                psnr(prediction, rgb).sum(),
                colorfulness(prediction).sum(),
                colorfulness(rgb).sum(),
                correct.float(),
            )
        )
        if start < GRID_ROWS:
            grid_predictions.append(prediction[: GRID_ROWS - start].cpu())
    model.train(was_training)
    loss, mse, psnr_sum, colour, true_colour, correct = totals.tolist()
    n = len(images)
    metrics = {
        "loss": loss / n,
        "mse": mse / n,
        "psnr": psnr_sum / n,
        "colourfulness": colour / n,
        "colourfulness_truth": true_colour / n,
        "scene_accuracy": correct / labelled if labelled else None,
        "images": n,
    }
    return metrics, torch.cat(grid_predictions)


def save_grid(path: Path, images: torch.Tensor, predictions: torch.Tensor) -> None:
    """Rows of gray | prediction | truth for the first validation images."""
    truth = images[: len(predictions)].float() / 255
    gray = (truth * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True).expand_as(truth)
    rows = torch.cat((gray, predictions.float(), truth), dim=3)
    grid = torch.cat(tuple(rows), dim=1)
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def mean_metrics(per_dataset: list[dict]) -> dict:
    """Each metric's mean over the datasets that have it (each counts once, whatever its size); images summed."""
    keys = dict.fromkeys(key for metrics in per_dataset for key in metrics)
    means = {}
    for key in keys:
        values = [metrics[key] for metrics in per_dataset if metrics.get(key) is not None]
        means[key] = (sum(values) if key == "images" else sum(values) / len(values)) if values else None
    return means
