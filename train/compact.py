"""python -m train.compact: a smaller copy of a local Hub-layout dataset, for a training machine that can only be
sent a few tens of MB (an accelerator reached by copying the working tree).

    python -m train.compact ../shared/data/letcolor-everyday .data/everyday --side 160 --quality 65 --shards 14

Train rows (the first --train-rows, or all; their photos' bytes, or the files their paths name, as training reads
them) are re-encoded as WebP at a shorter side of at most --side and written
as --shards parquet files; validation rows are copied unchanged up to the --val-rows-th that training validates on
(one it can decode, colourful at the default --min-chroma-std), so that validation on the copy measures the same
photos as on the original (a photo that a row names by its file's path gets that file's bytes). Columns, features
(label names) and README.md are kept; train photos that cannot be decoded or encoded are left out (and counted).
Nothing is written until every photo is encoded.
"""

import argparse
import io
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from train.data import DECODE_ERRORS, cell_bytes, decode_image, is_colourful, within_aspect


def reencoded(cell: dict | None, side: int, quality: int) -> bytes | None:
    """The photo of an image cell ({bytes, path}: its bytes or the file its path names, as training reads it) as
    WebP, its shorter side at most `side` px and cut to the shape that training takes (`within_aspect`, centred: WebP
    holds at most 16383 px a side); None if it cannot be decoded or encoded."""
    try:
        image = within_aspect(decode_image(cell, side), lambda: 0.5)
        scale = side / min(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        output = io.BytesIO()
        image.save(output, "WEBP", quality=quality, method=4)
    except DECODE_ERRORS:
        return None
    return output.getvalue()


def read_split(source: Path, split: str, rows: int | None) -> pa.Table:
    """The split's rows (the first `rows`), its files' columns joined as training joins them (a column that a file
    lacks is null there); SystemExit where they cannot be read."""
    files = sorted((source / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise SystemExit(f"{source}: no data/{split}-*.parquet")
    try:
        table = pa.concat_tables((pq.read_table(path) for path in files), promote_options="default")
    except (OSError, pa.ArrowException) as error:
        raise SystemExit(f"{source}: its {split} files cannot be read as one table ({error})") from error
    return table.slice(0, rows) if rows is not None else table


def first_usable(table: pa.Table, column: str, count: int) -> pa.Table:
    """The rows up to the `count`-th that training validates on: the first `count` rows kept 250 of 256 usable photos
    of letcolor-everyday (the copy validated on fewer, and other, photos than the original)."""
    usable = 0
    for index, cell in enumerate(table.column(column).to_pylist()):
        try:
            usable += is_colourful(decode_image(cell))
        except DECODE_ERRORS:
            continue
        if usable == count:
            return table.slice(0, index + 1)
    return table


def with_bytes(cell: dict | None) -> dict | None:
    """An image cell with the bytes of the file that its path names, where it holds none: the copy goes to another
    machine, where the path names nothing (one that cannot be read is kept as it is, as training skips it)."""
    if not cell or cell.get("bytes") or not cell.get("path"):
        return cell
    try:
        return {"bytes": cell_bytes(cell), "path": cell["path"]}
    except (OSError, ValueError):
        return cell


def with_images(table: pa.Table, column: str, images: list[bytes]) -> pa.Table:
    return with_cells(table, column, [{"bytes": data, "path": None} for data in images])


def with_cells(table: pa.Table, column: str, cells: list[dict | None]) -> pa.Table:
    array = pa.array(cells, type=table.schema.field(column).type)
    return table.set_column(table.schema.get_field_index(column), column, array)


def write_shards(table: pa.Table, destination: Path, split: str, shards: int) -> None:
    bounds = [index * len(table) // shards for index in range(shards + 1)]  # sizes differ by one row at most
    for index in range(shards):
        part = table.slice(bounds[index], bounds[index + 1] - bounds[index])
        pq.write_table(part, destination / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m train.compact", description=__doc__)
    parser.add_argument("source", type=Path, help="a local dataset in Hub layout (data/{split}-*.parquet)")
    parser.add_argument("destination", type=Path, help="a new directory")
    parser.add_argument("--side", type=int, default=160, help="largest shorter side of a train photo, px")
    parser.add_argument("--quality", type=int, default=65, help="WebP quality of the train photos")
    parser.add_argument("--shards", type=int, default=14, help="train parquet files: at least the DataLoader workers")
    parser.add_argument("--train-rows", type=int, help="the first N train rows only (default all)")
    parser.add_argument(
        "--val-rows", type=int, default=256, help="validation photos copied unchanged (training's --val-images)"
    )
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    # (a copy without validation photos cannot be trained on: --val-rows too)
    for name in ("side", "shards", "processes", "train_rows", "val_rows"):
        if (value := getattr(args, name)) is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.quality <= 100:
        parser.error("--quality must be in 0..100")
    if args.destination.exists():
        raise SystemExit(f"{args.destination} exists: give a new directory")
    train = read_split(args.source, "train", args.train_rows)
    validation = read_split(args.source, "validation", None)
    for split, table in (("train", train), ("validation", validation)):
        column = table.schema.field(args.image_column) if args.image_column in table.column_names else None
        if column is None or not pa.types.is_struct(column.type):  # (plain paths or bytes: datasets casts them)
            parser.error(f"--image-column {args.image_column}: not a column of image cells ({{bytes, path}}, the Hub's "
                         f"Image feature) in the {split} split ({table.column_names})")  # fmt: skip
    validation = first_usable(validation, args.image_column, args.val_rows)
    embedded = [with_bytes(cell) for cell in validation.column(args.image_column).to_pylist()]
    validation = with_cells(validation, args.image_column, embedded)
    photos = train.column(args.image_column).to_pylist()
    encode = partial(reencoded, side=args.side, quality=args.quality)
    with ProcessPoolExecutor(args.processes) as pool:
        images = list(pool.map(encode, photos, chunksize=64))
    decoded = [index for index, image in enumerate(images) if image is not None]
    if not decoded:
        raise SystemExit(f"{args.source}: none of its {len(images)} train photos could be decoded")
    train = with_images(train.take(decoded), args.image_column, [images[index] for index in decoded])
    shards = min(args.shards, len(train))  # no empty files
    (args.destination / "data").mkdir(parents=True)
    if (args.source / "README.md").is_file():  # its configs name the splits' files; without one, datasets guesses
        shutil.copy(args.source / "README.md", args.destination / "README.md")
    write_shards(train, args.destination, "train", shards)
    write_shards(validation, args.destination, "validation", 1)
    size = sum(path.stat().st_size for path in (args.destination / "data").iterdir())
    left_out = len(images) - len(decoded)
    print(f"{args.destination}: {len(train)} train rows in {shards} shards, {size / 1e6:.1f} MB in all; "
          f"{left_out} photos that could not be decoded or encoded left out")  # fmt: skip


if __name__ == "__main__":
    main()
