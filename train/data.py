"""The training data stream: Hub-layout datasets read with `streaming=True`, decoded and cropped in DataLoader
workers into whole uint8 batches; colour conversion happens later, on the training device, in batch."""

import contextlib
import io
import os
import random
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from datasets import ClassLabel, Image, IterableDataset, load_dataset
from datasets import config as datasets_config
from datasets.distributed import split_dataset_by_node
from datasets.table import CastError
from datasets.utils.file_utils import xopen
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from letcolor.images import in_srgb, upright

CROP_SIZE = 224  # paper 3.4: 224x224 crops of 256x256 images
RESIZE_SIDE = 256
SHUFFLE_BUFFER = 1000
EMPTY_EPOCHS_PER_PART = 10  # a part's epochs in a row without a usable photo before it ends (`SourceEpochs`)
# Paper 3.4 drops grayscale and low colour variance photos (Places365 holds black-and-white ones). Measured on a
# 32x32 thumbnail in YCbCr (0-255 units): a photo whose chroma channels barely vary (grayscale, sepia, a single
# tint) is skipped. A colour photo of a gray street or a gray car is such a photo too: --min-chroma-std sets it.
THUMBNAIL_SIDE = 32
MIN_CHROMA_STD = 3.0
MAX_ASPECT = 4  # longer side over shorter side, beyond which a photo is cut before it is resized (`within_aspect`)
MAX_IMAGE_FILE_BYTES = 256 << 20  # an image that a row names by its path: read whole, so bounded
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, PILImage.DecompressionBombError)
DEFAULT_LABEL_COLUMN = "label"


@dataclass
class Source:
    """One dataset of a training mix."""

    dataset: str
    label_column: str | None = DEFAULT_LABEL_COLUMN  # a ClassLabel column; None trains on this dataset's colours only
    weight: float = 1.0  # sampling weight among the sources
    class_ids: list[int] | None = None  # the model's class for each of this dataset's labels (None: the same)


@dataclass
class StreamSpec:
    """Where and how to read one split of one or more datasets (mixed by their weights)."""

    sources: list[Source]
    split: str
    image_column: str = "image"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    min_chroma_std: float = MIN_CHROMA_STD  # photos whose chroma varies less are skipped (0 keeps every photo)


@dataclass
class Batch:
    """One training batch, made whole by a single DataLoader worker."""

    images: torch.Tensor  # (N, 3, 224, 224) uint8 RGB; N = 0 for the worker's last, at the end of its stream
    labels: torch.Tensor  # (N,) int64 indices into the model's class names, -1 where unlabelled
    worker: int
    stream_state: dict  # the worker's dataset position after this batch (empty in the last)
    skipped: dict[str, int] = field(default_factory=dict)  # images dropped since the worker started, by reason

    def pin_memory(self) -> "Batch":
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.worker, self.stream_state, self.skipped)


class DataError(ValueError):
    """A dataset, split or column that the run names and cannot read."""


def streamed_split(dataset: str, split: str) -> IterableDataset:
    """`load_dataset(dataset, split=split, streaming=True)`; DataError where there is no such dataset or split."""
    if os.path.isfile(dataset):
        raise DataError(f"{dataset}: a file; --dataset takes a folder (its split's files in data/) or a Hub id")
    try:
        stream = load_dataset(dataset, split=split, streaming=True)
    except (OSError, ValueError) as error:  # no data files there; "Bad split: ..."; a Hub that cannot be reached
        raise DataError(f"{dataset}, split {split!r}: cannot be read ({error})") from error
    if stream.features is None:  # (files of no format that states its columns: a folder of text files)
        raise DataError(f"{dataset}, split {split!r}: no columns can be read from its files (no parquet files there?)")
    return stream


def open_stream(spec: StreamSpec, source: Source, worker: int = 0, workers: int = 1) -> IterableDataset:
    """One dataset's split as a stream with undecoded images: this rank's part only, and of that, DataLoader worker
    `worker`'s part of `workers` (read it with `rows`)."""
    stream = streamed_split(source.dataset, spec.split)
    if spec.image_column not in stream.features:
        raise DataError(f"{source.dataset}: no column {spec.image_column!r}; columns: {list(stream.features)}")
    stream = stream.cast_column(spec.image_column, Image(decode=False))
    parts = spec.world_size * workers
    if parts > 1:  # whole shards where there are enough (else each part would read them all, keeping 1 row in N)
        strategy = "shards" if stream.num_shards >= parts else "examples"
        stream = split_dataset_by_node(stream, rank=spec.rank * workers + worker, world_size=parts, strategy=strategy)
    return stream


def rows(stream: IterableDataset, dataset: str) -> Iterator[dict]:
    """The stream's rows, read as outside a DataLoader worker. Inside one, datasets (5.2) restores a saved position
    before it splits the shards between the workers, and with two workers or more the saved state no longer fits
    (an IndexError, then a hung trainer): each worker's part is split by `open_stream` instead. DataError for a data
    file that cannot be read."""
    try:
        for batch in stream.iter(batch_size=1):
            yield {column: values[0] for column, values in batch.items()}
    except CastError as error:  # (its message, cut short, never came to what differs)
        raise DataError(f"{dataset}: a data file has other columns than the first: {error.details()}") from error
    except (OSError, pa.ArrowException, ValueError, TypeError) as error:  # the last two: files of other columns
        reason = " ".join(str(error).split())[:300]
        raise DataError(f"{dataset}: a data file is empty, of other columns than the first, or could not be read "
                        f"({reason})") from error  # fmt: skip


def model_label(example: dict, source: Source) -> int:
    """The row's class among the model's class names (via the source's `class_ids`), -1 where it has none or one
    that its ClassLabel does not name (a corrupt row: it crashed the run mid-way with an IndexError)."""
    label = example.get(source.label_column) if source.label_column else None
    if label is None or label < 0 or (source.class_ids is not None and label >= len(source.class_ids)):
        return -1
    return source.class_ids[label] if source.class_ids else int(label)


def source_class_names(source: Source, split: str) -> list[str]:
    """The label names from the dataset's ClassLabel feature; empty when it has none (or no label column)."""
    features = streamed_split(source.dataset, split).features
    feature = features.get(source.label_column) if source.label_column else None
    return list(feature.names) if isinstance(feature, ClassLabel) else []


def cell_bytes(cell: dict | None) -> bytes:
    """An undecoded `Image` cell's bytes, or those of the file its path names (a folder of images, as `datasets` reads
    one; local, or remote as datasets streams it); ValueError for none, or a file over MAX_IMAGE_FILE_BYTES."""
    data, path = (cell or {}).get("bytes"), (cell or {}).get("path")
    if not data and path:
        with xopen(path, "rb") as file:
            data = file.read(MAX_IMAGE_FILE_BYTES + 1)
        if len(data) > MAX_IMAGE_FILE_BYTES:
            raise ValueError(f"{path}: over {MAX_IMAGE_FILE_BYTES >> 20} MB")
    if not data:
        raise ValueError("empty image")
    return data


def decode_image(cell: dict | None, side: int = RESIZE_SIDE) -> PILImage.Image:
    """An upright RGB image in sRGB (its ICC profile applied, as letcolor reads photos) from an undecoded `Image`
    cell (`cell_bytes`), a JPEG decoded at a reduced scale where its shorter side still holds `side` px; raises one
    of DECODE_ERRORS for anything unusable."""
    with PILImage.open(io.BytesIO(cell_bytes(cell))) as image:
        image.draft("RGB", (side, side))
        turned = upright(image.convert("RGB"))  # a damaged EXIF block (struct.error...): as stored, as letcolor reads
    return in_srgb(turned)  # its colours as the model is scored on (evaluate) and used: in sRGB


def is_colourful(image: PILImage.Image, min_chroma_std: float = MIN_CHROMA_STD) -> bool:
    if min_chroma_std <= 0:
        return True
    chroma = np.asarray(image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE)).convert("YCbCr"), dtype=np.float32)[..., 1:]
    return float(chroma.reshape(-1, 2).std(axis=0).max()) >= min_chroma_std


def within_aspect(image: PILImage.Image, position: Callable[[], float]) -> PILImage.Image:
    """The image cut along its longer side to at most MAX_ASPECT times its shorter side, at `position()` (in [0, 1])
    of the room left: resized whole, a 2x4000 strip became 256x512000 (0.5 GB, 6.5 s) for one 224 crop."""
    limit = MAX_ASPECT * min(image.size)
    if max(image.size) <= limit:
        return image
    start = round((max(image.size) - limit) * position())
    if image.width > image.height:
        return image.crop((start, 0, start + limit, image.height))
    return image.crop((0, start, image.width, start + limit))


def resize_shorter_side(image: PILImage.Image, side: int) -> PILImage.Image:
    scale = side / min(image.size)
    size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
    return image.resize(size, PILImage.Resampling.BILINEAR, reducing_gap=2.0)


def random_crop(image: PILImage.Image, rng: random.Random) -> PILImage.Image:
    """Paper 3.4 augmentation: resize (shorter side 256), a random 224 crop, a horizontal flip half the time."""
    image = resize_shorter_side(within_aspect(image, rng.random), RESIZE_SIDE)
    left, top = rng.randint(0, image.width - CROP_SIZE), rng.randint(0, image.height - CROP_SIZE)
    image = image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    return image.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def center_crop(image: PILImage.Image) -> PILImage.Image:
    image = resize_shorter_side(within_aspect(image, lambda: 0.5), RESIZE_SIDE)
    left, top = (image.width - CROP_SIZE) // 2, (image.height - CROP_SIZE) // 2
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def to_uint8_tensor(image: PILImage.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def prepare_example(example: dict, spec: StreamSpec, crop, skipped: dict[str, int]) -> torch.Tensor | None:
    """The uint8 CHW crop of one row, or None (counted in `skipped`) when it is unusable or colourless."""
    try:
        image = decode_image(example.get(spec.image_column))
    except DECODE_ERRORS:
        skipped["bad_image"] = skipped.get("bad_image", 0) + 1
        return None
    if not is_colourful(image, spec.min_chroma_std):
        skipped["low_colour"] = skipped.get("low_colour", 0) + 1
        return None
    return to_uint8_tensor(crop(image))


@contextlib.contextmanager
def no_sleep_at_stream_end():
    """datasets (5.2) sleeps `SLEEP_TIME_ON_THREADS_SHUTDOWN` (5 s) each time a parquet stream ends, against Arrow
    threads hanging at interpreter exit (apache/arrow#45214). A training stream ends every epoch: in a DataLoader
    worker with a few shards that was a 5 s stall per pass (two thirds of an H200 run's time on a compact copy). Inside
    this block a stream that ends does not sleep; one closed at exit, outside it, still does."""
    pause = datasets_config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    datasets_config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    try:
        yield
    finally:
        datasets_config.SLEEP_TIME_ON_THREADS_SHUTDOWN = pause


def shuffled_stream(
    spec: StreamSpec, source: Source, state: dict | None, worker: int = 0, workers: int = 1
) -> IterableDataset:
    """One dataset's shuffled stream in DataLoader worker `worker` of `workers`, from the saved position `state`
    where one is given (restored as its rows start: `datasets`' IndexError or KeyError there where the files no
    longer fit it, `positions_fit`)."""
    stream = open_stream(spec, source, worker, workers).shuffle(seed=spec.seed, buffer_size=SHUFFLE_BUFFER)
    if state:
        stream.set_epoch(state["epoch"])
        stream.load_state_dict(state)
    return stream


def positions_fit(spec: StreamSpec, worker_states: dict[int, dict], workers: int) -> bool:
    """Whether the saved positions of a checkpoint's DataLoader workers can be restored in the datasets' files as they
    are now: files added or removed since, or cut into other shards (a new compact copy), ended a resumed run with
    `datasets`' traceback."""
    for worker, state in worker_states.items():
        for source, position in zip(spec.sources, state.get("sources") or [], strict=False):
            if position is None:
                continue
            restored = rows(shuffled_stream(spec, source, position, worker, workers), source.dataset)  # DataError
            with no_sleep_at_stream_end():
                try:
                    next(restored, None)  # (the position is restored as the rows start: it fills the shuffle buffer)
                except (IndexError, KeyError):
                    return False
                finally:
                    restored.close()
    return True


class SourceEpochs:
    """One dataset's shuffled stream in a DataLoader worker, epoch after epoch, from a saved position or the start."""

    def __init__(self, spec: StreamSpec, source: Source, state: dict | None, worker: int = 0, workers: int = 1):
        self.source = source
        self.stream = shuffled_stream(spec, source, state, worker, workers)
        # A restored stream refills its shuffle buffer from the saved position on, so the rest of its epoch can be
        # empty (a small dataset read whole into the buffer): that alone does not make the dataset empty.
        self.resumed = bool(state)
        self.examples = rows(self.stream, self.source.dataset)
        self.used_in_epoch, self.empty_epochs = False, 0
        # With several parts, `datasets` deals the shards to the parts anew each epoch: one part's epoch without a
        # usable photo (its shards all gray, say) does not make the next one empty (a worker ended at step 8 of 20).
        parts = spec.world_size * workers
        self.empty_epochs_to_end = 1 if parts == 1 else EMPTY_EPOCHS_PER_PART * parts

    def next_usable(self, prepare) -> tuple[torch.Tensor, int] | None:
        """(crop, model label) of the next row that `prepare` can use; None when fresh epochs in a row had none
        (this worker got no shard of the dataset, or nothing usable in it)."""
        while True:
            with no_sleep_at_stream_end():
                for example in self.examples:
                    crop = prepare(example)
                    if crop is not None:
                        self.used_in_epoch, self.empty_epochs = True, 0
                        return crop, model_label(example, self.source)
            if not self.used_in_epoch and not self.resumed:
                self.empty_epochs += 1
                if self.empty_epochs >= self.empty_epochs_to_end:
                    return None
            self.resumed = self.used_in_epoch = False
            self.stream.set_epoch(self.stream.epoch + 1)
            self.examples = rows(self.stream, self.source.dataset)

    def state(self) -> dict:
        return self.stream.state_dict()


class TrainBatches(torch.utils.data.IterableDataset):
    """Endless shuffled training batches. Each DataLoader worker streams its own shards of every dataset
    (`datasets` spreads them), draws each photo's dataset by the sources' weights, and yields whole batches tagged
    with its position in every stream and in the draws, so the trainer can checkpoint exactly what it used.

    The mix is drawn here rather than by `datasets.interleave_datasets`, whose saved positions could not be
    restored (datasets 5.2: the resumed worker failed in its arrow re-batching with a SystemError)."""

    def __init__(self, spec: StreamSpec, batch_size: int, worker_states: dict[int, dict] | None = None):
        self.spec, self.batch_size = spec, batch_size
        self.worker_states = worker_states or {}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        state = self.worker_states.get(worker, {})
        saved = state.get("sources") or [None] * len(self.spec.sources)
        sources = [
            SourceEpochs(self.spec, source, position, worker, workers)
            for source, position in zip(self.spec.sources, saved, strict=True)
        ]
        weights = [source.weight for source in self.spec.sources]
        drawn = state.get("drawn", 0)
        name = f"{self.spec.seed}-{self.spec.rank}-{worker}"
        rng = random.Random(f"{name}-{drawn}")  # the crops' randomness: fresh past a saved position
        skipped: dict[str, int] = {}

        def usable_crop(example: dict) -> torch.Tensor | None:
            return prepare_example(example, self.spec, lambda image: random_crop(image, rng), skipped)

        images, labels = [], []
        while True:
            index = random.Random(f"{name}-draw-{drawn}").choices(range(len(sources)), weights)[0]
            drawn += 1
            prepared = sources[index].next_usable(usable_crop)
            if prepared is None:  # the end: a batch of none, with what was skipped (the trainer's message names it)
                empty = torch.empty((0, 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8)
                yield Batch(empty, torch.empty(0, dtype=torch.long), worker, {}, dict(skipped))
                return
            images.append(prepared[0])
            labels.append(prepared[1])
            if len(images) == self.batch_size:
                position = {"sources": [source.state() for source in sources], "drawn": drawn}
                yield Batch(torch.stack(images), torch.tensor(labels), worker, position, dict(skipped))
                images, labels = [], []


@contextlib.contextmanager
def loading(
    loader: torch.utils.data.DataLoader, skipped: dict[int, dict[str, int]] | None = None
) -> Iterator[Iterator[Batch]]:
    """The loader's batches of photos (`with_photos`), its workers stopped however the loop ends: they ignore SIGTERM
    (`ignore_interrupts`), and workers that an error's traceback kept alive hung the trainer's exit, which terminates
    and then joins them. A worker's DataError arrives with the worker's traceback in its message: only its own message
    is kept."""
    batches = iter(loader)
    try:
        yield with_photos(batches, {} if skipped is None else skipped)
    except DataError as error:
        raise DataError(str(error).rstrip().rsplit("DataError: ", 1)[-1]) from None
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # torch's own clean-up; none without workers
        if shutdown is not None:
            shutdown()


def with_photos(batches: Iterator[Batch], skipped: dict[int, dict[str, int]]) -> Iterator[Batch]:
    """The batches that hold photos, each worker's counts of skipped photos kept in `skipped` (by worker): a worker's
    last batch, at the end of its stream, holds none, only those counts."""
    for batch in batches:
        skipped[batch.worker] = batch.skipped
        if len(batch.images):
            yield batch


def collate_batch(batch: Batch) -> Batch:
    return batch


def ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C and a scheduler's SIGTERM reach the whole process group: workers leave them to the trainer, which
    checkpoints, then stops them (a worker killed first would crash the trainer before it could save)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def train_loader(
    spec: StreamSpec, batch_size: int, workers: int, pin_memory: bool, worker_states: dict[int, dict] | None = None
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        TrainBatches(spec, batch_size, worker_states),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_batch,
        worker_init_fn=ignore_interrupts,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def validation_images(spec: StreamSpec, limit: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """The first `limit` usable validation photos, center-cropped: (uint8 images, labels, skipped counts)."""
    images, labels, skipped = [], [], {}
    (source,) = spec.sources
    examples = rows(open_stream(spec, source), source.dataset)  # (a DataError, not pyarrow's, for a bad file)
    for example in examples:
        crop = prepare_example(example, spec, center_crop, skipped)
        if crop is not None:
            images.append(crop)
            labels.append(model_label(example, source))
        if len(images) == limit:
            break
    examples.close()  # now, not at interpreter exit, where `datasets`' parquet reader fails noisily
    if not images:
        names = ", ".join(source.dataset for source in spec.sources)
        raise DataError(f"{names}: split {spec.split!r} has no usable images (skipped: {skipped})")
    return torch.stack(images), torch.tensor(labels), skipped
