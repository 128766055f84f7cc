"""Invariants of the policy views over random tables, on a real DuckDB with the real sql/ files (Hypothesis)."""

from __future__ import annotations

import math

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.policy_tables import connect as connect_tables
from tests.policy_tables import doc_ids

SOURCES = ["web", "books", "code"]

corpus = st.lists(
    st.tuples(
        st.sampled_from(SOURCES),
        st.integers(0, 200),  # n_bytes
        st.one_of(st.none(), st.floats(-500, 0)),  # teacher sum_logprob
        st.one_of(st.none(), st.floats(-500, 0)),  # reference sum_logprob
        st.integers(0, 4),  # near-duplicate group (0: none)
    ),
    min_size=0,
    max_size=40,
)


def connect(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    """documents, scores (both models score every document; None: empty) and minhash (every document in a
    group, or alone) holding `rows`, plus the built-in views and macros."""
    ids = doc_ids(len(rows))
    scores = [(doc, value, 0 if value is None else max(row[1] // 4, 1), row[1], model)
              for doc, row in zip(ids, rows) for model, value in (("teacher", row[2]), ("reference", row[3]))]
    groups: dict[int, list[int]] = {}
    for doc, row in zip(ids, rows):
        groups.setdefault(row[4] or -doc, []).append(doc)
    return connect_tables([(doc, row[0], row[1]) for doc, row in zip(ids, rows)], scores, groups)


alphas = st.floats(0, 1, exclude_min=True)


@settings(max_examples=30, deadline=None)
@given(corpus.filter(bool), alphas, st.sampled_from(["byte", "token"]))
def test_difference_keeps_ceil_alpha_n_and_never_a_worse_document(rows, alpha, per):
    con = connect(rows)
    scored = dict(con.execute(f"select doc_id, score from difference_scores('teacher', 'reference', per := '{per}')").fetchall())
    kept = [d for (d,) in con.execute(f"select doc_id from difference('teacher', 'reference', alpha := {alpha}, per := '{per}')").fetchall()]
    assert len(kept) == math.ceil(alpha * len(scored))
    assert len(kept) == len(set(kept)) and set(kept) <= set(scored)
    dropped = set(scored) - set(kept)
    assert None not in scored.values()
    if kept and dropped:
        assert min(scored[d] for d in kept) >= max(scored[d] for d in dropped)


@settings(max_examples=30, deadline=None)
@given(corpus.filter(bool), alphas, st.sampled_from(["byte", "token"]))
def test_difference_bytes_holds_alpha_of_the_text_with_less_than_one_document_over(rows, alpha, per):
    con = connect(rows)
    scored = {d: (s, n) for d, s, n in con.execute(
        f"select doc_id, score, n_bytes from difference_scores('teacher', 'reference', per := '{per}')").fetchall()}
    kept = sorted(
        (scored[d][0], d) for (d,) in con.execute(
            f"select doc_id from difference_bytes('teacher', 'reference', alpha := {alpha}, per := '{per}')").fetchall()
    )
    budget = alpha * sum(n for _, n in scored.values())
    kept_bytes = sum(scored[d][1] for _, d in kept)
    if set(scored) - {d for _, d in kept}:  # something was left out: the kept text reached the budget
        assert kept_bytes >= budget
    if kept:  # and without its last document (lowest score, then largest doc_id) it would not have
        last = min(kept, key=lambda item: (item[0], -item[1]))[1]
        assert kept_bytes - scored[last][1] < budget
    dropped = set(scored) - {d for _, d in kept}
    if kept and dropped:
        assert min(s for s, _ in kept) >= max(scored[d][0] for d in dropped)


@settings(max_examples=30, deadline=None)
@given(corpus, st.floats(allow_nan=False).filter(lambda a: not 0 < a <= 1))
def test_difference_refuses_alpha_outside_zero_to_one(rows, alpha):
    con = connect(rows + [("web", 10, -1.0, -2.0, 0)])
    try:
        con.execute(f"select count(*) from difference('teacher', 'reference', alpha := '{alpha!r}'::double)").fetchall()
    except duckdb.Error as exc:
        assert "alpha must be in (0, 1]" in str(exc)
    else:
        raise AssertionError(f"alpha {alpha} was accepted")


@settings(max_examples=30, deadline=None)
@given(corpus.filter(bool), st.booleans(), st.integers(1, 5))
def test_curriculum_never_decreases(rows, descending, stages):
    con = connect(rows)
    values = con.execute(
        f"select loss_per_byte, stage from curriculum('reference', descending := {str(descending).lower()}, stages := {stages})"
    ).fetchall()
    assert len(values) == len(rows)
    losses = [v for v, _ in values if v is not None]
    assert losses == sorted(losses, reverse=descending)
    assert all(v is None for v, _ in values[len(losses):])  # documents without a loss come last
    assert [s for _, s in values] == sorted(s for _, s in values)


@settings(max_examples=30, deadline=None)
@given(corpus)
def test_dedup_is_idempotent(rows):
    con = connect(rows)
    once = con.execute("select doc_id from dedup order by doc_id").fetchall()
    con.execute("create table kept as select * from dedup")
    con.execute("create or replace table documents as select * from kept")
    twice = con.execute("select doc_id from dedup order by doc_id").fetchall()
    assert once == twice
    clusters = con.execute("select count(distinct cluster_id) from minhash").fetchall()[0][0]
    assert len(once) == clusters  # one representative per cluster (every document has a minhash row here)


@settings(max_examples=30, deadline=None)
@given(corpus.filter(bool), st.dictionaries(st.sampled_from(SOURCES), st.integers(1, 600), min_size=1),
       st.sampled_from(["bytes", "tokens", "documents"]), st.integers(0, 1000))
def test_quota_never_exceeds_a_budget(rows, budgets, unit, seed):
    con = connect(rows)
    literal = "map {" + ", ".join(f"'{s}': {b}" for s, b in budgets.items()) + "}" if budgets else "map {}::map(varchar, bigint)"
    query = f"select source, sum(quota_units), count(*) from quota({literal}, unit := '{unit}', model := 'reference', seed := {seed}) group by 1"
    absent = [s for s in budgets if s not in {r[0] for r in rows}]  # named in the map's order
    if absent:  # a budget for a source docs does not hold (a misspelling) is refused, naming it
        with pytest.raises(duckdb.Error, match=rf"quota: no units of source\(s\) \[{', '.join(absent)}\]"):
            con.execute(query).fetchall()
        return
    used = con.execute(query).fetchall()
    for source, units, _ in used:
        assert source in budgets and units <= budgets[source]
