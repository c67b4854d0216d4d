"""The training data stream: Hub-layout datasets read with `streaming=True`, decoded and cropped in DataLoader
workers into whole uint8 batches; colour conversion happens later, on the training device, in batch."""

import io
import random
import signal
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from datasets import ClassLabel, Features, Image, IterableDataset, Value, interleave_datasets, load_dataset
from datasets.distributed import split_dataset_by_node
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

CROP_SIZE = 224  # paper 3.4: 224x224 crops of 256x256 images
RESIZE_SIDE = 256
SHUFFLE_BUFFER = 1000
# Paper 3.4 drops grayscale and low colour variance photos. Measured on a 32x32 thumbnail in YCbCr (0-255 units):
# a photo whose chroma channels barely vary (grayscale, sepia, a single tint) teaches nothing about colour.
THUMBNAIL_SIDE = 32
MIN_CHROMA_STD = 3.0
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, PILImage.DecompressionBombError)


@dataclass
class Source:
    """One dataset of a training mix."""

    dataset: str
    label_column: str | None = "label"  # a ClassLabel column; None trains on this dataset's colours only
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

    def only(self, source: Source) -> "StreamSpec":
        return replace(self, sources=[source])


@dataclass
class Batch:
    """One training batch, made whole by a single DataLoader worker."""

    images: torch.Tensor  # (N, 3, 224, 224) uint8 RGB
    labels: torch.Tensor  # (N,) int64 indices into the model's class names, -1 where unlabelled
    worker: int
    stream_state: dict  # the worker's dataset position after this batch
    skipped: dict[str, int] = field(default_factory=dict)  # images dropped since the worker started, by reason

    def pin_memory(self) -> "Batch":
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.worker, self.stream_state, self.skipped)


STREAM_FEATURES = Features({"image": Image(decode=False), "label": Value("int64")})


def open_source(source: Source, split: str, image_column: str) -> IterableDataset:
    """One dataset's split as a stream of undecoded `image` and `label` (the model's class, via `class_ids`)."""
    stream = load_dataset(source.dataset, split=split, streaming=True)
    if image_column not in stream.features:
        raise ValueError(f"{source.dataset}: no column {image_column!r}; columns: {list(stream.features)}")
    stream = stream.cast_column(image_column, Image(decode=False))
    label_column = source.label_column if source.label_column in stream.features else None

    def relabel(row: dict) -> dict:
        label = row[label_column] if label_column else None
        if label is not None and label >= 0 and source.class_ids:
            label = source.class_ids[label]
        return {"image": row[image_column], "label": -1 if label is None or label < 0 else label}

    return stream.map(relabel, remove_columns=list(stream.features), features=STREAM_FEATURES)


def open_stream(spec: StreamSpec) -> IterableDataset:
    """The split as one stream (the sources interleaved by weight), this rank's part only."""
    streams = [open_source(source, spec.split, spec.image_column) for source in spec.sources]
    stream = streams[0]
    if len(streams) > 1:
        total = sum(source.weight for source in spec.sources)
        probabilities = [source.weight / total for source in spec.sources]
        stream = interleave_datasets(streams, probabilities, seed=spec.seed, stopping_strategy="first_exhausted")
    if spec.world_size > 1:
        stream = split_dataset_by_node(stream, rank=spec.rank, world_size=spec.world_size)
    return stream


def source_class_names(source: Source, split: str) -> list[str]:
    """The label names from the dataset's ClassLabel feature; empty when it has none (or no label column)."""
    features = load_dataset(source.dataset, split=split, streaming=True).features
    feature = features.get(source.label_column) if source.label_column else None
    return list(feature.names) if isinstance(feature, ClassLabel) else []


def decode_image(cell: dict | None) -> PILImage.Image:
    """An RGB image from an undecoded `Image` cell; raises one of DECODE_ERRORS for anything unusable."""
    data = (cell or {}).get("bytes")
    if not data:
        raise ValueError("empty image")
    with PILImage.open(io.BytesIO(data)) as image:
        image.draft("RGB", (RESIZE_SIDE, RESIZE_SIDE))  # JPEG: decode at a reduced scale when the photo is large
        return image.convert("RGB")


def is_colourful(image: PILImage.Image) -> bool:
    chroma = np.asarray(image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE)).convert("YCbCr"), dtype=np.float32)[..., 1:]
    return float(chroma.reshape(-1, 2).std(axis=0).max()) >= MIN_CHROMA_STD


def resize_shorter_side(image: PILImage.Image, side: int) -> PILImage.Image:
    scale = side / min(image.size)
    size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
    return image.resize(size, PILImage.Resampling.BILINEAR, reducing_gap=2.0)


def random_crop(image: PILImage.Image, rng: random.Random) -> PILImage.Image:
    """Paper 3.4 augmentation: resize (shorter side 256), a random 224 crop, a horizontal flip half the time."""
    image = resize_shorter_side(image, RESIZE_SIDE)
    left, top = rng.randint(0, image.width - CROP_SIZE), rng.randint(0, image.height - CROP_SIZE)
    image = image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    return image.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def center_crop(image: PILImage.Image) -> PILImage.Image:
    image = resize_shorter_side(image, RESIZE_SIDE)
    left, top = (image.width - CROP_SIZE) // 2, (image.height - CROP_SIZE) // 2
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def to_uint8_tensor(image: PILImage.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def prepare_example(example: dict, crop, skipped: dict[str, int]) -> tuple | None:
    """(uint8 CHW crop, label) for one row, or None (counted in `skipped`) when it is unusable or colourless."""
    try:
        image = decode_image(example.get("image"))
    except DECODE_ERRORS:
        skipped["bad_image"] = skipped.get("bad_image", 0) + 1
        return None
    if not is_colourful(image):
        skipped["low_colour"] = skipped.get("low_colour", 0) + 1
        return None
    return to_uint8_tensor(crop(image)), int(example["label"])


class TrainBatches(torch.utils.data.IterableDataset):
    """Endless shuffled training batches. Each DataLoader worker streams its own shards (`datasets` spreads them)
    and yields whole batches tagged with its stream position, so the trainer can checkpoint exactly what it used."""

    def __init__(self, spec: StreamSpec, batch_size: int, worker_states: dict[int, dict] | None = None):
        self.spec, self.batch_size = spec, batch_size
        self.worker_states = worker_states or {}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        stream = open_stream(self.spec).shuffle(seed=self.spec.seed, buffer_size=SHUFFLE_BUFFER)
        if worker in self.worker_states:
            stream.set_epoch(self.worker_states[worker]["epoch"])
            stream.load_state_dict(self.worker_states[worker])
        rng = random.Random(f"{self.spec.seed}-{self.spec.rank}-{worker}-{stream.epoch}")
        skipped: dict[str, int] = {}
        images, labels = [], []
        # A restored stream refills its shuffle buffer from the saved position on, so the rest of its epoch can be
        # empty (a small dataset read whole into the buffer): that is not an empty dataset.
        resumed = worker in self.worker_states
        while True:
            produced = False
            for example in stream:
                prepared = prepare_example(example, lambda image: random_crop(image, rng), skipped)
                if prepared is None:
                    continue
                produced = True
                images.append(prepared[0])
                labels.append(prepared[1])
                if len(images) == self.batch_size:
                    yield Batch(torch.stack(images), torch.tensor(labels), worker, stream.state_dict(), dict(skipped))
                    images, labels = [], []
            if not produced and not resumed:
                return  # this worker got no shard, or nothing usable in it
            resumed = False
            stream.set_epoch(stream.epoch + 1)


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
    examples = iter(open_stream(spec))
    for example in examples:
        prepared = prepare_example(example, center_crop, skipped)
        if prepared is not None:
            images.append(prepared[0])
            labels.append(prepared[1])
        if len(images) == limit:
            break
    examples.close()  # now, not at interpreter exit, where `datasets`' parquet reader fails noisily
    if not images:
        names = ", ".join(source.dataset for source in spec.sources)
        raise ValueError(f"{names}: split {spec.split!r} has no usable images")
    return torch.stack(images), torch.tensor(labels), skipped
