"""`letcolor colorize-dataset` on a local Ray with 2 CPUs: a parquet dataset with corrupt rows, the driver killed
with SIGKILL and the command run again, a folder of images mirrored with --images, a file:// URL, and Ray missing.

Each run starts Ray (a few seconds) and colorizes with the tiny test model."""

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath

import datasets
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import EVERYDAY, EXAMPLES, ROOT
from PIL import Image

from letcolor import Colorizer, cli, pipeline
from letcolor.archive import (
    LOCK_NAME,
    TEMPORARY_SUFFIX,
    ColorizeRows,
    ImagesDestination,
    Job,
    ParquetDestination,
    Source,
    colorize_dataset,
    for_workers,
    locked,
    read_files,
    read_row_groups,
    rows_per_call,
)

pytestmark = pytest.mark.slow


def command(source, destination, model: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "letcolor", "colorize-dataset", str(source), "-o", str(destination),
        "--model", str(model), "--num-cpus", "2", "--max-side", "128", *extra,
    ]  # fmt: skip


def run(arguments: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(arguments, env=environment, capture_output=True, text=True, timeout=timeout)


def header_only_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose header declares width x height (its data is a 16x16 image's): refused from the header."""
    data = io.BytesIO()
    Image.new("L", (16, 16)).save(data, format="JPEG")
    raw = bytearray(data.getvalue())
    marker = raw.index(b"\xff\xc0")
    raw[marker + 5 : marker + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(raw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int]], set[str]]:
    """A Hub-layout parquet dataset of the 80 photos of the everyday cut and 3 corrupt rows, in 3 shards: its path,
    each good id's photo size, and the corrupt ids."""
    rows = []
    for path in sorted((EVERYDAY / "data").glob("*.parquet")):
        rows += pq.read_table(path, columns=["id", "image"]).to_pylist()
    sizes = {row["id"]: Image.open(io.BytesIO(row["image"]["bytes"])).size for row in rows}
    corrupt = {
        "corrupt/not-an-image.jpg": b"this is not a photo",
        "corrupt/truncated.jpg": rows[0]["image"]["bytes"][:300],
        "corrupt/declares-12000x12000.jpg": header_only_jpeg(12_000, 12_000),
    }
    rows += [{"id": name, "image": {"bytes": data, "path": name}} for name, data in corrupt.items()]
    folder = tmp_path_factory.mktemp("archive") / "data"
    folder.mkdir()
    for shard in range(3):
        pq.write_table(pa.Table.from_pylist(rows[shard::3]), folder / f"train-0000{shard}-of-00003.parquet")
    return folder.parent, sizes, set(corrupt)


# The driver (the real command) kills itself with SIGKILL right after committing its third shard: mid-run, whatever
# the machine's speed (a kill timed from outside raced a run that can finish in under a second).
DRIVER_KILLED_AFTER_THREE_SHARDS = """
import os, signal, sys
from letcolor import archive, cli
commit = archive.ParquetDestination.commit
def commit_then_die(self, rows):
    commit(self, rows)
    if self.shards == 3:
        os.kill(os.getpid(), signal.SIGKILL)
archive.ParquetDestination.commit = commit_then_die
sys.exit(cli.main(sys.argv[1:]))
"""

# The same, with SIGTERM (a scheduler's stop): the command's clean stop, not Ray's handler
DRIVER_STOPPED_AFTER_THREE_SHARDS = DRIVER_KILLED_AFTER_THREE_SHARDS.replace("SIGKILL", "SIGTERM")

# A model actor kills its own process with SIGKILL in the middle of its first batch (once per run: a marker file).
WORKER_KILLED_IN_FIRST_BATCH = """
import os, signal, sys
from letcolor import archive, cli
class DiesOnce(archive.ColorizeRows):
    def __call__(self, batch):
        marker = os.environ["LETCOLOR_TEST_MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)
archive.ColorizeRows = DiesOnce
sys.exit(cli.main(sys.argv[1:]))
"""


def run_in_own_session(arguments: list[str], **environment: str) -> subprocess.CompletedProcess:
    """The command in a session of its own, which is killed when it ends (with the local Ray it started, which a
    killed driver leaves behind)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **environment}
    process = subprocess.Popen(arguments, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr)


def test_killed_mid_run_then_run_again_every_good_photo_is_there_once(archive, tiny_model_dir, tmp_path):
    source, sizes, corrupt = archive
    destination = tmp_path / "colorized"
    arguments = command(source, destination, tiny_model_dir, "--batch-size", "2", "--shard-rows", "2")
    killed = run_in_own_session([sys.executable, "-c", DRIVER_KILLED_AFTER_THREE_SHARDS, *arguments[3:]])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (destination / "data" / ".half-written.letcolor-partial").write_bytes(b"PAR1 cut short")  # as a kill can leave
    committed = datasets.load_dataset(str(destination), split="train")
    assert len(committed) == 6

    again = run(arguments)
    errors_left = bool(corrupt - set(committed["id"]))
    assert again.returncode == (1 if errors_left else 0), again.stderr[-3000:]  # 1: some rows of this run failed
    assert f"{len(committed)} done before" in again.stdout
    assert not list((destination / "data").glob("*.letcolor-partial"))
    result = datasets.load_dataset(str(destination), split="train")
    ids = result["id"]
    assert sorted(ids) == sorted([*sizes, *corrupt])  # every row exactly once
    for row in result:
        if row["id"] in corrupt:
            assert row["image"] is None and row["id"].split("/")[1] in row["error"]
        else:
            assert row["error"] is None and row["image"].size == sizes[row["id"]] and row["image"].mode == "RGB"
            assert len(row["classes"]) == 5
    errors = dict(zip(result["id"], result["error"], strict=True))
    assert errors["corrupt/declares-12000x12000.jpg"].endswith("12000x12000 is 144 MP, over the 100 MP limit")
    counted = run(arguments + ["--dry-run"])
    assert f"0 photos to colorize, {len(ids)} done before (3 of them errors: --retry-errors" in counted.stdout
    assert "3 photos to colorize, 80 done before" in run(arguments + ["--dry-run", "--retry-errors"]).stdout


def test_sigterm_stops_cleanly_and_running_again_finishes_the_rest(archive, tiny_model_dir, tmp_path):
    """Ray's SIGTERM handler, set by ray.init, replaced the command's: Ray's stack dump and exit 15."""
    source, sizes, corrupt = archive
    destination = tmp_path / "colorized"
    arguments = command(source, destination, tiny_model_dir, "--batch-size", "2", "--shard-rows", "2")
    stopped = run_in_own_session([sys.executable, "-c", DRIVER_STOPPED_AFTER_THREE_SHARDS, *arguments[3:]])
    assert stopped.returncode == cli.EXIT_TERMINATED and stopped.stderr.endswith("terminated\n"), stopped.stderr[-3000:]
    assert "SIGTERM received" not in stopped.stderr
    assert len(datasets.load_dataset(str(destination), split="train")) == 6
    again = run(arguments)
    assert "6 done before" in again.stdout, again.stderr[-3000:]
    assert sorted(datasets.load_dataset(str(destination), split="train")["id"]) == sorted([*sizes, *corrupt])


def test_sigterm_while_ray_starts_stops_cleanly(archive, tiny_model_dir, tmp_path):
    """Ray's handler, set first thing in ray.init, took it: exit 15 without a word, DST's lock file left behind. (Ray's
    own stack dump, from a handler its core worker sets, still comes first.)"""
    driver = """
import os, signal, sys, ray
from letcolor import cli
start = ray.init
def start_and_be_stopped(*args, **kwargs):
    result = start(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # (handled at once: still within ray.init's call)
    return result
ray.init = start_and_be_stopped
sys.exit(cli.main(sys.argv[1:]))
"""
    destination = tmp_path / "colorized"
    arguments = command(archive[0], destination, tiny_model_dir)[3:]
    stopped = run_in_own_session([sys.executable, "-c", driver, *arguments])
    assert stopped.returncode == cli.EXIT_TERMINATED and stopped.stderr.endswith("terminated\n"), stopped.stderr[-3000:]
    assert list(destination.iterdir()) == []


def test_retrying_errors_removes_their_rows_from_committed_shards_and_keeps_the_rest(tmp_path):
    destination = ParquetDestination(str(tmp_path))
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    for ids, errors in ((["a", "b"], ["", "b: not an image"]), (["c"], ["c: truncated"]), (["d"], [""])):
        images = [b"" if error else png.getvalue() for error in errors]
        destination.commit({"id": ids, "image": images, "suffix": [".png"] * len(ids), "classes": ["[]"] * len(ids),
                            "error": errors})  # fmt: skip
    ids = ["a", "b", "c", "d"]
    assert destination.progress(ids) == (set(ids), {"b", "c"})
    destination.forget_errors()
    assert destination.progress(ids) == ({"a", "d"}, set())
    assert len(list((tmp_path / "data").glob("train-*.parquet"))) == 2  # c's shard held only its error
    rows = datasets.load_dataset(str(tmp_path), split="train")
    assert sorted(rows["id"]) == ["a", "d"] and all(image.size == (4, 4) for image in rows["image"])


def test_a_model_worker_killed_mid_batch_is_replaced_and_no_row_is_lost_or_doubled(archive, tiny_model_dir, tmp_path):
    source, sizes, corrupt = archive
    destination, marker = tmp_path / "colorized", tmp_path / "worker-was-killed"
    arguments = command(source, destination, tiny_model_dir, "--batch-size", "4")[3:]
    result = run_in_own_session([sys.executable, "-c", WORKER_KILLED_IN_FIRST_BATCH, *arguments],
                                LETCOLOR_TEST_MARKER=str(marker))  # fmt: skip
    assert marker.exists()  # a worker did die
    assert result.returncode == 1, result.stderr[-3000:]  # 1: the corrupt rows
    ids = datasets.load_dataset(str(destination), split="train")["id"]
    assert sorted(ids) == sorted([*sizes, *corrupt])


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def test_a_folder_becomes_a_mirrored_tree_of_images_and_its_inputs_are_untouched(tiny_model_dir, tmp_path):
    source = tmp_path / "album"
    (source / "1950s" / "summer").mkdir(parents=True)
    Image.open(EXAMPLES / "china.jpg").save(source / "1950s" / "harbour.jpg")
    Image.open(EXAMPLES / "chelsea_gray.png").save(source / "1950s" / "summer" / "cat.png")
    Image.open(EXAMPLES / "coffee.png").convert("L").save(source / "scan.tif")
    (source / "1950s" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    before = tree_digest(source)
    destination = tmp_path / "colorized"
    colour_options = ["--reference", str(EXAMPLES / "coffee.png"), "--strength", "1.5", "--palette", "0.3"]
    colour_options += ["--refine", "--engine", "torch"]
    result = run(command(f"file://{source}", destination, tiny_model_dir, "--images", *colour_options))
    assert result.returncode == 1, result.stderr[-3000:]
    assert tree_digest(source) == before
    written = {str(p.relative_to(destination)) for p in destination.rglob("*") if p.is_file()}
    assert written == {"1950s/harbour.jpg", "1950s/summer/cat.png", "scan.tif.png", "errors.jsonl"}
    for name, original in [("1950s/harbour.jpg", "1950s/harbour.jpg"), ("scan.tif.png", "scan.tif")]:
        output = Image.open(destination / name)
        assert output.size == Image.open(source / original).size and output.mode == "RGB"
        assert output.format == ("JPEG" if name.endswith(".jpg") else "PNG")
    colorizer = Colorizer.from_pretrained(tiny_model_dir, engine="torch")
    options = {"reference": EXAMPLES / "coffee.png", "global_strength": 1.5, "palette_strength": 0.3, "refine": True}
    for name, original in [("1950s/summer/cat.png", "1950s/summer/cat.png"), ("scan.tif.png", "scan.tif")]:
        expected = np.asarray(colorizer(source / original, max_side=128, **options).image.convert("RGB"), dtype=int)
        assert np.abs(np.asarray(Image.open(destination / name), dtype=int) - expected).max() <= 1, name
    assert "1950s/broken.jpg" in (destination / "errors.jsonl").read_text()
    again = run(command(source, destination, tiny_model_dir, "--images", "--dry-run"))
    assert "0 photos to colorize, 4 done before (1 of them errors" in again.stdout

    Image.open(EXAMPLES / "china.jpg").save(source / "1950s" / "broken.jpg")  # the scan replaced by a good one
    unchanged = tree_digest(destination)
    retried = run(command(source, destination, tiny_model_dir, "--images", "--retry-errors"))
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "1 rows done (0 errors)" in retried.stdout and "3 done before" in retried.stdout
    assert not (destination / "errors.jsonl").exists()
    assert Image.open(destination / "1950s" / "broken.jpg").size == Image.open(source / "1950s" / "broken.jpg").size
    assert {name: tree_digest(destination)[name] for name in unchanged if name != "errors.jsonl"} == {
        name: digest for name, digest in unchanged.items() if name != "errors.jsonl"
    }  # the others are not written again


def test_an_errors_line_that_a_crash_cut_short_is_done_again_and_ended_before_the_next(tmp_path):
    """A crash mid-append left '{"id": "tru': every later run stopped with a JSON error until it was edited."""
    destination = ImagesDestination(str(tmp_path))
    (tmp_path / "errors.jsonl").write_text('{"id": "a.png", "error": "not an image"}\n{"id": "tru')
    done, failed = destination.progress(["a.png", "b.png", "truncated.png"])
    assert done == failed == {"a.png"}
    destination.commit({"id": ["b.png"], "image": [b""], "suffix": [".png"], "error": ["b.png: not an image"]})
    assert destination.progress(["a.png", "b.png", "truncated.png"])[1] == {"a.png", "b.png"}


def test_hints_per_photo_reach_the_colours(tmp_path):
    from test_hints import live_hint_model

    model = tmp_path / "hint-model"
    live_hint_model().save_pretrained(model)
    source, hints = tmp_path / "photos", tmp_path / "hints"
    (source / "a").mkdir(parents=True)
    (hints / "a").mkdir(parents=True)
    for name in ("a/one.png", "two.png", "three.png"):
        Image.open(EXAMPLES / "chelsea_gray.png").save(source / name)
    (hints / "a" / "one.png.json").write_text('[[200, 150, "#2040e0"], [100, 100, "#c0392b"]]')
    (hints / "three.png.json").write_text("[[200, 150, not JSON")  # in the same batch: it alone fails
    result = run(command(source, tmp_path / "out", model, "--images", "--hints", str(hints)))
    assert result.returncode == 1, result.stderr[-3000:]
    hinted, plain = (Image.open(tmp_path / "out" / name) for name in ("a/one.png", "two.png"))
    assert hinted.tobytes() != plain.tobytes()  # the same photo: only the hints differ
    assert not (tmp_path / "out" / "three.png").exists()
    assert '"id": "three.png"' in (tmp_path / "out" / "errors.jsonl").read_text()


def test_an_actor_call_of_many_rows_colorizes_them_in_network_batches_of_batch_size(tiny_model_dir):
    photos = [EXAMPLES / name for name in ("china.jpg", "coffee.png", "chelsea_gray.png", "china.jpg", "coffee.png")]
    batch = {
        "id": [f"{index}-{path.name}" for index, path in enumerate(photos)] + ["broken.jpg"],
        "bytes": [path.read_bytes() for path in photos] + [b"not a photo"],
        "name": [path.name for path in photos] + ["broken.jpg"],
    }
    actor = ColorizeRows(str(tiny_model_dir), "torch", "cpu", {"max_side": 128}, None, network_batch=2)
    network_batches = []
    colorize = actor.colorizer.batch
    actor.colorizer.batch = lambda images, **options: network_batches.append(len(images)) or colorize(images, **options)
    rows = actor(batch)
    assert network_batches == [2, 2, 1]
    assert rows["id"] == batch["id"] and rows["error"][-1] and not any(rows["error"][:-1])
    for data, path in zip(rows["image"], photos, strict=False):
        assert Image.open(io.BytesIO(data)).size == Image.open(path).size


@pytest.mark.parametrize(
    ("rows", "actors", "batch_size", "expected"),
    [(10_000, 2, 8, 32), (64, 4, 8, 16), (1000, 64, 8, 16), (10_000, 2, 12, 36), (10_000, 2, 64, 64), (3, 8, 1, 1)],
)
def test_an_actor_call_is_a_whole_number_of_network_batches_and_a_small_run_reaches_every_actor(
    rows, actors, batch_size, expected
):
    assert rows_per_call(Job("src", "dst", batch_size=batch_size, concurrency=actors), rows) == expected


def test_a_destination_inside_the_source_is_refused(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    arguments = ["colorize-dataset", str(tmp_path / "photos"), "-o", str(tmp_path / "photos" / "out"), "--images"]
    assert cli.main(arguments) == 2
    assert "DST must be outside SRC" in capsys.readouterr().err


def test_a_destination_file_and_a_source_without_photos_are_refused_before_ray(tmp_path, capsys, monkeypatch):
    """The first ran the whole job, then failed with a traceback at the first shard; the second reported success."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "photos").mkdir()
    (tmp_path / "empty").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "photos" / "a.png")
    (tmp_path / "out.txt").write_text("a file")
    assert cli.main(["colorize-dataset", str(tmp_path / "photos"), "-o", str(tmp_path / "out.txt")]) == 2
    assert "-o " + str(tmp_path / "out.txt") + ": is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["colorize-dataset", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'empty'}: no photos there" in capsys.readouterr().err
    assert (tmp_path / "out.txt").read_text() == "a file" and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("ids", "images", "message"),
    [
        (["a", "../escape.png"], True, "the id '../escape.png' cannot name a file inside DST"),  # written outside DST
        (["a", "/tmp/absolute.png"], True, "the id '/tmp/absolute.png' cannot name a file inside DST"),
        (["a.png", "a.png/b.png"], True, "a.png and a.png/b.png clash: a.png would be both a file and a folder"),
        (["x.png", "./x.png"], True, "x.png and ./x.png could both be written to x.png"),  # one photo was lost
        (["dup", "dup"], False, "the id 'dup' is given twice in SRC"),  # both colorized, two rows for one id
        (["a", None], False, "row 1 has no id (null)"),  # became the id "None"
        (["a", "nul\x00.png"], True, "cannot name a file inside DST (empty, absolute, with '..' or a NUL)"),  # midway
        (["a" * 250 + ".tif"], True, "has a name over 255 bytes"),  # its .tif.png: every run failed on it
        (["b" * 256 + "/a.png"], True, "has a name over 255 bytes"),  # a folder's name: halfway through the run
        (["a.png", "errors.jsonl/x.png"], True, "clash: errors.jsonl would be both the errors' file and a folder"),
    ],
)
def test_parquet_ids_that_cannot_each_name_one_output_are_refused_before_ray(tmp_path, capsys, monkeypatch, ids,
                                                                            images, message):  # fmt: skip
    """A parquet row's id names its file under --images: ../escape.png was written outside DST, a.png/b.png failed
    every run once a.png was written (FileExistsError), and a repeated id was colorized twice."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    png = io.BytesIO()
    Image.new("L", (16, 16)).save(png, format="PNG")
    (tmp_path / "src" / "data").mkdir(parents=True)
    rows = {"id": ids, "image": [{"bytes": png.getvalue(), "path": None}] * len(ids)}
    pq.write_table(pa.table(rows), tmp_path / "src" / "data" / "train-00000.parquet")
    argv = ["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out"), *(["--images"] if images else [])]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["src"]


HOLD_THE_LOCK = """
import sys, time
from letcolor.archive import writing_into
with writing_into(sys.argv[1], create=True):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_into_the_same_destination_is_refused_until_the_first_ends_or_dies(tmp_path, capsys,
                                                                                        monkeypatch):  # fmt: skip
    """Two runs into one DST at once both colorized the photos left (each of their rows twice), and each removed the
    other's half-written shards as a crash's leftovers."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "photos").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "photos" / "a.png")
    destination = tmp_path / "out"
    (destination / "data").mkdir(parents=True)
    being_written = destination / "data" / f".shard{TEMPORARY_SUFFIX}"
    being_written.write_bytes(b"half a shard")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(destination)], env=environment,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert first.stdout.readline() == "held\n"
        for extra in ([], ["--dry-run"]):
            assert cli.main(["colorize-dataset", str(tmp_path / "photos"), "-o", str(destination), *extra]) == 2
            assert "another colorize-dataset run is writing there" in capsys.readouterr().err
        assert being_written.read_bytes() == b"half a shard"
    finally:
        first.kill()
        first.wait()
    assert cli.main(["colorize-dataset", str(tmp_path / "photos"), "-o", str(destination), "--dry-run"]) == 0
    assert "1 photos to colorize" in capsys.readouterr().out
    assert not being_written.exists() and not (destination / LOCK_NAME).exists()


def test_what_the_workers_read_is_named_as_they_can_find_it(tmp_path, monkeypatch):
    """On a cluster the workers run in another folder and environment: a relative --hints was silently not found (the
    photos came out without their hints), a relative --model or --reference failed in an actor, and $LETCOLOR_MODEL
    was the driver's alone (the workers used the bundled model)."""
    monkeypatch.chdir(tmp_path)
    for folder in ("hints", "my-model"):
        (tmp_path / folder).mkdir()
    (tmp_path / "ref.png").write_bytes((EXAMPLES / "coffee.png").read_bytes())
    job = Job("src", "out", model="my-model", hints="hints", options={"reference": "ref.png", "refine": True})
    ready = for_workers(job)
    assert (ready.model, ready.hints) == (str(tmp_path / "my-model"), str(tmp_path / "hints"))
    assert ready.options == {"reference": str(tmp_path / "ref.png"), "refine": True}
    monkeypatch.setenv(pipeline.MODEL_ENV_VAR, "my-model")
    assert for_workers(Job("src", "out")).model == str(tmp_path / "my-model")
    assert for_workers(Job("src", "out", model="owner/hub-model")).model == "owner/hub-model"
    photo = Image.open(EXAMPLES / "coffee.png")  # a reference given as an image (the Python API) stays one
    assert for_workers(Job("src", "out", options={"reference": photo})).options["reference"] is photo


def test_a_local_folder_with_colons_in_its_name_is_read_as_a_folder(tmp_path, capsys, monkeypatch):
    """fsspec read "scans::1950" as two URLs chained: "not a folder"; a home folder's "~" is expanded, as fsspec
    did."""
    folder = tmp_path / "scans::1950"
    folder.mkdir()
    Image.new("L", (16, 16)).save(folder / "a.png")
    assert cli.main(["colorize-dataset", str(folder), "-o", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "1 photos to colorize, 0 done before" in capsys.readouterr().out
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (str(folder), f"file://{folder}", "~/scans::1950"):
        assert Source.open(name).ids() == ["a.png"], name


def test_a_lock_file_removed_between_opening_and_locking_it_is_opened_again(tmp_path, monkeypatch):
    """A run starting as another ended was refused as if that one were still writing."""
    path, flock, ended = str(tmp_path / LOCK_NAME), fcntl.flock, []

    def flock_after_the_other_run_ended(file, operation):
        if not ended:
            ended.append(os.remove(path))  # the run that held it ends: its file goes
        return flock(file, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_other_run_ended)
    with locked(path) as lock:
        assert os.path.samestat(os.fstat(lock.fileno()), os.stat(path)) and ended


def test_options_of_the_wrong_kind_are_refused_before_ray(tmp_path, monkeypatch):
    """A TypeError ('>' not supported between NoneType and int), where the Python API gives a ValueError."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "photos").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "photos" / "a.png")
    for options, message in [({"palette_strength": None}, "palette_strength must be a number"),
                             ({"strength": 1.5}, "options: .* unexpected keyword argument 'strength'")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            colorize_dataset(Job(str(tmp_path / "photos"), str(tmp_path / "out"), hints=str(tmp_path), options=options))


def test_an_address_where_no_cluster_answers_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    """ray.init retried such an address for minutes, logging a warning every 5 seconds."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "photos").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "photos" / "a.png")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # closed at once: nothing listens there
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}", "no-such-host.invalid:6379"):
        argv = ["colorize-dataset", str(tmp_path / "photos"), "-o", str(tmp_path / "out"), "--address", address]
        assert cli.main(argv) == 2
        assert f"--address {address}: no Ray cluster answers there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--model", "no-such-model/"], "Cannot load the model"),  # these failed in the actor: a Ray traceback of
        (["--device", "cuda"], "CUDA"),  # 338 lines ending in ActorDiedError, exit 1
        (["--num-gpus-per-worker", "1"], "--num-gpus-per-worker: this machine has no GPU"),  # these waited for ever
        (["--num-cpus", "0"], "--num-cpus must be at least 1"),
        (["--num-gpus-per-worker", "-1"], "--num-gpus-per-worker must be 0 or more"),  # Ray's traceback first
    ],
)
def test_a_bad_model_device_or_resource_is_refused_before_ray(tmp_path, capsys, monkeypatch, option, message):
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "src").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "src" / "a.png")
    argv = ["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--images", *option]
    assert cli.main(argv) == 2
    errors = capsys.readouterr().err
    assert message in errors and len(errors.splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("images", "blocking", "message"),
    [
        (False, "data", "data is not a folder, where the shards go"),
        (True, "sub", "sub is a file, where photos of SRC go in a folder of that name"),
        (True, "errors.jsonl/", "errors.jsonl is not a file, where the errors are written"),  # (a dry run too)
    ],
)
def test_a_file_in_dst_where_the_run_writes_is_refused_before_ray(tmp_path, capsys, monkeypatch, images, blocking,
                                                                  message):  # fmt: skip
    """Each photo was colorized, then writing the first batch failed: a FileExistsError traceback, at every run."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "src" / "sub").mkdir(parents=True)
    Image.new("L", (16, 16)).save(tmp_path / "src" / "sub" / "a.png")
    (tmp_path / "out").mkdir()
    blocked = tmp_path / "out" / blocking.rstrip("/")
    blocked.mkdir() if blocking.endswith("/") else blocked.write_text("someone's")
    for extra in ([], ["--dry-run"]):
        argv = ["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out"), *(["--images"] * images)]
        assert cli.main([*argv, *extra]) == 2
        assert f"error: -o: {blocked} {message.split(' ', 1)[1]}" in capsys.readouterr().err


def test_a_failure_to_write_dst_during_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    def full_disk(*_):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "data" / "shard.parquet"))

    monkeypatch.setattr("letcolor.archive._colorize_the_rest", full_disk)
    (tmp_path / "src").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "src" / "a.png")
    assert cli.main(["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 1
    expected = f"error: cannot write {tmp_path / 'out' / 'data' / 'shard.parquet'}: No space left on device\n"
    assert capsys.readouterr().err == expected


def test_hints_with_a_palette_are_refused_before_ray(tmp_path, capsys, monkeypatch):
    """Every hinted photo failed alone, row by row, on the palette that would have moved its hinted colours."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    for folder in ("src", "hints"):
        (tmp_path / folder).mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "src" / "a.png")
    argv = ["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--hints", str(tmp_path / "hints")]
    assert cli.main([*argv, "--reference", str(EXAMPLES / "coffee.png"), "--palette", "0.5"]) == 2
    assert "--palette with --hints: a palette strength cannot be used with colour hints" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_dataset_without_its_id_or_image_column_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    """Both failed with Arrow's "No match for FieldRef.Name(id)" and a schema dump, the image column's only in Ray."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "src" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"name": ["a"]}), tmp_path / "src" / "data" / "train-00000.parquet")
    argv = ["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert "no column 'id' nor 'image' (it has name)" in capsys.readouterr().err
    assert cli.main([*argv, "--id-column", "name"]) == 2
    assert "no column 'image' (it has name)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ids_that_would_share_an_output_file_and_a_source_of_photos_and_parquet_are_refused_before_ray(
    tmp_path, capsys, monkeypatch
):
    """The first wrote a.bmp's colours over a.bmp.png's (or the reverse) and counted both done; the second read the
    stray parquet file as the dataset and lost every photo."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "photos").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "photos" / "a.bmp")
    Image.new("L", (32, 32)).save(tmp_path / "photos" / "a.bmp.png")
    assert cli.main(["colorize-dataset", str(tmp_path / "photos"), "-o", str(tmp_path / "out"), "--images"]) == 2
    assert "a.bmp and a.bmp.png could both be written to a.bmp.png" in capsys.readouterr().err
    (tmp_path / "photos" / "a.bmp.png").unlink()
    pq.write_table(pa.table({"id": ["x"]}), tmp_path / "photos" / "index.parquet")
    assert cli.main(["colorize-dataset", str(tmp_path / "photos"), "-o", str(tmp_path / "out")]) == 2
    assert "holds both parquet files (1) and image files (1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reading_a_parquet_datasets_ids_never_aborts_python_as_it_exits(archive, tmp_path):
    """pyarrow's threaded read of a Python file object, in a file of several row groups, left work that aborted Python
    as it exited ("terminate called without an active exception", exit 134) in 20-50% of dry runs and usage errors.
    A race: 8 runs caught it in about 9 of 10 tries on the old code."""
    rows = pq.read_table(next((archive[0] / "data").glob("*.parquet")))
    (tmp_path / "data").mkdir()
    pq.write_table(rows, tmp_path / "data" / "train-00000-of-00001.parquet", row_group_size=4)
    script = "import sys; from letcolor.archive import Source; print(len(Source.open(sys.argv[1]).ids()))"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(8)]  # fmt: skip
    outputs = [(each.communicate(timeout=300)[0], each.returncode) for each in runs]  # (at once: 21 s in turn)
    assert outputs == [(f"{rows.num_rows}\n", 0)] * 8


def test_a_shard_removed_before_ray_starts_is_named(archive, tiny_model_dir, tmp_path):
    """It was a traceback (pyarrow's FileNotFoundError)."""
    source = tmp_path / "source"
    shutil.copytree(archive[0], source)
    removed = source / "data" / "train-00000-of-00003.parquet"
    driver = f"""
import os, sys, ray
from letcolor import cli
start = ray.init
def remove_then_start(*args, **kwargs):
    os.remove({str(removed)!r})
    return start(*args, **kwargs)
ray.init = remove_then_start
sys.exit(cli.main(sys.argv[1:]))
"""
    result = run_in_own_session([sys.executable, "-c", driver, *command(source, tmp_path / "out", tiny_model_dir)[3:]])
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {removed}: cannot be read any more (" in result.stderr and "Traceback" not in result.stderr


def test_a_row_without_an_image_is_recorded_as_such(tiny_model_dir, tmp_path):
    """A null image, or one without bytes, was reported as "not a readable image (not a format letcolor reads, or
    corrupt...)", which hid the cause."""
    photo = io.BytesIO()
    Image.new("L", (16, 16), 90).save(photo, format="PNG")
    images = [{"bytes": photo.getvalue(), "path": "a.png"}, None, {"bytes": None, "path": "c.png"}]
    pq.write_table(pa.Table.from_pydict({"id": ["a", "b", "c"], "image": images}), tmp_path / "rows.parquet")
    batch = {"file": [str(tmp_path / "rows.parquet")], "row_group": [0], "ids": [["a", "b", "c"]]}
    rows = read_row_groups(batch, fsspec.filesystem("file"), str(tmp_path), frozenset("abc"))
    actor = ColorizeRows(str(tiny_model_dir), "torch", "cpu", {"max_side": 128}, None, network_batch=2)
    assert actor(rows)["error"] == [
        "",
        "b: the row holds no image (null or empty)",
        "c: its image file c.png is not there (or not a file)",
    ]


def test_rows_whose_image_is_a_file_or_plain_bytes_are_read_and_a_damaged_file_fails_its_rows(tiny_model_dir,
                                                                                              tmp_path):  # fmt: skip
    """Cells of a path and no bytes (as `datasets` writes a dataset of image files), plain bytes and plain paths were
    all "the row holds no image"; a damaged data file, or one removed during the run, stopped the run with a traceback;
    a bad image's error named its cell's path, not its row."""
    png = io.BytesIO()
    Image.open(EXAMPLES / "chelsea.png").save(png, format="PNG")
    (tmp_path / "elsewhere.png").write_bytes(png.getvalue())
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "beside.png").write_bytes(png.getvalue())
    os.mkfifo(tmp_path / "src" / "pipe.png")  # (reading it would wait for ever)
    tables = {
        "cells": pa.table({"id": ["a", "b", "c", "d"], "image": [
            {"bytes": None, "path": str(tmp_path / "elsewhere.png")}, {"bytes": None, "path": "beside.png"},
            {"bytes": None, "path": "pipe.png"}, {"bytes": b"not an image", "path": "photo.png"}]}),
        "bytes": pa.table({"id": ["e"], "image": [png.getvalue()]}),
        "paths": pa.table({"id": ["f"], "image": [str(tmp_path / "elsewhere.png")]}),
        "damaged": pa.table({"id": ["g", "h"], "image": [png.getvalue(), png.getvalue()]}),
    }  # fmt: skip
    for name, table in tables.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
    damaged = bytearray((tmp_path / "damaged.parquet").read_bytes())
    start = pq.ParquetFile(tmp_path / "damaged.parquet").metadata.row_group(0).column(1).data_page_offset
    damaged[start : start + 16] = bytes(16 * [0xFF])  # the image column's page header (the ids stay readable)
    (tmp_path / "damaged.parquet").write_bytes(bytes(damaged))
    paths = [str(tmp_path / f"{name}.parquet") for name in (*tables, "removed")]  # (one removed during the run)
    ids = [table["id"].to_pylist() for table in tables.values()] + [["i"]]
    batch = {"file": paths, "row_group": [0] * len(paths), "ids": ids}
    rows = read_row_groups(batch, fsspec.filesystem("file"), str(tmp_path / "src"), frozenset("abcdefghi"))
    actor = ColorizeRows(str(tiny_model_dir), "torch", "cpu", {"max_side": 128}, None, network_batch=2)
    errors = dict(zip(rows["id"], actor(rows)["error"], strict=True))
    assert [errors[row_id] for row_id in "abef"] == ["", "", "", ""]
    assert errors["c"] == "c: its image file pipe.png is not there (or not a file)"
    assert errors["d"].startswith("d: not a readable image")
    assert errors["g"].startswith(f"g: {tmp_path / 'damaged.parquet'} could not be read (") and errors["h"]
    assert errors["i"].startswith(f"i: {tmp_path / 'removed.parquet'} could not be read (")


def test_a_photo_whose_name_is_as_long_as_a_name_can_be_is_written_and_a_named_pipe_is_not_read(tmp_path):
    """--images wrote each photo under its name plus 51 characters, then renamed it: a 250-character name failed on
    every run; a named pipe among the photos was read, and the run waited for ever."""
    name = "a" * 251 + ".png"
    ImagesDestination(str(tmp_path / "out")).commit(
        {"id": [name], "image": [b"png"], "suffix": [".png"], "error": [""]}
    )
    assert [path.name for path in (tmp_path / "out").iterdir()] == [name]
    (tmp_path / "src").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "src" / "photo.png")
    os.mkfifo(tmp_path / "src" / "pipe.jpg")
    assert [PurePosixPath(path).name for path in Source.open(str(tmp_path / "src")).image_paths] == ["photo.png"]


def test_a_file_name_that_is_not_utf8_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    """A Latin-1 file name (caf\xe9.png) stopped the run after Ray had colorized every photo, nothing committed, with
    a message that named no file."""
    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    (tmp_path / "src").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "src" / "good.png")
    Image.new("L", (16, 16)).save(os.fsencode(tmp_path / "src") + b"/caf\xe9.png")
    assert cli.main(["colorize-dataset", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 2
    assert "the file 'caf\\udce9.png' has a name that is not UTF-8" in capsys.readouterr().err


def test_a_hub_datasets_folder_may_hold_the_photos_its_cells_name_and_links_to_photos_are_read(tmp_path):
    """A dataset whose cells name files under SRC was refused as a folder of "both parquet files and image files"; a
    link to a photo was left out once named pipes were (fsspec calls both "other")."""
    (tmp_path / "src" / "data").mkdir(parents=True)
    (tmp_path / "src" / "photos").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "src" / "photos" / "a.png")
    rows = {"id": ["a"], "image": [{"bytes": None, "path": "photos/a.png"}]}
    pq.write_table(pa.table(rows), tmp_path / "src" / "data" / "train-00000.parquet")
    with pytest.warns(UserWarning, match="its 1 image files are read only where its rows name them"):
        assert Source.open(str(tmp_path / "src")).ids() == ["a"]
    (tmp_path / "folder").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "folder" / "a.png")
    (tmp_path / "folder" / "link.png").symlink_to(tmp_path / "folder" / "a.png")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder" / "pipe.png").symlink_to(tmp_path / "pipe")  # (reading it waits for ever)
    assert Source.open(str(tmp_path / "folder")).ids() == ["a.png", "link.png"]


def test_a_destination_that_holds_other_parquet_files_is_named(tmp_path):
    """pyarrow's "No match for FieldRef.Name(error)" and a dump of the schema."""
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": ["x"], "label": [1]}), tmp_path / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="train-00000-of-00001.parquet: not a shard that colorize-dataset wrote"):
        ParquetDestination(str(tmp_path)).progress(["x"])


def test_colorize_and_colorize_dataset_take_the_same_files_of_a_folder(tmp_path):
    photo = Image.open(EXAMPLES / "chelsea_gray.png")
    for name in ("a.jpg", "b.PPM", "c.pcx", "d.tif"):
        photo.convert("RGB").save(tmp_path / name)
    photo.convert("RGB").save(tmp_path / "index.pdf")  # Pillow writes PDF and cannot read it
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 macOS's AppleDouble metadata")  # hidden: left out
    (tmp_path / ".thumbnails").mkdir()
    photo.save(tmp_path / ".thumbnails" / "a.jpg")
    images = {"a.jpg", "b.PPM", "c.pcx", "d.tif"}
    assert {Source.open(str(tmp_path)).relative(path) for path in Source.open(str(tmp_path)).image_paths} == images
    assert {path.name for path in cli.expand_inputs([str(tmp_path)])[0]} == images


def test_a_file_that_cannot_be_read_is_recorded_with_the_reason(tiny_model_dir, tmp_path):
    (tmp_path / "locked.jpg").mkdir()  # a read fails (IsADirectoryError), as a file on a flaky share can
    rows = read_files({"id": ["locked.jpg"]}, fsspec.filesystem("file"), str(tmp_path))
    actor = ColorizeRows(str(tiny_model_dir), "torch", "cpu", {"max_side": 128}, None, network_batch=2)
    (error,) = actor(rows)["error"]
    assert error.startswith("locked.jpg: could not be read (") and "Is a directory" in error


def test_without_ray_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "photos").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "photos" / "a.png")
    assert cli.main(["colorize-dataset", str(tmp_path / "photos"), "-o", str(tmp_path / "out")]) == 2
    assert "pip install '.[cluster]' in letcolor's checkout, or 'ray[data]'" in capsys.readouterr().err


def test_hints_files_that_name_no_photo_are_named_in_a_warning_before_the_run(tmp_path, capsys, monkeypatch):
    """`one.json` for `one.png` (its id is the file's name, extension included) was silently not used."""
    from test_hints import live_hint_model

    monkeypatch.setitem(sys.modules, "ray", None)  # a dry run: never reached
    model, source, hints = tmp_path / "hint-model", tmp_path / "src", tmp_path / "hints"
    live_hint_model().save_pretrained(model)
    (hints / "sub").mkdir(parents=True)
    source.mkdir()
    for name in ("one.png", "two.png"):
        Image.open(EXAMPLES / "chelsea_gray.png").save(source / name)
    for name in ("one.json", "two.png.json", "notes.txt"):
        (hints / name).write_text('[[200, 150, "#2040e0"]]')
    Image.new("RGBA", (4, 4)).save(hints / "sub" / "three.png.png")
    argv = ["colorize-dataset", str(source), "-o", str(tmp_path / "out"), "--hints", str(hints), "--model", str(model)]
    assert cli.main([*argv, "--dry-run"]) == 0
    errors = capsys.readouterr().err
    assert f"warning: --hints {hints}: 2 hints files name no photo of SRC and are not used: one.json, " in errors
    assert "sub/three.png.png (a photo's hints are <id>.json or <id>.png" in errors
    (source / "two.png.json").write_text('[[200, 150, "#2040e0"]]')  # hints beside the photos: SRC is DIR
    assert cli.main([*argv[:4], "--hints", str(source), "--model", str(model), "--dry-run"]) == 0
    assert "warning" not in capsys.readouterr().err  # the photos themselves are not unused hints files
