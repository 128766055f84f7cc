"""Views bind from one footer per schema, not from every part's: parts record their schema's key."""

from __future__ import annotations

import json
from pathlib import Path

import corpusdb


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _view_sql(db: corpusdb.Database, view: str) -> str:
    return db.con.execute("select sql from duckdb_views() where view_name = ?", [view]).fetchall()[0][0]


def test_parts_of_one_schema_are_one_read_without_union_by_name(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    for i in range(4):
        db.ingest([_jsonl(tmp_path / f"a{i}.jsonl", [{"text": f"plain {i} {j}"} for j in range(20)])], source="a",
                  progress=False)
    db.ingest([_jsonl(tmp_path / "t.jsonl", [{"text": f"titled {j}", "title": f"T{j}"} for j in range(5)])],
              source="t", meta={"title": "title"}, progress=False)
    infos = db.snapshot.tables["documents"].values()
    assert all(info.get("schema") for info in infos) and len({info["schema"] for info in infos}) == 2
    sql = _view_sql(db, "documents")
    assert sql.count("read_parquet(") == 2 and "union_by_name = true" not in sql.lower()
    # the two schemas read as one table: the meta column is NULL where a part lacks it
    assert db.sql("select count(*), count(title) from documents").fetchall() == [(85, 5)]
    assert db.sql("select title from documents where text = 'titled 3'").fetchall() == [("T3",)]


def test_parts_without_a_schema_key_fall_back_to_union_by_name(tmp_path):
    """Versions written before parts recorded their schema still read every part's columns."""
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([_jsonl(tmp_path / "a.jsonl", [{"text": "plain"}])], source="a", progress=False)
    db.ingest([_jsonl(tmp_path / "t.jsonl", [{"text": "titled", "title": "T"}])], source="t", meta={"title": "title"},
              progress=False)

    def forget_schemas(snapshot):
        for info in snapshot.tables["documents"].values():
            info.pop("schema", None)
    db.commit("forget", forget_schemas)
    sql = _view_sql(db, "documents")
    assert sql.count("read_parquet(") == 1 and "union_by_name = true" in sql.lower()
    assert sorted(db.sql("select text, title from documents").fetchall()) == [("plain", None), ("titled", "T")]
