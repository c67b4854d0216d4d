"""Fixtures shared by the tests: the shipped example photos, the cuts of the real-photo corpora, small models."""

import gc
from pathlib import Path

import pytest
import torch

from letcolor.inference import Precision, onednn_available
from letcolor.model import LetThereBeColor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "letcolor" / "examples"
# Small cuts of the corpora, shipped with the tests (tests/data/make_cut.py made them from SHARED_DATA).
SCENES = ROOT / "tests" / "data" / "letcolor-scenes"
EVERYDAY = ROOT / "tests" / "data" / "letcolor-everyday"
# The full corpora: training and corpus-scale benchmarks; no test needs them (a test that reads them skips without).
SHARED_DATA = ROOT.parent / "shared" / "data"
SCENE_NAMES = [f"scene_{i}" for i in range(5)]
# oneDNN's packed convolutions in each precision, where this CPU runs them (bfloat16: AVX512 or AVX-NE-CONVERT)
PACKED_PRECISIONS = [
    Precision.FLOAT32,
    pytest.param(
        Precision.BFLOAT16,
        marks=pytest.mark.skipif(not onednn_available(torch.bfloat16), reason="oneDNN packs bfloat16 only with AVX512"),
    ),
]


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """The ONNX graphs and int8 calibrations that the tests make go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LETCOLOR_CACHE", str(tmp_path_factory.mktemp("letcolor-cache")))
        yield


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def scenes_dataset() -> Path:
    """320 real photos of letcolor-scenes (64 train, 256 validation), 21 scene names."""
    return SCENES


@pytest.fixture(scope="session")
def everyday_dataset() -> Path:
    """80 real WebP photos of letcolor-everyday (64 train, 16 validation), 7 class names."""
    return EVERYDAY


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full corpora next to the checkout; skips the test where they are absent (a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the full corpora in {SHARED_DATA}, which is absent (only the shipped cuts are here)")
    return SHARED_DATA


def make_tiny_model(seed: int = 0) -> LetThereBeColor:
    """A randomly initialised small model (width 1/8) whose BatchNorm statistics are not the identity."""
    torch.manual_seed(seed)
    model = LetThereBeColor(num_classes=len(SCENE_NAMES), class_names=SCENE_NAMES, width=0.125)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def tiny_model() -> LetThereBeColor:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-model")
    make_tiny_model().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", autouse=True)
def earlier_modules_set_aside_from_garbage_collection():
    """What the modules before left alive is set aside from garbage collection (gc.freeze): the product collects
    garbage itself (the benchmark's memory readings, the app after each video), and in one process after hundreds of
    tests each collection took seconds (the benchmark's tests: 20 s in place of 5)."""
    gc.collect()
    gc.freeze()
