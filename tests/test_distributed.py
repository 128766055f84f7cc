"""Distributed selections (`corpusdb select`): the same rows as the single-process query, ties and order included.

Random databases are committed through `register_parts` (documents cut into parts at random rows,
scores drawn from a few values so that many tie), and every cut policy's distributed result is
compared with DuckDB's answer over the same version, column for column and (for the policies that
order their rows) in order. The cut's settings are made tiny (2 or 4 bins, windows of 1 or 3 units)
so that every example narrows over several passes, ties resolved by unit id.
"""

from __future__ import annotations

import itertools
import json
import pickle
import random
import re
import tempfile
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.distributed import radix
from corpusdb.distributed.calls import read_call
from corpusdb.distributed.select import MANIFEST, select
from corpusdb.errors import ExportError, QueryError

SOURCES = ("web", "books", "code")
LOGPROBS = (-12.0, -6.0, -3.0, -1.5, 0.0)


def make_db(root: Path | str, docs: list[tuple[int, str, int]], cuts: list[int], scores: dict[str, dict[int, float]],
            storage_options: dict | None = None, covered: bool = False):
    """A database of `docs` (doc_id, source, n_bytes) in parts ending at `cuts`, with the scores given: one part a
    model, or (`covered`) one a documents part, every other one recording the documents part it covers."""
    db = corpusdb.init(str(root), storage_options)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(docs)}), len(docs)]
    paths = []
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        rows = docs[start:end]
        table = pa.table({"doc_id": pa.array([d for d, _, _ in rows], pa.int64()), "source": [s for _, s, _ in rows],
                          "text": ["t" * n for _, _, n in rows], "n_bytes": pa.array([n for _, _, n in rows], pa.int64())})
        paths.append(db.location.write_parquet(table, "documents", f"part-{i:03d}.parquet", row_group_size=4).path)
    db.register_parts("documents", paths)
    groups = [[d for d, _, _ in docs[start:end]] for start, end in (itertools.pairwise(bounds) if covered else [(0, len(docs))])]
    for model, values in scores.items():
        written, covers = [], {}
        for i, group in enumerate(groups):
            ids = sorted(d for d in group if d in values)
            table = pa.table({"doc_id": pa.array(ids, pa.int64()),
                              "sum_logprob": pa.array([values[i] for i in ids], pa.float64()),
                              "n_tokens": pa.array([3] * len(ids), pa.int64()), "n_bytes": pa.array([1] * len(ids), pa.int64())})
            written.append(db.location.write_parquet(table, "scores", f"model={model}", f"part-{i}.parquet").path)
            if covered and i % 2 == 0:
                covers[written[-1]] = [paths[i]]
        db.register_parts("scores", written, covers=covers,
                          models={model: {"model": f"test/{model}", "content_hash": model, "tokenizer_hash": "bpe",
                                          "unit": "documents"}})
    return corpusdb.open(str(root), storage_options=storage_options)


def add_instances(db, docs: list[tuple[int, str, int]], rng: random.Random, scores: dict[str, float], parts: int = 2):
    """Cut every non-empty document of `docs` into spans at random bytes (one span: the instance_id is the doc_id),
    written as `parts` parts of instance_spans in a shuffled document order (not the documents parts'), and score
    the instances with each model of `scores` (a model's values drawn from LOGPROBS with that chance of a score).
    Returns the instance ids."""
    rows, taken = [], {doc_id for doc_id, _, _ in docs}
    for doc_id, _, n in docs:
        if n == 0:
            continue
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.choice((0, 0, 1, 2))))) if n > 1 else []
        bounds = [0, *cuts, n]
        for position, (start, end) in enumerate(itertools.pairwise(bounds)):
            instance_id = doc_id
            while len(bounds) > 2 and instance_id in taken:  # each instance once, as `corpusdb instances` ids them
                instance_id = rng.randint(-2**63, 2**63 - 1)
            taken.add(instance_id)
            rows.append((instance_id, doc_id, position, start, end, end - start, end - start))
    rng.shuffle(rows)
    names = ("instance_id", "doc_id", "position", "byte_start", "byte_end", "n_tokens", "n_bytes")
    paths = []
    for i in range(parts):
        piece = rows[i * len(rows) // parts:(i + 1) * len(rows) // parts]
        table = pa.table({name: pa.array([r[j] for r in piece], pa.int32() if name == "position" else pa.int64())
                          for j, name in enumerate(names)})
        paths.append(db.location.write_parquet(table, "instances", f"part-{i}.parquet", row_group_size=4).path)
    db.register_parts("instance_spans", paths)
    ids = [r[0] for r in rows]
    for model, chance in scores.items():
        scored = sorted(i for i in ids if rng.random() < chance)
        table = pa.table({"doc_id": pa.array(scored, pa.int64()),
                          "sum_logprob": pa.array([rng.choice(LOGPROBS) for _ in scored], pa.float64()),
                          "n_tokens": pa.array([2] * len(scored), pa.int64()), "n_bytes": pa.array([1] * len(scored), pa.int64())})
        path = db.location.write_parquet(table, "scores", f"model={model}", "part-0.parquet").path
        db.register_parts("scores", [path], models={model: {"model": f"test/{model}", "content_hash": model,
                                                            "tokenizer_hash": "bpe", "unit": "instances"}})
    return ids


def over_instances(call: str) -> str:
    """The call with docs := 'instances'."""
    return call[:-1] + ", docs := 'instances')"


def single_and_distributed(db, call: str, out: Path | str, **options):
    """The policy's rows from DuckDB in one process and from the distributed plan (sorted by doc_id when unordered)."""
    single = db.sql(f"select * from {call}").to_arrow_table()
    selection = select(db, call, str(out), overwrite=True, **options)
    con = duckdb.connect()
    if not db.location.is_local:
        con.register_filesystem(db.location.fs)
    got = con.sql(f"select * from read_parquet({selection.files})").to_arrow_table() if selection.files else single.slice(0, 0)
    if not ("sampled" in call or "by_source" in call or "curriculum" in call):
        key = [("doc_id", "ascending")] + ([("byte_start", "ascending")] if "instances" in call else [])
        single, got = single.sort_by(key), got.sort_by(key)
    return single, got, selection


@st.composite
def databases(draw):
    n = draw(st.integers(1, 40))
    ids = draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n, unique=True))
    docs = [(i, draw(st.sampled_from(SOURCES)), draw(st.sampled_from((0, 1, 2, 4, 8)))) for i in ids]
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5))
    scores = {m: {i: draw(st.sampled_from(LOGPROBS)) for i in ids if draw(st.integers(0, 9))} for m in ("teacher", "reference")}
    return docs, cuts, scores, draw(st.booleans())


ALPHAS = ("0.1", "0.3", "0.5", "1", "0.25::double", "0.7")
calls = st.one_of(
    st.builds(lambda a, m: f"difference('teacher', 'reference', alpha := {a}, missing := '{m}')",
              st.sampled_from(ALPHAS), st.sampled_from(("exclude", "error"))),
    st.builds(lambda a: f"difference_bytes('teacher', 'reference', alpha := {a}, missing := 'exclude')", st.sampled_from(ALPHAS)),
    st.builds(lambda a, t, s: f"difference_sampled('teacher', 'reference', alpha := {a}, temperature := {t}, seed := {s}, "
              "missing := 'exclude')", st.sampled_from(ALPHAS), st.sampled_from(("0.5", "1.0", "3")), st.integers(0, 3)),
    st.builds(lambda a, w: f"difference_by_source('teacher', 'reference', alphas := map {{'web': {w}}}, alpha := {a}, "
              "missing := 'exclude')", st.sampled_from(ALPHAS), st.sampled_from(("0.2", "1", "0.6"))),
    st.builds(lambda b, c, u, s: f"quota(map {{'web': {b}, 'books': {c}}}, unit := '{u}', seed := {s})",
              st.integers(1, 40), st.integers(1, 40), st.sampled_from(("bytes", "documents")), st.integers(0, 3)),
    st.builds(lambda t, u: f"mixture(map {{'web': 1, 'code': 3}}, {t}, unit := '{u}')",
              st.sampled_from(("1", "7", "20.5", "1e3")), st.sampled_from(("bytes", "documents"))),
    st.builds(lambda s: f"filter_source({s})", st.sampled_from(("['web']", "['web', 'code']", "['books', 'nope']", "[]"))),
    st.builds(lambda lo, hi: f"filter_length(min_bytes := {lo}, max_bytes := {hi})", st.sampled_from((0, 1, 4, 9)),
              st.sampled_from(("null", "0", "4", "8", "100"))),
    st.builds(lambda m, lo, hi, p, x: f"filter_loss('{m}', min_loss := {lo}, max_loss := {hi}, per := '{p}', missing := '{x}')",
              st.sampled_from(("teacher", "reference")), st.sampled_from(("null", "0.5", "2")),
              st.sampled_from(("null", "1", "6")), st.sampled_from(("byte", "token")),
              st.sampled_from(("error", "exclude", "keep"))),
    st.builds(lambda m, k, d, s, x: f"curriculum('{m}', key := '{k}', descending := {d}, stages := {s}, missing := '{x}')",
              st.sampled_from(("teacher", "reference")), st.sampled_from(("loss_per_byte", "loss_per_token", "bits_per_byte")),
              st.booleans(), st.integers(1, 4), st.sampled_from(("error", "last", "exclude"))),
    # by a column of docs (the model's losses carried, or none): many ties, broken by unit id; a loss without a model
    st.builds(lambda m, k, d, s: f"curriculum({m}, key := '{k}', descending := {d}, stages := {s})",
              st.sampled_from(("null", "'teacher'")), st.sampled_from(("n_bytes", "n_bytes", "loss_per_token")),
              st.booleans(), st.integers(1, 4)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(databases(), calls, st.integers(1, 4), st.sampled_from((2, 4)), st.sampled_from((1, 3)))
def test_every_cut_policy_distributed_equals_the_single_process_query(data, call, shards, nbins, resolve_rows):
    docs, cuts, scores, covered = data
    with tempfile.TemporaryDirectory() as tmp:
        db = make_db(Path(tmp) / "db", docs, cuts, scores, covered=covered)
        try:
            with db.query_errors():
                expected = db.sql(f"select * from {call}").to_arrow_table()
        except QueryError as exc:  # the policy refuses: the distributed plan refuses with the same words
            with pytest.raises(QueryError) as caught:
                select(db, call, str(Path(tmp) / "out"), shards=shards, executor="inline", nbins=nbins,
                       resolve_rows=resolve_rows)
            assert str(caught.value) == str(exc)
            return
        single, got, _ = single_and_distributed(db, call, Path(tmp) / "out", shards=shards, executor="inline", nbins=nbins,
                                                resolve_rows=resolve_rows)
        assert single.num_rows == expected.num_rows
        assert got.schema == single.schema
        assert got.to_pylist() == single.to_pylist()
        assert json.loads((Path(tmp) / "out" / MANIFEST).read_text())["n_rows"] == single.num_rows
        assert not (Path(tmp) / "out" / "_work").exists()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(databases(), calls, st.integers(1, 4), st.sampled_from((2, 4)), st.randoms(use_true_random=False))
def test_every_cut_policy_over_instances_distributed_equals_the_single_process_query(data, call, shards, nbins, rng):
    """MiniPLM's unit: documents cut into instances (spans in parts of their own, not the documents parts'), scored
    as instances; each task ranks the instances of its documents."""
    docs, cuts, _, covered = data
    call = over_instances(call)
    with tempfile.TemporaryDirectory() as tmp:
        db = make_db(Path(tmp) / "db", docs, cuts, {})
        add_instances(db, docs, rng, {"teacher": 0.95, "reference": 0.9}, parts=1 + covered)
        db = corpusdb.open(db.url)
        try:
            with db.query_errors():
                expected = db.sql(f"select * from {call}").to_arrow_table()
        except QueryError as exc:
            with pytest.raises(QueryError) as caught:
                select(db, call, str(Path(tmp) / "out"), shards=shards, executor="inline", nbins=nbins, resolve_rows=1)
            assert str(caught.value) == str(exc)
            return
        single, got, _ = single_and_distributed(db, call, Path(tmp) / "out", shards=shards, executor="inline", nbins=nbins,
                                                resolve_rows=1)
        assert single.num_rows == expected.num_rows
        assert got.schema == single.schema
        assert got.to_pylist() == single.to_pylist()


def test_many_ties_resolve_by_unit_id_over_many_passes(tmp_path):
    """Every document has the same score: the cut is found among unit ids alone, 2 bins a pass."""
    rng = random.Random(3)
    ids = list({rng.randint(-2**63, 2**63 - 1) for _ in range(300)})
    db = make_db(tmp_path / "db", [(i, "web", 4) for i in ids], [50, 100, 220],
                 {"teacher": dict.fromkeys(ids, -4.0), "reference": dict.fromkeys(ids, -8.0)})
    for call in ("difference('teacher', 'reference', alpha := 0.3)", "difference_bytes('teacher', 'reference', alpha := 0.55)"):
        single, got, selection = single_and_distributed(db, call, tmp_path / "out", shards=3, executor="inline", nbins=2,
                                                        resolve_rows=1)
        assert got.to_pylist() == single.to_pylist()
        assert selection.passes > 8  # a unit id range of 2**63 halved pass by pass
        kept = sorted(ids)[:single.num_rows]
        assert sorted(got.column("doc_id").to_pylist()) == kept  # ties: the smallest doc_ids first


def test_the_driver_receives_summaries_not_keys(tmp_path):
    """The bytes the driver receives are bounded by the cut's settings, whatever the rows: a small fraction of the keys."""
    for n in (1_000, 5_000):
        rng = np.random.default_rng(n)
        ids = rng.choice(np.arange(-2**40, 2**40, 7919), n, replace=False).tolist()
        docs = [(i, SOURCES[i % 3], int(b)) for i, b in zip(ids, rng.integers(1, 300, n))]
        scores = {m: dict(zip(ids, rng.normal(-300, 50, n).round(1).tolist())) for m in ("teacher", "reference")}
        db = make_db(tmp_path / f"db{n}", docs, [n // 4, n // 2, 3 * n // 4], scores)
        single, got, selection = single_and_distributed(db, "difference('teacher', 'reference', alpha := 0.4)",
                                                        tmp_path / f"out{n}", shards=4, executor="inline", nbins=64,
                                                        resolve_rows=200)
        assert got.to_pylist() == single.to_pylist()
        # the bound the settings give, not the rows: per task and pass 64 bins and a 64-key sample, 200 resolved units
        assert selection.received_bytes < 4 * (selection.passes + 2) * 64 * 120 + 200 * 40 + 10_000
        assert selection.passes <= 4
    assert selection.received_bytes < 5_000 * 32 / 4  # the keys alone (unit id, score, weight) would be 32 bytes a row


def test_the_policy_errors_are_the_single_process_ones(tmp_path):
    ids = list(range(1, 21))
    db = make_db(tmp_path / "db", [(i, "web", 5) for i in ids], [10],
                 {"teacher": dict.fromkeys(ids, -1.0), "reference": dict.fromkeys(ids[:15], -2.0)})
    for call in ("difference('teacher', 'reference')",  # 5 documents without a reference score
                 "difference('teacher', 'reference', alpha := 0, missing := 'exclude')",
                 "difference_sampled('teacher', 'reference', temperature := 0, missing := 'exclude')",
                 "difference_by_source('teacher', 'reference', alphas := map {'wbe': 0.5}, missing := 'exclude')",
                 "difference('teacher', 'nobody')", "quota(map {'web': -1})", "quota(map {'webb': 10})",
                 "quota(map {'web': 10}, unit := 'tokens', model := 'reference')", "mixture(map {'web': 1}, 0)",
                 "curriculum('reference')", "curriculum('teacher', stages := 0)", "filter_source(['nope'])",
                 "filter_loss('reference', max_loss := 1)", "filter_loss('teacher', per := 'bit', missing := 'keep')"):
        with pytest.raises(QueryError) as single, db.query_errors():
            db.sql(f"select * from {call}").fetchall()
        with pytest.raises(QueryError) as distributed:
            select(db, call, str(tmp_path / "out"), shards=2, executor="inline")
        assert str(distributed.value) == str(single.value), call
    for call, message in (("model_losses('teacher')", "has no distributed plan"),
                          ("curriculum(null, key := 'source')", "orders by a model's loss or a numeric column of docs, "
                                                                  "not a VARCHAR column"),
                          ("difference('teacher', 'reference', docs := 'dedup')", "ranks the documents or instances table"),
                          ("select 1", "is not a call of one policy")):
        with pytest.raises(ValueError, match=message):
            select(db, call, str(tmp_path / "out"), executor="inline")
    # a 64-bit column orders exactly as doubles up to 2**53; beyond, the tasks refuse (one process orders them)
    big = make_db(tmp_path / "big", [(2**60 + i, "web", 5) for i in range(4)], [2], {})
    assert big.sql("select count(*) from curriculum(null, key := 'doc_id')").fetchall()[0][0] == 4
    with pytest.raises(QueryError, match=r"1152921504606846976 is beyond 2\*\*53: run it in one process"):
        select(big, "curriculum(null, key := 'doc_id')", str(tmp_path / "out"), shards=2, executor="inline")


def test_a_task_out_of_memory_names_the_fix(tmp_path):
    """A task whose DuckDB runs out of its memory limit: an error naming the two fixes, not DuckDB's advice."""
    rng = random.Random(1)
    ids = rng.sample(range(1, 10**12), 20_000)
    db = make_db(tmp_path / "db", [(i, rng.choice(SOURCES), rng.randint(100, 400)) for i in ids], [5000, 10000, 15000],
                 {m: {i: rng.random() for i in ids} for m in ("teacher", "reference")})
    with pytest.raises(QueryError, match=r"a keys task ran out of memory \(Out of Memory Error.*\): give each task fewer "
                                         r"documents \(more --shards\) or more memory \(--task-memory-limit"):
        select(db, "curriculum('teacher')", str(tmp_path / "out"), shards=2, executor="inline", memory_limit="4MB")
    with pytest.raises(QueryError, match=r"a keys task ran out of memory .*more --shards"):  # an export cut by tasks
        db.view("curriculum('teacher')").export(str(tmp_path / "export"), shards=2, executor="inline", task_memory_limit="4MB")
    assert not (tmp_path / "export").exists()  # nothing left behind: no part, no journal, no work folder
    with pytest.raises(ValueError, match="memory limit 'lots' is not a size DuckDB reads"):
        db.view("curriculum('teacher')").export(str(tmp_path / "export"), shards=2, task_memory_limit="lots")


def test_a_selection_is_not_overwritten_unless_asked(tmp_path):
    ids = list(range(1, 41))
    db = make_db(tmp_path / "db", [(i, "web", 5) for i in ids], [10, 20, 30],
                 {"teacher": {i: -float(i % 7) for i in ids}, "reference": dict.fromkeys(ids, -2.0)})
    out = tmp_path / "out"
    first = select(db, "difference('teacher', 'reference', alpha := 0.5)", str(out), shards=4, executor="inline")
    assert len(first.files) == 4 and Path(first.files[0]).name == "part-00000-00000.parquet"
    with pytest.raises(ValueError, match="holds a selection already"):
        select(db, "difference('teacher', 'reference', alpha := 0.5)", str(out), executor="inline")
    second = select(db, "difference('teacher', 'reference', alpha := 0.1)", str(out), shards=1, overwrite=True, executor="inline")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "part-00000-00000.parquet"]  # the first's other parts are gone
    assert second.rows == 4


def test_local_processes_equal_inline_and_a_killed_task_reruns_to_the_same_bytes(tmp_path, monkeypatch):
    rng = random.Random(5)
    ids = rng.sample(range(1, 10**9), 500)
    db = make_db(tmp_path / "db", [(i, rng.choice(SOURCES), rng.randint(1, 50)) for i in ids], [100, 250, 400],
                 {m: {i: rng.choice(LOGPROBS) for i in ids} for m in ("teacher", "reference")})
    for call in ("difference_by_source('teacher', 'reference', alphas := map {'code': 0.9}, alpha := 0.2)",
                 "difference('teacher', 'reference', alpha := 0.6)"):
        single, got, clean = single_and_distributed(db, call, tmp_path / "clean", shards=3, executor="local", nbins=4,
                                                    resolve_rows=5)
        assert got.to_pylist() == single.to_pylist()
        # the first task process to write a part dies right after (no cleanup); the pool runs its task again
        monkeypatch.setenv("CORPUSDB_FAILPOINT", "select.after_part=1")
        monkeypatch.setenv("CORPUSDB_FAILPOINT_ONCE", str(tmp_path / f"crashed-{len(call)}"))
        crashed = select(db, call, str(tmp_path / "crashed"), shards=3, executor="local", nbins=4, resolve_rows=5,
                         overwrite=True)
        monkeypatch.delenv("CORPUSDB_FAILPOINT")
        assert (tmp_path / f"crashed-{len(call)}").exists()
        names = [Path(f).name for f in clean.files]
        assert [Path(f).name for f in crashed.files] == names
        assert all((tmp_path / "crashed" / n).read_bytes() == (tmp_path / "clean" / n).read_bytes() for n in names)


EXPORTED = (
    "difference('teacher', 'reference', alpha := 0.5, missing := 'exclude')",
    "difference_bytes('teacher', 'reference', alpha := 0.3, missing := 'exclude')",
    "difference_sampled('teacher', 'reference', alpha := 0.5, missing := 'exclude')",
    "difference_by_source('teacher', 'reference', alphas := map {'web': 0.2}, alpha := 0.7, missing := 'exclude')",
    "quota(map {'web': 1500, 'books': 300}, unit := 'bytes')",
    "mixture(map {'web': 1, 'code': 3}, 2000, unit := 'bytes')",
    "curriculum('teacher', stages := 3, missing := 'last')",
    "curriculum('reference', stages := 2, missing := 'exclude', descending := true)",
    "quota(map {'books': 0.5}, unit := 'bytes')",  # nothing fits: the one empty part
    "filter_loss('teacher', max_loss := 4, missing := 'keep')",  # a row filter: no cut, in place order
    "curriculum(null, key := 'n_bytes', descending := true, stages := 2)",  # by a column of the documents
)


def same_files(one: Path, many: Path) -> None:
    """The two export folders hold the same files (no work folder left), byte for byte but the manifest."""
    names = sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in many.iterdir()) == names
    for name in names:
        if name != MANIFEST:
            assert (one / name).read_bytes() == (many / name).read_bytes(), name


ORDERED = (
    "select * from documents order by n_bytes",
    "select * from documents where source <> 'code' and n_bytes > 1 order by n_bytes desc",
    "select * from instances order by n_bytes desc",
    "select * from instances where byte_start > 0 order by n_bytes asc nulls last",
)


@pytest.mark.parametrize("view", ORDERED)
def test_an_ordered_view_is_exported_by_tasks_in_ranges_to_the_bytes_of_one_process(tmp_path, view, capsys):
    """`select * from documents|instances [where ...] order by COLUMN [desc]`, range-partitioned on the column by
    tasks: every file is the single-process export's (ties in unit order on both sides), the rows in the view's order;
    other orders are refused naming the fix."""
    rng = random.Random(view)
    ids = rng.sample(range(-2**40, 2**40), 200)
    docs = [(i, rng.choice(SOURCES), rng.choice((0, 1, 2, 4, 8, 30, 100))) for i in ids]  # many ties
    db = make_db(tmp_path / "db", docs, rng.sample(range(1, 200), 5), {})
    add_instances(db, docs, rng, {}, parts=2)
    db = corpusdb.open(db.url)
    fmt = ("parquet", "jsonl", "mds")[ORDERED.index(view) % 3]
    size = 0.001 if fmt == "mds" else 0.0002  # an MDS shard's limit counts its config (~400 bytes) too
    one = db.view(view).export(str(tmp_path / "one"), format=fmt, part_size_mb=size)
    many = db.view(view).export(str(tmp_path / "many"), format=fmt, part_size_mb=size, shards=rng.randint(2, 4),
                                executor="inline", progress=True)
    assert "the cut by tasks" in capsys.readouterr().err
    assert many["parts"] == one["parts"] and len(one["parts"]) > 2, fmt
    same_files(tmp_path / "one", tmp_path / "many")
    unit = "instance_id" if "instances" in view else "doc_id"
    descending = "desc" in view
    expected = db.sql(f"select {unit}, n_bytes from ({view})").fetchall()
    expected.sort(key=lambda r: (-r[1] if descending else r[1], r[0]))
    if fmt == "parquet":
        got = pa.concat_tables([pq.read_table(tmp_path / "one" / p["file"], columns=[unit, "n_bytes"]) for p in one["parts"]])
        assert list(zip(got.column(unit).to_pylist(), got.column("n_bytes").to_pylist())) == expected
    for refused, words in (("select * from documents order by source", "orders by a numeric column, not a VARCHAR column"),
                           ("select doc_id, text, n_bytes from documents order by n_bytes", "(it orders its rows)"),
                           ("select * from documents where n_bytes > (select avg(n_bytes) from documents) order by n_bytes",
                            "(it orders its rows)"),  # a subquery: each task would answer it over its own parts
                           ("select * from documents where unit_key(struct_pack(doc_id)) > 0 order by n_bytes",
                            "(it orders its rows)"),  # a macro, which may read a table
                           ("select * from documents order by n_bytes nulls first", "(it orders its rows)")):
        with pytest.raises(ValueError, match=re.escape(words) + ".*without --shards"):
            db.view(refused).export(str(tmp_path / "refused"), shards=2, executor="inline")


def scattered_db(root: Path, seed: int, n: int = 300):
    rng = random.Random(seed)
    ids = rng.sample(range(-2**40, 2**40), n)
    docs = [(i, rng.choice(SOURCES), rng.choice((0, 1, 2, 4, 8, 30, 100))) for i in ids]
    scores = {m: {i: rng.choice(LOGPROBS) for i in ids if rng.random() < 0.9} for m in ("teacher", "reference")}
    return make_db(root, docs, rng.sample(range(1, n), 7), scores)


@pytest.mark.parametrize("call", EXPORTED)
def test_a_sharded_export_of_a_policy_is_cut_by_tasks_to_the_bytes_of_one_process(tmp_path, call):
    """`export(shards=N)` of a policy call: the cut by tasks, its rows placed (in place order, numbered ranges gathered
    back) or ranged (the policy's own order, text shuffled through the ranges), cut into parts by one plan task:
    every file is the single-process export's, for any number of tasks and part size."""
    db = scattered_db(tmp_path / "db", len(call))
    rng = random.Random(call)
    fmt = ("parquet", "jsonl", "mds")[EXPORTED.index(call) % 3]
    size, shards = rng.choice((0.0001, 0.0002, 0.0004)), rng.randint(2, 6)
    size *= 5 if fmt == "mds" else 1  # an MDS shard's limit counts its config (~400 bytes) too
    one = db.view(call).export(str(tmp_path / "one"), format=fmt, part_size_mb=size)
    many = db.view(call).export(str(tmp_path / "many"), format=fmt, part_size_mb=size, shards=shards, executor="inline")
    assert many["parts"] == one["parts"] and many["n_rows"] == one["n_rows"], (fmt, size, shards)
    same_files(tmp_path / "one", tmp_path / "many")
    if fmt == "jsonl" and one["n_rows"]:  # a HUGEINT (quota's running total) is written as its exact number
        row = json.loads((tmp_path / "one" / one["parts"][0]["file"]).read_text().splitlines()[0])
        assert all(isinstance(v, int) for k, v in row.items() if k in ("quota_running", "curriculum_rank", "doc_id"))
    assert (one["n_rows"] == 0) == ("0.5}" in call) and (len(one["parts"]) > 1 or one["n_rows"] == 0)


@pytest.mark.parametrize("call", [over_instances(EXPORTED[i]) for i in (0, 4, 6)])  # placed, gathered ranges, ordered
def test_a_sharded_export_over_instances_is_cut_by_tasks_to_the_bytes_of_one_process(tmp_path, call, capsys):
    """The same over instances: each instance placed at its document's place, its spans in text order (numbered
    ranges gathered back so), or in the policy's own order; every file is the single-process export's."""
    rng = random.Random(call)
    ids = rng.sample(range(-2**40, 2**40), 200)
    docs = [(i, rng.choice(SOURCES), rng.choice((0, 1, 2, 4, 8, 30, 100))) for i in ids]
    db = make_db(tmp_path / "db", docs, rng.sample(range(1, 200), 5), {})
    add_instances(db, docs, rng, {"teacher": 0.95, "reference": 0.9}, parts=2)
    db = corpusdb.open(db.url)
    fmt = ("parquet", "jsonl", "mds")[len(call) % 3]
    size = 0.001 if fmt == "mds" else 0.0002  # an MDS shard's limit counts its config (~400 bytes) too
    one = db.view(call).export(str(tmp_path / "one"), format=fmt, part_size_mb=size)
    many = db.view(call).export(str(tmp_path / "many"), format=fmt, part_size_mb=size, shards=3, executor="inline",
                                progress=True)
    assert "the cut by tasks" in capsys.readouterr().err  # not by this process's DuckDB
    assert many["parts"] == one["parts"] and len(one["parts"]) > 1, fmt
    same_files(tmp_path / "one", tmp_path / "many")
    if "curriculum" not in call:  # in place order: an instance's document's place, then its span
        rows = pa.concat_tables([pq.read_table(tmp_path / "one" / p["file"]) for p in one["parts"]]) if fmt == "parquet" \
            else None
        if rows is not None:
            place = {d: i for i, d in enumerate(corpusdb.open(db.url).sql("select doc_id from documents").fetchnumpy()["doc_id"])}
            keys = [(place[d], b) for d, b in zip(rows.column("doc_id").to_pylist(), rows.column("byte_start").to_pylist())]
            assert keys == sorted(keys)


def test_a_tokenized_sharded_export_survives_a_killed_cut_task(tmp_path, tiny_models, monkeypatch):
    """Local processes, Megatron's format: a filter task dies after writing its placed file (the pool runs it again);
    the files are the single-process export's, in place order (quota's numbered ranges gathered back) and in the
    policy's own (curriculum)."""
    db = scattered_db(tmp_path / "db", 11, n=600)
    tokenizer = str(tiny_models["gpt2"])
    for call in ("quota(map {'web': 2000, 'code': 900}, unit := 'bytes', seed := 3)",
                 "curriculum('teacher', stages := 2, missing := 'last')"):
        name = call.split("(")[0]
        one = db.view(call).export(str(tmp_path / f"one-{name}"), format="megatron", tokenizer=tokenizer, part_size_mb=0.0005)
        monkeypatch.setenv("CORPUSDB_FAILPOINT", "select.after_part=1")
        monkeypatch.setenv("CORPUSDB_FAILPOINT_ONCE", str(tmp_path / f"crashed-{name}"))
        many = db.view(call).export(str(tmp_path / f"many-{name}"), format="megatron", tokenizer=tokenizer,
                                    part_size_mb=0.0005, shards=3, workers=2)
        monkeypatch.delenv("CORPUSDB_FAILPOINT")
        assert (tmp_path / f"crashed-{name}").exists()
        assert len(one["parts"]) > 3 and many["parts"] == one["parts"] and many["n_tokens"] == one["n_tokens"]
        same_files(tmp_path / f"one-{name}", tmp_path / f"many-{name}")


def test_a_killed_driver_s_work_folder_is_removed_by_the_next_export(tmp_path):
    """The tasks' files live in the export folder's `_work-KEY/`, named by the journal: a re-run after a killed driver
    takes them as its own (not foreign files) and removes them."""
    db = scattered_db(tmp_path / "db", 4)
    call = "difference('teacher', 'reference', alpha := 0.5, missing := 'exclude')"
    out = tmp_path / "out"
    (out / "_work-0123abcd").mkdir(parents=True)
    (out / "_work-0123abcd" / "keys-00000.parquet").write_bytes(b"left by a killed run")
    (out / ".corpusdb-export.json").write_text(json.dumps({"key": "0123abcd", "files": [], "replaces": [],
                                                           "work": "_work-0123abcd"}))
    manifest = db.view(call).export(str(out), shards=2, executor="inline")
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "README.md", *(p["file"] for p in manifest["parts"])])
    (out / "stray").mkdir()
    (out / "stray" / "x.parquet").write_bytes(b"not ours")
    with pytest.raises(ExportError, match="corpusdb did not write"):
        db.view(call).export(str(out), shards=2, executor="inline", overwrite=True)


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.s3
def test_ray_tasks_from_s3_to_s3_equal_the_single_process_query(ray_cluster, s3_options, bucket):
    """Keys, histograms, kept files, ranges and parts all in the object store; numbered and unnumbered policies."""
    rng = random.Random(8)
    ids = rng.sample(range(-10**12, 10**12), 3000)
    db = make_db(f"s3://{bucket}/dist", [(i, rng.choice(SOURCES), rng.randint(0, 60)) for i in ids], [700, 1500, 2400],
                 {m: {i: rng.choice(LOGPROBS) + rng.randint(0, 3) for i in ids} for m in ("teacher", "reference")}, s3_options)
    for call in ("difference_bytes('teacher', 'reference', alpha := 0.3, missing := 'exclude')",
                 "difference_sampled('teacher', 'reference', alpha := 0.4, missing := 'exclude')",
                 "quota(map {'web': 9000, 'code': 4000}, seed := 5)"):
        single, got, selection = single_and_distributed(db, call, f"s3://{bucket}/sel", shards=3, executor="ray", nbins=8,
                                                        resolve_rows=20)
        assert got.num_rows and got.to_pylist() == single.to_pylist(), call
        assert selection.passes > 1
        # a sharded export cut by Ray tasks: the single-process export's bytes
        one = db.view(call).export(f"s3://{bucket}/one", part_size_mb=0.01, overwrite=True)
        many = db.view(call).export(f"s3://{bucket}/many", part_size_mb=0.01, overwrite=True, shards=3, executor="ray")
        assert len(one["parts"]) > 1 and many["parts"] == one["parts"], call
        for part in one["parts"]:
            assert db.location.fs.cat(f"{bucket}/one/{part['file']}") == db.location.fs.cat(f"{bucket}/many/{part['file']}")
        db.location.fs.invalidate_cache()  # no task's file is left (SeaweedFS may list the emptied folder itself)
        assert not [path for path in db.location.fs.find(f"{bucket}/many") if "/_work-" in path]


def million(root: Path, parts: int = 8, n: int = 1_000_000):
    """A database of n documents in `parts` parts, written with numpy and committed through register_parts, with
    teacher and reference scores from a few values (most units tie), one part a documents part, as a scoring job
    writes them: each records the documents part it covers."""
    db = corpusdb.init(str(root))
    rng = np.random.default_rng(1)
    ids = np.unique(rng.integers(-2**62, 2**62, int(n * 1.01)))[:n]
    rng.shuffle(ids)
    sizes = rng.integers(0, 40, n)
    pool = "abcdefghijklmnopqrstuvwxyz0123456789abcd"
    docs, scores, covers = [], [], {}
    for i, rows in enumerate(np.array_split(np.arange(n), parts)):
        table = pa.table({"doc_id": pa.array(ids[rows]), "source": pa.array(np.array(SOURCES)[rng.integers(0, 3, len(rows))]),
                          "text": pa.array([pool[:k] for k in sizes[rows]]), "n_bytes": pa.array(sizes[rows])})
        docs.append(db.location.write_parquet(table, "documents", f"part-{i:03d}.parquet").path)
        for model in ("teacher", "reference"):
            kept = rows[rng.random(len(rows)) < 0.98]
            score = pa.table({"doc_id": pa.array(ids[kept]), "sum_logprob": pa.array(-rng.integers(0, 64, len(kept)) / 4.0),
                              "n_tokens": pa.array(np.full(len(kept), 3)), "n_bytes": pa.array(sizes[kept])})
            path = db.location.write_parquet(score, "scores", f"model={model}", f"part-{i:03d}.parquet").path
            scores.append(path)
            covers[path] = [docs[-1]]
    db.register_parts("documents", docs)
    db.register_parts("scores", scores, covers=covers, models={
        m: {"model": f"test/{m}", "content_hash": m, "tokenizer_hash": "bpe", "unit": "documents"} for m in ("teacher", "reference")})
    return corpusdb.open(str(root))


def test_ray_tasks_over_a_million_documents_equal_one_process(ray_cluster, tmp_path):
    """A local Ray cluster at 1M documents: the cut (two passes of 1,024 bins) and a global order in numbered ranges
    give the single-process rows, and a sharded export its bytes."""
    db = million(tmp_path / "db")
    for call, ordered in (("difference('teacher', 'reference', alpha := 0.5, missing := 'exclude')", False),
                          ("curriculum('reference', stages := 3, missing := 'last')", True)):
        single = db.sql(f"select * from {call}").to_arrow_table()
        selection = select(db, call, str(tmp_path / "sel"), shards=4, executor="ray", overwrite=True)
        got = duckdb.sql(f"select * from read_parquet({selection.files})").to_arrow_table()
        if not ordered:
            single, got = single.sort_by("doc_id"), got.sort_by("doc_id")
        assert got.num_rows == single.num_rows > 200_000 and got.equals(single), call
        assert selection.passes >= (0 if ordered else 1)
        assert selection.score_parts_read == selection.score_parts == 16  # each task its own two per model
    call = "difference_bytes('teacher', 'reference', alpha := 0.4, missing := 'exclude')"
    one = db.view(call).export(str(tmp_path / "one"), part_size_mb=1)
    many = db.view(call).export(str(tmp_path / "many"), part_size_mb=1, shards=4, executor="ray")
    assert len(one["parts"]) > 4 and many["parts"] == one["parts"]
    same_files(tmp_path / "one", tmp_path / "many")


def test_a_filter_s_arguments_are_checked_whatever_the_parts_statistics(tmp_path):
    """filter_source([]) and filter_length with min_bytes > max_bytes rule out every row before reading one: the
    macro's check still runs (it used to be skipped with the scan), in one process and as tasks."""
    db = make_db(tmp_path / "db", [(1, "web", 0), (2, "web", 0)], [], {})
    for call, words in (("filter_source([])", "filter_source: no documents of source(s) []; sources: [web]"),
                        ("filter_length(min_bytes := 1, max_bytes := 0)", "filter_length: need 0 <= min_bytes <= max_bytes")):
        with pytest.raises(QueryError, match=re.escape(words)):
            with db.query_errors():
                db.sql(f"select * from {call}").fetchall()
        with pytest.raises(QueryError, match=re.escape(words)):
            select(db, call, str(tmp_path / "out"), shards=2, executor="inline")


def test_call_arguments_keep_their_sql_types():
    call = read_call("difference_sampled('t', 'r', alpha := 0.3, temperature := 0.5::double, seed := (1 + 2))")
    assert call.args["alpha"] == "0.3" and call.args["temperature"] == "CAST(0.5 AS double)"
    assert call.args["seed"] == "(1 + 2)" and call.args["docs"] == "'documents'"
    assert duckdb.sql(f"select ceil({call.args['alpha']} * 10)").fetchall()[0][0] == Decimal(3)  # not 4, as a float's
    with pytest.raises(ValueError, match="no parameter alfa"):
        read_call("difference('t', 'r', alfa := 1)")
    with pytest.raises(ValueError, match="parameter reference is required"):
        read_call("difference('t')")


def test_bins_are_monotone_in_the_order():
    rng = np.random.default_rng(0)
    k = np.sort(np.concatenate([rng.normal(size=500), [-1e308, 1e308, 0.0, -0.0]]))
    u = rng.integers(-2**63, 2**63 - 1, len(k))
    bins = radix.bin_of(k, u, (float(k[0]), 0, float(k[-1]), 0), 16)
    assert (np.diff(bins) >= 0).all() and bins[0] == 0 and bins[-1] == 15
    same = np.sort(rng.integers(-2**63, 2**63 - 1, 1000))
    bins = radix.bin_of(np.zeros(1000), same, (0.0, int(same[0]), 0.0, int(same[-1])), 16)
    assert (np.diff(bins) >= 0).all() and bins[0] == 0 and bins[-1] == 15
    assert len(pickle.dumps(radix.histogram(k, u, np.ones(len(k), np.int64), (float(k[0]), 0, float(k[-1]), 0), 16))) < 4000


def test_ranks_stream_and_train_from_the_selection_parts(tmp_path, tiny_models):
    """Each rank reads its own parts of a selection (no rank exports it); `train --export` trains on them."""
    from corpusdb.train import ViewDataset, World
    from corpusdb.train.pretrain import TrainConfig, train

    rng = random.Random(2)
    ids = rng.sample(range(1, 10**9), 400)
    db = make_db(tmp_path / "db", [(i, rng.choice(SOURCES), rng.randint(20, 80)) for i in ids], [100, 200, 300],
                 {m: {i: rng.choice(LOGPROBS) * rng.randint(1, 5) for i in ids} for m in ("teacher", "reference")})
    out = tmp_path / "sel"
    selection = select(db, "difference('teacher', 'reference', alpha := 0.5)", str(out), shards=2, executor="inline",
                       part_size_mb=0.002)
    assert len(selection.files) > 4
    dataset = ViewDataset.from_export(str(out), str(tiny_models["gpt2"]), 16, epochs=1)
    assert dataset.view == "difference(teacher := 'teacher', reference := 'reference', alpha := 0.5, per := 'byte', " \
                           "docs := 'documents', missing := 'error')"
    streams = [[doc for doc, _ in dataset.documents(World(rank, 2, 0, 1))] for rank in range(2)]
    kept = db.sql("select doc_id from difference('teacher', 'reference', alpha := 0.5)").fetchall()
    assert streams[0] and streams[1] and not set(streams[0]) & set(streams[1])
    assert sorted(streams[0] + streams[1]) == sorted(d for (d,) in kept)
    metrics = train(TrainConfig(db=db.url, export=str(out), out=str(tmp_path / "student"), tokenizer=str(tiny_models["gpt2"]),
                                seq_len=16, batch_size=2, max_steps=2, warmup_steps=1, eval_every=100, checkpoint_every=100,
                                progress=False, num_workers=0, device="cpu"))
    assert metrics["step"] == 2 and np.isfinite(metrics["loss"])
