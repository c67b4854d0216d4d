"""The torch-int8 engine: which layers run in int8, its colours against torch float32 on validation photos it was not
calibrated on (with and without hints), the split fusion layer, auto's choice, and --engine in the CLI."""

import gc
import io
import pwd
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import EVERYDAY, SCENES
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.ao.nn.intrinsic.quantized import ConvReLU2d
from torch.ao.nn.quantized import Conv2d as QuantizedConv2d
from torch.ao.quantization.observer import ObserverBase

from letcolor import Colorizer, cli, engines, quantized
from letcolor.cache import CACHE_ENV_VAR, CONFIG_NAMES, cache_dir, weights_key
from letcolor.calibration import CALIBRATION_PHOTOS
from letcolor.inference import OneDNNConv, Speedups
from letcolor.pipeline import load_model
from letcolor.quantized import Int8Network, SplitFusion, quantize


def validation_photos(per_corpus: int = 4) -> list[Image.Image]:
    """The first photos of the validation cuts of both corpora (none is a calibration photo)."""
    photos = []
    for corpus in (SCENES, EVERYDAY):
        rows = pq.read_table(corpus / "data" / "validation-00000-of-00001.parquet", columns=["image"]).to_pylist()
        photos += [Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB") for row in rows[:per_corpus]]
    return photos


def psnr(a: Image.Image, b: Image.Image) -> float:
    a, b = (np.asarray(image, np.float64) for image in (a, b))
    return 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-10))


@pytest.fixture(scope="module")
def int8() -> Colorizer:
    return Colorizer.from_pretrained(None, "cpu", engine="torch-int8")


@pytest.fixture(scope="module")
def exact() -> Colorizer:
    return Colorizer.from_pretrained(None, "cpu", Speedups(fold_batchnorm=True), engine="torch")


def test_the_runs_of_convolutions_are_int8_and_the_layers_at_the_inputs_and_output_float32(int8):
    model = int8.network.model
    int8_convs = [layer for layer in model.modules() if isinstance(layer, ConvReLU2d)]
    assert len(int8_convs) == 5 + 2 + 4 + 4  # low-level after the first, mid-level, global, colorization but the last
    projections = [layer for layer in model.mid_level.convs.modules() if type(layer) is QuantizedConv2d]
    assert isinstance(model.fusion, SplitFusion) and len(projections) == 1  # the fusion's weights on the mid-level
    first, last = model.low_level.convs[0][0], model.colorization.layers[-2]
    assert isinstance(first, OneDNNConv) and first.conv.weight.dtype == torch.float32
    assert isinstance(last, OneDNNConv) and last.conv.weight.dtype == torch.float32
    assert not any(isinstance(layer, ConvReLU2d) for layer in model.colorization.propagation.modules())
    # the colorization run's nearest upsamplings copy int8 values: quantized once at its start, dequantized at its end
    code = model.colorization.layers[0].code
    assert code.count("quantize_per_tensor(") == 1 and code.count(".dequantize()") == 1


def test_int8_colours_match_torch_float32_on_photos_it_was_not_calibrated_on(int8, exact):
    photos = validation_photos()
    calibration = {Image.open(path).convert("RGB").tobytes() for path in CALIBRATION_PHOTOS}
    assert not {photo.tobytes() for photo in photos} & calibration
    for photo in photos:
        ours, theirs = int8(photo), exact(photo)
        assert psnr(ours.image, theirs.image) > 38
        assert np.abs(ours.scene_probabilities - theirs.scene_probabilities).max() < 0.05


def test_int8_honours_hints_as_torch_float32_does(int8, exact):
    photo = validation_photos(1)[0]
    width, height = photo.size
    points = [(width // 4, height // 3, "#d02020"), (3 * width // 4, 2 * height // 3, "#2040d0")]
    hinted, expected, automatic = int8(photo, hints=points).image, exact(photo, hints=points).image, int8(photo).image
    assert psnr(hinted, expected) > 38
    assert psnr(hinted, automatic) < psnr(hinted, expected)  # the hints changed the colours, as in float32


def test_the_split_fusion_layer_computes_the_fusion_layer():
    fusion = load_model().fusion
    split = SplitFusion(fusion.conv)
    mid, vectors = torch.rand(2, fusion.conv.out_channels, 9, 13), torch.rand(2, fusion.conv.out_channels)
    with torch.no_grad():
        assert torch.allclose(split(split.mid_projection(mid), vectors), fusion(mid, vectors), atol=1e-5)


def quantized_state(model) -> dict[str, torch.Tensor]:
    """The int8 model's state, quantized tensors as their integers and scales."""
    state = {}
    for name, value in quantize(model).state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_quantized:
            value = torch.cat([value.int_repr().flatten().float(), value.q_per_channel_scales().float()])
        state[name] = value
    return state


def test_the_calibration_is_kept_per_weights_and_made_again_when_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    model = load_model()
    calibrated = quantized_state(model)
    [kept] = (tmp_path / "int8").iterdir()
    with monkeypatch.context() as patch:
        patch.setattr(quantized, "calibration_inputs", lambda: pytest.fail("calibrated again"))
        reloaded = quantized_state(load_model())
    assert calibrated.keys() == reloaded.keys()
    assert all(torch.equal(calibrated[name], reloaded[name]) for name in calibrated if name.endswith("weight"))
    assert all(calibrated[name] == reloaded[name] for name in calibrated if name.endswith(("scale", "zero_point")))
    with torch.no_grad():
        model.colorization.layers[-2].bias.add_(0.1)  # changed weights: calibrated and kept anew
    quantize(model)
    assert len(list((tmp_path / "int8").iterdir())) == 2
    kept.write_bytes(kept.read_bytes()[:1000])  # cut short: calibrated again, and kept whole again
    again = quantized_state(load_model())
    assert all(calibrated[name] == again[name] for name in calibrated if name.endswith(("scale", "zero_point")))
    assert len(kept.read_bytes()) > 1000 and len(list((tmp_path / "int8").iterdir())) == 2
    whole = load_file(kept)
    # whole but not finite: gray photos for good; zeroed: 33 s a photo, other colours; negated: an error inside torch
    for poison in (lambda value: torch.full_like(value, float("nan")), torch.zeros_like, torch.neg):
        save_file({name: poison(value) if value.is_floating_point() else value for name, value in whole.items()}, kept)
        again = quantized_state(load_model())
        assert all(calibrated[name] == again[name] for name in calibrated if name.endswith(("scale", "zero_point")))


def test_the_calibration_is_the_same_whatever_the_thread_count_of_the_process_that_makes_it(tmp_path, monkeypatch):
    """It is kept and used by every later process: it differed (14 of 88 observer tensors) between 1 and 2 threads."""
    saved = torch.get_num_threads()
    kept = {}
    try:
        for threads in (1, 2):
            monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / str(threads)))
            torch.set_num_threads(threads)
            quantize(load_model())
            assert torch.get_num_threads() == threads
            [kept[threads]] = (tmp_path / str(threads) / "int8").iterdir()
    finally:
        torch.set_num_threads(saved)
    one, two = load_file(kept[1]), load_file(kept[2])
    assert one.keys() == two.keys() and all(torch.equal(one[name], two[name]) for name in one)


def live_observers() -> int:
    gc.collect()
    return sum(isinstance(each, ObserverBase) for each in gc.get_objects())


def test_a_torch_int8_colorizer_gone_leaves_no_module_of_its_making_alive(int8):
    """torch.ao kept every module its conversion saw (an unbounded cache): 7 MB a Colorizer, for the life of the
    process (a service that loaded a model per request grew from 391 to 731 MB in 50)."""
    before = live_observers()
    for _ in range(2):
        Colorizer.from_pretrained(None, "cpu", engine="torch-int8")(np.full((32, 48), 128, np.uint8))
    assert live_observers() == before


def test_a_cache_that_cannot_be_written_gives_a_calibration_for_this_process_with_a_warning(tmp_path, monkeypatch):
    """Calibrated again at each start without a word, where the ONNX engines say so."""
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a-file" / "cache"))
    with pytest.warns(UserWarning, match=r"cannot keep the int8 calibration in .*a-file.*: it is made again at each"):
        colorizer = Colorizer.from_pretrained(None, "cpu", engine="torch-int8")
    assert colorizer(np.full((32, 48), 128, np.uint8)).image.size == (48, 32)


def test_without_a_home_directory_the_calibration_is_kept_in_the_temporary_folder(tmp_path, monkeypatch):
    """A container run under a user id with no password entry and no HOME: Path.home() raises."""
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        Path.home()
    assert Colorizer.from_pretrained(None, "cpu", engine="torch-int8").engine == "torch-int8"
    assert len(list((tmp_path / "letcolor-cache" / "int8").iterdir())) == 1


def test_every_config_argument_of_the_model_is_in_the_cache_key(tiny_model):
    assert CONFIG_NAMES == ["num_classes", "class_names", "width", "hint_channels", "hint_propagation"]
    key = weights_key(tiny_model, 1)
    for name in CONFIG_NAMES:
        kept = getattr(tiny_model, name)
        setattr(tiny_model, name, ["changed"])
        assert weights_key(tiny_model, 1) != key, name
        setattr(tiny_model, name, kept)
    assert weights_key(tiny_model, 1) == key != weights_key(tiny_model, 2)


def test_the_cache_follows_xdg_cache_home_unless_letcolor_cache_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("onnx") == tmp_path / "xdg" / "letcolor" / "onnx"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG rules say
    assert cache_dir("onnx") == Path.home() / ".cache" / "letcolor" / "onnx"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "chosen"))
    assert cache_dir("int8") == tmp_path / "chosen" / "int8"


def test_auto_takes_int8_on_cpus_with_avx512_bf16_and_no_amx(monkeypatch):
    monkeypatch.setattr(engines, "cpu_has_fast_bfloat16", lambda: True)
    monkeypatch.setattr(engines, "cpu_has_amx", lambda: False)
    colorizer = Colorizer.from_pretrained()
    assert colorizer.engine == "torch-int8" and isinstance(colorizer.network, Int8Network)
    monkeypatch.setattr(engines, "cpu_has_amx", lambda: True)
    assert Colorizer.from_pretrained().engine == "torch"
    with pytest.raises(ValueError, match="the torch-int8 engine runs on a CPU"):
        engines.make_network(load_model(), torch.device("cuda"), Speedups(), "torch-int8")


def test_cli_engine_torch_int8(tmp_path, int8):
    photo = CALIBRATION_PHOTOS[0]
    assert cli.main(["colorize", str(photo), "-o", str(tmp_path), "--engine", "torch-int8"]) == 0
    written = Image.open((tmp_path / photo.name).with_suffix(".png")).convert("RGB")
    assert np.array_equal(np.asarray(written), np.asarray(int8(photo).image))  # calibrated alike: the same output


def test_torch_int8_colorizers_are_built_while_another_colorizes_in_another_thread(exact, examples_dir):
    """Building one traces its model (FX), which patches every module call in the process: a Colorizer colorizing
    meanwhile failed ("module is not installed as a submodule", 4 runs in 5), and so did two builds at once."""
    photo = Image.open(examples_dir / "chelsea_gray.png").resize((160, 106))
    expected = np.asarray(exact(photo).image)
    built, outputs, building = [], [], threading.Event()

    def build():
        building.set()
        built.append(np.asarray(Colorizer.from_pretrained(None, "cpu", engine="torch-int8")(photo).image))

    with ThreadPoolExecutor(3) as pool:
        builds = [pool.submit(build) for _ in range(4)]
        building.wait()
        while not all(each.done() for each in builds):
            outputs.append(np.asarray(exact(photo).image))
        for each in builds:
            each.result()
    assert len(outputs) > 3 and all(np.array_equal(output, expected) for output in outputs)
    assert all(np.array_equal(output, built[0]) for output in built)
