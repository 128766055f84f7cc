"""Score names and the models behind them: list, drop and rename.

    corpusdb models demo/db
    corpusdb models demo/db --rename ref reference
    corpusdb models demo/db --drop student

Each score name is bound to one model's identity (`corpusdb.scoring.commit`). Dropping a name
removes its parts and its identity from the next version (earlier versions keep them, for
`--as-of`); renaming copies its parts under the new name and moves the identity, in one commit.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from corpusdb.scoring.commit import prefix
from corpusdb.scoring.job import NAME_RE
from corpusdb.versions import Snapshot

if TYPE_CHECKING:
    from corpusdb.db import Database


def list_models(db: Database) -> list[dict]:
    """Every score name: its model (path, content and tokenizer hashes, settings) and what it scored."""
    stats = {
        name: (docs, tokens, bits)
        for name, docs, tokens, bits in db.sql(
            "select model, count(*), coalesce(sum(n_tokens), 0), "
            "sum(-sum_logprob) filter (where sum_logprob is not null) / nullif(sum(n_bytes) filter (where sum_logprob is not null), 0) / ln(2) "
            "from scores group by model"
        ).fetchall()
    }
    out = []
    for name in sorted(set(db.snapshot.models) | set(stats)):
        entry = db.snapshot.models.get(name, {})
        docs, tokens, bits = stats.get(name, (0, 0, None))
        out.append({
            "name": name, "model": entry.get("model"), "content_hash": (entry.get("content_hash") or "")[:16],
            "tokenizer_hash": (entry.get("tokenizer_hash") or "")[:16], "architecture": entry.get("architecture"),
            "context": entry.get("context"), "precision": entry.get("precision"), "unit": entry.get("unit") or "documents",
            "n_documents": docs,  # rows scored: documents, or instances with unit "instances"
            "n_tokens": int(tokens), "bits_per_byte": None if bits is None else round(float(bits), 4),
        })
    return out


def _parts_of(snapshot: Snapshot, name: str) -> list[str]:
    """The live parts of score name NAME; raises unless the name exists."""
    parts = [p for p in snapshot.tables["scores"] if p.startswith(prefix(name))]
    if name not in snapshot.models and not parts:
        raise ValueError(f"no scores named {name!r}; `corpusdb models DB` lists them")
    return parts


def drop_model(db: Database, name: str) -> int:
    """Remove score name NAME (its parts and identity) from the next version; returns the rows it held.

    Raises:
        ValueError: no such score name.
    """
    db.writable()
    dropped = []

    def change(snapshot: Snapshot) -> str:
        parts = snapshot.tables["scores"]
        rows = sum(int(parts.pop(path).get("rows") or 0) for path in _parts_of(snapshot, name))
        snapshot.models.pop(name, None)
        dropped.append(rows)
        return f"scores {name} dropped ({rows:,} rows)"

    db.commit("models drop", change)
    return dropped[-1]


def views_reading(db: Database, name: str) -> list[str]:
    """The user views whose SQL, or that of a view they read, names score name NAME as a string ('NAME')."""
    from corpusdb.provenance import definitions

    quoted = f"'{name}'"
    out = []
    for view, entry in sorted(db.snapshot.views.items()):
        sql = entry.get("sql", "")
        try:
            texts = [sql, *definitions(db, sql).values()]
        except Exception:  # noqa: BLE001 - a broken view: its own text is all there is to search
            texts = [sql]
        if any(quoted in text for text in texts):
            out.append(view)
    return out


def rename_model(db: Database, old: str, new: str) -> None:
    """Move score name OLD to NEW: its parts are copied under `scores/model=NEW/` and its identity moves.

    Raises:
        ValueError: OLD does not exist, NEW is not a valid name or is taken.
    """
    db.writable()
    if not NAME_RE.match(new):
        raise ValueError(f"score name {new!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    location = db.location
    copies: dict[str, tuple[str, dict]] = {}

    def change(snapshot: Snapshot) -> str:
        parts = snapshot.tables["scores"]
        moving = _parts_of(snapshot, old)
        if new in snapshot.models or any(p.startswith(prefix(new)) for p in parts):
            raise ValueError(f"score name {new!r} is taken; drop it first (`corpusdb models DB --drop {new}`) or pick another")
        for path in moving:
            info = parts.pop(path)
            if path not in copies:  # the hive partition is the model column, so the files move
                target = f"{prefix(new)}part-{uuid.uuid4().hex}.parquet"
                written = location.write_atomic(location.read_bytes(path), target)
                copies[path] = (target, {**info, "size": written.size, "hash": written.hash})
            parts[copies[path][0]] = copies[path][1]
        if old in snapshot.models:
            snapshot.models[new] = snapshot.models.pop(old)
        return f"scores {old} renamed to {new}"

    db.commit("models rename", change)
