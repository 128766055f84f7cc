"""Streaming a view from the parts: which views qualify, the same rows as DuckDB, text read only for a block.

The fixture's documents are committed as two Parquet parts of 50-row row groups (as another engine
would write them, through `register_parts`), with scores and two byte-span instances per document.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.cut import byte_spans, make_cut, places_sql, text_kind
from corpusdb.provenance import provenance
from corpusdb.text import doc_id
from corpusdb.train import ViewDataset, World
from tests.test_policy_plans import _commit_spans, _commit_scores, _text_scans

N_DOCS = 600
ROW_GROUP = 50


@pytest.fixture(scope="module")
def parts_db(tmp_path_factory) -> corpusdb.Database:
    root = tmp_path_factory.mktemp("cut")
    rng = random.Random(11)
    words = ["corpus", "teacher", "reference", "token", "policy", "view", "parquet", "naïve", "café", "instance"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) + f" #{i}" for i in range(N_DOCS)]
    db = corpusdb.init(str(root / "db"))
    for index, (source, chunk) in enumerate((("web", texts[::2]), ("books", texts[1::2]))):
        table = pa.table({"doc_id": pa.array([doc_id(t) for t in chunk], pa.int64()), "source": [source] * len(chunk),
                          "text": chunk, "n_bytes": pa.array([len(t.encode()) for t in chunk], pa.int64())})
        written = db.location.write_parquet(table, "documents", f"part-{index}.parquet", row_group_size=ROW_GROUP)
        db.register_parts("documents", [written.path])
    ids, sizes = [doc_id(t) for t in texts], [len(t.encode()) for t in texts]
    instance_ids, instance_sizes = _commit_spans(db, texts)
    for model in ("teacher", "reference"):
        _commit_scores(db, model, ids, sizes, rng)
        _commit_scores(db, f"{model}_i", instance_ids, instance_sizes, rng, unit="instances")
    db.create_view("long_docs", "select * from filter_length(min_bytes := 300)")
    db.create_view("long_web", "select doc_id, text, n_bytes, source from long_docs where source = 'web'")
    return db


STREAMED = [
    ("documents", "documents"),
    ("dedup(missing := 'keep')", "documents"),
    ("difference('teacher', 'reference', alpha := 0.3)", "documents"),
    ("difference_bytes('teacher', 'reference', alpha := 0.3)", "documents"),
    ("curriculum('reference')", "documents"),
    ("quota(map {'web': 20000, 'books': 40000})", "documents"),
    ("mixture(map {'web': 1, 'books': 3}, 50000)", "documents"),
    ("select * from difference('teacher', 'reference', alpha := 0.5, docs := 'long_web') where n_bytes < 900",
     "documents"),
    ("select doc_id, text, n_bytes from long_web order by n_bytes limit 40", "documents"),
    ("difference('teacher_i', 'reference_i', alpha := 0.3, docs := 'instances')", "instances"),
    ("select * from instances where position = 1", "instances"),
]
EXPORTED = [  # SQL that may hand out other text than its documents': never streamed from the parts
    "select doc_id, upper(text) as text, n_bytes from documents",
    "select * replace (lower(text) as text) from documents",
    "select doc_id, source as text, n_bytes from documents",
    "select d.doc_id, e.text, d.n_bytes from documents d join documents e on d.n_bytes = e.n_bytes",
    "select * from documents union all select * from documents",
    "with x as (select * from documents) select * from x",
    "select doc_id, any_value(text) as text, max(n_bytes) as n_bytes from documents group by doc_id",
    "select doc_id, text, n_bytes from instances",  # no byte span to cut the text with
    "select * from losses",
    "select distinct * from documents",
]


@pytest.mark.parametrize("view,kind", STREAMED)
def test_the_parts_give_the_rows_duckdb_gives(parts_db, tmp_path, view, kind):
    """Every block's (doc_id, text), read from the parts, is exactly the view's rows (as DuckDB computes them)."""
    sql = view if view.startswith("select") else f"select * from {view}"
    assert text_kind(parts_db, sql) == (kind, "")
    cut = make_cut(parts_db, sql, kind, tmp_path / "cut", 4096, provenance(parts_db, sql))
    read = [row for block in range(len(cut)) for row in zip(*cut.read(block))]
    expected = parts_db.sql(f"select doc_id, text from ({sql})").fetchall()
    assert 0 < len(expected) and sorted(read) == sorted(expected)
    assert len(cut) > 1 and cut.manifest["n_rows"] == len(expected)


@pytest.mark.parametrize("sql", EXPORTED)
def test_views_that_may_rewrite_text_are_not_streamed_from_the_parts(parts_db, sql):
    kind, why = text_kind(parts_db, sql)
    assert kind is None and why


def test_the_cut_reads_no_text_and_a_block_reads_only_its_row_groups(parts_db, tmp_path):
    """DuckDB's plan for the cut scans no `text` column; a block then reads the row groups holding its rows."""
    sql = "select * from difference_bytes('teacher', 'reference', alpha := 0.5)"
    [(_, plan)] = parts_db.con.sql("explain (format json) " + places_sql(parts_db, sql, "documents", "s.doc_id, s.n_bytes")).fetchall()
    assert not [path for tree in json.loads(plan) for path in _text_scans(tree)]
    cut = make_cut(parts_db, sql, "documents", tmp_path / "cut", 3000, provenance(parts_db, sql))
    groups = -(-N_DOCS // ROW_GROUP)
    assert len(cut) > 10
    for block in range(len(cut)):
        before = cut.reader.row_groups_read
        cut.read(block)
        assert cut.reader.row_groups_read - before <= 3  # its place range spans a few 50-row groups, of 12
    assert cut.reader.row_groups_read < 3 * len(cut) and groups == 12


def test_first_batch_comes_from_the_parts_before_any_export(parts_db, tmp_path, tiny_models):
    """ViewDataset's first batch is read from the parts: nothing of the selection is exported, the cut is
    kept for the next run at the same version, and an epoch streams exactly the view's documents."""
    cache = tmp_path / "cache"
    view = "difference('teacher', 'reference', alpha := 0.5)"
    ds = ViewDataset(parts_db, view, str(tiny_models["gpt2"]), seq_len=16, block_mb=0.004, epochs=1, cache_dir=str(cache))
    first = next(iter(ds))
    assert first.shape == (17,) and ds.text_kind == "documents"
    assert not list(cache.rglob("manifest.json")) and not list(cache.rglob("*.parquet"))  # no export at all
    assert ds.blocks.reader.row_groups_read <= 3
    [folder] = [p.parent for p in cache.rglob("cut.json")]
    made = (folder / "cut.json").stat().st_mtime_ns
    again = ViewDataset(parts_db, view, str(tiny_models["gpt2"]), seq_len=16, block_mb=0.004, epochs=1, cache_dir=str(cache))
    assert (folder / "cut.json").stat().st_mtime_ns == made and len(again.blocks) == len(ds.blocks)
    streamed = sorted(d for d, _ in ds.documents(World()))
    assert streamed == sorted(d for (d,) in parts_db.sql(f"select doc_id from {view}").fetchall())


def test_a_changed_part_is_an_error_not_other_text(parts_db, tmp_path):
    """The cut names rows by place; a part rewritten behind the database's back is caught by the doc_id check."""
    sql = "select * from documents"
    cut = make_cut(parts_db, sql, "documents", tmp_path / "cut", 3000, provenance(parts_db, sql))
    part = parts_db.parts("documents")[0]
    original = open(part, "rb").read()
    table = pq.read_table(part)
    try:
        pq.write_table(table.slice(1), part, row_group_size=ROW_GROUP)  # every row one place earlier
        with pytest.raises(RuntimeError, match="does not hold the rows its place names"):
            cut.read(0)
    finally:
        with open(part, "wb") as f:
            f.write(original)
    assert np.array_equal(cut.read(0)[0], cut.arrays["doc_id"][: cut.starts[1]])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.integers(0, 200), st.integers(0, 200)), max_size=30),
       st.integers(0, 3))
def test_byte_spans_are_the_texts_bytes(rows, skip):
    """An instance's text is its document's bytes [start, end), cut as SQL slices (clamped to the text)."""
    texts = pa.array([t for t, _, _ in rows], pa.string()).slice(min(skip, len(rows)))
    rows = rows[min(skip, len(rows)):]
    starts, ends = np.array([s for _, s, _ in rows], np.int64), np.array([e for _, _, e in rows], np.int64)
    wanted = [t.encode()[s:e] for t, s, e in rows]
    try:
        expected = [w.decode() for w in wanted]
    except UnicodeDecodeError:
        with pytest.raises(ValueError, match="byte span cuts a character in two"):
            byte_spans(texts, starts, ends)
        return
    assert byte_spans(texts, starts, ends).to_pylist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=10), st.data())
def test_byte_spans_of_instances_in_text_order(texts, data):
    """Instances as `corpusdb instances` cuts them (consecutive spans on character boundaries), some kept,
    in text order, each naming its document's row: the fast path for spans that do not overlap."""
    spans = []
    for row, text in enumerate(texts):
        bounds = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=4))) | {0, len(text)})
        spans += [(row, len(text[:a].encode()), len(text[:b].encode())) for a, b in zip(bounds, bounds[1:])]
    kept = [span for span in spans if data.draw(st.booleans())]
    rows, starts, ends = (np.array(column, np.int64).reshape(-1) for column in zip(*kept)) if kept else (
        np.empty(0, np.int64),) * 3
    got = byte_spans(pa.array(texts, pa.string()), starts, ends, rows).to_pylist()
    assert got == [texts[r].encode()[s:e].decode() for r, s, e in kept]
