"""Plain DuckDB tables shaped like a database's, with the built-in policies loaded: what the Hypothesis
properties of the policies (tests/test_views_properties.py, tests/test_coverage.py) run on."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from corpusdb.policies import load_builtin_views


def doc_ids(n: int) -> list[int]:
    """n distinct doc_ids, negative ones included, in no sorted relation to their position."""
    return [i * 7919 - 100 for i in range(n)]


_SHARED: list[duckdb.DuckDBPyConnection] = []  # one connection a process: the built-ins load once (~0.2 s)


def connect(documents: list[tuple[int, str, int]], scores: list[tuple[int, float | None, int, int, str]],
            clusters: dict[int, list[int]]) -> duckdb.DuckDBPyConnection:
    """Tables documents (doc_id, source, n_bytes; the text is 'x' * n_bytes), scores (doc_id, sum_logprob,
    n_tokens, n_bytes, model) of the models teacher and reference, minhash (each cluster's members;
    cluster_id is the smallest) and an empty instance_spans, plus the built-in views and macros.

    The connection is the process's one, its built-in macros and views loaded once: every table (and
    any a test created on it before) is dropped and created afresh here, so nothing of an earlier call
    remains; the built-ins bind the tables by name at each query."""
    if not _SHARED:
        _SHARED.append(duckdb.connect())
        _create(_SHARED[0], [], [], {})
        load_builtin_views(_SHARED[0])
    con = _SHARED[0]
    for (name,) in con.execute("select table_name from duckdb_tables() where not internal").fetchall():
        con.execute(f'drop table "{name}"')
    for (name,) in con.execute("select view_name from duckdb_views() where not internal and temporary").fetchall():
        con.execute(f'drop view "{name}"')
    _create(con, documents, scores, clusters)
    return con


def _create(con: duckdb.DuckDBPyConnection, documents: list[tuple[int, str, int]],
            scores: list[tuple[int, float | None, int, int, str]], clusters: dict[int, list[int]]) -> None:
    con.register("d", pa.table({
        "doc_id": pa.array([d for d, _, _ in documents], pa.int64()), "source": pa.array([s for _, s, _ in documents], pa.string()),
        "text": pa.array(["x" * n for _, _, n in documents], pa.string()), "n_bytes": pa.array([n for _, _, n in documents], pa.int64()),
    }))
    con.execute("create table documents as select * from d")
    con.execute("create table scores (doc_id bigint, sum_logprob double, n_tokens bigint, n_bytes bigint, model varchar)")
    if scores:
        con.executemany("insert into scores values (?, ?, ?, ?, ?)", scores)
    con.execute("create table models as select * from (values ('teacher', 'a', 'bpe', 't', 'documents'), "
                "('reference', 'b', 'bpe', 'r', 'documents')) as t(model, content_hash, tokenizer_hash, path, unit)")
    con.execute("create table instance_spans (instance_id bigint, doc_id bigint, position integer, byte_start bigint, "
                "byte_end bigint, n_tokens bigint, n_bytes bigint)")
    con.execute("create table minhash (doc_id bigint, cluster_id bigint, cluster_size bigint)")
    members = [(doc, min(group), len(group)) for group in clusters.values() for doc in group]
    if members:
        con.executemany("insert into minhash values (?, ?, ?)", members)
    con.unregister("d")
