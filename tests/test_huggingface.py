"""Hugging Face `datasets` as an output and an input: exports load with `load_dataset`, datasets folders ingest."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; the tests never reach out
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

import corpusdb  # noqa: E402
from corpusdb.errors import InputError  # noqa: E402
from corpusdb.text import normalize  # noqa: E402
from tests.conftest import CORPUS, fixture_texts, ingest_per_source  # noqa: E402

datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is in the test extra (pip install -e '.[test]')")


@pytest.fixture
def db(tmp_path) -> corpusdb.Database:
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS, meta={"title": "title"})
    return db


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_load_dataset_reads_an_export_folder_in_its_order(db, tmp_path, fmt):
    out = tmp_path / f"out-{fmt}"
    manifest = db.view("filter_length(200)").export(str(out), format=fmt, part_size_mb=0.05)
    assert len(manifest["parts"]) >= 3 and manifest["card"] == "README.md"
    if fmt == "parquet":
        expected = [r for p in manifest["parts"] for r in pq.read_table(out / p["file"]).to_pylist()]
    else:
        expected = [json.loads(line) for p in manifest["parts"] for line in (out / p["file"]).read_text().splitlines()]
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == manifest["n_rows"] == len(expected)
    assert loaded["doc_id"] == [r["doc_id"] for r in expected] and loaded["text"] == [r["text"] for r in expected]
    # the README's other example: the parts by their glob
    glob = datasets.load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(out / f"part-*.{fmt}"),
                                 split="train", cache_dir=str(tmp_path / "cache2"))
    assert glob["text"] == loaded["text"]
    # the card is the export's: an export of the same selection again leaves it; another one's replaces it
    again = db.view("filter_length(200)").export(str(out), format=fmt, part_size_mb=0.05)
    assert again.get("reused") and (out / "README.md").exists()
    db.view("filter_length(5000)").export(str(out), format=fmt, part_size_mb=0.05, overwrite=True)
    assert "filter_length(5000)" in (out / "README.md").read_text()
    assert datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache3")).num_rows < loaded.num_rows


def test_a_saved_dataset_ingests_its_records_not_its_metadata_or_cache(tmp_path):
    texts = fixture_texts("fortunes")[:300]
    data = datasets.Dataset.from_dict({"text": texts, "url": [f"https://example.org/{i}" for i in range(len(texts))]})
    folder = tmp_path / "saved"
    data.save_to_disk(str(folder), num_shards=3)
    # datasets writes cache files next to a loaded dataset's own files: not records of it
    datasets.load_from_disk(str(folder)).map(lambda row: {"text": row["text"].upper()})
    assert list(folder.glob("cache-*.arrow"))
    db = corpusdb.init(str(tmp_path / "db"))
    report = db.ingest([str(folder)], source="hf", meta={"url": "url"}, progress=False)
    assert report.n_inputs == 3 and report.n_docs_read == len(texts)
    rows = db.sql("select text, url from documents").fetchall()
    # a copy cut short (a shard state.json lists is missing) is an error, not two thirds of the dataset
    (folder / "data-00002-of-00003.arrow").unlink()
    with pytest.raises(InputError, match=r"state.json lists 3 data files, 1 of them missing \(e.g. data-00002-of-00003.arrow\)"):
        corpusdb.init(str(tmp_path / "db2")).ingest([str(folder)], source="hf", progress=False)
    expected = {(normalize(t), u) for t, u in zip(texts, data["url"])}
    assert len({normalize(t) for t in texts}) == len(rows) and set(rows) <= expected  # duplicates are written once


def test_a_dataset_repository_ingests_its_data_files_without_its_card(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    texts = fixture_texts("bible")[:50]
    pq.write_table(pa.table({"text": texts[:30]}), repo / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": texts[30:]}), repo / "data" / "train-00001-of-00002.parquet")
    (repo / "README.md").write_text("---\nlicense: mit\nconfigs:\n- config_name: default\n---\n# A dataset card\n")
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(repo)], source="repo", progress=False)
    assert sorted(t for (t,) in db.sql("select text from documents").fetchall()) == sorted({normalize(t) for t in texts})
    # a folder of documents keeps its README (no front matter, or no data files beside it)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# Notes\nA document like the others.\n")
    (docs / "other.md").write_text("---\ntitle: front matter in a page of notes\n---\nText.\n")
    (docs / "site").mkdir()
    (docs / "site" / "README.md").write_text("---\ntitle: a page with front matter\nlayout: post\n---\nA page.\n")
    (docs / "site" / "data.jsonl").write_text(json.dumps({"text": "a record beside the page"}) + "\n")
    db.ingest([str(docs)], source="docs", progress=False)
    assert db.sql("select count(*) from documents where source = 'docs'").fetchall() == [(4,)]


def test_a_dataset_dict_names_its_splits_and_arrow_files_of_both_layouts_read(tmp_path):
    data = datasets.Dataset.from_dict({"text": ["first record", "second record"]})
    datasets.DatasetDict({"train": data, "test": data.select([0])}).save_to_disk(str(tmp_path / "dict"))
    db = corpusdb.init(str(tmp_path / "db"))
    with pytest.raises(InputError, match=r"DatasetDict \(splits: train, test\).*dict/train"):
        db.ingest([str(tmp_path / "dict")], progress=False)
    db.ingest([str(tmp_path / "dict" / "train")], source="train", progress=False)
    assert sorted(t for (t,) in db.sql("select text from documents").fetchall()) == ["first record", "second record"]
    # the Arrow IPC file format (random access) reads too; a damaged stream is one line naming the file
    table = pa.table({"text": ["an arrow file record"]})
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    db.ingest([str(tmp_path / "file.arrow")], source="file", progress=False)
    assert db.sql("select count(*) from documents where source = 'file'").fetchall() == [(1,)]
    stream = (tmp_path / "dict" / "train" / "data-00000-of-00001.arrow").read_bytes()
    (tmp_path / "cut.arrow").write_bytes(stream[: len(stream) // 2])
    with pytest.raises(InputError, match="cut.arrow.*download or copy it again"):
        db.ingest([str(tmp_path / "cut.arrow")], source="cut", progress=False)
    assert db.sql("select count(*) from documents where source = 'cut'").fetchall() == [(0,)]
