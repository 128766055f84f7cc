"""Invariants of ingestion over random inputs (Hypothesis), and the demo corpus builder."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.text import doc_id, normalize
from corpusdb.ingest import demo_corpus
from corpusdb.ingest.docids import DocIdSet
from tests.conftest import rows

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(st.lists(texts, max_size=12), min_size=1, max_size=4),
    num_shards=st.integers(1, 3),
    part_kb=st.sampled_from([0.05, 1.0, 64.0]),
)
def test_any_split_into_files_shards_and_parts_gives_each_distinct_text_once(files, num_shards, part_kb):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i, docs in enumerate(files):
            (folder / f"{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
        db = corpusdb.init(f"{tmp}/db")
        for shard in range(num_shards):
            db.ingest([str(folder)], source="s", shard=(shard, num_shards), part_size_mb=part_kb / 1024, progress=False)
        got = rows(db, "doc_id, text")
        want = {normalize(t) for docs in files for t in docs}
        assert sorted(text for _, text in got) == sorted(want)
        assert all(doc_id(text) == doc for doc, text in got)
        # Ingesting again is a no-op.
        before = got
        db.ingest([str(folder)], source="s", part_size_mb=part_kb / 1024, progress=False)
        assert rows(db, "doc_id, text") == before


@given(st.lists(st.integers(-(2**63), 2**63 - 1)), st.lists(st.integers(-(2**63), 2**63 - 1)))
def test_docid_set_membership_matches_a_python_set(added, queried):
    import numpy as np

    ids = DocIdSet()
    for start in range(0, len(added), 3):
        ids.add(np.array(added[start : start + 3], dtype=np.int64))
    mask = ids.contains(np.array(queried, dtype=np.int64))
    assert mask.tolist() == [q in set(added) for q in queried]


def test_demo_corpus_builds_jsonl_from_real_text(tmp_path):
    written = demo_corpus.build(str(tmp_path), ["python-code"], max_kb=30, seed=1, plain=False)
    path = tmp_path / "python-code.jsonl.gz"
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert records and all(r["title"].endswith(".py") and r["text"] for r in records)
    assert written["python-code"] == sum(len(r["text"].encode()) for r in records) <= 30 * 1024
    again = tmp_path / "again"
    demo_corpus.build(str(again), ["python-code"], max_kb=30, seed=1, plain=False)
    assert gzip.decompress((again / "python-code.jsonl.gz").read_bytes()) == gzip.decompress(path.read_bytes())
