"""The cuts of the real-photo corpora shipped in tests/data: small, readable as Hub datasets, reproducible."""

import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from datasets import load_dataset

sys.path.insert(0, str(ROOT / "tests" / "data"))
import make_cut  # noqa: E402

MAX_TOTAL_BYTES = 5_000_000


def test_the_cuts_are_small():
    total = sum(path.stat().st_size for path in (ROOT / "tests" / "data").rglob("*.parquet"))
    assert total <= MAX_TOTAL_BYTES


@pytest.mark.parametrize(
    ("fixture", "cut", "train_rows", "validation_rows", "class_names", "image_format"),
    [
        ("scenes_dataset", make_cut.CUTS[0], 64, 256, 21, "JPEG"),
        ("everyday_dataset", make_cut.CUTS[1], 64, 16, 7, "WEBP"),
    ],
)
def test_a_cut_streams_as_a_hub_dataset_with_its_class_names(
    fixture, cut, train_rows, validation_rows, class_names, image_format, request
):
    dataset = request.getfixturevalue(fixture)
    assert dataset.name == cut.name
    splits = load_dataset(str(dataset), streaming=True)
    assert len(splits["train"].features["label"].names) == class_names
    rows = {split: list(splits[split]) for split in ("train", "validation")}
    assert (len(rows["train"]), len(rows["validation"])) == (train_rows, validation_rows)
    for row in rows["train"][:4] + rows["validation"][:4]:
        assert row["image"].format == image_format and min(row["image"].size) >= 100
        assert -1 <= row["label"] < class_names and row["source"] in cut.licences
    assert len({row["id"] for row in rows["train"] + rows["validation"]}) == train_rows + validation_rows


def test_the_cuts_are_what_make_cut_makes_from_the_shared_corpora(shared_data, tmp_path):
    make_cut.main(["--shared", str(shared_data), "--output", str(tmp_path)])
    for cut in make_cut.CUTS:
        shipped, made = ROOT / "tests" / "data" / cut.name, tmp_path / cut.name
        assert (made / "README.md").read_text() == (shipped / "README.md").read_text()
        names = sorted(path.name for path in (shipped / "data").glob("*.parquet"))
        assert names == sorted(path.name for path in (made / "data").glob("*.parquet"))
        for name in names:
            made_table, shipped_table = pq.read_table(made / "data" / name), pq.read_table(shipped / "data" / name)
            assert made_table.equals(shipped_table, check_metadata=True)


def test_every_source_in_a_cut_has_its_licence_recorded():
    for cut in make_cut.CUTS:
        readme = (ROOT / "tests" / "data" / cut.name / "README.md").read_text()
        for path in (ROOT / "tests" / "data" / cut.name / "data").glob("*.parquet"):
            for source in set(pq.read_table(path, columns=["source"]).column("source").to_pylist()):
                assert f"| {source} | " in readme and cut.licences[source] in readme
