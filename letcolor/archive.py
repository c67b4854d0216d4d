"""`letcolor colorize-dataset`: an archive of photos colorized on Ray Data, resumable, each photo exactly once.

    letcolor colorize-dataset SRC -o DST [--images] [--address HEAD:6379] [the options of colorize]

SRC is a folder of images (searched recursively; each photo's id is its path under SRC) or a dataset in the Hub's
parquet layout with an `image` column (bytes, or the path of a file) and an id column; either may be local or an
fsspec URL (`s3://`, `hf://`, ...; not `memory://`, which each Ray worker has empty). Ray Data reads the photos, and
actors (the model loaded once in each) decode, colorize and encode them, batch by batch; the driver writes what comes
back:

- by default DST is a parquet dataset in the Hub's layout (`datasets.load_dataset(DST, split="train")` reads it):
  id, the colorized image at full resolution (the photo's own L, PNG for PNG-like inputs, else JPEG), the top
  classes, and an error for a row that could not be colorized (its image empty);
- with `--images`, DST is a folder tree that mirrors SRC's, and a row's error goes to DST/errors.jsonl.

Exactly once: results are committed in shards (a parquet file, or an image file, written beside and then renamed),
and a run skips the ids that DST already holds, errors too unless `--retry-errors` (their records are then removed
first). After a crash, the same command finishes the work; every photo appears once. One run at a time writes a DST
(`writing_into`). Ray is an optional extra (`pip install '.[cluster]'` in the checkout), imported only here.
"""

import contextlib
import fcntl
import io
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from letcolor.engines import DEFAULT_ENGINE
from letcolor.images import LoadedImage, image_suffixes, read_image_bytes
from letcolor.model import NO_HINTS_MESSAGE
from letcolor.pipeline import (
    BUNDLED_MODEL_DIR,
    MODEL_ENV_VAR,
    PALETTE_WITH_HINTS,
    ColorizationResult,
    Colorizer,
    ModelError,
    Options,
    load_model,
    usable_device,
)

LOSSLESS = {"PNG", "TIFF", "BMP", "GIF"}  # kept lossless (as PNG); other formats become JPEG
TOP_CLASSES = 5
SHARD_PREFIX = "train-"
ERRORS_NAME = "errors.jsonl"
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4095  # a file name's longest on most file systems, a path's on Linux
TEMPORARY_SUFFIX = ".letcolor-partial"  # a shard or file being written, renamed when complete
LOCK_NAME = ".colorize-dataset.lock"  # held by the run writing DST (see `writing_into`)
# Rows per actor call (see rows_per_call): Ray pays for each call (a task, its blocks through the object store) on
# the same CPUs. At 2 CPUs here, calls of 8 small photos lost a fifth of the actors' time to it; calls of 32, a
# twentieth.
ROWS_PER_CALL = 32
ADDRESS_TIMEOUT = 10  # seconds for a cluster's head to answer (ray.init retries for minutes)


@dataclass(frozen=True)
class Source:
    """What SRC holds: image files (`paths`, ids relative to `root`) or parquet files with `id_column`."""

    filesystem: fsspec.AbstractFileSystem
    root: str
    parquet_files: tuple[str, ...] = ()
    image_paths: tuple[str, ...] = ()
    id_column: str = "id"

    @classmethod
    def open(cls, url: str, id_column: str = "id") -> "Source":
        if "://" in url and not url.startswith("file://"):
            filesystem, root = fsspec.core.url_to_fs(url)
        else:  # a local path: fsspec would read "::" in it as URLs chained
            local = os.path.expanduser(url.removeprefix("file://"))
            filesystem, root = fsspec.filesystem("file"), os.path.abspath(local)
        if not filesystem.isdir(root):
            raise ValueError(f"{url}: not a folder (give a folder of images or a parquet dataset)")
        found = filesystem.find(root, detail=True)
        files = sorted(
            path for path, info in found.items() if _listed(filesystem, path, info) and not _hidden(path, root)
        )
        parquet = tuple(path for path in files if path.endswith(".parquet"))
        images = tuple(path for path in files if PurePosixPath(path).suffix.lower() in image_suffixes())
        if images and any(PurePosixPath(path).parent == PurePosixPath(root) / "data" for path in parquet):
            warnings.warn(  # the Hub's layout (data/*.parquet): its photos may be files in SRC that its cells name
                f"{url}: a dataset (its data/*.parquet); its {len(images)} image files are read only where its rows "
                "name them",
                stacklevel=2,
            )
            images = ()
        if parquet and images:
            raise ValueError(
                f"{url}: holds both parquet files ({len(parquet)}) and image files ({len(images)}); give a parquet "
                "dataset's folder or a folder of images"
            )
        if parquet:
            return cls(filesystem, root, parquet_files=parquet, id_column=id_column)
        return cls(filesystem, root, image_paths=images, id_column=id_column)

    def ids(self) -> list[str]:
        if self.image_paths:
            return [self.relative(path) for path in self.image_paths]
        ids = []
        for path in self.parquet_files:  # (read by pyarrow's own IO: a Python file object aborted Python at exit)
            try:
                self.check_columns(path, pq.read_schema(path, filesystem=self.filesystem).names)
                table = pq.read_table(path, columns=[self.id_column], filesystem=self.filesystem, use_threads=False)
            except (OSError, pa.ArrowException) as error:
                raise ValueError(f"{path}: cannot be read as a parquet file ({error})") from error
            values = table.column(0).to_pylist()
            if None in values:  # str() would make it the id "None"
                row = values.index(None)
                raise ValueError(f"{path}: row {row} has no {self.id_column} (null): give each photo one")
            ids += [str(value) for value in values]
        return ids

    def check_columns(self, path: str, names: list[str]) -> None:
        missing = [name for name in (self.id_column, "image") if name not in names]
        if missing:
            raise ValueError(
                f"{path}: no column {' nor '.join(map(repr, missing))} (it has {', '.join(names)}); a dataset needs an "
                "image column and an id column (--id-column)"
            )

    def relative(self, path: str) -> str:
        return str(PurePosixPath(path).relative_to(PurePosixPath(self.root)))


def _listed(filesystem: fsspec.AbstractFileSystem, path: str, info: dict) -> bool:
    """Whether a file that `find` lists is read: a regular file, or a link to one (fsspec calls every link "other",
    as it does named pipes and devices: reading one waited for ever)."""
    return info["type"] == "file" or bool(info.get("islink") and filesystem.isfile(path))


def _hidden(path: str, root: str) -> bool:
    """Whether the file, or a folder it is in below `root`, is hidden: left out, as `colorize` leaves hidden files out
    (macOS's ._x.jpg beside x.jpg is no photo: each run recorded it as an error again)."""
    return any(part.startswith(".") for part in PurePosixPath(path).relative_to(PurePosixPath(root)).parts)


@dataclass
class Summary:
    todo: int = 0  # rows this run has to do
    rows: int = 0  # rows done (colorized, or recorded as errors)
    errors: int = 0
    skipped: int = 0  # already in DST
    skipped_errors: int = 0  # of those, recorded as errors
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        return f"{self.rows} rows done ({self.errors} errors) in {self.seconds:.1f} s, {rate:.2f} rows/s; {self.before}"

    @property
    def before(self) -> str:
        """How many were done before, and how many of those were errors, which --retry-errors does again."""
        if not self.skipped_errors:
            return f"{self.skipped} done before"
        return f"{self.skipped} done before ({self.skipped_errors} of them errors: --retry-errors does those again)"


class ColorizeRows:
    """A Ray Data actor: the model loaded once; each batch of rows (id, bytes, name, read_error) decoded, colorized
    and encoded `network_batch` photos at a time (as the plain command does, and so memory follows --batch-size, not
    the call's size); a bad row becomes an error instead of stopping the batch."""

    def __init__(self, model: str | None, engine: str, device: str | None, options: dict, hints: str | None,
                 network_batch: int):  # fmt: skip
        self.colorizer = Colorizer.from_pretrained(model, device, engine=engine)
        reference = self.colorizer.reference(options.get("reference"))  # read once, not for each batch
        self.options, self.hints, self.network_batch = {**options, "reference": reference}, hints, network_batch

    def __call__(self, batch: dict) -> dict:
        ids = [str(row_id) for row_id in batch["id"]]
        read_errors = batch.get("read_error", [""] * len(ids))
        rows = list(zip(ids, batch["bytes"], batch["name"], read_errors, strict=True))
        outcomes = {}
        for start in range(0, len(rows), self.network_batch):
            outcomes |= self.network_batch_outcomes(rows[start : start + self.network_batch])
        return self.as_columns(ids, outcomes)

    def network_batch_outcomes(self, rows: list[tuple]) -> dict[str, tuple]:
        """Each row's outcome: decoded (or failed), then the decoded rows colorized together."""
        outcomes, loaded = {}, {}
        for row_id, data, name, read_error in rows:
            if read_error:
                outcomes[row_id] = failed(read_error)
                continue
            try:
                loaded[row_id] = read_image_bytes(bytes(data or b""), str(name))
            except (ValueError, OSError) as problem:  # InvalidImageError names the photo
                outcomes[row_id] = failed(problem)
        return outcomes | (self.colorized(loaded) if loaded else {})

    @staticmethod
    def as_columns(ids: list[str], outcomes: dict[str, tuple]) -> dict:
        rows = {"id": ids, "image": [], "suffix": [], "classes": [], "error": []}
        for row_id in ids:
            for column, value in zip(("image", "suffix", "classes", "error"), outcomes[row_id], strict=True):
                rows[column].append(value)
        return rows

    def colorized(self, loaded: dict[str, tuple[LoadedImage, str | None]]) -> dict[str, tuple]:
        """Each decoded row's outcome: the rows colorized together, or, where that fails (a row's hints file, say),
        one by one, so that only the bad row fails."""
        images, hints = [each.image for each, _ in loaded.values()], [self.hints_of(row_id) for row_id in loaded]
        try:
            results = self.colorizer.batch(images, hints=hints if any(hints) else None, **self.options)
        except (ValueError, OSError):
            return {row_id: self.colorized_alone(row_id, *each) for row_id, each in loaded.items()}
        return {row_id: encoded(result, file_format) for (row_id, (_, file_format)), result in
                zip(loaded.items(), results, strict=True)}  # fmt: skip

    def colorized_alone(self, row_id: str, loaded: LoadedImage, file_format: str | None) -> tuple:
        try:
            return encoded(self.colorizer(loaded.image, hints=self.hints_of(row_id), **self.options), file_format)
        except (ValueError, OSError) as problem:
            return failed(f"{row_id}: {problem}")

    def hints_of(self, row_id: str) -> str | None:
        """The photo's hints file in the hints folder: `<id>.json` (points) or `<id>.png` (a paint layer), if any."""
        for suffix in (".json", ".png"):
            if self.hints and os.path.isfile(path := os.path.join(self.hints, f"{row_id}{suffix}")):
                return path
        return None


def encoded(result: ColorizationResult, file_format: str | None) -> tuple[bytes, str, str, str]:
    """A row's outcome for a colorized photo: encoded in its format's family (PNG or JPEG), the suffix, its top
    classes (JSON) and no error."""
    data = io.BytesIO()
    if file_format in LOSSLESS or result.image.mode == "RGBA":
        result.image.save(data, format="PNG")
        suffix = ".png"
    else:
        result.image.convert("RGB").save(data, format="JPEG", quality=95)
        suffix = ".jpg"
    return data.getvalue(), suffix, json.dumps(list(result.scenes)[:TOP_CLASSES]), ""


def failed(problem: Exception | str) -> tuple[bytes, str, str, str]:
    """A row's outcome for a photo that could not be colorized: no image, and why."""
    return b"", "", json.dumps([]), str(problem)


def read_files(batch: dict, filesystem: fsspec.AbstractFileSystem, root: str) -> dict:
    """The read stage for a folder: each id's file read from SRC (a missing or unreadable one gives no bytes and
    its `read_error`, which the colorize stage records)."""
    rows = {"id": [], "bytes": [], "name": [], "read_error": []}
    for row_id in batch["id"]:
        data, problem = b"", ""
        try:
            data = filesystem.cat_file(str(PurePosixPath(root) / str(row_id)))
        except OSError as error:
            problem = f"{row_id}: could not be read ({error})"
        rows["id"].append(str(row_id))
        rows["bytes"].append(data)
        rows["name"].append(str(row_id))
        rows["read_error"].append(problem)
    return rows


def read_row_groups(batch: dict, filesystem: fsspec.AbstractFileSystem, root: str, todo: frozenset) -> dict:
    """The read stage for a parquet dataset: each (file, row group, its ids) read from SRC, as (id, bytes, name,
    read_error) rows without those already done; a row group whose images cannot be read (a damaged file, or one
    removed during the run) gives each row that error."""
    rows = {"id": [], "bytes": [], "name": [], "read_error": []}
    for path, group, ids in zip(batch["file"], batch["row_group"], batch["ids"], strict=True):
        try:
            with pq.ParquetFile(str(path), filesystem=filesystem) as file:
                images = file.read_row_group(int(group), columns=["image"], use_threads=False)
            cells, problem = images[0].to_pylist(), ""
        except (OSError, pa.ArrowException) as error:
            cells, problem = [None] * len(ids), f"{path} could not be read ({error})"
        for row_id, cell in zip(ids, cells, strict=True):
            if row_id in todo:
                data, read_error = (b"", problem) if problem else image_bytes(cell, filesystem, root)
                rows["id"].append(row_id)
                rows["bytes"].append(data)
                rows["name"].append(row_id)  # what an error names: the row, not its image's path
                rows["read_error"].append(f"{row_id}: {read_error}" if read_error else "")
    return rows


def image_bytes(cell, filesystem: fsspec.AbstractFileSystem, root: str) -> tuple[bytes, str]:
    """A row's image as encoded bytes, or none and why: the image column's cell holds the bytes or the path of a file
    (a relative one under SRC), as the Hub's Image feature does ({bytes, path}), or is plain bytes or a path."""
    data, path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, cell)
    if isinstance(data, bytes) and data:
        return data, ""
    if not isinstance(path, str) or not path:
        return b"", "the row holds no image (null or empty)"
    file = path if PurePosixPath(path).is_absolute() or "://" in path else str(PurePosixPath(root) / path)
    try:
        if not filesystem.isfile(file):
            return b"", f"its image file {path} is not there (or not a file)"
        return filesystem.cat_file(file), ""
    except OSError as error:
        return b"", f"its image file {path} could not be read ({error})"


class ParquetDestination:
    """DST as a Hub-layout parquet dataset: DST/data/train-*.parquet, each shard committed by a rename."""

    FEATURES_METADATA = {
        b"huggingface": json.dumps(
            {"info": {"features": {
                "id": {"dtype": "string", "_type": "Value"},
                "image": {"_type": "Image"},
                "classes": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
                "error": {"dtype": "string", "_type": "Value"},
            }}}
        ).encode()
    }  # fmt: skip
    SCHEMA = pa.schema(
        [("id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
         ("classes", pa.list_(pa.string())), ("error", pa.string())],
        metadata=FEATURES_METADATA,
    )  # fmt: skip

    def __init__(self, path: str):
        self.folder = os.path.join(path, "data")
        self.run = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.shards = 0

    def progress(self, ids: list[str]) -> tuple[set[str], set[str]]:
        """The ids that committed shards hold, and those of them recorded as errors (each shard read once); a shard
        that a crash left half-written is removed."""
        for name in sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []:
            if name.endswith(TEMPORARY_SUFFIX):
                os.remove(os.path.join(self.folder, name))
        committed, failed_ids = set(), set()
        for shard in self.shard_paths():
            try:
                table = pq.read_table(shard, columns=["id", "error"])
            except (OSError, pa.ArrowException) as error:  # (its message: a schema's dump)
                reason = str(error).splitlines()[0]
                raise ValueError(
                    f"{shard}: not a shard that colorize-dataset wrote ({reason}); give -o a folder of its own"
                ) from None
            for row in table.to_pylist():
                committed.add(row["id"])
                if row["error"]:
                    failed_ids.add(row["id"])
        wanted = set(ids)
        return committed & wanted, failed_ids & wanted

    def forget_errors(self) -> None:
        """Each committed shard's error rows removed (the shard rewritten beside and renamed, or removed if nothing
        else is in it), so that a run does those rows again."""
        for shard in self.shard_paths():
            table = pq.read_table(shard)
            kept = table.filter(pc.is_null(table.column("error")))
            if kept.num_rows == table.num_rows:
                continue
            if kept.num_rows == 0:
                os.remove(shard)
                continue
            scratch = os.path.join(self.folder, f".{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
            pq.write_table(kept, scratch)
            os.replace(scratch, shard)

    def check_blocked(self, ids: list[str]) -> None:
        """ValueError where DST holds a file where the shards' folder must be (every batch was colorized, then the
        run stopped on writing it: a traceback, at every run)."""
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise ValueError(f"-o: {self.folder} is not a folder, where the shards go; give -o a folder of its own")

    def shard_paths(self) -> list[str]:
        names = sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []
        return [os.path.join(self.folder, n) for n in names if n.startswith(SHARD_PREFIX) and n.endswith(".parquet")]

    def commit(self, rows: dict) -> None:
        images = [
            {"bytes": image, "path": f"{PurePosixPath(row_id).stem}{suffix}"} if image else None
            for row_id, image, suffix in zip(rows["id"], rows["image"], rows["suffix"], strict=True)
        ]
        table = pa.table(
            [list(rows["id"]), images, [json.loads(c) for c in rows["classes"]], [e or None for e in rows["error"]]],
            schema=self.SCHEMA,
        )
        os.makedirs(self.folder, exist_ok=True)
        final = os.path.join(self.folder, f"{SHARD_PREFIX}{self.run}-{self.shards:05d}.parquet")
        scratch = os.path.join(self.folder, f".{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
        pq.write_table(table, scratch)
        os.replace(scratch, final)  # the shard, and the ids in it, appear whole or not at all
        self.shards += 1


def _recorded_errors(path: str) -> set[str]:
    """The ids in an errors.jsonl file; a line that a crash cut short is left out (that photo is done again), where
    it stopped every later run with a JSON error."""
    ids = set()
    with contextlib.suppress(FileNotFoundError), open(path) as file:
        for line in file:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ids.add(json.loads(line)["id"])
    return ids


def _append_line(path: str, record: dict) -> None:
    """Appends `record` as a JSON line; a last line that a crash cut short is ended first (or it would swallow this)."""
    with open(path, "ab+") as file:  # (appends go to the end whatever the position read from)
        end = file.seek(0, os.SEEK_END)
        file.seek(max(end - 1, 0))
        torn = end > 0 and file.read(1) != b"\n"
        file.write(b"\n" * torn + json.dumps(record).encode() + b"\n")


class ImagesDestination:
    """DST as a folder tree that mirrors SRC's: each photo at its id's path (a suffix added where the format written
    is not the name's: photo.tif -> photo.tif.png), written beside and renamed; errors appended to DST/errors.jsonl."""

    SUFFIXES = {".png": (".png",), ".jpg": (".jpg", ".jpeg")}

    def __init__(self, path: str):
        self.folder = path

    def output(self, row_id: str, suffix: str) -> str:
        keeps = PurePosixPath(row_id).suffix.lower() in self.SUFFIXES[suffix]
        return os.path.join(self.folder, row_id if keeps else f"{row_id}{suffix}")

    def progress(self, ids: list[str]) -> tuple[set[str], set[str]]:
        """The ids with an output file or a recorded error, and those with a recorded error; a file that a crash left
        half-written is removed."""
        for directory, _, names in os.walk(self.folder):
            for name in names:
                if name.endswith(TEMPORARY_SUFFIX):
                    os.remove(os.path.join(directory, name))
        failed_ids = _recorded_errors(os.path.join(self.folder, ERRORS_NAME)) & set(ids)
        written = {row_id for row_id in ids if any(os.path.isfile(self.output(row_id, s)) for s in self.SUFFIXES)}
        return written | failed_ids, failed_ids

    def forget_errors(self) -> None:
        """The recorded errors removed, so that a run does those photos again."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.folder, ERRORS_NAME))

    def check_names(self, ids: list[str]) -> None:
        """ValueError where two ids could be written to the same file (photo.bmp -> photo.bmp.png, and photo.bmp.png
        itself), one id's file would be another's folder (a.png and a.png/b.png: every run failed on it), an output's
        name or one of its folders' is too long for a file, or a photo is in a folder named as the errors' file (each
        failed every run)."""
        claimed = {}
        for row_id in ids:
            for output in {os.path.normpath(self.output(row_id, suffix)) for suffix in self.SUFFIXES}:  # x, ./x
                parts = PurePosixPath(os.path.relpath(output, self.folder)).parts
                if any(len(part.encode()) > MAX_NAME_BYTES for part in parts) or len(output.encode()) > MAX_PATH_BYTES:
                    raise ValueError(f"{row_id}: its output {os.path.join(*parts)} has a name over {MAX_NAME_BYTES} "
                                     f"bytes, or a path over {MAX_PATH_BYTES}")  # fmt: skip
                if parts[0] == ERRORS_NAME:
                    self._clash(
                        ERRORS_NAME, row_id, f"clash: {ERRORS_NAME} would be both the errors' file and a folder"
                    )
                if (other := claimed.setdefault(output, row_id)) != row_id:
                    self._clash(other, row_id, f"could both be written to {os.path.relpath(output, self.folder)}")
        for output, row_id in claimed.items():
            for folder in PurePosixPath(os.path.relpath(output, self.folder)).parents:
                if (other := claimed.get(os.path.join(self.folder, folder))) is not None:
                    self._clash(other, row_id, f"clash: {folder} would be both a file and a folder")

    def check_blocked(self, ids: list[str]) -> None:
        """ValueError where DST holds a file where a photo's folder must be, or a folder named as the errors' file
        (each photo was colorized, then the run stopped on writing it: a traceback, at every run)."""
        errors = os.path.join(self.folder, ERRORS_NAME)
        if os.path.lexists(errors) and not os.path.isfile(errors):
            raise ValueError(f"-o: {errors} is not a file, where the errors are written; give -o a folder of its own")
        folders = {os.path.dirname(self.output(row_id, ".png")) for row_id in ids}
        for folder in sorted(folders - {self.folder}):
            blocked = next((each for each in _parents_within(folder, self.folder) if _not_a_folder(each)), None)
            if blocked is not None:
                raise ValueError(f"-o: {blocked} is a file, where photos of SRC go in a folder of that name")

    @staticmethod
    def _clash(first: str, second: str, how: str) -> None:
        raise ValueError(f"{first} and {second} {how}: rename one, or colorize into a parquet dataset (not --images)")

    def commit(self, rows: dict) -> None:
        for row_id, image, suffix, error in zip(rows["id"], rows["image"], rows["suffix"], rows["error"], strict=True):
            if error:
                os.makedirs(self.folder, exist_ok=True)
                _append_line(os.path.join(self.folder, ERRORS_NAME), {"id": row_id, "error": error})
                continue
            final = self.output(row_id, suffix)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            # a short scratch name: the photo's own may be as long as a name can be
            scratch = os.path.join(os.path.dirname(final), f".{uuid.uuid4().hex[:12]}{TEMPORARY_SUFFIX}")
            with open(scratch, "wb") as file:
                file.write(image)
            os.replace(scratch, final)


def _parents_within(folder: str, root: str) -> list[str]:
    """`folder` and its parents below `root`, outermost first."""
    parts = PurePosixPath(os.path.relpath(folder, root)).parts
    return [os.path.join(root, *parts[: index + 1]) for index in range(len(parts))]


def _not_a_folder(path: str) -> bool:
    return os.path.lexists(path) and not os.path.isdir(path)


@dataclass(frozen=True)
class Job:
    """One colorize-dataset run: SRC, DST and the options of `Colorizer.batch` (`options`), on a Ray cluster."""

    source: str
    destination: str
    images: bool = False
    model: str | None = None
    engine: str = DEFAULT_ENGINE
    device: str | None = None
    options: dict = field(default_factory=dict)
    hints: str | None = None  # a local folder of hints files: <id>.json or <id>.png
    id_column: str = "id"
    address: str | None = None
    num_cpus: int | None = None
    num_gpus_per_worker: float = 0.0
    batch_size: int = 8  # photos per network batch; an actor call takes `rows_per_call` rows
    shard_rows: int = 512  # rows per committed parquet shard
    concurrency: int = 1
    retry_errors: bool = False  # the ids with a recorded error are done again
    dry_run: bool = False


def for_workers(job: Job) -> Job:
    """The job with what the workers read named as they can find it: they run in another folder, and in another
    environment on a cluster (a relative --hints was silently not found, a relative --model or --reference failed, and
    $LETCOLOR_MODEL was this process's alone). Hub model ids and URLs are left as they are."""
    model = job.model or os.environ.get(MODEL_ENV_VAR) or str(BUNDLED_MODEL_DIR)
    reference = job.options.get("reference")
    if isinstance(reference, str | os.PathLike):  # (not an image given by the Python API)
        reference = local_or_as_is(os.fspath(reference))
    return replace(
        job,
        model=local_or_as_is(model),
        hints=job.hints and os.path.abspath(job.hints),
        options={**job.options, "reference": reference},
    )


def local_or_as_is(name: str) -> str:
    """An existing local file or folder as an absolute path; anything else (a Hub id, a URL) as it is."""
    path = os.path.expanduser(name)
    return os.path.abspath(path) if os.path.exists(path) else name


def check_ids(ids: list[str], as_paths: bool) -> None:
    """ValueError for an id given twice (both rows were colorized, and in a folder tree the second replaced the
    first), and, where ids name files (--images, --hints), one that is empty, absolute or climbs out with ".." (a
    parquet row's id ../x.png was written outside DST)."""
    seen = set()
    for row_id in ids:
        if not row_id.isascii() and not _is_utf8(row_id):
            raise ValueError(f"the file {row_id!r} has a name that is not UTF-8 (another encoding's): rename it")
        if row_id in seen:
            raise ValueError(f"the id {row_id!r} is given twice in SRC: give each photo an id of its own")
        seen.add(row_id)
        path = PurePosixPath(row_id)
        if as_paths and (not row_id or path.is_absolute() or ".." in path.parts or "\0" in row_id):
            raise ValueError(f"the id {row_id!r} cannot name a file inside DST (empty, absolute, with '..' or a NUL)")


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a name's undecodable bytes, as Python keeps them (surrogates)
        return False
    return True


def unused_hints(folder: str, ids: list[str]) -> list[str]:
    """The hints files (.json, .png) in `folder` and below that name no photo id (`ColorizeRows.hints_of`): one named
    after the photo without its extension was silently not used."""
    ids, unused = set(ids), []
    for directory, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.relpath(os.path.join(directory, name), folder).replace(os.sep, "/")
            stem, suffix = os.path.splitext(path)
            if suffix in (".json", ".png") and stem not in ids and path not in ids:  # (hints beside their photos)
                unused.append(path)
    return sorted(unused)


def colorize_dataset(job: Job, progress: bool = True) -> Summary:
    """Colorizes every photo of job.source that job.destination does not hold yet (see the module's docstring);
    ValueError for a bad SRC or DST, ImportError when Ray Data is not installed."""
    check_paths(job.source, job.destination)
    try:
        Options(**job.options)  # values of the wrong kind: ValueErrors now, as the Python API gives them
    except TypeError as error:
        raise ValueError(f"options: {error}") from None
    if job.hints and not os.path.isdir(job.hints):
        raise ValueError(f"--hints {job.hints}: not a folder")
    if job.hints and job.options.get("palette_strength", 0) > 0:
        raise ValueError(f"--palette with --hints: {PALETTE_WITH_HINTS}")
    job = for_workers(job)
    try:
        takes_hints = load_model(job.model).takes_hints  # a bad model or device: refused before Ray, not in an actor
        usable_device(job.device)
    except ModelError as error:
        raise ValueError(" ".join(str(error).split())) from error  # one line, as the other commands say it
    check_resources(job)
    if job.hints and not takes_hints:
        raise ValueError(f"--hints: {NO_HINTS_MESSAGE}")
    if not job.dry_run:
        check_address(job.address)
    source = Source.open(job.source, job.id_column)
    destination = ImagesDestination(job.destination) if job.images else ParquetDestination(job.destination)
    ids = source.ids()
    if not ids:
        raise ValueError(f"{job.source}: no photos there (image files, or rows of parquet files)")
    check_ids(ids, as_paths=job.images or bool(job.hints))
    if job.hints and (unused := unused_hints(job.hints, ids)):
        shown = ", ".join(unused[:3]) + (f" and {len(unused) - 3} more" if len(unused) > 3 else "")
        warnings.warn(
            f"--hints {job.hints}: {len(unused)} hints files name no photo of SRC and are not used: {shown} (a "
            "photo's hints are <id>.json or <id>.png, its id with its extension: photo.jpg.json)",
            stacklevel=2,
        )
    if job.images:
        destination.check_names(ids)
    destination.check_blocked(ids)
    with writing_into(job.destination, create=not job.dry_run):
        return _colorize_the_rest(job, source, destination, ids, progress)


def check_resources(job: Job) -> None:
    """ValueError for resources that no model actor could be given: on this machine's cluster (no --address), Ray
    waited for ever for a GPU it lacks or a CPU where --num-cpus was 0; a negative GPU count failed in its own code."""
    if not job.num_gpus_per_worker >= 0:
        raise ValueError(f"--num-gpus-per-worker must be 0 or more, got {job.num_gpus_per_worker}")
    if job.address is not None:
        return
    if job.num_cpus is not None and job.num_cpus < 1:
        raise ValueError(f"--num-cpus must be at least 1 (each model actor takes one), got {job.num_cpus}")
    if job.num_gpus_per_worker > 0 and not torch.cuda.is_available():
        raise ValueError(
            "--num-gpus-per-worker: this machine has no GPU for its cluster's actors; leave it out, or give the "
            "--address of a cluster that has GPUs"
        )


@contextlib.contextmanager
def writing_into(destination: str, create: bool) -> Iterator[None]:
    """DST's lock held for a run (a dry run's too: reading progress removes half-written files); ValueError while
    another run holds it (two runs at once would both do the photos left), or where DST cannot take it (a dry run of
    a DST it cannot write to goes on without). The system releases it when a run dies (NFS clients share it between
    machines); a run that ends removes its file."""
    if not create and not os.path.isdir(destination):
        yield
        return
    path = os.path.join(destination, LOCK_NAME)
    try:
        os.makedirs(destination, exist_ok=True)
        lock = locked(path)
    except OSError as error:
        if create:
            raise ValueError(f"-o {destination}: cannot hold a lock there ({error.strerror or error})") from None
        yield
        return
    if lock is None:
        raise ValueError(
            f"-o {destination}: another colorize-dataset run is writing there; run this one when it has ended"
        )
    with lock:
        try:
            yield
        finally:
            os.remove(path)


def locked(path: str, tries: int = 5) -> io.TextIOWrapper | None:
    """The lock file at `path`, open and locked by this process; None while another process holds it. A file that
    the run ending removed between opening and locking it is opened again."""
    for _ in range(tries):
        lock = open(path, "a")  # noqa: SIM115 (held open for the run)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        except OSError:
            lock.close()
            raise
        if os.path.exists(path) and os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
            return lock
        lock.close()
    return None


@contextlib.contextmanager
def sigterm_handler_kept() -> Iterator[None]:
    """The caller's SIGTERM handler (the CLI's clean stop) back after `ray.init`, which sets its own: SIGTERM printed
    Ray's stack dump and exited 15, not through the CLI's clean-up. A SIGTERM that Ray's handler took while `ray.init`
    ran (its sys.exit(15)) goes to the caller's."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as stop:
        if stop.code == signal.SIGTERM and callable(handler):
            handler(signal.SIGTERM, None)
        raise
    finally:
        if threading.current_thread() is threading.main_thread() and callable(handler):  # (not SIG_DFL: Ray's then
            signal.signal(signal.SIGTERM, handler)  # exits through sys.exit, which shuts its local cluster down)


def _colorize_the_rest(job: Job, source: Source, destination, ids: list[str], progress: bool) -> Summary:
    done, recorded_errors = destination.progress(ids)
    if job.retry_errors:
        done -= recorded_errors
        if not job.dry_run:
            destination.forget_errors()
    todo = [row_id for row_id in ids if row_id not in done]
    summary = Summary(todo=len(todo), skipped=len(ids) - len(todo), skipped_errors=len(recorded_errors & done))
    if job.dry_run or not todo:
        return summary
    ray = _ray()
    if not ray.is_initialized():
        with sigterm_handler_kept():
            ray.init(address=job.address, num_cpus=None if job.address else job.num_cpus, include_dashboard=False)
    dataset = _rows(ray, source, todo, job).map_batches(
        ColorizeRows,
        fn_constructor_kwargs={
            "model": job.model,
            "engine": job.engine,
            "device": job.device,
            "options": job.options,
            "hints": job.hints,
            "network_batch": job.batch_size,
        },  # fmt: skip
        batch_size=rows_per_call(job, len(todo)),
        compute=ray.data.ActorPoolStrategy(size=job.concurrency),
        num_gpus=job.num_gpus_per_worker or None,
        batch_format="numpy",
    )
    start = time.monotonic()
    with tqdm(total=len(todo), unit="row", disable=not progress, desc="colorize-dataset") as bar:
        for rows in dataset.iter_batches(batch_size=job.shard_rows, batch_format="numpy"):
            destination.commit(rows)
            errors = [error for error in rows["error"] if error]
            for error in errors:
                tqdm.write(f"error: {error}", file=sys.stderr)
            summary.rows, summary.errors = summary.rows + len(rows["id"]), summary.errors + len(errors)
            bar.update(len(rows["id"]))
            bar.set_postfix(errors=summary.errors, rows_s=f"{summary.rows / (time.monotonic() - start):.2f}")
    summary.seconds = time.monotonic() - start
    return summary


def check_address(address: str | None) -> None:
    """ValueError where nothing answers at a cluster's HOST:PORT (or ray://HOST:PORT); Ray's own names ("auto",
    "local") and addresses without a port are left to Ray."""
    if address is None or address in ("auto", "local"):
        return
    parts = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--address {address}: not HOST:PORT") from None
    if parts.hostname is None or port is None:
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=ADDRESS_TIMEOUT).close()
    except OSError as error:
        raise ValueError(
            f"--address {address}: no Ray cluster answers there ({error.strerror or error}); start one with `ray start "
            "--head` there, or leave --address out to start Ray on this machine"
        ) from None


def rows_per_call(job: Job, rows: int) -> int:
    """ROWS_PER_CALL, or fewer where a small run would leave actors without a call; a whole number of network
    batches."""
    wanted = max(1, min(ROWS_PER_CALL, math.ceil(rows / job.concurrency)))
    return math.ceil(wanted / job.batch_size) * job.batch_size


def _ray():
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "colorize-dataset needs Ray Data: pip install '.[cluster]' in letcolor's checkout, or 'ray[data]'"
        ) from error
    return ray


def _rows(ray, source: Source, todo: list[str], job: Job):
    """The read stage: a Ray dataset of (id, bytes, name, read_error) rows to colorize, read by a pool of tasks (as
    many as the model actors, at least 2), a batch of files or a parquet row group per call. It asks for no CPU of its
    own: it waits on storage, while each model actor holds a CPU (on one CPU, a reading task that wanted one would
    never run).
    The pool's size matters: Ray starts a worker process (which imports torch) for each task running at once."""
    readers = ray.data.TaskPoolStrategy(size=max(2, job.concurrency))
    if source.image_paths:
        calls = math.ceil(len(todo) / rows_per_call(job, len(todo)))
        items = ray.data.from_items([{"id": row_id} for row_id in todo], override_num_blocks=calls)
        arguments = {"filesystem": source.filesystem, "root": source.root}
        return items.map_batches(read_files, fn_kwargs=arguments, batch_format="numpy", num_cpus=0, compute=readers)
    groups, wanted = [], frozenset(todo)
    for path in source.parquet_files:
        try:
            groups += [group for group in row_groups(source, path) if not wanted.isdisjoint(group["ids"])]
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"{path}: cannot be read any more ({error}); was SRC changed during the run?") from error
    arguments = {"filesystem": source.filesystem, "root": source.root, "todo": wanted}
    return ray.data.from_items(groups).map_batches(
        read_row_groups, fn_kwargs=arguments, batch_size=1, batch_format="numpy", num_cpus=0, compute=readers
    )


def row_groups(source: Source, path: str) -> list[dict]:
    """The read stage's items for one parquet file of SRC: each row group with its ids (read here: a file removed
    during the run still names its rows in their errors)."""
    with pq.ParquetFile(path, filesystem=source.filesystem) as file:
        ids = [file.read_row_group(group, columns=[source.id_column], use_threads=False)[0].to_pylist()
               for group in range(file.num_row_groups)]  # fmt: skip
    return [{"file": path, "row_group": group, "ids": list(map(str, values))} for group, values in enumerate(ids)]


def check_paths(source: str, destination: str) -> None:
    """ValueError where DST is SRC or one holds the other (an output could land on an input) or is a file; DST must
    be local."""
    if "://" in destination:
        raise ValueError(f"-o {destination}: DST must be a local folder")
    if "://" in source and not source.startswith("file://"):
        return
    src = os.path.realpath(os.path.expanduser(source.removeprefix("file://")))
    dst = os.path.realpath(destination)
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise ValueError(f"-o {destination}: is a file, not a folder")
    if os.path.commonpath([src, dst]) in (src, dst):
        raise ValueError(f"-o {destination} and {source} overlap: DST must be outside SRC, and SRC outside DST")
