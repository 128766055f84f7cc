"""The policies rank on keys alone: the text column enters DuckDB's plan only after the cut.

MiniPLM's pool is ~200 GB of text; a policy that carries the text through its ranking sorts, hashes
or materialises all of it. These tests read DuckDB's own physical plan (`explain (format json)`) of
each cutting policy over a database whose documents hold a large text column, and check that every
scan that reads `text` streams straight into a join whose other side holds the ranking (the join
that brings the kept rows' text back), as the side the join probes with, not the one it hashes, and
that no window, top-N, grouping or materialised CTE sits above it, nor a join that hashes it: only
the kept rows' text is sorted or buffered, and none is hashed. Over instances the kept spans are joined to their documents before the
text is cut (`instances_of_kept`), not the `instances` view (every span of every document) to the keys:
every policy that cuts does so over instances too (a filter or a curriculum keeps rows without ranking them
away, so it reads the `instances` view), and each kept span carries its kept row's columns into that join, so
no join sits above it.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

import corpusdb
from corpusdb.text import doc_id

# Operators that consume every input row before the policy knows its cut.
RANKING = {"WINDOW", "STREAMING_WINDOW", "TOP_N", "HASH_GROUP_BY", "PERFECT_HASH_GROUP_BY", "PARTITIONED_AGGREGATE"}
# Operators that pass rows through one at a time.
STREAMING = {"PROJECTION", "FILTER"}
N_DOCS = 300


def _commit_scores(db: corpusdb.Database, model: str, ids: list[int], sizes: list[int], rng: random.Random,
                   unit: str = "documents") -> None:
    table = pa.table({
        "doc_id": pa.array(ids, pa.int64()),
        "sum_logprob": pa.array([-rng.uniform(0.1, 2.0) * size for size in sizes], pa.float64()),
        "n_tokens": pa.array([max(size // 4, 1) for size in sizes], pa.int64()),
        "n_bytes": pa.array(sizes, pa.int64()),
    })
    written = db.location.write_parquet(table, "scores", f"model={model}", "part-plan.parquet")
    entry = {"model": f"plans/{model}", "content_hash": f"plans-{model}", "tokenizer_hash": "plans-tokenizer",
             "unit": unit}
    db.register_parts("scores", [written.path], models={model: entry})


def _commit_spans(db: corpusdb.Database, texts: list[str], pieces: int = 2) -> tuple[list[int], list[int]]:
    """Instances as `corpusdb instances` writes them: here every document cut into `pieces` byte spans."""
    rows = {"instance_id": [], "doc_id": [], "position": [], "byte_start": [], "byte_end": [], "n_tokens": [],
            "n_bytes": []}
    for i, text in enumerate(texts):
        # on character boundaries: the UTF-8 size of the first j/pieces of the characters
        bounds = [len(text[: len(text) * j // pieces].encode()) for j in range(pieces + 1)]
        for position, (start, end) in enumerate(zip(bounds, bounds[1:])):
            for key, value in zip(rows, (pieces * i + position + 1, doc_id(text), position, start, end,
                                         max((end - start) // 4, 1), end - start)):
                rows[key].append(value)
    table = pa.table(rows, schema=pa.schema([("instance_id", pa.int64()), ("doc_id", pa.int64()),
                                             ("position", pa.int32()), ("byte_start", pa.int64()),
                                             ("byte_end", pa.int64()), ("n_tokens", pa.int64()),
                                             ("n_bytes", pa.int64())]))
    written = db.location.write_parquet(table, "instances", "part-plan.parquet")
    db.register_parts("instance_spans", [written.path])
    return rows["instance_id"], rows["n_bytes"]


@pytest.fixture(scope="module")
def big_text_db(tmp_path_factory) -> corpusdb.Database:
    """Documents of 2-8 KB each in two sources, scored by a teacher and a reference."""
    root = tmp_path_factory.mktemp("plans")
    rng = random.Random(7)
    words = ["corpus", "teacher", "reference", "token", "byte", "policy", "view", "parquet", "duckdb", "instance"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(300, 1200))) + f" #{i}" for i in range(N_DOCS)]
    db = corpusdb.init(str(root / "db"))
    for source, chunk in (("web", texts[::2]), ("books", texts[1::2])):
        path = root / f"{source}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
        db.ingest([str(path)], source=source, progress=False)
    ids, sizes = [doc_id(t) for t in texts], [len(t.encode()) for t in texts]
    # ten spans a document: the kept spans outnumber the documents, as at scale (50M instances of 6M documents)
    instance_ids, instance_sizes = _commit_spans(db, texts, pieces=10)
    for model in ("teacher", "reference"):
        _commit_scores(db, model, ids, sizes, rng)
        _commit_scores(db, f"{model}_i", instance_ids, instance_sizes, rng, unit="instances")
    return db


def _text_scans(node: dict, path: tuple = ()) -> list[tuple]:
    """For every scan of the plan that reads `text`: its path from the root, as (operator, child index) pairs."""
    found = []
    projections = (node.get("extra_info") or {}).get("Projections", [])
    if node.get("name") in ("READ_PARQUET", "TABLE_SCAN", "PARQUET_SCAN") and "text" in (
            projections if isinstance(projections, list) else [projections]):
        found.append(path)
    for index, child in enumerate(node.get("children", [])):
        found.extend(_text_scans(child, path + ((node, index),)))
    return found


def _ctes(node: dict) -> dict[str, dict]:
    """Every materialised CTE of a plan by its table index: what its first child materialises."""
    found = {}
    if node.get("name") == "CTE":
        found[(node.get("extra_info") or {}).get("Table Index")] = node["children"][0]
    for child in node.get("children", []):
        found.update(_ctes(child))
    return found


def _operators(node: dict, ctes: dict[str, dict]) -> set[str]:
    """The operators under `node`, through the CTEs it scans."""
    names = {node.get("name", "")}
    if node.get("name") == "CTE_SCAN":
        names |= _operators(ctes[(node.get("extra_info") or {}).get("CTE Index")], ctes)
    return names.union(*(_operators(child, ctes) for child in node.get("children", [])))


def _joined_back_after_the_cut(path: tuple, ctes: dict[str, dict]) -> str | None:
    """None when the text scan only streams into a join whose other side holds the ranking; else what is wrong."""
    names = [node.get("name") for node, _ in path]
    steps = list(reversed(path))
    for depth, (node, index) in enumerate(steps):
        name = node.get("name")
        if name in STREAMING:
            continue
        if name != "HASH_JOIN":
            return f"the text reaches {name} before any join ({' > '.join(names)})"
        if index != 0:  # a hash join's second child is the side it builds its table from
            return f"the text is the side the join hashes, not the one it streams ({' > '.join(names)})"
        other = node["children"][1 - index]
        if not RANKING & _operators(other, ctes):
            return f"the text is joined to an unranked side ({' > '.join(names)})"
        above = {n.get("name") for n, _ in steps[depth + 1:]}
        # Above the join back only the kept rows flow; a CTE node's first child is what it materialises.
        materialised = any(n.get("name") == "CTE" and i == 0 for n, i in steps[depth + 1:])
        if RANKING & above or materialised:
            return f"the joined text still flows into {sorted(RANKING & above) or ['a materialised CTE']}"
        # nor is it hashed by a join above (one that adds the kept keys' columns, say): it streams through them
        if any(n.get("name") == "HASH_JOIN" and i == 1 for n, i in steps[depth + 1:]):
            return f"the joined text is the side a later join hashes ({' > '.join(names)})"
        return None
    return "the text is never joined back"


POLICIES = [
    "difference('teacher', 'reference', alpha := 0.2)",
    "difference_bytes('teacher', 'reference', alpha := 0.2)",
    "difference_bytes('teacher', 'reference', alpha := 0.2, per := 'token')",
    "difference_sampled('teacher', 'reference', alpha := 0.2, seed := 3)",
    "difference_by_source('teacher', 'reference', alphas := map {'web': 0.1}, alpha := 0.3)",
    "difference('teacher_i', 'reference_i', alpha := 0.2, docs := 'instances')",
    "difference_bytes('teacher_i', 'reference_i', alpha := 0.2, docs := 'instances')",
    "difference_sampled('teacher_i', 'reference_i', alpha := 0.2, seed := 3, docs := 'instances')",
    "difference_by_source('teacher_i', 'reference_i', alphas := map {'web': 0.1}, alpha := 0.3, docs := 'instances')",
    "quota(map {'web': 20000, 'books': 40000}, docs := 'instances')",
    "mixture(map {'web': 1, 'books': 3}, 50000, seed := 2, docs := 'instances')",
    "quota(map {'web': 20000, 'books': 40000})",
    "quota(map {'web': 10, 'books': 20}, unit := 'documents', seed := 1)",
    "mixture(map {'web': 1, 'books': 3}, 50000)",
    # a curriculum keeps every row: its keys are ranked alone, then the text joined back and sorted once
    "curriculum('reference', stages := 3)",
    "curriculum(null, key := 'n_bytes', descending := true)",
]


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_reads_text_only_after_its_cut(big_text_db, policy):
    query = f"select * from {policy}"
    n_rows = big_text_db.sql(f"select count(*) from {policy}").fetchall()[0][0]
    assert 0 < n_rows < N_DOCS * 4, f"{policy} kept {n_rows} rows: the fixture should make it cut"
    [(_, plan)] = big_text_db.con.sql("explain (format json) " + query).fetchall()
    trees = json.loads(plan)
    ctes = {index: node for tree in trees for index, node in _ctes(tree).items()}
    scans = [path for tree in trees for path in _text_scans(tree)]
    assert scans, f"{policy}: no scan of text in its plan (it must return the kept rows' text)"
    for path in scans:
        problem = _joined_back_after_the_cut(path, ctes)
        assert problem is None, f"{policy}: {problem}"


def test_the_check_sees_a_policy_that_carries_text(big_text_db):
    """The same check fails a hand-written ranking that sorts the text with the keys (the old plan)."""
    query = """
        select * from (
            select d.*, row_number() over (order by t.sum_logprob - r.sum_logprob desc, d.doc_id) as rank
            from documents d
            join scores t on t.doc_id = d.doc_id and t.model = 'teacher'
            join scores r on r.doc_id = d.doc_id and r.model = 'reference'
        ) where rank <= 60"""
    [(_, plan)] = big_text_db.con.sql("explain (format json) " + query).fetchall()
    trees = json.loads(plan)
    ctes = {index: node for tree in trees for index, node in _ctes(tree).items()}
    scans = [path for tree in trees for path in _text_scans(tree)]
    assert scans and all("WINDOW" in (_joined_back_after_the_cut(path, ctes) or "") for path in scans)


def _ranked_columns(node: dict, ctes: dict[str, dict], below_ranking: bool = False) -> set[str]:
    """The names every projection and scan under a ranking operator outputs (through the CTEs it scans)."""
    below = below_ranking or node.get("name") in RANKING
    info = node.get("extra_info") or {}
    names = set()
    if below:
        projections = info.get("Projections", [])
        names |= set(projections if isinstance(projections, list) else [projections])
    if node.get("name") == "CTE_SCAN":
        names |= _ranked_columns(ctes[info.get("CTE Index")], ctes, below)
    return names.union(*(_ranked_columns(child, ctes, below) for child in node.get("children", [])))


@pytest.mark.parametrize("policy", [policy for policy in POLICIES if policy.startswith("difference")])
def test_a_difference_policy_ranks_without_the_log_likelihoods(big_text_db, policy):
    """Each model's sum_logprob enters the ranking only as the score: the kept units' log-likelihoods are read
    back after the cut (`difference_kept`), so the ranking holds unit, bytes and score (16 bytes a unit less)."""
    [(_, plan)] = big_text_db.con.sql(f"explain (format json) select * from {policy}").fetchall()
    trees = json.loads(plan)
    ctes = {index: node for tree in trees for index, node in _ctes(tree).items()}
    ranked = set().union(*(_ranked_columns(tree, ctes) for tree in trees))
    assert "score" in ranked or any("sample_key" in name for name in ranked), f"{policy}: no ranking found: {ranked}"
    assert not {"teacher_logprob", "reference_logprob"} & ranked, f"{policy}: the ranking carries {sorted(ranked)}"
    rows = big_text_db.sql(f"select teacher_logprob, reference_logprob from {policy}").fetchall()
    assert rows and all(t is not None and r is not None for t, r in rows)


@pytest.mark.parametrize("policy", [policy for policy in POLICIES if "docs := 'instances'" in policy])
def test_a_policy_over_instances_returns_its_kept_spans_as_they_are_cut(big_text_db, policy):
    """Each kept span carries its kept row's columns into the join that cuts its text (`instances_of_kept`), so no
    join sits above that one: joining the cut instances back to the kept rows hashed every kept row a second time
    (25M of them at 50M instances, a fifth of the policy's peak memory)."""
    [(_, plan)] = big_text_db.con.sql(f"explain (format json) select * from {policy}").fetchall()
    trees = json.loads(plan)
    scans = [path for tree in trees for path in _text_scans(tree)]
    assert scans, f"{policy}: no scan of text in its plan"
    for path in scans:
        steps = list(reversed(path))
        joins = [depth for depth, (node, _) in enumerate(steps) if "JOIN" in node.get("name", "")]
        assert joins, f"{policy}: the text is never joined to the kept spans"
        above = [node.get("name") for node, _ in steps[joins[0] + 1:] if "JOIN" in node.get("name", "")]
        assert not above, f"{policy}: the cut instances are joined again: {above}"
    rows = big_text_db.sql(f"select * from {policy}").to_arrow_table()
    spans = big_text_db.sql("select instance_id, doc_id, byte_start, byte_end from instance_spans").fetchall()
    where = {instance_id: (doc, start, end) for instance_id, doc, start, end in spans}
    texts = dict(big_text_db.sql("select doc_id, text from documents").fetchall())
    for row in rows.select(["instance_id", "doc_id", "text", "n_bytes"]).to_pylist():
        doc, start, end = where[row["instance_id"]]
        assert row["doc_id"] == doc and row["n_bytes"] == end - start
        assert row["text"] == texts[doc].encode()[start:end].decode()


def _window_inputs(node: dict) -> list[list[str]]:
    """The columns each window operator of a plan takes in: its input's projections."""
    found = []
    if node.get("name") in ("WINDOW", "STREAMING_WINDOW") and node.get("children"):
        projections = (node["children"][0].get("extra_info") or {}).get("Projections", [])
        found.append(projections if isinstance(projections, list) else [projections])
    for child in node.get("children", []):
        found.extend(_window_inputs(child))
    return found


@pytest.mark.parametrize("policy", [policy for policy in POLICIES if policy.startswith(("quota", "mixture"))])
def test_quota_partitions_its_running_totals_by_an_integer(big_text_db, policy):
    """quota's running totals partition by the source's place among the budgets' keys: the window sorts and holds an
    integer where it held the source string (at 4M documents 26% less peak buffer memory and 37% less CPU)."""
    [(_, plan)] = big_text_db.con.sql(f"explain (format json) select * from {policy}").fetchall()
    inputs = [columns for tree in json.loads(plan) for columns in _window_inputs(tree)]
    assert inputs and all("quota_units" in columns for columns in inputs), f"{policy}: no running totals: {inputs}"
    assert not any("source" in columns for columns in inputs), f"{policy}: the window holds the source: {inputs}"
    rows = big_text_db.sql(f"select source, count(*) from {policy} group by 1").fetchall()
    assert {source for source, _ in rows} <= {"web", "books"} and rows
