"""python -m train: train the Let there be Color! network on streamed Hub-layout datasets (local folders or Hub ids)."""

import argparse
import math
import os
import shlex
import sys
from fractions import Fraction

from letcolor.model import ModelError
from train.checkpoint import CheckpointError
from train.data import DEFAULT_LABEL_COLUMN, MIN_CHROMA_STD, DataError
from train.hub import PushError, repo_id
from train.loop import DEFAULT_LR, DivergedError, SetupError, train
from train.losses import DEFAULT_PSNR_FLOOR

# Places365-Standard (1.8 M train images at 256x256, 365 scene classes) as parquet on the Hub.
# Columns: image (Image), label (ClassLabel, 365 names); splits train and validation.
PLACES365 = "Andron00e/Places365-custom"


def fraction(text: str) -> float:
    """A non-negative float that may be written as a fraction, e.g. 1/300."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError) as error:
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from error
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def at_least(least: int):
    """An argparse type: an integer of at least `least`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {text}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value: 'x'"
    return parse


def non_negative(text: str) -> float:
    """A finite float of at least 0 (a learning rate of 0: a run that changes nothing, as tests of warm starts use);
    NaN is refused here, not after the run's first steps."""
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def positive(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def seed(text: str) -> int:
    """A seed that every random generator of a run takes (numpy's legacy one: below 2^32)."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2^32 - 1, got {text}")
    return value


def default_workers() -> int:
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 2) // (2 * local_processes)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__, allow_abbrev=False)
    for add_arguments in (add_data_arguments, add_model_arguments, add_hint_arguments, add_run_arguments):
        add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "-m", "train", *argv])
    args.label_column = args.label_column or None
    args.dataset = args.dataset or [PLACES365]
    args.dataset_weights = args.dataset_weights or [1.0] * len(args.dataset)
    args.lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    check_args(parser, args)
    return args


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        action="append",
        help=f"Hub dataset id or local directory in Hub layout (default {PLACES365}); repeat to train on a mix, "
        "the label names of each following the previous ones'",
    )
    data.add_argument(
        "--dataset-weights", type=float, nargs="+", metavar="W", help="each --dataset's sampling weight (default 1)"
    )
    data.add_argument("--split", default="train")
    data.add_argument("--val-split", default="validation")
    data.add_argument("--image-column", default="image")
    data.add_argument(
        "--label-column", default=DEFAULT_LABEL_COLUMN, help="a ClassLabel column; '' trains without labels"
    )
    data.add_argument("--workers", type=at_least(0), default=default_workers(), help="DataLoader workers per process")
    data.add_argument(
        "--min-chroma-std",
        type=non_negative,
        default=MIN_CHROMA_STD,
        help="skip photos (in training and validation) whose chroma varies less than this, in YCbCr units on a "
        "32x32 thumbnail: grayscale and near-gray ones (paper 3.4); 0 keeps every photo",
    )
    data.add_argument(
        "--val-images",
        type=at_least(1),
        default=256,
        help="validation images per dataset (the first of its --val-split)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model and optimization")
    model.add_argument(
        "--init-from", metavar="MODEL", help="start from a saved model (dir or Hub id), widened if narrower"
    )
    model.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0 = the paper)")
    model.add_argument("--batch-size", type=at_least(1), default=128, help="per process (paper: 128)")
    model.add_argument("--steps", type=at_least(1), default=100_000, help="total optimizer steps (resume included)")
    model.add_argument("--optimizer", choices=sorted(DEFAULT_LR), default="adadelta")
    model.add_argument("--lr", type=non_negative, help="default: 1.0 for adadelta, 1e-3 for adamw")
    model.add_argument(
        "--lr-schedule",
        choices=["constant", "linear"],
        default="constant",
        help="linear: the learning rate falls in a straight line from --lr to 0 at --steps",
    )
    model.add_argument("--alpha", type=fraction, default=1 / 300, help="weight of the scene cross-entropy")
    model.add_argument(
        "--chroma-weight", type=non_negative, default=0.0, help="weight of the per-image mean-chroma gap (0: the paper)"
    )
    model.add_argument(
        "--spread-weight",
        type=non_negative,
        default=0.0,
        help="weight of the per-image gap in the spatial standard deviation of a and b (0 = off)",
    )
    model.add_argument(
        "--rebalance",
        type=float,
        default=1.0,
        metavar="MIX",
        help="weight each pixel's error by the rarity of its true colour, the ab prior mixed with MIX x uniform "
        "(Zhang et al. 2016: 0.5); 1 = uniform weights, the paper's plain MSE",
    )
    model.add_argument(
        "--psnr-weighting",
        type=non_negative,
        nargs="?",
        const=DEFAULT_PSNR_FLOOR,
        default=0.0,
        metavar="FLOOR",
        help="weight each image's error by its inverse, following the mean per-photo PSNR instead of the pooled MSE; "
        f"images with an RMS ab error under FLOOR Lab units (default {DEFAULT_PSNR_FLOOR:g}) weigh no more",
    )
    model.add_argument(
        "--prior-images", type=at_least(1), default=4096, help="training crops that estimate the ab prior"
    )
    model.add_argument("--global-dropout", type=float, default=0.0, help="global-feature dropout probability")
    model.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="validate and save an exponential moving average of the weights with this decay (e.g. 0.999); 0 = "
        "the last step's weights",
    )
    model.add_argument(
        "--precise-bn-batches",
        type=at_least(0),
        default=100,
        help="training batches that set the final BatchNorm statistics",
    )
    model.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    model.add_argument("--compile", action="store_true", help="torch.compile the model")
    model.add_argument("--seed", type=seed, default=0)


def add_hint_arguments(parser: argparse.ArgumentParser) -> None:
    hints = parser.add_argument_group("colour hints")
    hints.add_argument(
        "--hints",
        type=float,
        default=0.0,
        metavar="MEAN",
        help="train a model that takes local colour hints: each training image gets points simulated from its true "
        "colours, MEAN on average where it gets any (a geometric draw); 0 = no hint inputs (the paper)",
    )
    hints.add_argument(
        "--hint-free", type=float, default=0.25, metavar="P", help="with --hints, the share of images given none"
    )
    hints.add_argument(
        "--hint-layer-lr",
        type=non_negative,
        default=1.0,
        metavar="MULT",
        help="the layers that read the hint inputs (their conv, and --hint-propagation's) learn at MULT x --lr "
        "(default 1)",
    )
    hints.add_argument(
        "--hint-propagation",
        action="store_true",
        help="with --hints, also spread what the output misses at the hints over nearby pixels (of any lightness, "
        "then of like lightness), by learned gates (HintPropagation)",
    )
    hints.add_argument(
        "--hint-conv",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --hints, the low-level features read the hints beside L (default); --no-hint-conv: only "
        "--hint-propagation reads them",
    )
    hints.add_argument(
        "--hint-layers-only",
        action="store_true",
        help="with --hints, train only the layers that read the hints (with --init-from: the output without hints "
        "stays the saved model's, bit for bit); no BatchNorm re-estimation",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--output", required=True, help="run directory: metrics, grids, checkpoint, final model")
    run.add_argument("--max-minutes", type=positive, help="stop after this much training time (resume included)")
    run.add_argument("--log-every", type=at_least(1), default=10)
    run.add_argument("--val-every", type=at_least(1), default=500)
    run.add_argument("--checkpoint-every", type=at_least(1), default=500)
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.safetensors")
    run.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    run.add_argument(
        "--push-to-hub", type=repo_id, metavar="REPO", help="upload OUTPUT/final to this Hub model repo at the end"
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Settings that argparse cannot check one by one: parser.error (exit 2) for any that do not fit."""
    if len(args.dataset_weights) != len(args.dataset) or not all(0 < w < math.inf for w in args.dataset_weights):
        parser.error(f"--dataset-weights: {len(args.dataset)} positive weights needed, one per --dataset")
    if not 0 <= args.ema < 1:
        parser.error("--ema: a decay in [0, 1)")
    if not 0 <= args.global_dropout < 1:
        parser.error("--global-dropout: a probability in [0, 1)")
    if args.hints and (not 1 <= args.hints < math.inf or not 0 <= args.hint_free < 1):
        parser.error("--hints: a mean of at least 1 point, and --hint-free a share in [0, 1)")
    if (args.hint_propagation or args.hint_layers_only) and not args.hints:
        parser.error("--hint-propagation and --hint-layers-only need --hints")
    hint_settings = ("hint_free", "hint_layer_lr", "hint_conv")
    if not args.hints and any(getattr(args, name) != parser.get_default(name) for name in hint_settings):
        parser.error("--hint-free, --hint-layer-lr and --no-hint-conv need --hints (without it they would be ignored)")
    if args.init_from is not None and not args.init_from.strip():  # an unset "$MODEL": it trained from random weights
        parser.error("--init-from: the model name is empty")
    if args.hint_layers_only and not (args.init_from or args.resume):  # (a checkpoint names its --init-from)
        parser.error("--hint-layers-only needs --init-from: the layers that do not read the hints would stay random")
    if args.hints and not (args.hint_conv or args.hint_propagation):
        parser.error("--no-hint-conv needs --hint-propagation: something must read the hints")
    if not 0 < args.rebalance <= 1:
        parser.error("--rebalance: a mix in (0, 1]")


def main() -> int:
    """Runs training; a bad checkpoint, model, dataset or setting is one line on stderr and exit code 2, weights
    that diverged or an upload that failed exit code 1."""
    try:
        train(parse_args())
    except (CheckpointError, ModelError, SetupError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DivergedError, PushError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
