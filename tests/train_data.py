"""Small Hub-layout datasets for the training tests, cut from a real-photo corpus (the shipped cuts)."""

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from train.compact import with_images

VALIDATION_ROWS = 16


def corrupt_images(table: pa.Table, rows: list[int]) -> pa.Table:
    """Replace the images of `rows`: a truncated JPEG, empty bytes, then bytes that are not an image at all."""
    images = [cell["bytes"] for cell in table.column("image").to_pylist()]
    broken = [images[0][:200], b"", b"not an image"]
    for index, row in enumerate(rows):
        images[row] = broken[index % len(broken)]
    return with_images(table, "image", images)


def desaturate_images(table: pa.Table, rows: list[int]) -> pa.Table:
    """Replace the images of `rows` by their own gray versions (as RGB JPEGs): photos with no colour at all."""
    images = [cell["bytes"] for cell in table.column("image").to_pylist()]
    for row in rows:
        with Image.open(io.BytesIO(images[row])) as photo:
            encoded = io.BytesIO()
            photo.convert("L").convert("RGB").save(encoded, "JPEG", quality=95)
        images[row] = encoded.getvalue()
    return with_images(table, "image", images)


def make_scene_dataset(
    corpus: Path,
    root: Path,
    shards: int = 2,
    rows_per_shard: int = 24,
    corrupt_rows: tuple[int, ...] = (),
    gray_validation_rows: tuple[int, ...] = (),
) -> Path:
    """`shards` train shards and one validation shard of real photos from the corpus's train split (labels and
    ClassLabel names kept), under the corpus's README (its configs name the splits' files). `corrupt_rows`
    (indices into the first train shard) get broken images, `gray_validation_rows` grayscale ones."""
    source = pa.concat_tables(pq.read_table(path) for path in sorted((corpus / "data").glob("train-*.parquet")))
    if source.num_rows < shards * rows_per_shard + VALIDATION_ROWS:
        raise ValueError(f"{corpus} has {source.num_rows} train rows, too few for {shards} x {rows_per_shard}")
    data = root / "data"
    data.mkdir(parents=True)
    for shard in range(shards):
        table = source.slice(shard * rows_per_shard, rows_per_shard)
        if shard == 0 and corrupt_rows:
            table = corrupt_images(table, list(corrupt_rows))
        pq.write_table(table, data / f"train-{shard:05d}-of-{shards:05d}.parquet")
    validation = source.slice(shards * rows_per_shard, VALIDATION_ROWS)
    if gray_validation_rows:
        validation = desaturate_images(validation, list(gray_validation_rows))
    pq.write_table(validation, data / "validation-00000-of-00001.parquet")
    (root / "README.md").write_text((corpus / "README.md").read_text())
    return root
