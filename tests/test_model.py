"""The network: its layer list (paper Table 1), shapes for odd sizes, the fusion layer, and safetensors round trips."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fake_hub import FakeHub
from huggingface_hub import constants as hub_constants
from safetensors.torch import load, load_file, save, save_file

from letcolor import Colorizer, ModelError, ModelNotFoundError
from letcolor.fullres import lightness
from letcolor.images import image_pixels, load_image
from letcolor.model import InvalidModelError, LetThereBeColor
from letcolor.pipeline import load_model, network_size

# The paper's layers: (kind, in channels, out channels). 3x3 convs have no bias and a BatchNorm (scale and shift);
# the fusion conv (1x1) and the output conv have a bias; every FC layer has a bias.
LOW_LEVEL = [(1, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1), (256, 256, 2), (256, 512, 1)]
MID_LEVEL = [(512, 512, 1), (512, 256, 1)]
GLOBAL_CONVS = [(512, 512, 2), (512, 512, 1), (512, 512, 2), (512, 512, 1)]
GLOBAL_FCS = [(512 * 7 * 7, 1024), (1024, 512), (512, 256)]
CLASSIFIER_FCS = [(512, 256), (256, "classes")]
COLORIZATION_CONVS = [(256, 128), (128, 64), (64, 64), (64, 32)]


def paper_parameter_count(num_classes: int) -> int:
    def conv_bn(cin, cout):
        return 3 * 3 * cin * cout + 2 * cout

    def fc(cin, cout):
        cout = num_classes if cout == "classes" else cout
        return cin * cout + cout

    convs = [(cin, cout) for cin, cout, _ in LOW_LEVEL + MID_LEVEL + GLOBAL_CONVS] + COLORIZATION_CONVS
    fusion = 512 * 256 + 256
    output = 3 * 3 * 32 * 2 + 2
    null_global = 256
    fcs = GLOBAL_FCS + CLASSIFIER_FCS
    return sum(conv_bn(*c) for c in convs) + sum(fc(*f) for f in fcs) + fusion + output + null_global


def test_parameter_count_of_the_default_config_is_the_papers():
    model = LetThereBeColor()
    assert sum(p.numel() for p in model.parameters()) == paper_parameter_count(365)


def expected_layer_shapes(model: LetThereBeColor, n: int, h: int, w: int) -> dict[str, tuple]:
    """Every layer's output shape for a (n, 1, h, w) local input and the 224x224 global input, from the lists."""
    c = lambda channels: round(channels * model.width)  # noqa: E731
    shapes, side = {}, (h, w)
    for i, (_, cout, stride) in enumerate(LOW_LEVEL):
        side = tuple((s - 1) // stride + 1 for s in side)
        # The first layer's conv, BatchNorm and ReLU run one by one (hints join between BatchNorm and ReLU).
        shapes[f"low_level.convs.{i}" if i else "low_level.convs.0.2"] = (n, c(cout), *side)
    for i, (_, cout, _) in enumerate(MID_LEVEL):
        shapes[f"mid_level.convs.{i}"] = (n, c(cout), *side)
    shapes["fusion"] = (n, c(256), *side)
    up = [(c(128), 1), (c(128), 2), (c(64), 2), (c(64), 2), (c(64), 4), (c(32), 4), (2, 4), (2, 4)]
    for i, (channels, scale) in enumerate(up):
        shapes[f"colorization.layers.{i}"] = (n, channels, side[0] * scale, side[1] * scale)
    global_side = 28
    for i, (_, cout, stride) in enumerate(GLOBAL_CONVS):
        global_side = (global_side - 1) // stride + 1
        shapes[f"global_level.convs.{i}"] = (n, c(cout), global_side, global_side)
    shapes["global_level.fc"] = (n, c(512))
    shapes["global_level.to_vector"] = (n, c(256))
    shapes["global_level.classifier"] = (n, model.num_classes)
    return shapes


@pytest.mark.parametrize("height, width", [(1, 1), (7, 13), (225, 333)])
def test_every_layer_output_shape_for_odd_sizes(tiny_model, height, width):
    h, w = network_size(height, width, max_side=None)
    assert h % 8 == 0 and w % 8 == 0 and h >= 8 and w >= 8
    recorded = {}

    def record(name):
        def hook(_module, _input, output) -> None:
            if isinstance(output, torch.Tensor):
                recorded.setdefault(name, tuple(output.shape))

        return hook

    for name, module in tiny_model.named_modules():
        module.register_forward_hook(record(name))
    with torch.no_grad():
        scene = tiny_model.global_features(torch.rand(2, 1, 224, 224))
        global_shapes = {k: v for k, v in recorded.items() if k.startswith("global_level.")}
        recorded.clear()  # the low-level layers are recorded again, for the local input
        ab = tiny_model.colorize(torch.rand(2, 1, h, w), scene.features)
    recorded.update(global_shapes)
    expected = expected_layer_shapes(tiny_model, 2, h, w)
    assert {name: recorded[name] for name in expected} == expected
    assert ab.shape == (2, 2, h // 2, w // 2) and 0 <= ab.min() and ab.max() <= 1
    assert scene.features.shape == (2, 32) and scene.scene_logits.shape == (2, tiny_model.num_classes)


def test_global_branch_takes_only_224(tiny_model):
    with pytest.raises(ValueError, match="224x224"):
        tiny_model.global_features(torch.rand(1, 1, 256, 256))


def test_fusion_is_a_1x1_conv_over_the_concatenation(tiny_model):
    mid = torch.randn(2, 32, 5, 7)
    vector = torch.randn(2, 32)
    fused = tiny_model.fusion(mid, vector)
    concatenated = torch.cat((mid, vector[:, :, None, None].expand(-1, -1, 5, 7)), dim=1)
    weight, bias = tiny_model.fusion.conv.weight[:, :, 0, 0], tiny_model.fusion.conv.bias
    by_hand = torch.einsum("ok,nkhw->nohw", weight, concatenated) + bias[None, :, None, None]
    assert torch.allclose(fused, F.relu(by_hand), atol=1e-5)


def test_mix_global_interpolates_from_the_null_vector(tiny_model):
    features = torch.randn(3, 32)
    null = tiny_model.null_global.detach().expand_as(features)
    assert torch.equal(tiny_model.mix_global(features, use_global=False), null)
    assert torch.allclose(tiny_model.mix_global(features, strength=1.0), features)
    assert torch.allclose(tiny_model.mix_global(features, strength=0.0), null)
    assert torch.allclose(tiny_model.mix_global(features, strength=2.0), 2 * features - null, atol=1e-6)


def test_training_forward_shares_the_low_level_features_at_224(tiny_model):
    l224 = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        ab, logits = tiny_model(l224)
        scene = tiny_model.global_features(l224)
        assert torch.allclose(ab, tiny_model.colorize(l224, scene.features), atol=1e-6)
        assert torch.allclose(logits, scene.scene_logits, atol=1e-6)
        dropped, _ = tiny_model(l224, global_dropout=1.0)
        assert torch.allclose(dropped, tiny_model.colorize(l224, tiny_model.mix_global(scene.features, False)))


def real_input(examples_dir, side=64) -> torch.Tensor:
    full = lightness(image_pixels(load_image(examples_dir / "historical_b.jpg")))
    return F.interpolate(full, size=(side, side), mode="bilinear", antialias=True) / 100


def test_save_and_load_round_trip_gives_identical_outputs(tiny_model, tmp_path, examples_dir):
    tiny_model.save_pretrained(tmp_path)
    loaded = LetThereBeColor.from_pretrained(tmp_path)
    config = lambda model: (model.width, model.num_classes, model.class_names)  # noqa: E731
    assert config(loaded) == config(tiny_model)
    l = real_input(examples_dir)
    l224 = F.interpolate(l, size=(224, 224), mode="bilinear")
    with torch.no_grad():
        expected, loaded_output = tiny_model(l, l224), loaded(l, l224)
    assert all(torch.equal(a, b) for a, b in zip(expected, loaded_output, strict=True))


def edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_unknown_config_key_fails_loudly(tiny_model_dir, tmp_path):
    tiny_model_dir_copy = tmp_path / "model"
    tiny_model_dir_copy.mkdir()
    for file in tiny_model_dir.iterdir():
        (tiny_model_dir_copy / file.name).write_bytes(file.read_bytes())
    edit_config(tiny_model_dir_copy, dropout=0.5)
    with pytest.raises(InvalidModelError, match="unknown keys.*dropout"):
        LetThereBeColor.from_pretrained(tiny_model_dir_copy)


def test_wrong_width_in_config_fails_loudly(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    edit_config(tmp_path, width=0.25)
    with pytest.raises(InvalidModelError, match=r"do not fit config.json: null_global is \[\d+\], the config makes"):
        LetThereBeColor.from_pretrained(tmp_path)


def test_missing_tensor_fails_loudly(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["fusion.conv.bias"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(InvalidModelError, match="fusion.conv.bias"):
        LetThereBeColor.from_pretrained(tmp_path)


def test_missing_weights_file_fails_loudly(tiny_model, tmp_path):
    """A directory with its config but no weights is something, not nothing: it was a ModelNotFoundError ("not a
    model directory, nor a Hub model id"), as was one holding a pickle instead."""
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(InvalidModelError) as error:
        load_model(tmp_path)
    named_once = f"{tmp_path}: not a valid letcolor model: it has no model.safetensors (letcolor reads safetensors"
    assert str(error.value) == named_once + " weights only)"  # the folder was named twice


def test_loading_options_that_cannot_be_honoured_and_a_missing_path_are_named(tiny_model_dir, tmp_path):
    """A bad map_location said the (valid) model was not valid, "cuda" without CUDA was a bare AssertionError, and a
    Path to nothing was asked of the Hub as an id."""
    with pytest.raises(ValueError, match="map_location"):
        LetThereBeColor.from_pretrained(tiny_model_dir, map_location="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="map_location='cuda': CUDA is not available"):
            LetThereBeColor.from_pretrained(tiny_model_dir, map_location="cuda")
    with pytest.raises(ModelNotFoundError, match="no such model directory"):  # (it was a bare FileNotFoundError,
        LetThereBeColor.from_pretrained(Path("my_models/run1"))  # which the README's `except ModelError` missed)


def test_a_hub_id_that_cannot_be_had_is_a_model_not_found(tmp_path, monkeypatch):
    """It raised the Hub's own error, which `except letcolor.ModelError` missed."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # (the variable is read once, at import)
    with pytest.raises(ModelNotFoundError, match="nor a Hub model id that can be fetched or is cached"):
        LetThereBeColor.from_pretrained("letcolor/no-such-model", cache_dir=tmp_path)


BAD_MODELS = {
    "corrupt weights": ({}, lambda weights: b"\0" * 100, "deserializing header"),
    "truncated weights": ({}, lambda weights: weights[: len(weights) // 2], "header|incomplete|truncat"),
    "width of the wrong type": ({"width": "abc"}, None, "width must be a number"),
    "absurd class count": ({"num_classes": 1e9, "class_names": []}, None, "num_classes must be an integer"),
    "huge class count": ({"num_classes": 10**9, "class_names": []}, None, "num_classes must be an integer"),
    "class names not strings": ({"class_names": [1, 2, 3, 4, 5]}, None, "class_names must be a list of strings"),
    "class names twice": ({"class_names": ["a", "b", "a", "c", "b"]}, None, r"must differ .*: \['a', 'b'\]"),
    "hint channels not an integer": ({"hint_channels": 3.0}, None, "hint_channels must be 0"),  # failed inside torch
    "config that is not JSON": ("{width: 1", None, "Expecting property name"),
    "config that is a list": ("[1, 2]", None, "config.json must be a JSON object"),  # 'list' object has no 'items'
    # loaded before: NaN colours (onnxruntime), gray (torch) or cyan (torch-int8); integers cast to float in silence
    "NaN weights": ({}, lambda weights: edited(weights, "null_global", float("nan")), "NaN or infinite values"),
    "negative variance": ({}, lambda weights: edited(weights, "running_var", -1.0), "negative BatchNorm variance"),
    "integer weights": ({}, lambda weights: edited(weights, "weight", None), "must be floating point"),
}


def edited(weights: bytes, part: str, value: float | None) -> bytes:
    """The weights with every tensor whose name ends with `part` filled with `value`, or stored as int8 (None)."""
    tensors = load(weights)
    for name in [name for name in tensors if name.endswith(part)]:
        tensors[name] = tensors[name].to(torch.int8) if value is None else torch.full_like(tensors[name], value)
    return save(tensors)


def damaged_copy(source: Path, destination: Path, config_change, weights_change) -> Path:
    shutil.copytree(source, destination)
    if isinstance(config_change, str):
        (destination / "config.json").write_text(config_change)
    else:
        edit_config(destination, **config_change)
    if weights_change:
        weights = destination / "model.safetensors"
        weights.write_bytes(weights_change(weights.read_bytes()))
    return destination


@pytest.mark.parametrize("damage", list(BAD_MODELS))
def test_a_bad_model_raises_the_documented_error_before_allocating(tiny_model_dir, tmp_path, damage):
    config_change, weights_change, message = BAD_MODELS[damage]
    model_dir = damaged_copy(tiny_model_dir, tmp_path / "model", config_change, weights_change)
    with pytest.raises(InvalidModelError, match=message) as error:
        LetThereBeColor.from_pretrained(model_dir)
    assert str(model_dir) in str(error.value)
    with pytest.raises(ModelError):
        Colorizer.from_pretrained(model_dir)


def test_a_config_wider_than_its_weights_is_refused_before_the_model_is_made(tiny_model_dir, tmp_path, monkeypatch):
    """Width 4 on the bundled 0.25's weights took 2.9 GB and 12 s before the strict load refused it."""
    model_dir = damaged_copy(tiny_model_dir, tmp_path / "model", {"width": 4.0}, None)
    made = []
    monkeypatch.setattr(torch.nn.Conv2d, "reset_parameters", lambda self: made.append(self.weight.device.type))
    with pytest.raises(InvalidModelError, match="do not fit config.json"):
        LetThereBeColor.from_pretrained(model_dir)
    assert set(made) == {"meta"}  # the shapes were compared on a model of no memory


def test_a_model_path_from_the_home_folder_is_expanded(tiny_model_dir, tmp_path, monkeypatch):
    """`--model=~/models/x` reaches the program unexpanded: "~/models/x: no such model directory"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "x")
    expected = LetThereBeColor.from_pretrained(tiny_model_dir).state_dict()
    loaded = LetThereBeColor.from_pretrained("~/models/x").state_dict()
    assert all(torch.equal(expected[name], tensor) for name, tensor in loaded.items())


def test_a_folder_without_config_is_not_a_model(tiny_model_dir, tmp_path):
    model_dir = damaged_copy(tiny_model_dir, tmp_path / "model", {}, None)
    (model_dir / "config.json").unlink()
    with pytest.raises(InvalidModelError, match="no config.json"):
        LetThereBeColor.from_pretrained(model_dir)


def test_a_hub_repo_without_config_is_not_a_model(tiny_model_dir, tmp_path):
    """The mixin went on without the config that the Hub did not have: "the weights do not fit config.json", or,
    for weights of the default shapes, a model loaded with default settings."""
    load = "from letcolor.model import LetThereBeColor\nLetThereBeColor.from_pretrained('letcolor/weights-only')"
    with FakeHub() as hub:
        hub.state.repos["letcolor/weights-only"] = {
            "model.safetensors": (tiny_model_dir / "model.safetensors").read_bytes()
        }
        hub.state.commits["letcolor/weights-only"] = "0" * 40
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_XET": "1"}
        result = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=120)
    assert (
        "InvalidModelError: letcolor/weights-only: not a valid letcolor model: it has no config.json" in result.stderr
    )


def test_a_hub_repos_config_that_is_not_an_object_is_named(tiny_model_dir, tmp_path):
    """A local folder's was named ("config.json must be a JSON object"), a Hub repo's was the mixin's "'list' object
    has no attribute 'items'"."""
    load = "from letcolor.model import LetThereBeColor\nLetThereBeColor.from_pretrained('letcolor/list-config')"
    with FakeHub() as hub:
        hub.state.repos["letcolor/list-config"] = {
            "config.json": b"[1, 2]",
            "model.safetensors": (tiny_model_dir / "model.safetensors").read_bytes(),
        }
        hub.state.commits["letcolor/list-config"] = "0" * 40
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_XET": "1"}
        result = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=120)
    assert (
        "InvalidModelError: letcolor/list-config: not a valid letcolor model: config.json must be a JSON object of the "
        "model's settings, not a list" in result.stderr
    ), result.stderr[-2000:]


def test_a_hub_repo_without_weights_is_not_a_model(tiny_model_dir, tmp_path):
    """It was a ModelNotFoundError (the Hub's "entry not found"): the repo and its config are there."""
    load = "from letcolor.pipeline import load_model\nload_model('letcolor/config-only')"
    with FakeHub() as hub:
        hub.state.repos["letcolor/config-only"] = {"config.json": (tiny_model_dir / "config.json").read_bytes()}
        hub.state.commits["letcolor/config-only"] = "0" * 40
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_XET": "1"}
        result = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=120)
    assert "InvalidModelError: letcolor/config-only: not a valid letcolor model: it has no model.safetensors" in (
        result.stderr
    ), result.stderr[-2000:]


def test_loading_options_that_cannot_be_honoured_are_the_callers_errors_not_an_invalid_model(tiny_model_dir):
    """Each was reported as "not a valid letcolor model" (the model's constructor got them), and map_location was
    ignored: the model stayed on the CPU."""
    with pytest.raises(TypeError, match="unexpected keyword arguments: device"):
        LetThereBeColor.from_pretrained(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="strict=False"):
        LetThereBeColor.from_pretrained(tiny_model_dir, strict=False)
    model = LetThereBeColor.from_pretrained(tiny_model_dir, map_location="meta", strict=True)
    assert {parameter.device.type for parameter in model.parameters()} == {"meta"}


def test_a_home_folder_of_no_user_is_a_missing_model(monkeypatch):
    with pytest.raises(FileNotFoundError, match="~no-such-user-1234/model"):  # a RuntimeError from expanduser
        LetThereBeColor.from_pretrained("~no-such-user-1234/model")


def test_the_card_that_save_pretrained_writes_says_what_the_model_is_and_its_snippet_runs(
    tiny_model, examples_dir, tmp_path, monkeypatch
):
    """It said "Docs: [More Information Needed]" and nothing of what the model does or how to use it."""
    tiny_model.save_pretrained(tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    assert "[More Information Needed]" not in card and "colorizes black-and-white photos" in card
    snippet = card.split("```python\n")[1].split("```")[0]
    shutil.copy(examples_dir / "china_gray.png", tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    exec(snippet.replace("this model's directory or Hub id", str(tmp_path / "model")), {})
    assert load_image(tmp_path / "colour.jpg").mode == "RGB"
