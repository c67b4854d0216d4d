"""Cuts the small corpora shipped with the tests from the shared ones: `python tests/data/make_cut.py [--shared DIR]`.

Each cut is a Hub-layout dataset (parquet shards and a README.md with its configs, read by
`datasets.load_dataset(path, streaming=True)`): the first rows of the corpus's first train shard (each shard is a
random sample of the corpus), split into two train shards, and the first rows of its validation split. Rows, image
bytes and the ClassLabel names (the parquet schema's `huggingface` metadata) are copied unchanged.
"""

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parent.parent.parent / "shared" / "data"
TRAIN_SHARDS = 2


@dataclass(frozen=True)
class Cut:
    name: str
    train_rows_per_shard: int
    validation_rows: int
    licences: dict[str, str]  # by the `source` column, as the corpus's README states them
    why: str


CUTS = (
    Cut(
        "letcolor-scenes",
        train_rows_per_shard=32,
        validation_rows=256,
        licences={
            "intel": "Intel Image Classification: licence not stated; treat as research-only",
            "sun": "SUN database: research only",
            "imagenet": "ImageNet sample images: ImageNet terms (research, non-commercial)",
            "bsds500": "Berkeley Segmentation Dataset BSDS500: research use",
        },
        why="the bundled model's quality test (256 validation photos) and the training and evaluation tests",
    ),
    Cut(
        "letcolor-everyday",
        train_rows_per_shard=32,
        validation_rows=16,
        licences={
            "utkface": "UTKFace: non-commercial research only",
            "utkface_wild": "UTKFace: non-commercial research only",
            "face_mask_nomask": "Face-Mask-Detection: MIT (repository)",
            "clothing": "clothing-dataset: CC0 1.0",
            "kaggle_cats": "Kaggle Dogs vs. Cats: research use (Asirra / Kaggle terms)",
            "kaggle_dogs": "Kaggle Dogs vs. Cats and breed photos: research use (Asirra / Kaggle terms)",
            "stanford_cars": "Stanford Cars: non-commercial research only",
            "gtea_gaze_plus": "GTEA Gaze+: academic use",
            "raccoon_kangaroo": "raccoon and kangaroo detection sets: MIT / not stated",
        },
        why="the multi-dataset training tests (WebP photos; 7 ClassLabel names, not scenes)",
    ),
)

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: validation
    path: data/validation-*.parquet
---
# {name} (test cut)

Real colour photos cut from `../shared/data/{name}` by `tests/data/make_cut.py` (rerun it rather than
editing by hand), in the corpus's layout and columns (`image`, `label` ClassLabel, `source`, `id`).
Used by {why}.

| split | rows | shards |
|---|---|---|
| train | {train_rows} | {shards} |
| validation | {validation_rows} | 1 |

## Licences

Photos keep their publishers' licences (most are research-only), not letcolor's MIT licence. Each row's `source`
and `id` columns name its collection and its path there.

| source | photos | licence |
|---|---|---|
{licence_rows}
"""


def first_rows(path: Path, count: int) -> pa.Table:
    table = pq.read_table(path).slice(0, count)
    if table.num_rows < count:
        raise SystemExit(f"{path} has {table.num_rows} rows, fewer than the {count} the cut needs")
    return table


def write_cut(cut: Cut, corpus: Path, output: Path) -> None:
    data = output / "data"
    data.mkdir(parents=True, exist_ok=True)
    for stale in data.glob("*.parquet"):
        stale.unlink()
    train = first_rows(sorted((corpus / "data").glob("train-*.parquet"))[0], TRAIN_SHARDS * cut.train_rows_per_shard)
    for shard in range(TRAIN_SHARDS):
        rows = train.slice(shard * cut.train_rows_per_shard, cut.train_rows_per_shard)
        pq.write_table(rows, data / f"train-{shard:05d}-of-{TRAIN_SHARDS:05d}.parquet")
    validation = first_rows(sorted((corpus / "data").glob("validation-*.parquet"))[0], cut.validation_rows)
    pq.write_table(validation, data / "validation-00000-of-00001.parquet")

    sources = Counter(train.column("source").to_pylist() + validation.column("source").to_pylist())
    licence_rows = "\n".join(f"| {name} | {count} | {cut.licences[name]} |" for name, count in sorted(sources.items()))
    readme = README.format(
        name=cut.name,
        why=cut.why,
        train_rows=train.num_rows,
        shards=TRAIN_SHARDS,
        validation_rows=validation.num_rows,
        licence_rows=licence_rows,
    )
    (output / "README.md").write_text(readme)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="folder holding the full corpora")
    parser.add_argument("--output", type=Path, default=HERE, help="where the cuts are written (default: here)")
    args = parser.parse_args(argv)
    for cut in CUTS:
        write_cut(cut, args.shared / cut.name, args.output / cut.name)
        print(f"wrote {args.output / cut.name}")


if __name__ == "__main__":
    main()
