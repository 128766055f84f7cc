"""The tables of a database and their folders: the fixed tables, and annotations (one table per name).

    python -c "from corpusdb.tables import TABLE_FOLDERS; print(TABLE_FOLDERS)"

Every table is a set of Parquet parts under its folder, listed by the committed version
(`corpusdb.versions`). The fixed tables are one DuckDB view each. Annotations are open-ended: the
version's `annotations` table holds the parts of every annotation, `annotations/NAME/part-*.parquet`,
and each registered NAME (`Snapshot.annotations`) is the DuckDB view `annotations_NAME`.
"""

from __future__ import annotations

import re

# table name -> (folder, hive-partitioned)
TABLE_FOLDERS: dict[str, tuple[str, bool]] = {
    "documents": ("documents", False),
    "scores": ("scores", True),
    "signatures": ("minhash/signatures", False),
    "minhash": ("minhash/clusters", False),
    "instance_spans": ("instances", False),
}
VIEW_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # user views
ANNOTATIONS = "annotations"  # the table (and folder) of every annotation's parts
ANNOTATION_VIEW_PREFIX = "annotations_"
ANNOTATION_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
TABLES = (*TABLE_FOLDERS, ANNOTATIONS)
# the top folders that hold every table's parts (what vacuum sweeps and an open's size check lists)
PART_FOLDERS = tuple(sorted({folder.split("/")[0] for folder, _ in TABLE_FOLDERS.values()} | {ANNOTATIONS}))


def schema_key(schema) -> str:
    """A short key of a part's Arrow schema (column names and types): parts with equal keys are read
    as one `read_parquet` without `union_by_name`, so DuckDB binds them from one file's footer."""
    import xxhash

    text = "|".join(f"{field.name}:{field.type}" for field in schema)
    return xxhash.xxh3_64_hexdigest(text.encode())[:12]


def annotation_view(name: str) -> str:
    """The DuckDB view of annotation NAME: `annotations_NAME`."""
    return ANNOTATION_VIEW_PREFIX + name


def annotation_prefix(name: str) -> str:
    """The folder of annotation NAME's parts, relative to the database."""
    return f"{ANNOTATIONS}/{name}/"


def check_annotation_name(name: str) -> str:
    """NAME, if it can name an annotation (a SQL identifier once prefixed with `annotations_`).

    Raises:
        ValueError: naming the rule.
    """
    if not ANNOTATION_NAME_RE.match(name or ""):
        raise ValueError(f"annotation name {name!r} must be 1-48 lowercase letters, digits or '_', starting with a letter")
    return name


def annotation_columns(entry: dict) -> dict[str, str]:
    """{column: DuckDB type} of an annotation's entry, in order (stored as [name, type] pairs: versions sort keys)."""
    return {name: kind for name, kind in entry.get("columns") or []}


def column_pairs(columns: dict[str, str]) -> list[list[str]]:
    """Columns as the version stores them: [name, type] pairs, in order."""
    return [[name, kind] for name, kind in columns.items()]
