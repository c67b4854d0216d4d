"""The ONNX Runtime engine: export with dynamic sizes (and hint inputs), agreement with torch on real photos, the
cache of exported graphs, a machine without onnxruntime, and --engine in the CLI and the app."""

import itertools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import EXAMPLES, make_tiny_model
from PIL import Image
from served_app import served_app

from letcolor import Colorizer, cli, engines, onnx_engine
from letcolor.cache import CACHE_ENV_VAR
from letcolor.inference import Precision, Speedups, cpu_has_fast_bfloat16
from letcolor.pipeline import load_model

PHOTOS = [EXAMPLES / "china.jpg", EXAMPLES / "chelsea_gray.png", EXAMPLES / "rocket_gray.png"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def psnr(a, b) -> float:
    a, b = (np.asarray(image.convert("RGB"), np.float64) for image in (a, b))
    return 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-10))


def test_the_graphs_take_any_batch_and_size_and_match_the_network(tmp_path):
    model = make_tiny_model()
    network = onnx_engine.OnnxRuntimeNetwork(model)
    assert onnx_engine.graph_names(network.folder) == [onnx_engine.GLOBAL_GRAPH, onnx_engine.LOCAL_GRAPH]
    for name in (onnx_engine.GLOBAL_GRAPH, onnx_engine.LOCAL_GRAPH):
        onnx.checker.check_model(str(network.folder / name), full_check=True)
    with torch.no_grad():
        l224 = torch.rand(3, 1, 224, 224)
        expected = model.global_features(l224)
        output = network.global_output(l224)
        assert torch.allclose(output.features, expected.features, atol=1e-4)
        assert torch.allclose(output.scene_logits, expected.scene_logits, atol=1e-4)
        for n, height, width in [(1, 64, 64), (2, 96, 184), (1, 512, 8)]:
            l, vectors = torch.rand(n, 1, height, width), torch.rand(n, model.null_global.shape[0])
            ab = network.colorize(l, vectors)
            assert ab.shape == (n, 2, height // 2, width // 2)
            assert torch.allclose(ab, model.colorize(l, vectors), atol=1e-4)


@pytest.mark.parametrize("propagation", [False, True])
def test_a_hint_model_exports_its_hint_inputs(propagation):
    from test_hints import hint_model_from, live_hint_model

    model = hint_model_from(live_hint_model(), propagation) if propagation else live_hint_model()
    if propagation:
        with torch.no_grad():
            model.colorization.propagation.scale.fill_(1)
            hinted_everywhere = torch.ones(1, 3, 64, 64)
            model.colorize(torch.rand(1, 1, 64, 64), torch.rand(1, model.null_global.shape[0]), hinted_everywhere)
            # the propagation keeps window matrices for this size: in the exported graph they follow the size
    network = onnx_engine.OnnxRuntimeNetwork(model)
    assert onnx_engine.graph_names(network.folder)[-1] == onnx_engine.AUTOMATIC_GRAPH  # photos without hints
    l, vectors = torch.rand(1, 1, 80, 120), torch.rand(1, model.null_global.shape[0])
    hints = torch.zeros(1, 3, 80, 120)
    hints[:, :, 30:40, 50:60] = torch.tensor([0.5, -0.5, 1.0])[:, None, None]
    with torch.no_grad():
        assert torch.allclose(network.colorize(l, vectors, hints), model.colorize(l, vectors, hints), atol=1e-4)
        assert torch.allclose(network.colorize(l, vectors), model.colorize(l, vectors), atol=1e-4)
    assert not torch.allclose(network.colorize(l, vectors, hints), network.colorize(l, vectors), atol=1e-3)


@pytest.mark.parametrize(
    "options", [{}, {"use_global": False, "max_side": 256}, {"reference": EXAMPLES / "coffee.png"}]
)
def test_onnxruntime_colours_match_torch_float32_on_real_photos(options):
    exact = Colorizer.from_pretrained(None, "cpu", Speedups(fold_batchnorm=True), engine="torch")
    runtime = Colorizer.from_pretrained(None, "cpu", engine="onnxruntime")
    for photo in PHOTOS:
        ours, theirs = runtime(photo, **options), exact(photo, **options)
        assert psnr(ours.image, theirs.image) > 50
        assert list(ours.scenes) == list(theirs.scenes)


def test_int8_graphs_keep_the_input_and_output_convolutions_in_float_and_the_colours_close():
    from test_hints import live_hint_model

    folder = onnx_engine.cached_int8(live_hint_model())
    for name, kept in ((onnx_engine.LOCAL_GRAPH, 3), (onnx_engine.GLOBAL_GRAPH, 1)):
        graph = onnx.load(str(folder / name)).graph
        quantized_inputs = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
        convs = [node for node in graph.node if node.op_type == "Conv"]
        in_float = [conv.name for conv in convs if conv.input[1] not in quantized_inputs]  # their weights
        assert len(in_float) == kept and "/low_level/convs.0.0/Conv" in in_float
    exact = Colorizer.from_pretrained(None, "cpu", Speedups(fold_batchnorm=True), engine="torch")
    int8 = Colorizer.from_pretrained(None, "cpu", engine="onnxruntime-int8")
    for photo, strength in itertools.product(PHOTOS, (1, 2, 0)):  # at 2, 31 dB: calibrated at 1, vectors clipped
        assert psnr(int8(photo, global_strength=strength).image, exact(photo, global_strength=strength).image) > 40


def test_int8_honours_hints_as_torch_float32_does():
    """The hint propagation and the ab logits' conv stay in float32, as in torch-int8: quantized after a calibration
    without hints, the propagation's activations had a zero range and the hints were ignored (and the logits' conv
    was taken for the propagation's last)."""
    graph = onnx.load(str(onnx_engine.cached_int8(load_model()) / onnx_engine.LOCAL_GRAPH)).graph
    quantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    logits_and_gates = ("/colorization/layers.6/Conv", "/colorization/propagation/Conv_1")
    assert {node.input[1] for node in graph.node if node.name in logits_and_gates}.isdisjoint(quantized)  # weights
    quantizers = [node.name for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert quantizers and not [name for name in quantizers if "propagation" in name]
    exact = Colorizer.from_pretrained(None, "cpu", Speedups(fold_batchnorm=True), engine="torch")
    int8 = Colorizer.from_pretrained(None, "cpu", engine="onnxruntime-int8")
    photo = Image.open(EXAMPLES / "chelsea_gray.png")
    width, height = photo.size
    points = [(width // 4, height // 3, "#d02020"), (3 * width // 4, 2 * height // 3, "#2040d0")]
    hinted, expected, automatic = int8(photo, hints=points).image, exact(photo, hints=points).image, int8(photo).image
    assert psnr(hinted, expected) > 38
    assert psnr(hinted, automatic) < psnr(hinted, expected)  # the hints changed the colours, as in float32


def test_a_photo_without_hints_comes_out_the_same_beside_a_hinted_one_in_a_batch():
    """Its zero hint channels went through the int8 hint graph, where zero hints are not the automatic graph: with a
    model of hint filters, a photo without hints moved by up to 35 levels when a hinted photo shared its batch."""
    from test_hints import live_hint_model

    int8 = Colorizer(live_hint_model(), "cpu", engine="onnxruntime-int8")
    photo = Image.open(EXAMPLES / "chelsea_gray.png")
    alone = np.asarray(int8(photo).image, int)
    beside, hinted = int8.batch([photo, photo.copy()], hints=[None, [(40, 40, "#d02020"), (300, 200, "#2040d0")]])
    assert np.array_equal(np.asarray(beside.image, int), alone)
    assert np.abs(np.asarray(hinted.image, int) - alone).max() > 20  # the hints are at work


def test_the_graphs_are_exported_once_per_weights(cache, monkeypatch):
    model = load_model()
    first = onnx_engine.OnnxRuntimeNetwork(model).folder
    with monkeypatch.context() as patch:
        patch.setattr(onnx_engine, "export", lambda *args: pytest.fail("exported again"))
        assert onnx_engine.OnnxRuntimeNetwork(load_model()).folder == first
    assert [path.name for path in cache.iterdir()] == [first.name]  # nothing half-made beside it
    with torch.no_grad():
        model.colorization.layers[-2].bias.add_(0.1)  # changed weights: a new export
    assert onnx_engine.OnnxRuntimeNetwork(model).folder != first
    assert len(list(cache.iterdir())) == 2


def test_a_broken_entry_is_exported_again_and_stale_scratch_folders_are_swept(cache):
    """A truncated, missing or empty graph, or a half-copied folder, failed every later start (a raw ONNX Runtime
    error, or 'Directory not empty'); a killed export's scratch folder stayed forever."""
    model = make_tiny_model()
    folder = onnx_engine.OnnxRuntimeNetwork(model).folder
    whole = {path.name: path.read_bytes() for path in folder.iterdir()}
    l, vectors = torch.rand(1, 1, 64, 64), torch.rand(1, model.null_global.shape[0])
    expected = onnx_engine.OnnxRuntimeNetwork(model).colorize(l, vectors)
    stale, fresh, stale_file = cache / ".partial-killed", cache / ".partial-running", cache / ".partial-broken-file"
    for scratch in (stale, fresh):
        (scratch / "graphs").mkdir(parents=True)
    stale_file.write_bytes(b"an entry's name that a file took, moved aside")
    for old in (stale, stale_file):
        os.utime(old, (time.time() - 7200, time.time() - 7200))
    damages = {
        "truncated": lambda: (folder / "colorize.onnx").write_bytes(whole["colorize.onnx"][:5000]),
        "empty": lambda: (folder / "global.onnx").write_bytes(b""),
        "missing": lambda: (folder / "colorize.onnx").unlink(),
        # of the right size but zero-filled (a power cut before the data reached the disk): trusted, an ONNX error
        "zeroed": lambda: (folder / "colorize.onnx").write_bytes(bytes(len(whole["colorize.onnx"]))),
        "unlisted": lambda: unlisted_global_graph(folder),
        "a file in its place": lambda: (shutil.rmtree(folder), folder.write_bytes(b"no folder")),  # (left beside)
    }
    for damage in damages.values():
        damage()
        network = onnx_engine.OnnxRuntimeNetwork(model)
        assert network.folder == folder and {path.name: path.read_bytes() for path in folder.iterdir()} == whole
        assert torch.equal(network.colorize(l, vectors), expected)
    assert not stale.exists() and not stale_file.exists() and fresh.exists()
    assert sorted(path.name for path in cache.iterdir()) == sorted([folder.name, fresh.name])


def unlisted_global_graph(folder: Path) -> None:
    """The global graph gone, and gone from the manifest too."""
    manifest = json.loads((folder / onnx_engine.MANIFEST).read_text())
    del manifest[onnx_engine.GLOBAL_GRAPH]
    (folder / onnx_engine.MANIFEST).write_text(json.dumps(manifest))
    (folder / onnx_engine.GLOBAL_GRAPH).unlink()


def test_a_cache_that_cannot_be_written_gives_graphs_for_this_process_with_a_warning(tmp_path, monkeypatch):
    """The app died at start with OSError (a read-only or full cache, a home that cannot be written)."""
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a-file" / "cache"))
    model = make_tiny_model()
    with pytest.warns(UserWarning, match="cannot keep ONNX graphs in .*a-file.*: made for this process only"):
        network = onnx_engine.OnnxRuntimeNetwork(model)
    assert network.folder.is_dir() and not str(network.folder).startswith(str(tmp_path))
    ab = network.colorize(torch.rand(1, 1, 64, 64), torch.rand(1, model.null_global.shape[0]))
    assert ab.shape == (1, 2, 32, 32)
    with monkeypatch.context() as patch, pytest.warns(UserWarning):
        patch.setattr(onnx_engine, "export", lambda *args: pytest.fail("exported again"))
        assert onnx_engine.OnnxRuntimeNetwork(model).folder == network.folder  # kept for the process
    with pytest.warns(UserWarning):
        int8 = onnx_engine.OnnxRuntimeNetwork(model, int8=True)
    assert int8.colorize(torch.rand(1, 1, 64, 64), torch.rand(1, model.null_global.shape[0])).shape == ab.shape


def test_int8_quantizing_writes_nothing_into_the_shared_float32_entry(caplog):
    """ONNX Runtime's quantizer wrote a shape-inferred copy beside each float32 graph under a fixed name, then
    deleted it: two processes quantizing at once deleted each other's copy (FileNotFoundError). And it warned
    "Please consider to run pre-processing" for every graph, on the root logger: six lines at the first run."""
    model = make_tiny_model()
    float_graphs = onnx_engine.cached_export(model)
    before = float_graphs.stat().st_mtime_ns, sorted(path.name for path in float_graphs.iterdir())
    with caplog.at_level(logging.WARNING):
        onnx_engine.cached_int8(model)
    assert not [record for record in caplog.records if "pre-processing" in record.getMessage()]
    assert logging.getLogger().isEnabledFor(logging.WARNING)  # warnings are back on after it
    assert (float_graphs.stat().st_mtime_ns, sorted(path.name for path in float_graphs.iterdir())) == before


def test_int8_quantizing_leaves_the_programs_logging_setting_as_it_was(monkeypatch, tmp_path):
    """Quantizing ended with logging.disable(NOTSET): a program that had silenced its logging got its messages back."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))  # a fresh cache: the graphs are quantized now
    logging.disable(logging.CRITICAL)
    try:
        onnx_engine.cached_int8(make_tiny_model())
        assert logging.root.manager.disable == logging.CRITICAL
    finally:
        logging.disable(logging.NOTSET)


def test_without_onnxruntime_the_engine_is_a_clear_error_and_torch_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    monkeypatch.delitem(sys.modules, "letcolor.onnx_engine", raising=False)
    with pytest.raises(ValueError, match="the onnxruntime engine needs onnxruntime: pip install onnxruntime"):
        Colorizer.from_pretrained(engine="onnxruntime")
    assert Colorizer.from_pretrained(engine="torch")(PHOTOS[0]).image.size == (640, 427)
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        Colorizer.from_pretrained(engine="tensorrt")


def test_auto_is_torch_on_cpus_with_amx_and_onnxruntime_on_cpus_without_bfloat16_or_int8(monkeypatch):
    monkeypatch.setattr(engines, "cpu_has_fast_bfloat16", lambda: True)
    monkeypatch.setattr(engines, "cpu_has_amx", lambda: True)
    assert Colorizer.from_pretrained().engine == "torch"
    monkeypatch.setattr(engines, "cpu_has_fast_bfloat16", lambda: False)
    assert Colorizer.from_pretrained().engine == "torch-int8"  # an AVX2-only CPU
    monkeypatch.setattr(engines, "int8_available", lambda: False)
    colorizer = Colorizer.from_pretrained()
    assert colorizer.engine == "onnxruntime" and isinstance(colorizer.network, onnx_engine.OnnxRuntimeNetwork)
    assert colorizer(PHOTOS[0]).image.size == (640, 427)
    assert Colorizer.from_pretrained(speedups=Speedups()).engine == "torch"  # speed-ups are torch's


def cpu_with(monkeypatch, amx: bool, avx512_bf16: bool, isa_limit: str | None = None):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if isa_limit:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa_limit)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


def test_bfloat16_where_the_cpu_runs_it_natively(monkeypatch):
    """AMX (an Intel Xeon) and AVX512-BF16 without AMX (an AMD EPYC): bfloat16 for torch, and auto takes torch with
    AMX, torch-int8 without (`test_quantized`); elsewhere float32 and torch-int8."""
    for amx, avx512_bf16, engine in ((True, True, "torch"), (False, True, "torch-int8")):
        cpu_with(monkeypatch, amx, avx512_bf16)
        assert cpu_has_fast_bfloat16()
        assert Speedups.default_for(torch.device("cpu")).precision == Precision.BFLOAT16
        assert Colorizer.from_pretrained().engine == engine
    cpu_with(monkeypatch, amx=False, avx512_bf16=False)
    assert not cpu_has_fast_bfloat16()
    assert Speedups.default_for(torch.device("cpu")).precision == Precision.FLOAT32
    assert Colorizer.from_pretrained().engine == "torch-int8"


def test_amx_kept_off_by_onednn_counts_as_no_fast_bfloat16(monkeypatch):
    """There bfloat16 took 1.6x float32's time: the CPU default is float32, and auto takes torch-int8."""
    cpu_with(monkeypatch, amx=True, avx512_bf16=True, isa_limit="AVX512_CORE_BF16")
    assert not cpu_has_fast_bfloat16()
    assert Speedups.default_for(torch.device("cpu")).precision == Precision.FLOAT32
    assert Colorizer.from_pretrained().engine == "torch-int8"
    cpu_with(monkeypatch, amx=False, avx512_bf16=True, isa_limit="AVX2")
    assert not cpu_has_fast_bfloat16()


def test_auto_without_onnxruntime_runs_on_torch_with_a_notice(monkeypatch):
    monkeypatch.setattr(engines, "cpu_has_fast_bfloat16", lambda: False)
    monkeypatch.setattr(engines, "int8_available", lambda: False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.warns(UserWarning, match="onnxruntime is not installed, so the network runs on torch"):
        colorizer = Colorizer.from_pretrained()
    assert colorizer.engine == "torch" and colorizer(PHOTOS[0]).image.size == (640, 427)


def test_the_sessions_do_not_spin_between_runs():
    """Spinning threads took the cores from torch's work between the two graphs: 2x slower end to end."""
    network = onnx_engine.OnnxRuntimeNetwork(load_model())
    for session in (network._global, network._local):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_cli_engine_and_export(tmp_path, capsys):
    photo = PHOTOS[1]
    assert cli.main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--engine", "onnxruntime"]) == 0
    expected = Colorizer.from_pretrained(engine="onnxruntime")(photo).image
    written = (tmp_path / "out" / photo.name).with_suffix(".png")
    assert np.array_equal(np.asarray(expected), np.asarray(Image.open(written).convert("RGB")))

    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / onnx_engine.GLOBAL_GRAPH).symlink_to(tmp_path / "gone" / "global.onnx")  # was followed
    assert cli.main(["export-onnx", "-o", str(tmp_path / "graphs")]) == 0
    assert (tmp_path / "graphs" / onnx_engine.GLOBAL_GRAPH).is_file() and not (tmp_path / "gone").exists()
    report = capsys.readouterr().out
    assert "china.jpg: onnxruntime against torch float32, PSNR" in report
    assert min(float(line.split("PSNR ")[1].split()[0]) for line in report.splitlines() if "PSNR" in line) > 50
    for name in (onnx_engine.GLOBAL_GRAPH, onnx_engine.LOCAL_GRAPH, onnx_engine.AUTOMATIC_GRAPH):  # the bundled
        onnx.checker.check_model(str(tmp_path / "graphs" / name))  # model takes hints: its automatic path too


def test_export_to_a_folder_that_cannot_be_made_is_a_usage_error_before_any_work(tmp_path, capsys, monkeypatch):
    """Under a file: a NotADirectoryError traceback, after the model was loaded and its graphs exported."""
    monkeypatch.setattr(cli, "load_model", lambda *args: pytest.fail("the model was loaded"))
    (tmp_path / "file").write_text("")
    assert cli.main(["export-onnx", "-o", str(tmp_path / "file" / "graphs")]) == cli.EXIT_USAGE
    assert f"-o {tmp_path / 'file' / 'graphs'}: cannot create the folder" in capsys.readouterr().err
    assert cli.main(["export-onnx", "-o", str(tmp_path / "file")]) == cli.EXIT_USAGE
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "graphs" / onnx_engine.LOCAL_GRAPH).mkdir(parents=True)  # a traceback after global.onnx was written
    assert cli.main(["export-onnx", "-o", str(tmp_path / "graphs")]) == cli.EXIT_USAGE
    assert f"{onnx_engine.LOCAL_GRAPH} is a folder there" in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "graphs").iterdir()] == [onnx_engine.LOCAL_GRAPH]


def test_an_export_leaves_no_graph_of_another_model_and_its_warnings_are_one_line(tmp_path, capsys, monkeypatch):
    """A model without hints exported where one with hints was: its automatic graph stayed, to be run with this
    model's graphs. A cache that cannot be written: Python's two-line warning, naming a line of letcolor's code."""
    model = make_tiny_model()
    assert not model.takes_hints
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / onnx_engine.AUTOMATIC_GRAPH).write_bytes(b"another model's graph")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a-file" / "cache"))
    assert cli.main(["export-onnx", "--model", str(tmp_path / "model"), "-o", str(tmp_path / "graphs")]) == 0
    assert sorted(path.name for path in (tmp_path / "graphs").iterdir()) == [
        onnx_engine.LOCAL_GRAPH,
        onnx_engine.GLOBAL_GRAPH,
    ]
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"warning: cannot keep ONNX graphs in {tmp_path / 'a-file'}")


def test_an_export_of_a_model_that_is_not_there_makes_no_folder(tmp_path, capsys):
    """The output folder was made, and left empty, before the model was found missing."""
    assert cli.main(["export-onnx", "--model", str(tmp_path / "nothing"), "-o", str(tmp_path / "a" / "graphs")]) == 2
    assert "no such model directory" in capsys.readouterr().err and not (tmp_path / "a").exists()


@pytest.mark.slow
def test_the_app_runs_on_the_engine_that_letcolor_engine_names(monkeypatch, tiny_model_dir):
    from gradio_client import Client, handle_file

    monkeypatch.setenv("LETCOLOR_ENGINE", "onnxruntime")
    with served_app(tiny_model_dir) as url:
        path, _ = Client(url, verbose=False).predict(handle_file(PHOTOS[1]), max_side=256, api_name="/colorize")
    expected = Colorizer.from_pretrained(tiny_model_dir, engine="onnxruntime")(PHOTOS[1], max_side=256).image
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(expected))
    monkeypatch.setenv("LETCOLOR_ENGINE", "tensorrt")
    import app

    colorizer, problem = app.load_colorizer()
    assert colorizer is None and "unknown engine 'tensorrt'" in problem
