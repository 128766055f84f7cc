"""What a view holds and how two views differ: documents, bytes, tokens, sources, score quantiles.

    corpusdb view stats demo/db dedup
    corpusdb compare demo/db dedup "difference('teacher', 'reference')"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corpusdb.views import relation_sql

if TYPE_CHECKING:
    from corpusdb.db import Database

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _columns(db: Database, sql: str) -> list[str]:
    return db.sql(f"select * from ({sql}) limit 0").columns


def view_stats(db: Database, view: str) -> dict:
    """Documents, bytes, tokens per scoring model, per-source shares and score quantiles of VIEW.

    Raises:
        QueryError: VIEW is not a view, macro call or select over this database.
    """
    with db.query_errors():
        return _view_stats(db, view)


def _view_stats(db: Database, view: str) -> dict:
    sql = relation_sql(db, view)
    columns = _columns(db, sql)
    if "doc_id" not in columns or "source" not in columns or "n_bytes" not in columns:
        raise ValueError(f"{view!r} has no doc_id, source and n_bytes columns; stats need documents rows")
    # scores of instances are keyed by instance_id (`corpusdb score --unit instances`)
    key = "instance_id" if "instance_id" in columns else "doc_id"
    unit = "instances" if key == "instance_id" else "documents"  # scores of the other unit must not join
    db.con.execute(f"create or replace temp table _stats_view as select {key} as unit_id, source, n_bytes from ({sql})")
    try:
        n_docs, n_bytes = db.con.execute("select count(*), coalesce(sum(n_bytes), 0) from _stats_view").fetchall()[0]
        # the corpus is the documents' text, whatever the rows are: instances cover only the documents cut into them
        total_docs = db.con.execute(f"select count(*) from {'instance_spans' if key == 'instance_id' else 'documents'}").fetchall()[0][0]
        total_bytes = db.con.execute("select coalesce(sum(n_bytes), 0) from documents").fetchall()[0][0]
        sources = [
            {"source": s, "n_documents": n, "n_bytes": int(b), "share_documents": n / max(n_docs, 1),
             "share_bytes": int(b) / max(n_bytes, 1)}
            for s, n, b in db.con.execute(
                "select source, count(*), sum(n_bytes) from _stats_view group by 1 order by 1"
            ).fetchall()
        ]
        tokens = {
            model: int(t)
            for model, t in db.con.execute(
                "select s.model, sum(s.n_tokens) from _stats_view v join scores s on s.doc_id = v.unit_id "
                f"semi join models m on m.model = s.model and m.unit = '{unit}' group by 1 order by 1"
            ).fetchall()
        }
        q = ", ".join(f"quantile_cont(loss_per_byte, {p})" for p in QUANTILES)
        quantiles = {
            f"loss_per_byte[{model}]": list(values)
            for model, *values in db.con.execute(
                f"select l.model, {q} from _stats_view v join losses l on l.doc_id = v.unit_id "
                f"semi join models m on m.model = l.model and m.unit = '{unit}' group by 1 order by 1"
            ).fetchall()
        }
    finally:
        db.con.execute("drop table if exists _stats_view")
    if "score" in columns:
        q = ", ".join(f"quantile_cont(score, {p})" for p in QUANTILES)
        quantiles["score"] = list(db.con.execute(f"select {q} from ({sql})").fetchall()[0])
    return {
        "view": view,
        "unit": unit,
        "n_documents": n_docs,  # rows: documents, or instances
        "n_bytes": int(n_bytes),
        "share_of_corpus_documents": n_docs / max(total_docs, 1),
        "share_of_corpus_bytes": int(n_bytes) / max(total_bytes, 1),
        "n_tokens": tokens,
        "sources": sources,
        "quantiles": {"at": list(QUANTILES), **quantiles},
    }


def compare_views(db: Database, a: str, b: str) -> dict:
    """Overlap of two views (documents in both, in one only, Jaccard) and their per-source shares."""
    sql_a, sql_b = relation_sql(db, a), relation_sql(db, b)
    with db.query_errors():
        keys = ["instance_id" if "instance_id" in _columns(db, sql) else "doc_id" for sql in (sql_a, sql_b)]
        if keys[0] != keys[1]:
            raise ValueError(f"{a!r} holds {'instances' if keys[0] == 'instance_id' else 'documents'} and {b!r} "
                             f"{'instances' if keys[1] == 'instance_id' else 'documents'}; compare views of one unit")
        rows = _compare_rows(db, sql_a, sql_b, keys[0])
    n_a = sum(r[1] for r in rows)
    n_b = sum(r[2] for r in rows)
    both = sum(r[3] for r in rows)
    bytes_a = sum(r[4] for r in rows)
    bytes_b = sum(r[5] for r in rows)
    return {
        "a": a, "b": b, "n_a": n_a, "n_b": n_b, "n_both": both, "n_only_a": n_a - both, "n_only_b": n_b - both,
        "jaccard": both / max(n_a + n_b - both, 1),
        "sources": [
            {"source": s, "n_a": na, "n_b": nb, "n_both": nboth,
             "share_bytes_a": int(ba) / max(bytes_a, 1), "share_bytes_b": int(bb) / max(bytes_b, 1)}
            for s, na, nb, nboth, ba, bb in rows
        ],
    }


def _compare_rows(db: Database, sql_a: str, sql_b: str, key: str = "doc_id") -> list[tuple]:
    """(source, n_a, n_b, n_both, bytes_a, bytes_b) per source; rows are the same where `key` is."""
    return db.con.execute(f"""
        with a as (select distinct {key} as unit_id, source, n_bytes from ({sql_a})),
             b as (select distinct {key} as unit_id, source, n_bytes from ({sql_b})),
             joined as (
                 select coalesce(a.source, b.source) as source,
                        a.unit_id is not null as in_a, b.unit_id is not null as in_b,
                        coalesce(a.n_bytes, b.n_bytes) as n_bytes
                 from a full outer join b on a.unit_id = b.unit_id
             )
        select source,
               count(*) filter (where in_a), count(*) filter (where in_b), count(*) filter (where in_a and in_b),
               coalesce(sum(n_bytes) filter (where in_a), 0), coalesce(sum(n_bytes) filter (where in_b), 0)
        from joined group by source order by source
    """).fetchall()
