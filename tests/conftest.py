"""Fixtures shared by the tests: the shipped example photos, the shared real-photo corpus, small models."""

from pathlib import Path

import pytest
import torch

from letcolor.model import LetThereBeColor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "letcolor" / "examples"
SCENES = ROOT.parent / "shared" / "data" / "letcolor-scenes"  # tests and benchmarks only, never the product
EVERYDAY = ROOT.parent / "shared" / "data" / "letcolor-everyday"
SCENE_NAMES = [f"scene_{i}" for i in range(5)]


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def scenes_dataset() -> Path:
    if not SCENES.is_dir():
        pytest.fail(f"the shared corpus is missing: {SCENES}")
    return SCENES


@pytest.fixture(scope="session")
def everyday_dataset() -> Path:
    if not EVERYDAY.is_dir():
        pytest.fail(f"the shared corpus is missing: {EVERYDAY}")
    return EVERYDAY


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
