"""Exports for streaming trainers, read back by the real libraries: MosaicML's MDS (`streaming`) and LitData."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from corpusdb.train.dataset import Blocks

import corpusdb
from corpusdb.cli import cli
from corpusdb.errors import ExportError
from tests.conftest import CORPUS, export_files, ingest_per_source

# the columns of a view beside the keys and the text: a float with nulls, a string with nulls, a list
VIEW = ("select *, case when n_bytes % 3 = 0 then null else n_bytes / 7 end as score, "
        "case when n_bytes % 2 = 0 then null else source end as maybe, [n_bytes, 1] as pair from documents")


def mosaicml_streaming():
    """`streaming.base` of mosaicml-streaming (the package's reader and writer).

    `import streaming` also imports `streaming.vision`, which needs torchvision; PyPI's torchvision
    wheel is a CUDA build that fails to load beside the CPU torch these tests run on. MDS needs
    nothing of it, so the package is entered at `streaming.base` (its own code, unchanged).
    """
    if "streaming" not in sys.modules:
        spec = importlib.util.find_spec("streaming")
        if spec is None:
            pytest.skip("mosaicml-streaming is not installed (pip install --no-deps mosaicml-streaming==0.13.0)")
        package = types.ModuleType("streaming")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["streaming"] = package
    import streaming.base

    return streaming.base


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory) -> corpusdb.Database:
    db = corpusdb.init(str(tmp_path_factory.mktemp("mds") / "db"))
    ingest_per_source(db, CORPUS, meta={"title": "title"})
    return db


def test_mds_export_reads_back_with_mosaicml_streaming(corpus_db, tmp_path, tiny_models):
    """`--format mds`: StreamingDataset gives back the parquet export's rows in the same order, every column with its
    value (nulls included), and with a tokenizer each row's token ids followed by EOS."""
    from transformers import AutoTokenizer

    base = mosaicml_streaming()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    out = tmp_path / "mds"
    manifest = corpus_db.view(VIEW).export(str(out), format="mds", tokenizer=str(tiny_models["gpt2"]), part_size_mb=0.05)
    parquet = corpus_db.view(VIEW).export(str(tmp_path / "pq"), part_size_mb=0.05)
    rows = [row for part in parquet["parts"] for row in pq.read_table(tmp_path / "pq" / part["file"]).to_pylist()]
    assert len(manifest["parts"]) > 3 and manifest["n_rows"] == len(rows) == parquet["n_rows"]
    assert sorted(p.name for p in out.iterdir()) == export_files(manifest) and manifest["dataset_index"] == "index.json"
    assert any(r["score"] is None for r in rows) and any(r["maybe"] is None for r in rows)

    dataset = base.StreamingDataset(local=str(out), shuffle=False, batch_size=1)
    read = [dataset[i] for i in range(len(dataset))]
    assert len(read) == len(rows)
    for got, row in zip(read, rows):
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert got["tokens"].dtype == np.uint16 and got["tokens"].tolist() == ids
        assert {k: v for k, v in got.items() if k != "tokens"} == row
    assert [r["doc_id"] for r in dataset] == [r["doc_id"] for r in rows]  # iterated as a trainer does
    assert manifest["n_tokens"] == sum(len(r["tokens"]) for r in read) and manifest["dtype"] == "uint16"
    with pytest.raises(ValueError, match="is an MDS export"):
        Blocks(str(out))


def test_mds_shards_are_the_bytes_mosaicmls_writer_writes(corpus_db, tmp_path):
    """Each shard and its index entry equal what `streaming.MDSWriter` writes for the same samples and size limit."""
    base = mosaicml_streaming()
    out = tmp_path / "mds"
    manifest = corpus_db.view(VIEW).export(str(out), format="mds", part_size_mb=0.05)
    index = json.loads((out / "index.json").read_text())
    assert [s["raw_data"]["basename"] for s in index["shards"]] == [p["file"] for p in manifest["parts"]]
    dataset = base.StreamingDataset(local=str(out), shuffle=False, batch_size=1)
    start = 0
    for part, shard in zip(manifest["parts"], index["shards"]):
        theirs = tmp_path / f"theirs-{start}"
        columns = dict(zip(shard["column_names"], shard["column_encodings"]))
        assert columns == {"doc_id": "int64", "maybe": "json", "n_bytes": "int64", "pair": "json", "score": "json",
                           "source": "json", "text": "str", "title": "json"}
        with base.MDSWriter(out=str(theirs), columns=columns, size_limit=shard["size_limit"]) as writer:
            for i in range(start, start + part["rows"]):
                writer.write(dataset[i])
        (their_shard,) = json.loads((theirs / "index.json").read_text())["shards"]
        assert (out / part["file"]).read_bytes() == (theirs / "shard.00000.mds").read_bytes()
        assert {**shard, "raw_data": None} == {**their_shard, "raw_data": None}
        start += part["rows"]
    assert start == len(dataset) == manifest["n_rows"]


def test_mds_export_refuses_a_null_text_and_a_shard_over_4_gib(corpus_db, tmp_path):
    """Bad input is a one-line error and leaves nothing: a null text, a column MDS cannot encode, a shard size past
    MDS's uint32 offsets."""
    with pytest.raises(ExportError, match="column 'text' holds nulls"):
        corpus_db.view("select doc_id, n_bytes, case when n_bytes > 100 then text end as text from documents").export(
            str(tmp_path / "nulls"), format="mds")
    assert not (tmp_path / "nulls").exists()  # nothing left behind
    with pytest.raises(ExportError, match="column 'day' is date32.*cast it in the view"):
        corpus_db.view("select *, date '2024-01-01' as day from documents").export(str(tmp_path / "dates"), format="mds")
    assert not (tmp_path / "dates").exists()
    with pytest.raises(ValueError, match="too large for an MDS shard"):
        corpus_db.view("documents").export(str(tmp_path / "big"), format="mds", part_size_mb=4096)
    bad = CliRunner().invoke(cli, ["export", corpus_db.url, "documents", str(tmp_path / "cli"), "--format", "mds",
                                   "--part-size-mb", "4096"])
    assert bad.exit_code != 0 and "too large for an MDS shard" in bad.output and len(bad.output.strip().splitlines()) == 1
    good = CliRunner().invoke(cli, ["export", corpus_db.url, "documents", str(tmp_path / "cli"), "--format", "mds"])
    assert good.exit_code == 0 and "exported" in good.output and (tmp_path / "cli" / "index.json").exists()


def test_litdata_export_reads_back_with_litdata(corpus_db, tmp_path, tiny_models):
    """`--format litdata`: litdata's StreamingDataset gives back the parquet export's keys, texts and sizes in order,
    with each row's token ids and EOS; a second export of the same selection is the same bytes."""
    litdata = pytest.importorskip("litdata", reason="litdata is not installed (pip install 'corpusdb[litdata]')")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    out = tmp_path / "ld"
    manifest = corpus_db.view(VIEW).export(str(out), format="litdata", tokenizer=str(tiny_models["gpt2"]), part_size_mb=0.05)
    parquet = corpus_db.view(VIEW).export(str(tmp_path / "pq"))
    rows = [row for part in parquet["parts"] for row in pq.read_table(tmp_path / "pq" / part["file"]).to_pylist()]
    assert len(manifest["parts"]) > 3 and manifest["n_rows"] == sum(p["rows"] for p in manifest["parts"]) == len(rows)
    assert manifest["n_bytes"] == parquet["n_bytes"] and sorted(p.name for p in out.iterdir()) == export_files(manifest)
    dataset = litdata.StreamingDataset(str(out), cache_dir=str(tmp_path / "cache"))
    read = [dataset[i] for i in range(len(dataset))]
    assert len(read) == len(rows)
    for got, row in zip(read, rows):
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert np.asarray(got["tokens"]).tolist() == ids
        assert {k: v for k, v in got.items() if k != "tokens"} == {k: row[k] for k in ("doc_id", "text", "n_bytes")}
    assert manifest["n_tokens"] == sum(len(r["tokens"]) for r in read)
    again = corpus_db.view(VIEW).export(str(tmp_path / "again"), format="litdata", tokenizer=str(tiny_models["gpt2"]),
                                        part_size_mb=0.05)
    for name in ("index.json", *(p["file"] for p in manifest["parts"])):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert [p["file"] for p in again["parts"]] == [p["file"] for p in manifest["parts"]]
    with pytest.raises(ValueError, match="is a LitData export"):
        Blocks(str(out))
