"""A hand-checked fixture for the policy views: seven documents with chosen sizes, scores and clusters.

    doc  source  bytes  teacher sum/tokens  reference sum/tokens  diff per byte  ref loss/byte
    A    web     10     -10 / 5             -30 / 6               2.0            3.0
    B    web     20     -20 / 10            -40 / 8               1.0 (tie)      2.0
    C    web     10     -15 / 5             -25 / 5               1.0 (tie)      2.5
    D    books   40     -40 / 20            -60 / 30              0.5            1.5
    E    books   20     -30 / 10            -20 / 10              -0.5           1.0
    F    books   10     -5 / 4              (not scored)          -              -
    G    books   0      NULL / 0            NULL / 0              - (empty)      -

MinHash: A, B and C form one cluster; D, E, F and G are alone (each its own cluster).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

import corpusdb
from corpusdb.text import doc_id

TEXTS = {"A": "a" * 10, "B": "b" * 20, "C": "c" * 10, "D": "d" * 40, "E": "e" * 20, "F": "f" * 10, "G": ""}
SOURCES = {"A": "web", "B": "web", "C": "web", "D": "books", "E": "books", "F": "books", "G": "books"}
TEACHER = {"A": (-10, 5), "B": (-20, 10), "C": (-15, 5), "D": (-40, 20), "E": (-30, 10), "F": (-5, 4), "G": (None, 0)}
REFERENCE = {"A": (-30, 6), "B": (-40, 8), "C": (-25, 5), "D": (-60, 30), "E": (-20, 10), "G": (None, 0)}
ID = {name: doc_id(text) for name, text in TEXTS.items()}
NAME = {value: key for key, value in ID.items()}


def commit_part(db: corpusdb.Database, table_name: str, table: pa.Table, *folder: str, models: dict | None = None) -> None:
    """Write `table` as a part of `table_name` and commit it (replacing the table's parts for `minhash`)."""
    written = db.location.write_parquet(table, *folder, "part-fixture.parquet")
    db.register_parts(table_name, [written.path], models=models)


def write_scores(db: corpusdb.Database, model: str, scores: dict, tokenizer: str = "fixture-tokenizer") -> None:
    """Commit hand-made scores under `model` (its identity: a made-up content hash and tokenizer)."""
    names = sorted(scores)
    table = pa.table({
        "doc_id": pa.array([ID[n] for n in names], pa.int64()),
        "sum_logprob": pa.array([scores[n][0] for n in names], pa.float64()),
        "n_tokens": pa.array([scores[n][1] for n in names], pa.int64()),
        "n_bytes": pa.array([len(TEXTS[n].encode()) for n in names], pa.int64()),
    })
    entry = {"model": f"fixture/{model}", "content_hash": f"fixture-{model}", "tokenizer_hash": tokenizer}
    commit_part(db, "scores", table, "scores", f"model={model}", models={model: entry})


def build(folder: Path) -> corpusdb.Database:
    """The fixture database (documents ingested from JSONL, scores and clusters written as Parquet parts)."""
    db = corpusdb.init(str(folder))
    for source in ("web", "books"):
        path = folder.parent / f"{folder.name}-{source}.jsonl"
        path.write_text("".join(json.dumps({"text": TEXTS[n]}) + "\n" for n in TEXTS if SOURCES[n] == source))
        db.ingest([str(path)], source=source, progress=False)
    write_scores(db, "teacher", TEACHER)
    write_scores(db, "reference", REFERENCE)
    cluster = min(ID["A"], ID["B"], ID["C"])
    alone = ["D", "E", "F", "G"]
    clusters = pa.table({
        "doc_id": pa.array([ID["A"], ID["B"], ID["C"]] + [ID[n] for n in alone], pa.int64()),
        "cluster_id": pa.array([cluster] * 3 + [ID[n] for n in alone], pa.int64()),
        "cluster_size": pa.array([3, 3, 3] + [1] * len(alone), pa.int64()),
    })
    commit_part(db, "minhash", clusters, "minhash", "clusters")
    return corpusdb.open(str(folder))


def names(db: corpusdb.Database, sql: str) -> list[str]:
    """The fixture names of the doc_ids a query returns, in its order."""
    return [NAME[row[0]] for row in db.sql(sql).fetchall()]
