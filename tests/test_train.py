"""The training package: overfitting, a whole run, SIGTERM and --resume, bad images, DDP, pushing to a Hub."""

import io
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import EXAMPLES
from crafted import DAMAGED_EXIF, png_with_exif
from datasets import config as datasets_config
from fake_hub import FakeHub
from PIL import ExifTags, Image, ImageCms
from safetensors import safe_open
from safetensors.torch import save_file
from train_data import VALIDATION_ROWS, corrupt_images, desaturate_images, make_scene_dataset

from letcolor import BUNDLED_MODEL_DIR
from letcolor.color import AB_RANGE
from letcolor.hints import simulate_hints
from letcolor.model import WEIGHTS_NAME, InvalidModelError, LetThereBeColor
from letcolor.pipeline import load_model
from train import data, loop
from train.__main__ import parse_args
from train.average import WeightAverage
from train.card import hints_line, model_card
from train.checkpoint import CHECKPOINT_NAME, STATE_KEY, load_checkpoint, save_checkpoint, saved_state
from train.compact import reencoded
from train.data import (
    Source,
    SourceEpochs,
    StreamSpec,
    TrainBatches,
    model_label,
    open_stream,
    source_class_names,
    validation_images,
)
from train.distributed import Distributed
from train.loop import Trainer, model_for, train
from train.losses import (
    DEFAULT_PSNR_FLOOR,
    ColourRarity,
    ab_histogram,
    colorization_losses,
    colour_spread,
    lab_batch,
    mean_chroma,
    psnr_image_weights,
)
from train.widen import embed, warm_start_model, widened_weights, with_earlier_propagation

ROOT = Path(__file__).resolve().parent.parent
CORRUPT_ROWS = (1, 4, 7)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, OpenMP threads spinning against other processes cost ~5x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def scene_data(tmp_path_factory, scenes_dataset) -> Path:
    return make_scene_dataset(scenes_dataset, tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="session")
def everyday_data(tmp_path_factory, everyday_dataset) -> Path:
    return make_scene_dataset(everyday_dataset, tmp_path_factory.mktemp("everyday"), rows_per_shard=16)


@pytest.fixture(scope="session")
def corrupt_scene_data(tmp_path_factory, scenes_dataset) -> Path:
    return make_scene_dataset(scenes_dataset, tmp_path_factory.mktemp("corrupt"), corrupt_rows=CORRUPT_ROWS)


def scenes(dataset: Path) -> StreamSpec:
    return StreamSpec([Source(str(dataset))], "train")


def cli(dataset: Path | list[Path], output: Path, *extra: str) -> list[str]:
    datasets = [f"--dataset={path}" for path in (dataset if isinstance(dataset, list) else [dataset])]
    return [
        *datasets,
        *("--output", str(output), "--width", "0.125", "--batch-size", "4"),
        *("--val-images", "8", "--log-every", "1", "--workers", "1", "--seed", "0", *extra),
    ]


def metrics(output: Path, kind: str) -> list[dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def checkpoint_state(output: Path) -> dict:
    return saved_state(output / CHECKPOINT_NAME)


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_chroma_term_pushes_a_faded_prediction_towards_the_photos_colour():
    photo = Image.open(EXAMPLES / "coffee.png").convert("RGB").resize((128, 96))
    rgb = torch.tensor(list(photo.tobytes()), dtype=torch.float32).view(1, 96, 128, 3).permute(0, 3, 1, 2) / 255
    _, _, target = lab_batch(rgb)
    faded = (0.5 + 0.5 * (target - 0.5)).requires_grad_()
    logits, labels = torch.zeros(1, 3), torch.tensor([0])
    plain, mse, cross_entropy = colorization_losses(faded, target, logits, labels, alpha=0.1)
    assert plain.item() == pytest.approx(mse.item() + 0.1 * cross_entropy.item())

    total, _, _ = colorization_losses(faded, target, logits, labels, alpha=0.1, chroma_weight=1.0)
    gap = mean_chroma(target) - mean_chroma(faded)
    assert total.item() == pytest.approx(plain.item() + gap.item() ** 2, rel=1e-4)
    (grad,) = torch.autograd.grad(total - plain, faded)
    stepped = faded.detach() - 0.1 * grad / grad.abs().max()
    assert mean_chroma(stepped) > mean_chroma(faded.detach())


@pytest.mark.slow
def test_one_batch_overfits(scene_data, tmp_path):
    trainer = Trainer(parse_args(cli(scene_data, tmp_path, "--optimizer", "adamw", "--lr", "3e-3")), Distributed())
    images, labels, _ = validation_images(StreamSpec([Source(str(scene_data))], "validation"), 4)
    losses = [trainer.train_step(images, labels)[0].item() for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_stream_that_ends_every_epoch_does_not_sleep(scene_data, monkeypatch):
    """datasets sleeps 5 s when a parquet stream ends; a DataLoader worker's stream ends at each pass over its shards,
    which stalled training on a fast device. The sleep stays for a stream closed outside the training loop."""
    pauses, pause_at_exit = [], datasets_config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    monkeypatch.setattr(time, "sleep", pauses.append)
    epochs = SourceEpochs(scenes(scene_data), Source(str(scene_data)), None)
    for _ in range(3 * 48 + 1):  # three passes over the two 24-row shards, and one row more
        assert epochs.next_usable(lambda example: example) is not None
    assert epochs.stream.epoch == 3
    assert pause_at_exit >= 1 and max(pauses, default=0) < 1
    assert datasets_config.SLEEP_TIME_ON_THREADS_SHUTDOWN == pause_at_exit


@pytest.mark.slow
def test_bad_images_are_skipped_and_counted(corrupt_scene_data):
    spec = scenes(corrupt_scene_data)
    batches = iter(TrainBatches(spec, batch_size=4))
    batch = next(batches)
    while batch.stream_state["sources"][0]["epoch"] == 0:
        assert batch.images.shape == (4, 3, 224, 224) and batch.images.dtype == torch.uint8
        batch = next(batches)
    assert batch.skipped["bad_image"] == len(CORRUPT_ROWS)


def test_each_rank_streams_its_own_part(scene_data):
    spec = scenes(scene_data)
    ids = [
        {row["image"]["bytes"] for row in open_stream(replace(spec, rank=rank, world_size=2), spec.sources[0])}
        for rank in (0, 1)
    ]
    assert ids[0] and ids[1] and not ids[0] & ids[1]


@pytest.mark.slow
def test_run_writes_metrics_grid_and_model(scene_data, tmp_path):
    options = ("--steps", "4", "--val-every", "2", "--save-dtype", "float16", "--precise-bn-batches", "3")
    train(parse_args(cli(scene_data, tmp_path, *options)))
    assert [record["step"] for record in metrics(tmp_path, "train")] == [1, 2, 3, 4]
    validation = metrics(tmp_path, "validation")
    assert [record["step"] for record in validation] == [2, 4]
    assert {"loss", "psnr", "colourfulness", "scene_accuracy"} <= set(validation[-1])
    with Image.open(tmp_path / "validation" / "step-0000004.png") as grid:
        assert grid.size == (3 * 224, 8 * 224)
    model = LetThereBeColor.from_pretrained(tmp_path / "final")
    assert model.class_names[:2] == ["buildings", "forest"] and model.width == 0.125
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert {int(norm.num_batches_tracked) for norm in norms} == {3}  # PreciseBN's batches, not the 4 training steps
    with safe_open(str(tmp_path / "final" / "model.safetensors"), framework="pt") as file:
        assert file.get_tensor("null_global").dtype == torch.float16
    card = (tmp_path / "final" / "README.md").read_text()
    assert "--steps 4" in card and "16 images seen (4 steps of 4)" in card and "| psnr |" in card


@pytest.mark.slow
def test_linear_schedule_takes_the_learning_rate_to_zero_and_resumes_on_it(scene_data, tmp_path):
    options = ("--lr", "0.8", "--lr-schedule", "linear", "--steps", "4", "--val-every", "100", "--val-images", "4")
    options += ("--precise-bn-batches", "0")
    train(parse_args(cli(scene_data, tmp_path, *options, "--max-minutes", "1e-9")))  # out of time after one step
    assert checkpoint_state(tmp_path)["step"] == 1
    train(parse_args(cli(scene_data, tmp_path, *options, "--resume")))
    records = metrics(tmp_path, "train")
    assert [record["step"] for record in records] == [1, 2, 3, 4]
    assert [record["lr"] for record in records] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    card = (tmp_path / "final" / "README.md").read_text()
    assert "learning rate 0.8 (falling linearly to 0 at the last step)" in card
    assert "Commands, in turn: `python -m train " in card and "--max-minutes 1e-9` (steps 1-1); then `" in card
    assert "--resume` (steps 2-4)" in card
    train(parse_args(cli(scene_data, tmp_path, *options, "--resume", "--steps", "6")))  # (the later --steps wins)
    records = metrics(tmp_path, "train")
    assert [record["lr"] for record in records][4:] == pytest.approx([0.8 * 2 / 6, 0.8 / 6])  # on the new schedule
    assert (
        "(steps 5-6; changed: --steps 4 -> 6 (where the linear schedule reaches 0))"
        in (tmp_path / "final" / "README.md").read_text()
    )  # it was reshaped without a word


def test_the_card_of_a_resumed_run_names_each_command_and_what_it_changed(scene_data, tmp_path):
    """It gave the last command's settings as the whole run's (--lr 0.5 for steps that ran at 1.0), and the last
    --resume command as the run's."""
    train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "2")))
    train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "3", "--resume", "--lr", "0.5")))
    card = (tmp_path / "final" / "README.md").read_text()
    assert "--steps 2` (steps 1-2); then `python -m train " in card
    assert "--lr 0.5` (steps 3-3; changed: --lr 1.0 -> 0.5)" in card
    assert "- Started from: random weights" in card


def test_the_card_of_a_run_resumed_on_another_number_of_processes_counts_each_parts_images(scene_data, tmp_path):
    """It counted every step at the last part's processes (96 images for 6 steps on one and 6 on two: 72), and named
    the last part's hardware only."""
    args = parse_args(cli(scene_data, tmp_path, "--steps", "12"))  # batch size 4
    one, two = "CPU x86_64, 1 threads", "2 x CPU x86_64, 1 threads"
    history = [
        {"from_step": 0, "command": "python -m train A", "changed": [], "world_size": 1, "batch_size": 4,
         "hardware": one},
        {"from_step": 6, "command": "python -m train B", "changed": ["processes 1 -> 2"], "world_size": 2,
         "batch_size": 4, "hardware": two},
    ]  # fmt: skip
    card = model_card(args, model_for(args, ["a", "b"]), 12, 2, two, "fp32", 60.0, {}, history)
    assert "72 images seen (12 steps of batch size x processes, steps 1-6: 4 x 1; steps 7-12: 4 x 2)" in card
    assert f"- Hardware: {one} (steps 1-6); {two} (steps 7-12); precision fp32" in card
    assert "; then `python -m train B` on 2 processes (torchrun) (steps 7-12; changed: processes 1 -> 2)" in card


def test_a_colour_only_run_and_one_from_a_saved_model_say_so_in_their_cards(scene_data, tmp_path):
    """It said "Scene classes: 1 ()", and nothing of the model a run started from."""
    train(parse_args(cli(scene_data, tmp_path / "colour", *QUICK, "--steps", "1", "--label-column", "")))
    card = (tmp_path / "colour" / "final" / "README.md").read_text()
    assert "- Scene classes: none (trained without labels" in card and "- Command: `python -m train " in card
    saved = tmp_path / "colour" / "final"
    train(parse_args(cli(scene_data, tmp_path / "warm", *QUICK, "--steps", "1", "--init-from", str(saved))))
    card = (tmp_path / "warm" / "final" / "README.md").read_text()
    assert f"- Started from: `{saved}` (widened where it was narrower)" in card


@pytest.mark.slow
def test_init_from_starts_from_a_saved_models_weights(scene_data, tmp_path):
    quick = ("--steps", "2", "--val-images", "4", "--precise-bn-batches", "0")
    train(parse_args(cli(scene_data, tmp_path / "first", *quick)))
    saved = LetThereBeColor.from_pretrained(tmp_path / "first" / "final")
    # AdamW at learning rate 0 leaves every weight where it started.
    still = ("--init-from", str(tmp_path / "first" / "final"), "--optimizer", "adamw", "--lr", "0")
    train(parse_args(cli(scene_data, tmp_path / "second", *quick, *still)))
    continued = LetThereBeColor.from_pretrained(tmp_path / "second" / "final")
    assert torch.equal(continued.fusion.conv.weight, saved.fusion.conv.weight)
    assert torch.equal(continued.low_level.convs[0][0].weight, saved.low_level.convs[0][0].weight)
    # Widened, the same steps (which move only BatchNorm's running statistics) end where the narrow run ended.
    train(parse_args(cli(scene_data, tmp_path / "wider", *quick, *still, "--width", "0.25")))
    wider = LetThereBeColor.from_pretrained(tmp_path / "wider" / "final")
    photo = lightness_of(EXAMPLES / "coffee.png")
    assert wider.width == 0.25 and torch.allclose(wider(photo)[0], continued(photo)[0], atol=1e-5)
    with pytest.raises(ValueError, match="at most the run's"):
        train(parse_args(cli(scene_data, tmp_path / "narrower", *quick, *still[:2], "--width", "0.0625")))


def lightness_of(path: Path) -> torch.Tensor:
    """The network input (L / 100) of a real photo at 224 x 224, as a batch of one."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32) / 255
    return lab_batch(torch.from_numpy(rgb).permute(2, 0, 1)[None])[1]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_widened_model_computes_what_the_narrow_one_did(mode):
    """With hints too: the propagation's gates read the features, then the levels' summaries, and the summaries'
    weights landed on the new features (the bundled model widened to 0.5: 11 levels off on average with hints)."""
    torch.manual_seed(1)  # (seed 0 makes a network whose eval output is nearly flat)
    narrow = LetThereBeColor(3, ["a", "b", "c"], width=0.125, hint_channels=3, hint_propagation=True)
    with torch.no_grad():  # BatchNorm statistics and affine weights away from their defaults, as after training
        for name, tensor in narrow.named_buffers():
            if "running" in name:
                tensor.uniform_(0.5, 1.5)
        for parameter in narrow.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        narrow.colorization.propagation.scale.fill_(0.8)  # the propagation at work
    wide = LetThereBeColor(5, ["a", "b", "c", "d", "e"], width=0.25, hint_channels=3, hint_propagation=True)
    wide.load_state_dict(widened_weights(narrow, wide))
    narrow.train(mode == "train"), wide.train(mode == "train")
    photos = torch.cat([lightness_of(EXAMPLES / name) for name in ("coffee.png", "astronaut.png")])
    (narrow_ab, narrow_logits), (wide_ab, wide_logits) = narrow(photos), wide(photos)
    assert torch.allclose(wide_ab, narrow_ab, atol=1e-5) and narrow_ab.std() > 0.01
    assert torch.allclose(wide_logits[:, :3], narrow_logits, atol=1e-5)
    hints = simulate_hints(torch.rand(2, 2, 224, 224) * 60 - 30, torch.tensor([5, 3]), torch.Generator().manual_seed(1))
    (narrow_hinted, _), (wide_hinted, _) = narrow(photos, hints=hints), wide(photos, hints=hints)
    assert torch.allclose(wide_hinted, narrow_hinted, atol=1e-5) and (narrow_hinted - narrow_ab).abs().max() > 0.05
    # The new channels are live (random incoming weights), only their path into the saved outputs starts at zero.
    first_conv = wide.low_level.convs[0][0].weight
    assert first_conv[narrow.low_level.convs[0][0].out_channels :].abs().sum() > 0


def test_a_propagation_of_an_earlier_layout_starts_this_ones_matching_levels(tmp_path):
    torch.manual_seed(0)
    model = LetThereBeColor(3, ["a", "b", "c"], width=0.125, hint_propagation=True)
    model.save_pretrained(tmp_path / "earlier")
    propagation = model.colorization.propagation
    levels, features = len(propagation.RADII), propagation.gate_hidden.in_channels - 3 * propagation.gates.out_channels
    weights = model.state_dict()  # the layout before the levels of any lightness: fewer gates, fewer gate inputs
    for name in ("gates.weight", "gates.bias"):
        weights[f"colorization.propagation.{name}"] = weights[f"colorization.propagation.{name}"][:levels].clone()
    hidden = "colorization.propagation.gate_hidden.weight"
    weights[hidden] = weights[hidden][:, : features + 3 * levels].clone()
    save_file(weights, tmp_path / "earlier" / WEIGHTS_NAME)
    with pytest.raises(InvalidModelError):
        load_model(tmp_path / "earlier")
    started, earlier = warm_start_model(tmp_path / "earlier")
    assert earlier and started.takes_hints
    fitted = started.colorization.propagation
    assert torch.equal(fitted.gates.weight[:levels], weights["colorization.propagation.gates.weight"])
    assert torch.equal(fitted.gate_hidden.weight[:, : features + 3 * levels], weights[hidden])
    assert not fitted.gate_hidden.weight[:, features + 3 * levels :].any()  # the new levels' fields start unread
    assert torch.equal(started.fusion.conv.weight, model.fusion.conv.weight)
    weights["fusion.conv.weight"] = weights["fusion.conv.weight"][:-1].clone()  # more than the propagation differs
    save_file(weights, tmp_path / "earlier" / WEIGHTS_NAME)
    with pytest.raises(InvalidModelError, match="earlier layout"):
        with_earlier_propagation(tmp_path / "earlier")
    with pytest.raises(InvalidModelError, match="not a valid letcolor model: .*fusion.conv.weight is"):
        warm_start_model(tmp_path / "earlier")  # what load_model says of it, not the fallback


@pytest.mark.parametrize("layout", ["this", "earlier"])
def test_a_model_with_bad_weights_is_refused_as_a_warm_start_whatever_its_layout(tmp_path, layout):
    """--init-from fell back to the earlier-layout loader for any model that load_model refused: NaN, integer weights
    or a negative variance were trained on (a gray model saved, exit 0) and said to be "an earlier layout"; and that
    loader took them in a model of an earlier layout."""
    model = LetThereBeColor(3, ["a", "b", "c"], width=0.125, hint_propagation=True)
    weights = model.state_dict()
    if layout == "earlier":  # fewer gates (as in the test above)
        for name in ("gates.weight", "gates.bias", "gate_hidden.weight"):
            name = f"colorization.propagation.{name}"
            weights[name] = weights[name][:, :-3].clone() if name.endswith("hidden.weight") else weights[name][:-1]
    variances = {name: -tensor.abs() - 1 for name, tensor in weights.items() if name.endswith("running_var")}
    damaged = {
        "nan": {"fusion.conv.weight": torch.full_like(weights["fusion.conv.weight"], float("nan"))},
        "integers": {"fusion.conv.weight": weights["fusion.conv.weight"].to(torch.int8)},
        "negative_variance": variances,
    }
    for case, changes in damaged.items():
        folder = tmp_path / case
        model.save_pretrained(folder)
        save_file({**weights, **changes}, folder / WEIGHTS_NAME)
        with pytest.raises(InvalidModelError, match="not a valid letcolor model"):
            warm_start_model(folder)
    if layout == "earlier":  # undamaged, it starts the run
        save_file(weights, folder / WEIGHTS_NAME)
        assert warm_start_model(folder)[1]


def test_embed_refuses_a_tensor_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        embed(torch.zeros(4, 3), torch.zeros(2, 3))


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_continues(scene_data, tmp_path):
    """The steps since the last row of metrics.jsonl were missing from it (here all of them: no row before 1000)."""
    command = [
        sys.executable,
        "-m",
        "train",
        *cli(scene_data, tmp_path, "--steps", "1000", "--checkpoint-every", "2", "--log-every", "1000"),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=subprocess_env(), stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / CHECKPOINT_NAME).exists():  # step 2 is done
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)  # the whole group, DataLoader worker included, as a scheduler does
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = checkpoint_state(tmp_path)["step"]
    assert stopped_at >= 2 and checkpoint_state(tmp_path)["data_streams"][0]["0"]["sources"][0]["epoch"] == 0
    assert [row["step"] for row in metrics(tmp_path, "train")] == [stopped_at]

    train(parse_args(cli(scene_data, tmp_path, "--steps", str(stopped_at + 2), "--resume")))
    resumed_steps = [record["step"] for record in metrics(tmp_path, "train")][-2:]
    assert resumed_steps == [stopped_at + 1, stopped_at + 2]
    assert checkpoint_state(tmp_path)["step"] == stopped_at + 2


@pytest.mark.slow
def test_a_run_with_two_workers_resumes(scene_data, tmp_path):
    """datasets restored each worker's saved position before splitting the shards between the workers: with two
    workers, --resume failed in a worker with an IndexError and the trainer hung."""
    command = [sys.executable, "-m", "train", *cli(scene_data, tmp_path, "--workers", "2", "--precise-bn-batches", "0")]
    for steps in ("3", "5"):
        run = subprocess.run([*command, "--steps", steps, "--resume"], cwd=ROOT, env=subprocess_env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
    assert "data stream restarts" not in run.stdout and "resumed from" in run.stdout
    assert [record["step"] for record in metrics(tmp_path, "train")] == [1, 2, 3, 4, 5]
    assert set(checkpoint_state(tmp_path)["data_streams"][0]) == {"0", "1"}


@pytest.mark.parametrize(("change", "workers"), [("a shard added", "0"), ("a shard removed", "2")])
def test_resume_after_the_datasets_files_changed_restarts_the_data_stream(scene_data, tmp_path, monkeypatch, capsys,
                                                                          change, workers):  # fmt: skip
    """The saved stream positions no longer fitted the files (a shard added or removed, a new compact copy in the same
    folder): the resumed run ended with datasets' IndexError or KeyError traceback."""
    dataset = shutil.copytree(scene_data, tmp_path / "scenes")
    output = tmp_path / "run"
    options = (*QUICK, "--workers", workers)
    assert run_main(monkeypatch, cli(dataset, output, *options, "--steps", "3", "--checkpoint-every", "3")) == 0
    last = sorted((dataset / "data").glob("train-*.parquet"))[-1]
    if change == "a shard added":
        shutil.copy(last, last.with_name("train-00002-of-00002.parquet"))
    else:
        last.unlink()
    capsys.readouterr()
    assert run_main(monkeypatch, cli(dataset, output, *options, "--steps", "5", "--resume")) == 0
    printed = capsys.readouterr().out
    assert "--resume: the datasets' files changed since the checkpoint, the data stream restarts" in printed
    assert [record["step"] for record in metrics(output, "train")] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "options",
    [
        ("--workers", "0", "--steps", "50", "--precise-bn-batches", "0"),
        ("--workers", "2", "--steps", "50", "--precise-bn-batches", "0"),  # in training
        ("--workers", "2", "--steps", "1"),  # in the BatchNorm re-estimation after it
        ("--workers", "2", "--rebalance", "0.5", "--precise-bn-batches", "0"),  # in the colour prior before it
    ],
)
def test_a_data_file_that_cannot_be_read_is_one_line_and_ends_the_run(scene_data, tmp_path, options):
    """With DataLoader workers, a worker's error left the other workers running (they ignore SIGTERM until the trainer
    has checkpointed): the trainer printed a traceback and then hung at exit, joining them."""
    damaged = tmp_path / "damaged"
    shutil.copytree(scene_data, damaged)
    shard = sorted((damaged / "data").glob("train-*.parquet"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    command = [sys.executable, "-m", "train", *cli(damaged, tmp_path / "run", *options)]
    run = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert f"error: {damaged}: a data file is empty, of other columns than the first, or could not be read (" in (
        run.stderr
    )


@pytest.mark.slow
def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path, tiny_model):
    optimizer = torch.optim.Adadelta(tiny_model.parameters())
    save_checkpoint(tmp_path, tiny_model, optimizer, torch.amp.GradScaler("cpu", enabled=False), {"step": 7})
    crash = f"""
import os, signal, torch
import train.checkpoint as checkpoint
from conftest import make_tiny_model
def torn_write(tensors, path, metadata):
    with open(path, "wb") as file:
        file.write(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_file = torn_write
model = make_tiny_model()
scaler = torch.amp.GradScaler("cpu", enabled=False)
checkpoint.save_checkpoint(checkpoint.Path({str(tmp_path)!r}), model, torch.optim.Adadelta(model.parameters()), scaler,
                           {{"step": 8}})
"""
    env = {**subprocess_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    result = subprocess.run([sys.executable, "-c", crash], env=env, cwd=ROOT)
    assert result.returncode == -signal.SIGKILL
    state = load_checkpoint(
        tmp_path / CHECKPOINT_NAME, tiny_model, optimizer, torch.amp.GradScaler("cpu", enabled=False)
    )
    assert state["step"] == 7


@pytest.mark.slow
def test_ddp_two_gloo_processes_train_and_rank_zero_writes(scene_data, tmp_path):
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train"),
        *cli(scene_data, tmp_path, "--steps", "3", "--val-every", "100", "--checkpoint-every", "2"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [record["step"] for record in metrics(tmp_path, "train")] == [1, 2, 3]
    assert len(metrics(tmp_path, "validation")) == 1
    streams = checkpoint_state(tmp_path)["data_streams"]
    assert len(streams) == 2  # each rank's own stream position, gathered by rank 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [CHECKPOINT_NAME, "final", "metrics.jsonl", "validation"]

    train(parse_args(cli(scene_data, tmp_path, "--steps", "5", "--val-every", "100", "--resume")))  # one process
    card = (tmp_path / "final" / "README.md").read_text()  # it counted 5 steps of 4 x 2: 40 images, not 32
    assert "32 images seen (5 steps of batch size x processes, steps 1-3: 4 x 2; steps 4-5: 4 x 1)" in card
    assert "(steps 4-5; changed: processes 2 -> 1)" in card


def empty_validation(dataset: Path, copy: Path) -> Path:
    shutil.copytree(dataset, copy)
    (validation,) = (copy / "data").glob("validation-*.parquet")
    pq.write_table(pq.read_table(validation).slice(0, 0), validation)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["upload", "validation data"])
def test_a_failure_of_rank_zero_alone_is_its_error_not_a_crash_of_the_others(scene_data, tmp_path, failure):
    """Rank 1, waiting in a collective or the last barrier, crashed with gloo's "Connection closed by peer", and
    torchrun named it as the run's failure."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train"),
        *cli(scene_data, tmp_path / "run", "--steps", "2", "--val-every", "100", *QUICK),
    ]
    env = {**subprocess_env(), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_test", "HF_HOME": str(tmp_path)}
    if failure == "upload":
        command += ["--push-to-hub", "letcolor/unreachable"]
        message = "error: could not upload"
    else:
        command[command.index(f"--dataset={scene_data}")] = f"--dataset={empty_validation(scene_data, tmp_path / 'd')}"
        message = "a data file is empty, of other columns than the first, or could not be read"
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-3000:]
    assert "Connection closed by peer" not in result.stderr
    assert "rank      : 0 (local_rank: 0)" in result.stderr.split("Root Cause")[1]


@pytest.mark.slow
def test_push_to_local_hub_and_load_back(tiny_model_dir, tmp_path):
    (tiny_model_dir / "README.md").write_text("---\nlibrary_name: letcolor\n---\n# test model\n")
    round_trip = f"""
import torch
from letcolor.model import LetThereBeColor
from train.hub import push_to_hub
push_to_hub({str(tiny_model_dir)!r}, "letcolor/tiny")
loaded = LetThereBeColor.from_pretrained("letcolor/tiny")
expected = LetThereBeColor.from_pretrained({str(tiny_model_dir)!r})
assert loaded.class_names == expected.class_names
assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.state_dict().items())
"""
    with FakeHub() as hub:
        env = {**subprocess_env(), "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_test", "HF_HOME": str(tmp_path)}
        env["HF_HUB_DISABLE_XET"] = "1"
        result = subprocess.run([sys.executable, "-c", round_trip], env=env, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(hub.state.repos["letcolor/tiny"]) == ["README.md", "config.json", "model.safetensors"]
        assert hub.state.lfs_commits == ["model.safetensors"]  # the weights took the LFS path, as on the Hub


@pytest.mark.slow
def test_a_failed_push_says_so_and_resume_uploads_the_saved_model(scene_data, tmp_path):
    """The push at the end of a run failed with a traceback, and --resume then said "nothing left to do" and exited 0
    without uploading."""
    command = [sys.executable, "-m", "train", *cli(scene_data, tmp_path / "run", "--steps", "2")]
    command += ["--push-to-hub", "letcolor/run"]
    env = {**subprocess_env(), "HF_TOKEN": "hf_test", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    unreachable = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run(command, env=unreachable, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "could not upload" in result.stderr and "--resume uploads it" in result.stderr
    assert (tmp_path / "run" / "final" / WEIGHTS_NAME).is_file()
    with FakeHub() as hub:
        again = {**env, "HF_ENDPOINT": hub.endpoint}
        result = subprocess.run([*command, "--resume"], env=again, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(hub.state.repos["letcolor/run"]) == ["README.md", "config.json", "model.safetensors"]


def test_a_bad_hub_repo_id_is_refused_before_training(scene_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:  # it failed after the whole run, with a traceback
        parse_args(cli(scene_data, tmp_path / "run", "--push-to-hub", "me/not valid!"))
    assert exit_status.value.code == 2 and "--push-to-hub: Repo id must use alphanumeric" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bench_prints_the_table(scene_data):
    command = [sys.executable, "-m", "train.bench", "--dataset", str(scene_data), "--width", "0.125"]
    command += ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--workers", "0"]
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("data pipeline alone", "model alone (synthetic)", "end to end"):
        assert row in result.stdout


def test_rarity_weights_rare_colours_more_than_common_ones():
    photos = [Image.open(EXAMPLES / name).convert("RGB").resize((128, 128)) for name in ("coffee.png", "chelsea.png")]
    rgb = torch.stack([torch.tensor(np.asarray(photo)).permute(2, 0, 1) for photo in photos]).float() / 255
    _, _, target = lab_batch(rgb)
    histogram = ab_histogram(target)
    assert histogram.sum() == target[:, 0].numel()
    rarity = ColourRarity(histogram, mix=0.5)
    weights = rarity(target)
    assert weights.shape == (2, 1, 64, 64)
    chroma = (target - 0.5).square().sum(1, keepdim=True).sqrt() * 2 * AB_RANGE  # Lab units
    assert weights[chroma > 40].mean() > 1.3 * weights[chroma < 5].mean()
    assert weights.mean().item() == pytest.approx(1.0, rel=0.2)  # 1 over the (smoothed) prior's own pixels
    assert torch.allclose(ColourRarity(histogram, mix=1.0)(target), torch.ones_like(weights))  # mix 1: plain MSE

    faded = 0.5 + 0.5 * (target - 0.5)
    labels, logits = torch.tensor([-1, -1]), torch.zeros(2, 3)
    plain, mse, _ = colorization_losses(faded, target, logits, labels, alpha=0.0)
    weighted, weighted_mse, _ = colorization_losses(faded, target, logits, labels, alpha=0.0, rarity=rarity)
    assert weighted_mse == mse  # the reported MSE stays unweighted
    assert weighted.item() == pytest.approx((weights * (faded - target).square()).mean().item(), rel=1e-5)


def test_datasets_mix_with_merged_label_names(scene_data, everyday_data, tmp_path):
    trainer = Trainer(
        parse_args(cli([scene_data, everyday_data], tmp_path, "--dataset-weights", "3", "1")), Distributed()
    )
    scene_names = source_class_names(Source(str(scene_data)), "train")
    everyday_names = source_class_names(Source(str(everyday_data)), "train")
    assert "kitchen" in scene_names and "kitchen" in everyday_names
    names = trainer.model.class_names
    assert names == scene_names + [name for name in everyday_names if name != "kitchen"]
    scenes_source, everyday_source = trainer.train_spec.sources
    assert [scenes_source.weight, everyday_source.weight] == [3, 1]

    # Each dataset's labels arrive as the model's classes of the same names (unlabelled rows stay -1).
    for source, own_names in ((scenes_source, scene_names), (everyday_source, everyday_names)):
        rows = list(open_stream(trainer.train_spec, source))
        original = [own_names[row["label"]] if row["label"] >= 0 else None for row in rows]
        assert [names[model_label(row, source)] if row["label"] >= 0 else None for row in rows] == original
        assert [model_label(row, source) for row in rows if row["label"] < 0] == [-1] * original.count(None)
    batches = TrainBatches(trainer.train_spec, batch_size=8)
    mixed = torch.cat([batch.labels for batch in itertools.islice(batches, 6)]).tolist()
    from_everyday = sum(label >= len(scene_names) for label in mixed)
    assert 0 < from_everyday < len(mixed) / 2  # weights 3:1


def test_a_dataset_without_labels_trains_colour_only(scene_data, everyday_data, tmp_path):
    trainer = Trainer(parse_args(cli([scene_data, everyday_data], tmp_path, "--label-column", "")), Distributed())
    assert trainer.model.class_names == [] and trainer.model.num_classes == 1
    labels = torch.cat([batch.labels for batch in itertools.islice(TrainBatches(trainer.train_spec, 8), 4)])
    assert set(labels.tolist()) == {-1}


def test_the_cards_hints_line_names_the_hint_layers_that_the_run_has(scene_data, tmp_path):
    """It named the hint convolution even for a run without one (--no-hint-conv)."""
    args = parse_args(cli(scene_data, tmp_path, "--hints", "5", "--hint-propagation", "--no-hint-conv"))
    assert hints_line(args).endswith("none on 25% of images, the hint propagation at 1x the learning rate")
    args = parse_args(cli(scene_data, tmp_path, "--hints", "5", "--hint-propagation"))
    assert "the hint convolution and propagation at 1x" in hints_line(args)
    assert hints_line(parse_args(cli(scene_data, tmp_path))) == "no colour hints"


def test_a_label_that_its_classlabel_does_not_name_is_no_label():
    """Label 99 of a ClassLabel of 2 names crashed the run mid-way with an IndexError (exit 1: "diverged")."""
    source = Source("x", class_ids=[0, 1])
    assert [model_label({"label": label}, source) for label in (0, 1, 2, 99, -1, None)] == [0, 1, -1, -1, -1, -1]


def test_a_thin_strip_is_cut_to_a_bounded_shape_before_it_is_resized(monkeypatch):
    """A 2x4000 strip was resized whole to 256x512000 (0.5 GB, 6.5 s) for one 224 crop."""
    resized = []
    resize = data.resize_shorter_side
    monkeypatch.setattr(
        data, "resize_shorter_side", lambda image, side: resized.append(image.size) or resize(image, side)
    )
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 256, (4000, 2, 3), dtype=np.uint8))
    for image in (strip, strip.transpose(Image.Transpose.TRANSPOSE)):
        assert data.random_crop(image, random.Random(0)).size == data.center_crop(image).size == (224, 224)
    assert resized and all(max(size) <= data.MAX_ASPECT * min(size) for size in resized)


def test_a_folder_of_images_trains_as_datasets_reads_it(tmp_path):
    """Rows of a folder of images name their files (no bytes): every photo was skipped as an "empty image"."""
    for split, count in (("train", 4), ("validation", 2)):
        for number, name in enumerate(["coffee.png", "chelsea.png", "astronaut.png", "coffee.png"][:count]):
            kind = ("cats", "mugs")[number % 2]
            (tmp_path / "folder" / split / kind).mkdir(parents=True, exist_ok=True)
            Image.open(EXAMPLES / name).convert("RGB").resize((96, 64)).save(
                tmp_path / "folder" / split / kind / f"{number}.jpg"
            )
    quick = ("--steps", "1", "--precise-bn-batches", "0", "--workers", "0", "--val-images", "2")
    train(parse_args(cli(tmp_path / "folder", tmp_path / "run", *quick)))
    assert metrics(tmp_path / "run", "validation")[-1]["images"] == 2
    assert LetThereBeColor.from_pretrained(tmp_path / "run" / "final").class_names == ["cats", "mugs"]


@pytest.mark.slow
def test_mixed_run_validates_each_dataset_and_resumes(scene_data, everyday_data, tmp_path):
    datasets = [scene_data, everyday_data]
    options = ("--steps", "3", "--val-every", "2", "--precise-bn-batches", "1")
    options += ("--rebalance", "0.5", "--psnr-weighting", "--spread-weight", "0.5")
    train(parse_args(cli(datasets, tmp_path, *options, "--prior-images", "8")))
    validation = metrics(tmp_path, "validation")
    assert [record["step"] for record in validation] == [2, 3]
    per_dataset = validation[-1]["datasets"]
    assert list(per_dataset) == [scene_data.name, everyday_data.name]
    assert all(per_dataset[name]["images"] == 8 and per_dataset[name]["psnr"] > 10 for name in per_dataset)
    assert validation[-1]["psnr"] == pytest.approx(
        (per_dataset[scene_data.name]["psnr"] + per_dataset[everyday_data.name]["psnr"]) / 2
    )
    with Image.open(tmp_path / "validation" / "step-0000003.png") as grid:
        assert grid.size == (3 * 224, 16 * 224)  # 8 rows of each dataset
    card = (tmp_path / "final" / "README.md").read_text()
    assert f"| metric | {scene_data.name} | {everyday_data.name} | mean |" in card
    assert (
        "(weight 1)" in card
        and "rarity rebalancing mix 0.5" in card
        and f"per-image PSNR weighting on, floor {DEFAULT_PSNR_FLOOR:g} Lab units" in card
    )
    assert "photos with chroma std under 3.0 skipped" in card
    assert "colour spread weight 0.5" in card

    stream_state = checkpoint_state(tmp_path)["data_streams"][0]["0"]
    assert stream_state["drawn"] >= 3 * 4 and len(stream_state["sources"]) == 2
    train(parse_args(cli(datasets, tmp_path, *options, "--prior-images", "8", "--steps", "5", "--resume")))
    assert [record["step"] for record in metrics(tmp_path, "train")][-2:] == [4, 5]
    state = checkpoint_state(tmp_path)
    assert state["step"] == 5 and state["data_streams"][0]["0"] != stream_state  # the mixed stream moved on from there


@pytest.mark.slow
def test_init_from_a_model_of_the_first_dataset_keeps_its_classes(scene_data, everyday_data, tmp_path):
    quick = ("--steps", "1", "--val-images", "4", "--precise-bn-batches", "0")
    train(parse_args(cli(scene_data, tmp_path / "scenes", *quick)))
    saved = LetThereBeColor.from_pretrained(tmp_path / "scenes" / "final")
    still = ("--init-from", str(tmp_path / "scenes" / "final"), "--optimizer", "adamw", "--lr", "0")
    train(parse_args(cli([scene_data, everyday_data], tmp_path / "mix", *quick, *still)))
    mixed = LetThereBeColor.from_pretrained(tmp_path / "mix" / "final")
    assert mixed.class_names[: saved.num_classes] == saved.class_names and mixed.num_classes > saved.num_classes
    old, new = saved.global_level.classifier[-1], mixed.global_level.classifier[-1]
    assert torch.equal(new.weight[: saved.num_classes], old.weight)
    assert torch.equal(new.bias[: saved.num_classes], old.bias)
    assert torch.equal(mixed.fusion.conv.weight, saved.fusion.conv.weight)
    with pytest.raises(ValueError, match="first ones"):
        swapped = ("--init-from", str(tmp_path / "mix" / "final"))
        train(parse_args(cli([everyday_data, scene_data], tmp_path / "swapped", *quick, *swapped)))


def start_training(dataset: Path, output: Path, *extra: str, stdout=None) -> subprocess.Popen:
    command = [sys.executable, "-m", "train", *cli(dataset, output, *extra)]
    return subprocess.Popen(
        command, cwd=ROOT, env=subprocess_env(), stdout=stdout, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for_train_rows(process: subprocess.Popen, output: Path, rows: int) -> None:
    deadline = time.monotonic() + 120
    while not (output / "metrics.jsonl").exists() or len(metrics(output, "train")) < rows:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)


@pytest.mark.slow
def test_resume_after_a_kill_drops_the_rows_of_the_redone_steps(scene_data, tmp_path):
    process = start_training(scene_data, tmp_path, "--steps", "1000", "--checkpoint-every", "5")
    wait_for_train_rows(process, tmp_path, 6)
    # Killed between checkpoints (steps 5 and 10; four steps of slack for a slow machine): the last one is older.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    saved_step = checkpoint_state(tmp_path)["step"]
    logged = [record["step"] for record in metrics(tmp_path, "train")]
    assert max(logged) > saved_step  # steps past the checkpoint were logged, and will be redone

    train(
        parse_args(cli(scene_data, tmp_path, "--steps", str(max(logged) + 1), "--resume", "--precise-bn-batches", "0"))
    )
    steps = [record["step"] for record in metrics(tmp_path, "train")]
    assert steps == list(range(1, max(logged) + 2))


@pytest.mark.slow
def test_sigterm_during_precise_bn_stops_promptly_with_a_checkpoint(scene_data, tmp_path):
    with open(tmp_path / "log.txt", "w") as log:
        process = start_training(scene_data, tmp_path, "--steps", "2", "--precise-bn-batches", "100000", stdout=log)
        wait_for_train_rows(process, tmp_path, 2)
        time.sleep(3)  # into PreciseBN, which would take hours
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert checkpoint_state(tmp_path)["step"] == 2
    assert not (tmp_path / "final").exists()
    log = (tmp_path / "log.txt").read_text()
    assert "BatchNorm re-estimation interrupted after" in log and "of 100000 batches" in log
    assert "re-estimated over" not in log


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "other width"])
def test_resume_from_a_checkpoint_that_does_not_fit_is_one_clear_error(scene_data, tmp_path, damage):
    quick = ("--steps", "1", "--val-images", "4", "--precise-bn-batches", "0")
    train(parse_args(cli(scene_data, tmp_path, *quick)))
    checkpoint = tmp_path / CHECKPOINT_NAME
    width = ("--width", "0.25") if damage == "other width" else ()
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    command = [sys.executable, "-m", "train", *cli(scene_data, tmp_path, *quick, "--steps", "2", "--resume", *width)]
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "cannot resume from" in error_lines[0] and "Traceback" not in result.stderr


def test_weight_average_follows_the_network_at_its_decay():
    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(network, decay=0.99)
    start = copy_of(network)
    with torch.no_grad():
        for tensor in (network[0].weight, network[0].bias, network[1].running_mean):
            tensor.add_(1.0)
    average.update(network)  # the first update's decay is 0.1: the average moves 0.9 of the way
    averaged = average.model.state_dict()
    assert torch.allclose(averaged["0.weight"], start["0.weight"] + 0.9)
    assert torch.allclose(averaged["1.running_mean"], start["1.running_mean"] + 0.9)
    assert torch.equal(averaged["1.running_var"], start["1.running_var"])
    assert not averaged["0.weight"].requires_grad
    for _ in range(2000):
        average.update(network)
    assert average.current_decay() == 0.99
    assert torch.allclose(average.model[0].weight, network[0].weight)


def copy_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def checkpoint_tensors(output: Path, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(str(output / CHECKPOINT_NAME), framework="pt") as file:
        return {key[len(prefix) :]: file.get_tensor(key) for key in file.keys() if key.startswith(prefix)}


def test_resume_restores_the_weights_optimizer_state_and_data_position_exactly(scene_data, tmp_path):
    """What a resumed Trainer holds is what the stopped run saved: weights, optimizer state (Adadelta's running
    averages), step and each worker's stream position (a restore that skipped the weights or the optimizer state used
    to pass every test)."""
    options = ("--precise-bn-batches", "0", "--val-every", "100")
    train(parse_args(cli(scene_data, tmp_path, "--steps", "3", *options)))
    saved_model, saved_optimizer = checkpoint_tensors(tmp_path, "model/"), checkpoint_tensors(tmp_path, "optimizer/")
    fresh = Trainer(parse_args(cli(scene_data, tmp_path, "--steps", "5", "--resume", *options)), Distributed())
    untrained = fresh.model.state_dict()
    assert not all(torch.equal(untrained[key], saved_model[key]) for key in saved_model)
    fresh.resume()
    restored = fresh.model.state_dict()
    assert saved_model.keys() == restored.keys()
    assert all(torch.equal(restored[key], saved_model[key]) for key in saved_model)
    state = fresh.optimizer.state_dict()["state"]
    restored_optimizer = {f"{index}/{name}": value for index, values in state.items() for name, value in values.items()}
    assert saved_optimizer.keys() == restored_optimizer.keys() and saved_optimizer
    assert all(torch.equal(restored_optimizer[key], saved_optimizer[key]) for key in saved_optimizer)
    saved_state = checkpoint_state(tmp_path)
    assert fresh.step == saved_state["step"] == 3
    assert fresh.worker_states == {int(worker): position for worker, position in saved_state["data_streams"][0].items()}


@pytest.mark.slow
def test_a_resumed_run_counts_the_photos_it_skipped_before(scene_data, tmp_path):
    """metrics.jsonl's skipped counts started again at 0 after --resume: a resumed run logs what an uninterrupted one
    does."""
    options = ("--precise-bn-batches", "0", "--val-every", "100", "--min-chroma-std", "8")

    def skipped_by_step(output: Path) -> list[tuple[int, int]]:
        return [(record["step"], record.get("skipped_low_colour", 0)) for record in metrics(output, "train")]

    train(parse_args(cli(scene_data, tmp_path / "whole", "--steps", "6", *options)))
    for steps in ("3", "6"):
        train(parse_args(cli(scene_data, tmp_path / "resumed", "--steps", steps, "--resume", *options)))
    whole = skipped_by_step(tmp_path / "whole")
    assert whole[2][1] > 0 and whole[-1][1] > whole[2][1]  # photos skipped before and after the resume
    assert skipped_by_step(tmp_path / "resumed") == whole


@pytest.mark.slow
def test_ema_validates_saves_and_resumes_the_weight_average(scene_data, tmp_path):
    options = ("--ema", "0.9", "--precise-bn-batches", "0", "--val-every", "100")
    train(parse_args(cli(scene_data, tmp_path, "--steps", "2", *options)))
    average = checkpoint_tensors(tmp_path, "average/")
    last_step = checkpoint_tensors(tmp_path, "model/")
    saved = LetThereBeColor.from_pretrained(tmp_path / "final").state_dict()
    assert all(torch.equal(saved[key], average[key]) for key in saved)
    assert not torch.equal(average["fusion.conv.weight"], last_step["fusion.conv.weight"])
    assert "exponential moving average, decay 0.9" in (tmp_path / "final" / "README.md").read_text()
    validated = metrics(tmp_path, "validation")[-1]["psnr"]

    rows = (tmp_path / "metrics.jsonl").read_text()
    train(parse_args(cli(scene_data, tmp_path, "--steps", "2", "--resume", *options)))  # nothing left to train
    assert (tmp_path / "metrics.jsonl").read_text() == rows  # no second validation row for the same weights
    assert metrics(tmp_path, "validation")[-1]["psnr"] == validated
    restored = checkpoint_tensors(tmp_path, "average/")
    assert all(torch.equal(restored[key], average[key]) for key in average)
    train(parse_args(cli(scene_data, tmp_path, "--steps", "3", "--resume", *options)))
    assert checkpoint_state(tmp_path)["average_updates"] == 3
    moved_on = checkpoint_tensors(tmp_path, "average/")["fusion.conv.weight"]
    assert not torch.equal(moved_on, average["fusion.conv.weight"])


def test_psnr_weighting_follows_the_mean_per_photo_psnr():
    names = ("coffee.png", "china_gray.png")
    photos = [Image.open(EXAMPLES / name).convert("RGB").resize((128, 128)) for name in names]
    rgb = torch.stack([torch.tensor(np.asarray(photo)).permute(2, 0, 1) for photo in photos]).float() / 255
    _, _, target = lab_batch(rgb)
    # the everyday training set's mean ab, a uniform tint
    sepia = torch.tensor([7.0, 9.0]).view(1, 2, 1, 1) / (2 * AB_RANGE) + 0.5
    prediction = (0.5 * target + 0.5 * sepia).requires_grad_()
    labels, logits = torch.tensor([-1, -1]), torch.zeros(2, 3)

    def mean_psnr(ab: torch.Tensor) -> float:
        return (-10 * (ab - target).square().mean((1, 2, 3)).log10()).mean().item()

    def step(loss: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(loss, prediction)
        return prediction.detach() - 0.5 * grad / grad.norm()  # the same small step along each loss's gradient

    plain, mse, _ = colorization_losses(prediction, target, logits, labels, alpha=0.0)
    weighted, weighted_mse, _ = colorization_losses(prediction, target, logits, labels, 0.0, psnr_floor=2.0)
    assert weighted_mse == mse  # the reported MSE stays unweighted
    weights = psnr_image_weights((prediction - target).square(), 2.0)
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[1] > 3 * weights[0]  # the gray photo's error is the smaller

    log_error = (prediction - target).square().mean((1, 2, 3)).add((2.0 / (2 * AB_RANGE)) ** 2).log().sum()
    gradients = [
        torch.autograd.grad(loss, prediction, retain_graph=True)[0].flatten() for loss in (weighted, log_error)
    ]
    assert torch.cosine_similarity(*gradients, dim=0).item() == pytest.approx(1.0, abs=1e-5)
    before = mean_psnr(prediction.detach())
    assert mean_psnr(step(weighted)) - before > 1.5 * (mean_psnr(step(plain)) - before) > 0


def test_min_chroma_std_skips_gray_photos_or_keeps_every_photo(scenes_dataset, tmp_path):
    gray_rows = (0, 5, 9)
    dataset = make_scene_dataset(scenes_dataset, tmp_path / "data", gray_validation_rows=gray_rows)
    images, _, skipped = validation_images(StreamSpec([Source(str(dataset))], "validation"), VALIDATION_ROWS)
    assert len(images) == VALIDATION_ROWS - len(gray_rows) and skipped == {"low_colour": len(gray_rows)}

    trainer = Trainer(parse_args(cli(dataset, tmp_path / "run", "--min-chroma-std", "0")), Distributed())
    assert trainer.train_spec.min_chroma_std == 0
    kept, _, skipped = validation_images(replace(trainer.train_spec, split="validation"), VALIDATION_ROWS)
    assert len(kept) == VALIDATION_ROWS and skipped == {}
    chroma = kept.float()[list(gray_rows)]
    assert (chroma.amax(1) - chroma.amin(1)).max() <= 2  # they are the gray photos: R = G = B up to JPEG rounding


def test_spread_term_rewards_varied_colour_not_a_uniform_tint():
    photo = Image.open(EXAMPLES / "coffee.png").convert("RGB").resize((128, 96))
    rgb = torch.tensor(np.asarray(photo)).permute(2, 0, 1)[None].float() / 255
    _, _, target = lab_batch(rgb)
    faded = (0.5 + 0.5 * (target - 0.5)).requires_grad_()
    logits, labels = torch.zeros(1, 3), torch.tensor([-1])
    plain, _, _ = colorization_losses(faded, target, logits, labels, alpha=0.0)
    total, _, _ = colorization_losses(faded, target, logits, labels, alpha=0.0, spread_weight=1.0)
    gap = (colour_spread(faded) - colour_spread(target)).square().sum()
    assert total.item() == pytest.approx(plain.item() + gap.item(), rel=1e-4)

    (grad,) = torch.autograd.grad(total - plain, faded)
    stepped = faded.detach() - 0.1 * grad / grad.abs().max()
    assert (colour_spread(stepped) > colour_spread(faded.detach())).all()
    assert torch.allclose(stepped.mean((2, 3)), faded.detach().mean((2, 3)), atol=1e-6)  # no tint: the mean stays

    warm = faded.detach() + torch.tensor([3.0, 9.0]).view(1, 2, 1, 1) / (2 * AB_RANGE)  # a uniform sepia cast
    assert torch.allclose(colour_spread(warm), colour_spread(faded.detach()), atol=1e-6)
    assert mean_chroma(warm) > mean_chroma(faded.detach())  # which the chroma term, unlike this one, rewards


def compact(source: Path, destination: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "train.compact", str(source), str(destination), "--processes", "1", *options]
    return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True)


def test_compact_copy_reencodes_train_photos_and_keeps_labels_and_validation(everyday_data, tmp_path):
    copy, options = tmp_path / "compact", ("--side", "64", "--quality", "60", "--shards", "3", "--val-rows", "5")
    assert compact(everyday_data, copy, *options).returncode == 0

    def rows(dataset: Path, split: str) -> list[dict]:
        files = sorted((dataset / "data").glob(f"{split}-*.parquet"))
        return [row for path in files for row in pq.read_table(path).to_pylist()]

    original, copied = rows(everyday_data, "train"), rows(copy, "train")
    assert len(list((copy / "data").glob("train-*.parquet"))) == 3
    assert [{**row, "image": None} for row in copied] == [{**row, "image": None} for row in original]
    chroma_errors = []
    for before, after in zip(original, copied, strict=True):
        with Image.open(io.BytesIO(after["image"]["bytes"])) as small:
            assert small.format == "WEBP" and min(small.size) == 64
            small = np.asarray(small.convert("YCbCr"), dtype=np.float32)
        with Image.open(io.BytesIO(before["image"]["bytes"])) as photo:
            assert small.shape[1] / small.shape[0] == pytest.approx(photo.width / photo.height, abs=0.05)
            expected = photo.convert("RGB").resize(small.shape[1::-1], Image.Resampling.LANCZOS).convert("YCbCr")
        error = np.abs(small - np.asarray(expected, dtype=np.float32))
        assert error.mean() < 5
        chroma_errors.append(error[..., 1:].mean())
    assert np.mean(chroma_errors) < 3  # colours kept: a gray copy of these photos is off by about 13
    assert rows(copy, "validation") == rows(everyday_data, "validation")[:5]  # unchanged, the same photos first
    assert source_class_names(Source(str(copy)), "train") == source_class_names(Source(str(everyday_data)), "train")

    again = compact(everyday_data, copy, *options)
    assert again.returncode != 0 and "exists" in again.stderr


def test_a_compact_copy_validates_on_the_same_photos_as_its_original(scenes_dataset, tmp_path):
    """It kept the first --val-rows rows: validation skips a gray photo, so the copy validated on 7 photos where the
    original took 8 (250 of 256 on letcolor-everyday)."""
    data, copy = make_scene_dataset(scenes_dataset, tmp_path / "data", gray_validation_rows=(2,)), tmp_path / "compact"
    assert compact(data, copy, "--side", "64", "--train-rows", "8", "--val-rows", "8").returncode == 0
    original, copied = (validation_images(StreamSpec([Source(str(each))], "validation"), 8) for each in (data, copy))
    assert len(copied[0]) == 8 and torch.equal(copied[0], original[0]) and copied[2] == original[2] == {"low_colour": 1}


def test_a_validation_split_without_rows_is_one_clear_error(scene_data, tmp_path, monkeypatch, capsys):
    """pyarrow's ArrowInvalid ("BatchSize must be greater than 0") and a traceback."""
    empty = empty_validation(scene_data, tmp_path / "empty")
    assert run_main(monkeypatch, cli(empty, tmp_path / "run", *QUICK, "--steps", "1")) == 2
    assert "a data file is empty, of other columns than the first, or could not be read" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["unreachable hub", "no data files", "shards of other columns"])
def test_data_that_cannot_be_read_is_one_line_and_exit_2(scene_data, tmp_path, case):
    """A Hub dataset that cannot be reached (the default one, offline) and a folder of no data files were tracebacks;
    train shards of other columns, a traceback, or one mid-run from a DataLoader worker (then 300 characters of
    datasets' message, which never came to the columns that differ)."""
    env = {**subprocess_env(), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    dataset, message = tmp_path / "data", "a data file is empty, of other columns than the first, or could not be read"
    if case == "unreachable hub":
        dataset, message = "nosuchuser/nosuchdata", "nosuchuser/nosuchdata, split 'train': cannot be read ("
    elif case == "no data files":
        dataset.mkdir()
        (dataset / "notes.txt").write_text("no photos here")
        message = "no columns can be read from its files"
    else:
        shutil.copytree(scene_data, dataset)
        shard = sorted((dataset / "data").glob("train-*.parquet"))[-1]
        pq.write_table(pq.read_table(shard).rename_columns({"image": "img"}), shard)
        message = "a data file has other columns than the first: there are 1 new columns ({'img'}) and 1 missing"
    command = [sys.executable, "-m", "train", *cli(dataset, tmp_path / "run", *QUICK, "--steps", "20")]
    if case == "unreachable hub":  # huggingface_hub's five retries, without their 23 s of waiting
        command[1:3] = ["-c", "import time, runpy; time.sleep = lambda _: None; runpy.run_module('train', "
                        "run_name='__main__', alter_sys=True)"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert message in run.stderr


def test_a_split_with_no_usable_photo_says_why_each_was_skipped(scene_data, tmp_path, monkeypatch, capsys):
    """It said "skipped: none" where every photo was skipped: the counts came with batches, and none was made."""
    gray = shutil.copytree(scene_data, tmp_path / "gray")
    shards = sorted((gray / "data").glob("train-*.parquet"))
    for shard in shards:
        table = pq.read_table(shard)
        pq.write_table(desaturate_images(table, list(range(table.num_rows))), shard)
    rows = sum(pq.read_metadata(shard).num_rows for shard in shards)
    assert run_main(monkeypatch, cli(gray, tmp_path / "run", *QUICK, "--steps", "2")) == 2
    error = capsys.readouterr().err
    assert f"no usable photo in --split 'train' of {gray} (skipped: {{'low_colour': {rows}}})" in error


def test_training_reads_a_photo_as_letcolor_does_upright_and_in_srgb(examples_dir):
    """Training took an Adobe RGB photo's values as sRGB and a photo as stored, not turned by its EXIF orientation,
    where evaluation (and colorizing) apply both: the model learnt colours that it is not scored on."""
    adobe = ImageCms.getOpenProfile(str(ROOT / "tests" / "data" / "compatibleWithAdobeRGB1998.icc"))
    photo = Image.open(examples_dir / "chelsea.png").convert("RGB")
    stored = ImageCms.profileToProfile(photo, ImageCms.createProfile("sRGB"), adobe, outputMode="RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    encoded = io.BytesIO()
    stored.save(encoded, "PNG", icc_profile=adobe.tobytes(), exif=exif)
    read = np.asarray(data.decode_image({"bytes": encoded.getvalue(), "path": None})).astype(int)
    assert read.shape == (photo.width, photo.height, 3)  # a quarter turn
    assert np.abs(read - np.asarray(photo.transpose(Image.Transpose.ROTATE_270))).mean() < 1.5
    assert np.abs(np.asarray(stored).astype(int) - np.asarray(photo)).mean() > 3  # what it read before


@pytest.mark.parametrize("damage", DAMAGED_EXIF)
@pytest.mark.parametrize("form", ["PNG", "WEBP"])
def test_a_photo_whose_exif_is_damaged_is_trained_on_as_stored(examples_dir, damage, form):
    """Pillow's struct.error or AttributeError for a PNG's or WebP's damaged EXIF block ended a training run (and a
    compact copy) with a traceback; letcolor colorizes such a photo as stored."""
    photo = Image.open(examples_dir / "chelsea.png").convert("RGB")
    plain, damaged = io.BytesIO(), io.BytesIO()
    photo.save(plain, form, lossless=True)
    if form == "PNG":
        damaged.write(png_with_exif(plain.getvalue(), DAMAGED_EXIF[damage]))
    else:
        photo.save(damaged, form, lossless=True, exif=DAMAGED_EXIF[damage])
    read = data.decode_image({"bytes": damaged.getvalue(), "path": None})
    np.testing.assert_array_equal(np.asarray(read), np.asarray(photo))


def test_a_worker_without_usable_photos_gives_no_batch_only_its_counts(scene_data, tmp_path):
    """A worker whose stream ended (no usable photo) sends a batch of none, which carries its counts of skipped
    photos: the colour prior divided by zero on it, the BatchNorm re-estimation counted it as photos."""
    gray = shutil.copytree(scene_data, tmp_path / "gray")
    shards = sorted((gray / "data").glob("train-*.parquet"))
    for shard in shards:
        table = pq.read_table(shard)
        pq.write_table(desaturate_images(table, list(range(table.num_rows))), shard)
    skipped, loader = {}, data.train_loader(StreamSpec([Source(str(gray))], "train"), 4, 0, False)
    with data.loading(loader, skipped) as batches:
        assert list(batches) == []
    assert skipped == {0: {"low_colour": sum(pq.read_metadata(shard).num_rows for shard in shards)}}


def test_workers_train_every_step_when_some_shards_hold_no_usable_photo(scenes_dataset, tmp_path):
    """`datasets` deals the shards to the DataLoader workers anew each epoch: a worker whose epoch had only the gray
    and the broken shard ended for good, and the run stopped at step 8 of 20 with exit 0 (a later --resume: "no
    usable photo")."""
    data = make_scene_dataset(scenes_dataset, tmp_path / "data", shards=3, rows_per_shard=8)
    gray, broken = sorted((data / "data").glob("train-*.parquet"))[1:]
    pq.write_table(desaturate_images(pq.read_table(gray), list(range(8))), gray)
    pq.write_table(corrupt_images(pq.read_table(broken), list(range(8))), broken)
    options = (
        "--batch-size",
        "2",
        "--workers",
        "3",
        "--steps",
        "20",
        "--precise-bn-batches",
        "0",
        "--val-every",
        "100",
    )
    command = [sys.executable, "-m", "train", *cli(data, tmp_path / "run", *options)]
    run = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 20


def test_a_mixed_in_dataset_without_usable_photos_is_an_error_not_a_shorter_run(scene_data, tmp_path, monkeypatch,
                                                                               capsys):  # fmt: skip
    """The run stopped after a few steps, saved its model with exit 0 and named nothing."""
    gray = shutil.copytree(scene_data, tmp_path / "gray")
    for shard in sorted((gray / "data").glob("train-*.parquet")):
        table = pq.read_table(shard)
        pq.write_table(desaturate_images(table, list(range(table.num_rows))), shard)
    assert run_main(monkeypatch, cli([scene_data, gray], tmp_path / "run", *QUICK, "--steps", "50")) == 2
    assert "error: the photos ran out at step " in capsys.readouterr().err and not (tmp_path / "run" / "final").exists()


def test_compact_copy_keeps_a_panorama_longer_than_webp_holds():
    """A 100x20000 panorama (its shorter side under --side: not resized) failed the whole copy: WebP "encoding error
    5" (16383 px a side at most)."""
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 20000, 3), dtype=np.uint8)).save(png, "PNG")
    with Image.open(io.BytesIO(reencoded({"bytes": png.getvalue(), "path": None}, side=160, quality=65))) as copy:
        assert copy.size == (400, 100)  # cut to the 4:1 that training takes


def test_compact_copy_of_a_large_jpeg_keeps_the_side_asked_for():
    """Read as training reads it (a JPEG decoded at a reduced scale, for 256 px), a 2000x1500 photo copied at --side
    600 came out 500x375."""
    jpeg = io.BytesIO()
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").resize((2000, 1500)).save(jpeg, "JPEG")
    with Image.open(io.BytesIO(reencoded({"bytes": jpeg.getvalue(), "path": None}, side=600, quality=65))) as copy:
        assert copy.size == (800, 600)


def test_compact_copy_leaves_out_undecodable_photos_and_writes_nothing_for_a_wrong_source(corrupt_scene_data, tmp_path):
    made = compact(corrupt_scene_data, tmp_path / "compact", "--side", "64", "--shards", "40")
    assert (
        made.returncode == 0
        and f"{len(CORRUPT_ROWS)} photos that could not be decoded or encoded left out" in made.stdout
    )
    shards = [pq.read_metadata(path).num_rows for path in (tmp_path / "compact" / "data").glob("train-*.parquet")]
    assert sum(shards) == 2 * 24 - len(CORRUPT_ROWS) and len(shards) == 40 and min(shards) >= 1  # none empty

    wrong = compact(tmp_path / "missing", tmp_path / "nothing")
    assert wrong.returncode != 0 and "no data/train-*.parquet" in wrong.stderr
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (("--shards", "0"), "--shards must be at least 1"),  # ZeroDivisionError after creating the folder
        (("--shards", "-2"), "--shards must be at least 1"),  # "succeeded" without a train split
        (("--quality", "101"), "--quality must be in 0..100"),
        (("--val-rows", "0"), "--val-rows must be at least 1"),  # a copy that training could not validate on
        (("--image-column", "nosuch"), "--image-column nosuch: not a column"),  # a pyarrow KeyError traceback
    ],
)
def test_compact_copy_bad_options_are_usage_errors_and_write_nothing(everyday_data, tmp_path, options, message):
    refused = compact(everyday_data, tmp_path / "compact", *options)
    assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "compact").exists()


def test_compact_copy_reads_what_training_reads(everyday_data, tmp_path):
    """Photos stored as files (cells of a path and no bytes), which training reads, were all left out ("none could
    be decoded"), and validation rows kept their paths (the copy, sent to another machine, had no validation photo
    there); a train file without the label column, which training takes, was pyarrow's traceback."""
    data = shutil.copytree(everyday_data, tmp_path / "data")
    first, second = sorted((data / "data").glob("train-*.parquet"))
    (validation,) = (data / "data").glob("validation-*.parquet")
    table = pq.read_table(first)
    for shard, name in ((first, "photo"), (validation, "validation")):
        part = pq.read_table(shard)
        paths = []
        for index, cell in enumerate(part.column("image").to_pylist()):
            paths.append(tmp_path / f"{name}{index}.webp")
            paths[-1].write_bytes(cell["bytes"])
        cells = pa.array([{"bytes": None, "path": str(path)} for path in paths], part.schema.field("image").type)
        pq.write_table(part.set_column(0, "image", cells), shard)
    pq.write_table(pq.read_table(second).drop_columns(["label"]), second)
    made = compact(data, tmp_path / "compact", "--side", "64", "--shards", "2", "--val-rows", "4")
    assert made.returncode == 0, made.stderr[-2000:]
    assert "0 photos that could not be decoded or encoded left out" in made.stdout
    copied = pa.concat_tables(pq.read_table(path) for path in sorted((tmp_path / "compact" / "data").glob("train-*")))
    assert copied.num_rows == table.num_rows + pq.read_metadata(second).num_rows
    assert copied.column("label").null_count == pq.read_metadata(second).num_rows
    assert all(cell["bytes"] and cell["path"] is None for cell in copied.column("image").to_pylist())
    (copied_validation,) = (tmp_path / "compact" / "data").glob("validation-*")
    for cell in pq.read_table(copied_validation).column("image").to_pylist():
        assert cell["bytes"] == Path(cell["path"]).read_bytes()


def test_compact_copy_of_files_it_cannot_read_is_one_line(everyday_data, tmp_path):
    """A file of 0 bytes, and a validation split whose image column is named otherwise: tracebacks."""
    data = shutil.copytree(everyday_data, tmp_path / "data")
    (validation,) = (data / "data").glob("validation-*.parquet")
    pq.write_table(pq.read_table(validation).rename_columns({"image": "photo"}), validation)
    renamed = compact(data, tmp_path / "renamed")
    assert renamed.returncode == 2 and "Traceback" not in renamed.stderr
    assert (
        "--image-column image: not a column of image cells" in renamed.stderr and "validation split" in renamed.stderr
    )
    sorted((data / "data").glob("train-*.parquet"))[-1].write_bytes(b"")
    empty = compact(data, tmp_path / "empty")
    assert empty.returncode == 1 and "its train files cannot be read as one table" in empty.stderr
    assert "Traceback" not in empty.stderr and not (tmp_path / "empty").exists() and not (tmp_path / "renamed").exists()


def propagating_from(directory: Path) -> LetThereBeColor:
    """The saved hint model with the hint propagation added at zero (what --init-from does)."""
    saved = LetThereBeColor.from_pretrained(directory)
    model = LetThereBeColor(saved.num_classes, saved.class_names, saved.width, 3, hint_propagation=True)
    model.load_state_dict(widened_weights(saved, model))
    return model.eval()


@pytest.mark.slow
def test_a_short_run_with_hints_trains_the_hint_inputs(scene_data, tmp_path):
    quick = ("--steps", "3", "--optimizer", "adamw", "--lr", "1e-2", "--precise-bn-batches", "2")
    train(parse_args(cli(scene_data, tmp_path / "run", *quick, "--hints", "5")))
    model = LetThereBeColor.from_pretrained(tmp_path / "run" / "final")
    assert model.hint_channels == 3 and model.low_level.hint_conv.weight.abs().sum() > 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validation = [line for line in lines if line["kind"] == "validation"][-1]
    assert validation["psnr_hints10"] != validation["psnr"]
    assert "simulated colour hints: 5 points" in (tmp_path / "run" / "final" / "README.md").read_text()
    train(parse_args(cli(scene_data, tmp_path / "plain", *quick, "--init-from", str(tmp_path / "run" / "final"))))
    assert LetThereBeColor.from_pretrained(tmp_path / "plain" / "final").hint_channels == 0  # its automatic network
    again = cli(scene_data, tmp_path / "propagation", *quick, "--hints", "5", "--hint-propagation")
    train(parse_args([*again, "--hint-layer-lr", "10", "--init-from", str(tmp_path / "run" / "final")]))
    propagating = LetThereBeColor.from_pretrained(tmp_path / "propagation" / "final")
    assert propagating.hint_propagation and propagating.colorization.propagation.scale > 0
    frozen = cli(scene_data, tmp_path / "frozen", *quick, "--hints", "5", "--hint-propagation", "--hint-layers-only")
    train(parse_args([*frozen, "--hint-layer-lr", "10", "--init-from", str(tmp_path / "run" / "final")]))
    started = propagating_from(tmp_path / "run" / "final")
    trained = LetThereBeColor.from_pretrained(tmp_path / "frozen" / "final")
    changed = [
        name for name, weight in trained.state_dict().items() if not torch.equal(weight, started.state_dict()[name])
    ]
    assert changed and all("hint_conv" in name or "propagation" in name for name in changed)
    l, vectors = torch.rand(2, 1, 64, 64), torch.rand(2, trained.null_global.shape[0])
    assert torch.equal(trained.colorize(l, vectors), started.colorize(l, vectors))  # without hints: as it was
    without_propagation = cli(scene_data, tmp_path / "hints", *quick, "--hints", "5")
    train(parse_args([*without_propagation, "--init-from", str(tmp_path / "propagation" / "final")]))
    assert not LetThereBeColor.from_pretrained(tmp_path / "hints" / "final").hint_propagation
    alone = cli(scene_data, tmp_path / "alone", *quick, "--hints", "5", "--hint-propagation", "--no-hint-conv")
    train(parse_args([*alone, "--hint-layers-only", "--init-from", str(tmp_path / "propagation" / "final")]))
    propagation_alone = LetThereBeColor.from_pretrained(tmp_path / "alone" / "final")
    assert propagation_alone.hint_channels == 0 and propagation_alone.takes_hints
    assert not torch.equal(
        propagation_alone.colorization.propagation.gates.weight, propagating.colorization.propagation.gates.weight
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--hint-free", "5"), "--hint-free, --hint-layer-lr and --no-hint-conv need --hints"),
        (("--hint-layer-lr", "10"), "need --hints"),
        (("--no-hint-conv",), "need --hints"),
        (("--hints", "3", "--hint-layers-only"), "--hint-layers-only needs --init-from"),
    ],
)
def test_hint_settings_that_would_be_ignored_or_train_a_random_network_are_usage_errors(
    scene_data, tmp_path, capsys, options, message
):
    """Each was accepted: settings for hints without --hints were ignored, and --hint-layers-only from scratch trained
    the hint layers on a random, frozen network."""
    with pytest.raises(SystemExit) as stopped:
        parse_args(cli(scene_data, tmp_path / "run", *options))
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_run_with_hints_that_nothing_reads_is_a_usage_error(scene_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(cli(scene_data, tmp_path / "run", "--hints", "5", "--no-hint-conv"))
    assert stopped.value.code == 2 and "--no-hint-conv needs --hint-propagation" in capsys.readouterr().err
    assert parse_args(cli(scene_data, tmp_path / "run", "--hints", "5", "--no-hint-conv", "--hint-propagation"))


@pytest.mark.parametrize(
    "option",
    [
        ("--batch-size", "0"),  # hung for ever
        ("--alpha", "1/0"),  # ZeroDivisionError
        ("--lr", "-1"),
        ("--lr", "inf"),
        ("--log-every", "0"),  # ZeroDivisionError at the first step
        ("--checkpoint-every", "0"),
        ("--val-images", "0"),  # read the whole validation split
        ("--workers", "-1"),
        ("--dataset-weights", "inf"),
        ("--global-dropout", "2"),  # accepted
        ("--hints", "nan"),  # accepted
        ("--chroma-weight", "nan"),  # diverged at the second step ("a lower --lr?")
        ("--spread-weight", "-1"),  # accepted
        ("--max-minutes", "0"),  # 0 and -1 trained a step; NaN was ignored
        ("--max-minutes", "nan"),
        ("--seed", "-1"),  # a numpy traceback
        ("--seed", str(2**32)),
        ("--hint-layer-lr", "nan"),  # diverged after the first steps
        ("--hint-layer-lr", "-1"),  # gradient ascent on the hint layers
        ("--psnr-weighting", "nan"),  # taken as off
        ("--min-chroma-std", "-5"),  # taken as 0
    ],
)
def test_settings_out_of_range_are_usage_errors(scene_data, tmp_path, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(cli(scene_data, tmp_path, *option))
    assert exit_info.value.code == 2 and option[0] in capsys.readouterr().err


def run_main(monkeypatch, argv: list[str]) -> int:
    from train.__main__ import main

    monkeypatch.setattr(sys, "argv", ["python -m train", *argv])
    return main()


def test_a_dataset_split_or_column_that_cannot_be_read_is_one_line_and_exit_2(scene_data, tmp_path, monkeypatch,
                                                                             capsys):  # fmt: skip
    """Each was a traceback (FileNotFoundError, ValueError) and exit 1."""
    quick = ("--steps", "1", "--precise-bn-batches", "0", "--workers", "0")
    for argv, message in [
        (cli(tmp_path / "missing", tmp_path / "a", *quick), "missing, split 'train': cannot be read"),
        (cli(scene_data, tmp_path / "b", *quick, "--split", "nope"), "split 'nope': cannot be read (Bad split"),
        (cli(scene_data, tmp_path / "c", *quick, "--val-split", "nope"), "split 'nope': cannot be read"),
        (cli(scene_data, tmp_path / "d", *quick, "--image-column", "nope"), "no column 'nope'"),
        (cli(scene_data, tmp_path / "e", *quick, "--label-column", "nope"), "'nope': no dataset has such a ClassLabel"),
        (cli(next(scene_data.glob("data/train-*")), tmp_path / "f", *quick), "a file; --dataset takes a folder"),
    ]:
        assert run_main(monkeypatch, argv) == 2
        errors = capsys.readouterr().err
        assert message in errors and "Traceback" not in errors and errors.count("\n") == 1
        assert not Path(argv[argv.index("--output") + 1]).exists()  # (a folder with an empty metrics.jsonl)


def test_a_new_run_into_a_finished_runs_folder_is_refused(scene_data, tmp_path, monkeypatch, capsys):
    """It overwrote the final model, checkpoint and card, and mixed both runs' rows in metrics.jsonl."""
    quick = ("--steps", "1", "--precise-bn-batches", "0", "--workers", "0", "--val-images", "4")
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *quick)) == 0
    final = (tmp_path / "final" / WEIGHTS_NAME).read_bytes()
    capsys.readouterr()
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *quick, "--seed", "1")) == 2
    assert "holds a run already: continue it with --resume" in capsys.readouterr().err
    assert (tmp_path / "final" / WEIGHTS_NAME).read_bytes() == final
    (tmp_path / "file").write_text("not a folder")
    assert run_main(monkeypatch, cli(scene_data, tmp_path / "file", *quick)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # the run's files were written into the dataset, or into the model it started from
    for output, extra in ((scene_data, ()), (tmp_path / "final" / "run", ("--init-from", str(tmp_path / "final")))):
        assert run_main(monkeypatch, cli(scene_data, output, *quick, *extra)) == 2
        assert f"--output {output}: inside an input" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "final").iterdir()) == ["README.md", "config.json", WEIGHTS_NAME]
    model = shutil.copytree(tmp_path / "final", tmp_path / "model")  # a model's folder (the bundled one, shipped)
    assert run_main(monkeypatch, cli(scene_data, model, *quick)) == 2
    assert f"--output {model}: holds a model ({WEIGHTS_NAME}); choose a folder" in capsys.readouterr().err
    assert sorted(path.name for path in model.iterdir()) == ["README.md", "config.json", WEIGHTS_NAME]


def test_weights_that_diverge_stop_the_run_and_are_never_saved(scene_data, tmp_path, monkeypatch, capsys):
    """At --lr 1e30 the run exited 0 and saved a final model with NaN in most of its tensors."""
    quick = ("--steps", "3", "--precise-bn-batches", "0", "--workers", "0", "--val-images", "4", "--lr", "1e30")
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *quick, "--checkpoint-every", "1")) == 1
    assert "training diverged" in capsys.readouterr().err
    assert not (tmp_path / "final").exists()
    with safe_open(str(tmp_path / CHECKPOINT_NAME), framework="pt") as kept:  # the last one with finite weights
        weights = [kept.get_tensor(name) for name in kept.keys() if name.startswith("model/")]
    assert weights and all(weight.isfinite().all() for weight in weights if weight.is_floating_point())


def test_a_resume_with_another_optimizer_or_datasets_is_refused(scene_data, everyday_data, tmp_path, monkeypatch,
                                                                  capsys):  # fmt: skip
    """AdamW after Adadelta crashed at the first step (KeyError 'betas'), two datasets after one in the data
    stream; another --hint-layer-lr was replaced by the saved one without a word; another --width or hint layers
    printed torch's size mismatches, tensor by tensor."""
    quick = ("--steps", "1", "--precise-bn-batches", "0", "--workers", "0", "--val-images", "4")
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *quick, "--checkpoint-every", "1")) == 0
    for changed, message in [
        (("--optimizer", "adamw"), "made with --optimizer adadelta"),
        (("--dataset", str(everyday_data)), f"made with --dataset ['{scene_data}']"),
        (("--split", "validation"), "made with --split train"),  # the streams' positions are the train split's
        (("--width", "0.25"), "network was made with --width 0.125 (now 0.25); resume with the same"),
        (("--hints", "2", "--hint-propagation"), "--hint-conv off (now on), --hint-propagation off (now on);"),
    ]:
        capsys.readouterr()
        assert run_main(monkeypatch, cli(scene_data, tmp_path, *quick, "--steps", "2", "--resume", *changed)) == 2
        assert message in capsys.readouterr().err
    capsys.readouterr()  # other settings may change (a lower --lr to finish), but not in silence; the same folder
    again = cli(f"{scene_data}/", tmp_path, *quick, "--steps", "2", "--resume", "--lr", "0.25")  # was "another"
    assert run_main(monkeypatch, again) == 0
    assert "settings changed since the checkpoint: --lr 1.0 -> 0.25\n" in capsys.readouterr().out


QUICK = ("--precise-bn-batches", "0", "--workers", "0", "--val-images", "4")


def test_resume_never_trains_over_a_finished_model_nor_logs_redone_steps_twice(scene_data, tmp_path, monkeypatch,
                                                                                capsys):  # fmt: skip
    """With final/ but no checkpoint, --resume trained from scratch over the finished model; a run stopped before
    its first checkpoint, then resumed, logged its first steps twice."""
    (tmp_path / "final").mkdir()
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *QUICK, "--steps", "1", "--resume")) == 2
    assert "holds a finished model but no checkpoint.safetensors" in capsys.readouterr().err
    assert not any((tmp_path / "final").iterdir())
    (tmp_path / "final").rmdir()
    log = loop.MetricsLog(tmp_path)
    for step in (1, 2, 3):  # a run killed before its first checkpoint
        log.write("train", step, {"loss": 1.0})
    log.close()
    train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "2", "--resume")))
    assert [record["step"] for record in metrics(tmp_path, "train")] == [1, 2]


def test_a_resume_whose_time_is_spent_has_nothing_left_to_do(scene_data, tmp_path):
    """Each --resume with the same --max-minutes trained one more step and saved final/ again."""
    options = (*QUICK, "--steps", "4", "--max-minutes", "1e-9")
    train(parse_args(cli(scene_data, tmp_path, *options)))
    weights = (tmp_path / "final" / WEIGHTS_NAME).read_bytes()
    train(parse_args(cli(scene_data, tmp_path, *options, "--resume")))
    assert checkpoint_state(tmp_path)["step"] == 1
    assert (tmp_path / "final" / WEIGHTS_NAME).read_bytes() == weights


def test_a_final_model_cut_short_leaves_no_final_folder(scene_data, tmp_path, monkeypatch):
    """final/ was written in place: a run killed mid-write left a final/ that --resume took for finished."""

    def killed(model, directory, **_):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(LetThereBeColor, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "1")))
    assert not (tmp_path / "final").exists()
    monkeypatch.undo()
    train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "1", "--resume")))
    assert LetThereBeColor.from_pretrained(tmp_path / "final").class_names


def test_resume_in_fp16_from_a_run_without_it(scene_data, tmp_path):
    """The checkpoint's empty GradScaler state failed: "The source state dict is empty"."""
    train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "1", "--precision", "fp32")))
    train(parse_args(cli(scene_data, tmp_path, *QUICK, "--steps", "2", "--precision", "fp16", "--resume")))
    assert checkpoint_state(tmp_path)["step"] == 2


def test_an_init_from_model_that_is_not_there_is_one_line_in_trains_terms(scene_data, tmp_path, monkeypatch, capsys):
    """The message told to pass --model or set LETCOLOR_MODEL: inference's advice, not train's."""
    missing = str(tmp_path / "no-such-model")
    assert run_main(monkeypatch, cli(scene_data, tmp_path / "run", *QUICK, "--init-from", missing)) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --init-from: Cannot load the model {missing!r}") and "--model" not in error
    assert not (tmp_path / "run").exists()  # (it was made, empty, before the setup failed)
    cut = shutil.copytree(BUNDLED_MODEL_DIR, tmp_path / "cut")  # weights cut short: a safetensors traceback, exit 1
    (cut / "model.safetensors").write_bytes((BUNDLED_MODEL_DIR / "model.safetensors").read_bytes()[:50_000])
    assert run_main(monkeypatch, cli(scene_data, tmp_path / "run", *QUICK, "--init-from", str(cut))) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {cut}: not a valid letcolor model: Error while") and error.count("\n") == 1
    with pytest.raises(SystemExit):  # an unset "$MODEL": trained from random weights, exit 0
        parse_args(cli(scene_data, tmp_path / "run", *QUICK, "--init-from", ""))
    assert "--init-from: the model name is empty" in capsys.readouterr().err


def test_a_resume_keeps_hint_layers_only_and_the_runs_init_from(scene_data, tiny_model_dir, tmp_path, monkeypatch,
                                                                  capsys):  # fmt: skip
    """Resumed without --hint-layers-only: torch's "loaded state dict contains a parameter group that doesn't match";
    resumed with another --init-from (not read: the weights are the checkpoint's), the card named it as the start."""
    hints = (*QUICK, "--label-column", "", "--hints", "2", "--hint-propagation", "--no-hint-conv")
    start = ("--init-from", str(tiny_model_dir))
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *hints, *start, "--hint-layers-only", "--steps", "1")) == 0
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *hints, *start, "--steps", "2", "--resume")) == 2
    assert "it was made with --hint-layers-only; resume with the same" in capsys.readouterr().err
    other = shutil.copytree(tiny_model_dir, tmp_path.parent / f"{tmp_path.name}-other")
    resumed = (*hints, "--init-from", str(other), "--hint-layers-only", "--steps", "2", "--resume")
    assert run_main(monkeypatch, cli(scene_data, tmp_path, *resumed)) == 0
    notice = f"--init-from {other} is not read: the weights are the checkpoint's, whose run started from {start[1]}"
    assert notice in capsys.readouterr().out
    assert f"- Started from: `{tiny_model_dir}`" in (tmp_path / "final" / "README.md").read_text()


def test_a_labelled_model_warm_starts_a_colour_only_run_and_keeps_its_classes(scene_data, tiny_model_dir, tmp_path):
    """Refused both ways: a model's classes had to be the run's first ones, and a colour-only run has none."""
    options = (*QUICK, "--steps", "1", "--init-from", str(tiny_model_dir), "--label-column", "")
    train(parse_args(cli(scene_data, tmp_path / "colour", *options)))
    saved = LetThereBeColor.from_pretrained(tmp_path / "colour" / "final")
    assert saved.class_names == LetThereBeColor.from_pretrained(tiny_model_dir).class_names
    unnamed = tmp_path / "unnamed"  # a colour-only model of one unnamed class, into a labelled run
    LetThereBeColor(num_classes=1, class_names=[], width=0.125).save_pretrained(unnamed)
    train(parse_args(cli(scene_data, tmp_path / "labelled", *QUICK, "--steps", "1", "--init-from", str(unnamed))))
    scene_names = source_class_names(Source(str(scene_data)), "train")
    assert LetThereBeColor.from_pretrained(tmp_path / "labelled" / "final").class_names == scene_names


def test_a_fine_tune_resumes_without_its_init_from_model(scene_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """--resume loaded the --init-from model again, though the checkpoint holds every weight: moved or deleted, the
    run could not go on; resumed without --init-from, its card said "Started from: random weights", and a
    --hint-layers-only run was refused."""
    start = shutil.copytree(tiny_model_dir, tmp_path / "start")  # a labelled model, into a colour-only run
    options = (*QUICK, "--init-from", str(start), "--label-column", "")
    train(parse_args(cli(scene_data, tmp_path / "run", *options, "--steps", "1")))
    shutil.rmtree(start)
    for resumed in ((*options, "--steps", "2", "--resume"), (*QUICK, "--label-column", "", "--steps", "3", "--resume")):
        train(parse_args(cli(scene_data, tmp_path / "run", *resumed)))
    assert checkpoint_state(tmp_path / "run")["step"] == 3
    saved = LetThereBeColor.from_pretrained(tmp_path / "run" / "final")
    assert saved.class_names == LetThereBeColor.from_pretrained(tiny_model_dir).class_names  # kept
    assert f"- Started from: `{start}`" in (tmp_path / "run" / "final" / "README.md").read_text()
    earlier = tmp_path / "earlier"  # a checkpoint of an earlier version, resumed
    LetThereBeColor(num_classes=1, class_names=[], width=0.125).save_pretrained(earlier)
    train(parse_args(cli(scene_data, tmp_path / "labelled", *QUICK, "--steps", "1", "--init-from", str(earlier))))
    without_class_names(tmp_path / "labelled" / CHECKPOINT_NAME)
    shutil.rmtree(earlier)  # without --init-from, as before: the checkpoint's weights, its model not read
    train(parse_args(cli(scene_data, tmp_path / "labelled", *QUICK, "--steps", "2", "--resume")))
    assert checkpoint_state(tmp_path / "labelled")["step"] == 2
    hints_alone = cli(scene_data, tmp_path / "new", *QUICK, "--hints", "3", "--hint-layers-only", "--resume")
    assert run_main(monkeypatch, hints_alone) == 2  # no checkpoint to name the start: still refused
    assert "--hint-layers-only needs --init-from" in capsys.readouterr().err


def without_class_names(path: Path) -> None:
    """The checkpoint at `path` as an earlier version saved it."""
    with safe_open(str(path), framework="pt") as file:
        tensors, state = {key: file.get_tensor(key) for key in file.keys()}, json.loads(file.metadata()[STATE_KEY])
    del state["class_names"]
    save_file(tensors, str(path), metadata={STATE_KEY: json.dumps(state)})


def test_two_datasets_of_the_same_name_are_both_validated(scene_data, tmp_path):
    """org1/scenes and org2/scenes shared one validation slot: one of them was dropped from the metrics."""
    twins = []
    for owner in ("org1", "org2"):
        twins.append(tmp_path / owner / "scenes")
        shutil.copytree(scene_data, twins[-1])
    quick = ("--steps", "1", "--precise-bn-batches", "0", "--workers", "0", "--val-images", "4")
    train(parse_args(cli(twins, tmp_path / "run", *quick)))
    assert set(metrics(tmp_path / "run", "validation")[-1]["datasets"]) == {"scenes", "scenes-2"}


def gray_copy(table: pa.Table) -> pa.Table:
    """The table with every image made gray (RGB PNGs of equal channels): photos that training skips."""
    images = table.column("image").to_pylist()
    for image in images:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(image["bytes"])).convert("L").convert("RGB").save(buffer, format="PNG")
        image["bytes"] = buffer.getvalue()
    field = table.schema.field("image")
    return table.set_column(table.schema.get_field_index("image"), field, pa.array(images, type=field.type))


def test_a_split_without_a_usable_photo_is_an_error(scene_data, tmp_path, monkeypatch, capsys):
    """A training split of gray photos trained 0 steps, exited 0 and saved an untrained model ("0 images seen"); a
    validation split of them was a traceback."""
    dataset = tmp_path / "gray-train"
    shutil.copytree(scene_data, dataset)
    for shard in (dataset / "data").glob("train-*.parquet"):
        pq.write_table(gray_copy(pq.read_table(shard)), shard)
    quick = ("--steps", "2", "--precise-bn-batches", "0", "--workers", "0", "--val-images", "4")
    assert run_main(monkeypatch, cli(dataset, tmp_path / "run", *quick)) == 2
    assert "no usable photo in --split 'train'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "final").exists()
    assert run_main(monkeypatch, cli(dataset, tmp_path / "run2", *quick, "--val-split", "train")) == 2
    assert "split 'train' has no usable images (skipped: {'low_colour': 48})" in capsys.readouterr().err  # why
    assert run_main(monkeypatch, cli(dataset, tmp_path / "run3", *quick, "--rebalance", "0.5")) == 2  # a traceback
    assert "split 'train' has no usable images (for --rebalance's colour prior)" in capsys.readouterr().err


@pytest.mark.parametrize("fast_bfloat16", [True, False])
def test_auto_precision_trains_in_bfloat16_where_inference_finds_it_fast(monkeypatch, fast_bfloat16):
    """On an AVX512 CPU without bfloat16 instructions, oneDNN emulates it (slower): training asked oneDNN whether it
    runs bfloat16 at all, inference whether it runs it fast."""
    monkeypatch.setattr(loop, "cpu_has_fast_bfloat16", lambda: fast_bfloat16)
    assert loop.resolve_precision("auto", torch.device("cpu")) == ("bf16" if fast_bfloat16 else "fp32")
    assert loop.resolve_precision("fp16", torch.device("cpu")) == "fp16"


@pytest.mark.parametrize(("shards", "workers", "shards_each"), [(3, 2, {2, 1}), (2, 3, {2})])
def test_each_worker_reads_whole_shards_of_its_own_where_there_are_enough(scenes_dataset, tmp_path, shards, workers,
                                                                           shards_each):  # fmt: skip
    """Split one row in N whenever the shard count was not a multiple of the workers: each worker read every shard.
    With fewer shards than workers, every worker still gets rows (each reads them all, keeping its own)."""
    dataset = make_scene_dataset(scenes_dataset, tmp_path / "data", shards=shards, rows_per_shard=8)
    source = Source(str(dataset))
    streams = [open_stream(scenes(dataset), source, worker, workers) for worker in range(workers)]
    assert {stream.num_shards for stream in streams} == shards_each
    ids = [[row["id"] for row in data.rows(stream, str(dataset))] for stream in streams]
    assert sorted(sum(ids, [])) == sorted(row["id"] for row in data.rows(open_stream(scenes(dataset), source), ""))
    assert all(ids) and len(set(sum(ids, []))) == shards * 8
