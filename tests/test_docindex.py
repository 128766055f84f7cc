"""The doc_id index: a small ingest into a big database probes the index instead of reading every part's ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import corpusdb
from corpusdb import docindex
from corpusdb.text import doc_id
from corpusdb.vacuum import vacuum


def _jsonl(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


def _ids(db: corpusdb.Database) -> list[int]:
    return sorted(r[0] for r in db.sql("select doc_id from documents").fetchall())


def test_a_small_ingest_reads_the_index_not_the_parts(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    for i in range(8):  # eight commits: runs merge like a binary counter
        db.ingest([_jsonl(tmp_path / f"in{i}.jsonl", [f"batch {i} document {j}" for j in range(6000)])], source="a",
                  progress=False)
    runs = docindex.runs_of(db.snapshot)
    assert docindex.unindexed(db.snapshot) == [] and 1 <= len(runs) <= 4
    assert sum(entry["rows"] for entry in runs.values()) == 48_000
    index_bytes = sum(entry["size"] for entry in runs.values())

    # ten new documents and two that batch 3 already holds
    texts = [f"new document {j}" for j in range(10)] + ["batch 3 document 7", "batch 0 document 5999"]
    report = db.ingest([_jsonl(tmp_path / "small.jsonl", texts)], source="b", progress=False)
    assert (report.n_docs_written, report.n_duplicates) == (10, 2)
    assert report.n_id_parts_read == 0  # no committed part's ids were read ...
    assert 0 < report.n_index_bytes_read < index_bytes / 2  # ... and only a few blocks of the index
    assert len(_ids(db)) == 48_010 == len(set(_ids(db)))


def test_parts_outside_the_index_are_read_then_indexed(tmp_path):
    """A database older than the index (parts without a run) is read once, and indexed by the next ingest."""
    db = corpusdb.init(str(tmp_path / "db"))
    texts = [f"registered document {j}" for j in range(500)]
    table = pa.table({"doc_id": pa.array([doc_id(t) for t in texts], pa.int64()), "source": ["old"] * 500,
                      "text": texts, "n_bytes": pa.array([len(t) for t in texts], pa.int64())})
    written = db.location.write_parquet(table, "documents", "part-registered.parquet")
    db.register_parts("documents", [written.path])
    assert docindex.unindexed(db.snapshot) == []  # register_parts indexes what it registers

    def forget_index(snapshot):  # as a database written before the index
        snapshot.indexes.clear()
        for info in snapshot.tables["documents"].values():
            info.pop(docindex.FIELD, None)
    db.commit("forget", forget_index)
    assert docindex.unindexed(db.snapshot) == ["documents/part-registered.parquet"]

    report = db.ingest([_jsonl(tmp_path / "new.jsonl", texts[:5] + ["fresh text"])], source="new", progress=False)
    assert (report.n_docs_written, report.n_duplicates, report.n_id_parts_read) == (1, 5, 1)
    assert docindex.unindexed(db.snapshot) == []
    report = db.ingest([_jsonl(tmp_path / "again.jsonl", texts[5:9] + ["fresher text"])], source="new",
                       progress=False)
    assert (report.n_docs_written, report.n_duplicates, report.n_id_parts_read) == (1, 4, 0)


def test_register_parts_refuses_a_doc_id_twice(tmp_path):
    """documents holds each doc_id once (policies join text back by it): parts that repeat one, or hold one the
    database has, are refused in one line and nothing is committed."""
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([_jsonl(tmp_path / "a.jsonl", [f"ingested {j}" for j in range(3000)])], source="a", progress=False)

    def part(name: str, texts: list[str]) -> str:
        table = pa.table({"doc_id": pa.array([doc_id(t) for t in texts], pa.int64()), "source": ["reg"] * len(texts),
                          "text": texts, "n_bytes": pa.array([len(t) for t in texts], pa.int64())})
        return db.location.write_parquet(table, "documents", f"part-{name}.parquet").path

    version = db.version
    for paths, problem in (
            ([part("twice", ["x 1", "x 2", "x 1"])], "1 doc_id(s) more than once in the parts"),
            ([part("p1", ["y 1", "y 2"]), part("p2", ["y 3", "y 2"])], "1 doc_id(s) more than once in the parts"),
            ([part("old", ["z 1", "ingested 17", "ingested 2999"])], "2 doc_id(s) already in documents")):
        with pytest.raises(ValueError, match=re.escape(problem) + r" \(e\.g\. -?\d+\); documents holds each doc_id once"):
            db.register_parts("documents", paths)
        db.refresh()
        assert db.version == version and len(_ids(db)) == 3000
    db.register_parts("documents", [part("new", ["w 1", "w 2"])])
    assert len(_ids(db)) == 3002 == len(set(_ids(db)))


def test_a_run_whose_part_is_gone_is_not_trusted(tmp_path):
    """Dropping a part voids the run covering it: its ids are no longer in the database, so they ingest again."""
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([_jsonl(tmp_path / "a.jsonl", [f"first {j}" for j in range(50)])], source="a", progress=False)
    db.ingest([_jsonl(tmp_path / "b.jsonl", [f"second {j}" for j in range(50)])], source="b", progress=False)
    [run] = docindex.runs_of(db.snapshot).values()
    assert run["parts"] == 2
    gone = next(path for path, info in db.snapshot.tables["documents"].items()
                if pq.read_table(db.location.join(path), columns=["source"]).column("source")[0].as_py() == "a")
    db.commit("drop", lambda snapshot: snapshot.tables["documents"].pop(gone) and None)
    assert docindex.runs_of(db.snapshot) == {}

    report = db.ingest([_jsonl(tmp_path / "c.jsonl", ["first 3", "second 3"])], source="c", progress=False)
    assert (report.n_docs_written, report.n_duplicates) == (1, 1)  # "first 3" is new again
    assert report.n_id_parts_read == 1 and len(docindex.runs_of(db.snapshot)) == 1


def test_run_probes_match_a_set(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    rng = np.random.default_rng(3)
    ids = np.unique(rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64))
    name, entry = docindex.write_run(db.location, ids)
    run = docindex.Run(db.location, entry)
    probe = np.concatenate([ids[::4999], rng.integers(-(2**63), 2**63 - 1, 5, dtype=np.int64), ids[:1], ids[-1:],
                            np.array([-(2**63), 2**63 - 1], dtype=np.int64)])
    assert run.contains(probe).tolist() == np.isin(probe, ids).tolist()
    assert run.bytes_read < ids.nbytes / 2  # fences and the blocks probed, not the run


def test_vacuum_keeps_the_live_runs_and_removes_the_merged_ones(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    for i in range(5):
        db.ingest([_jsonl(tmp_path / f"in{i}.jsonl", [f"v {i} {j}" for j in range(100)])], source="a", progress=False)
    runs_on_disk = {p.name for p in (tmp_path / "db" / "_index" / "doc_ids").iterdir()}
    live = {Path(entry["path"]).name for entry in docindex.runs_of(db.snapshot).values()}
    assert live < runs_on_disk  # merged runs stay while old versions list them
    vacuum(db, keep_versions=1, grace_seconds=0)
    assert {p.name for p in (tmp_path / "db" / "_index" / "doc_ids").iterdir()} == live
    report = db.ingest([_jsonl(tmp_path / "again.jsonl", ["v 2 7", "v new"])], source="a", progress=False)
    assert (report.n_docs_written, report.n_duplicates) == (1, 1)
