"""`corpusdb.json`: marks a folder as a corpusdb database and holds its format version and table schemas.

    python -c "import json; from corpusdb.catalog import Catalog; print(json.dumps(Catalog.new().to_dict(), indent=1))"

It is written once, by `init`. Everything that changes (the live parts of each table, models,
views) lives in the committed versions under `_versions/` (`corpusdb.versions`). Format 1
databases, from before versions, kept models and views here; `corpusdb.legacy` upgrades them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from corpusdb.errors import CatalogError, DatabaseNotFoundError
from corpusdb.storage import Location

CATALOG_FILE = "corpusdb.json"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1 is upgraded in place on open

# Columns every part of a table carries, with their DuckDB types. Ingestion adds meta columns to
# documents (VARCHAR); the scores table gets its `model` column from the hive partition.
TABLE_SCHEMAS: dict[str, dict[str, str]] = {
    "documents": {"doc_id": "BIGINT", "source": "VARCHAR", "text": "VARCHAR", "n_bytes": "BIGINT"},
    "scores": {"doc_id": "BIGINT", "sum_logprob": "DOUBLE", "n_tokens": "BIGINT", "n_bytes": "BIGINT", "model": "VARCHAR"},
    "signatures": {"doc_id": "BIGINT", "signature": "UINTEGER[]"},
    "minhash": {"doc_id": "BIGINT", "cluster_id": "BIGINT", "cluster_size": "BIGINT"},
    "instance_spans": {"instance_id": "BIGINT", "doc_id": "BIGINT", "position": "INTEGER", "byte_start": "BIGINT",
                       "byte_end": "BIGINT", "n_tokens": "BIGINT", "n_bytes": "BIGINT"},
}


@dataclass
class Catalog:
    """The parsed contents of `corpusdb.json` (`legacy` holds a format-1 file's models, views and settings)."""

    format_version: int = FORMAT_VERSION
    created_at: str = ""
    tables: dict[str, dict] = field(default_factory=dict)
    legacy: dict = field(default_factory=dict)

    @classmethod
    def new(cls) -> Catalog:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        tables = {name: {"columns": dict(columns)} for name, columns in TABLE_SCHEMAS.items()}
        return cls(created_at=now, tables=tables)

    def to_dict(self) -> dict:
        return {"format": "corpusdb", "format_version": self.format_version, "created_at": self.created_at, "tables": self.tables}

    @classmethod
    def from_dict(cls, data: dict, url: str) -> Catalog:
        if not isinstance(data, dict) or data.get("format") != "corpusdb":
            raise CatalogError(f"{url}: {CATALOG_FILE} is not a corpusdb catalog; point at a folder made by `corpusdb init`")
        version = data.get("format_version")
        if version not in READABLE_FORMATS:
            raise CatalogError(
                f"{url}: format version {version!r} is not {FORMAT_VERSION}; use the corpusdb release that wrote it"
            )
        tables = {name: {"columns": dict(columns)} for name, columns in TABLE_SCHEMAS.items()}
        legacy = {key: data.get(key) or {} for key in ("models", "views")} if version == 1 else {}
        if version == 1:
            legacy["minhash"] = (data.get("tables") or {}).get("minhash", {}).get("settings")
        return cls(format_version=version, created_at=data.get("created_at", ""), tables=tables, legacy=legacy)


def load_catalog(location: Location) -> Catalog:
    """Read the catalog of the database at `location`."""
    if not location.exists(CATALOG_FILE):
        raise DatabaseNotFoundError(
            f"{location.url}: no corpusdb database here (no {CATALOG_FILE}); create one with `corpusdb init {location.url}`"
        )
    raw = location.read_bytes(CATALOG_FILE)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CatalogError(f"{location.url}/{CATALOG_FILE}: not valid JSON ({exc}); restore it from a backup") from exc
    return Catalog.from_dict(data, location.url)


def catalog_bytes(catalog: Catalog) -> bytes:
    """The catalog as `corpusdb.json` holds it."""
    return json.dumps(catalog.to_dict(), indent=2, sort_keys=True).encode() + b"\n"


def save_catalog(location: Location, catalog: Catalog) -> None:
    """Write the catalog atomically."""
    location.write_atomic(catalog_bytes(catalog), CATALOG_FILE)
