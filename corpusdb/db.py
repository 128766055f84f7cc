"""A corpus database: a folder of Parquet tables plus `corpusdb.json`, queried through DuckDB.

    python -c "import corpusdb; db = corpusdb.open('demo/db'); print(db.sql('select count(*) from documents').fetchall())"

`open` lists each table's parts and registers one DuckDB view per table (`documents`, `scores`, ...)
over them; object storage is read through `duckdb.register_filesystem` with the same fsspec
filesystem corpusdb writes with, so credentials and endpoints are configured once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import duckdb

from corpusdb.catalog import CATALOG_FILE, TABLE_SCHEMAS, Catalog, load_catalog, save_catalog
from corpusdb.errors import QueryError
from corpusdb.storage import Location

if TYPE_CHECKING:
    from corpusdb.dedup import MinhashReport
    from corpusdb.scoring import ScoreReport
    from corpusdb.views import View
    from ingest.job import IngestReport

# table name -> (folder, hive-partitioned)
TABLE_FOLDERS: dict[str, tuple[str, bool]] = {
    "documents": ("documents", False),
    "scores": ("scores", True),
    "signatures": ("minhash/signatures", False),
    "minhash": ("minhash/clusters", False),
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _empty_select(columns: dict[str, str]) -> str:
    cols = ", ".join(f"null::{kind} as {name}" for name, kind in columns.items())
    return f"select {cols} where false"


class Database:
    """An open corpus database: its location, catalog and a DuckDB connection with every table."""

    def __init__(self, location: Location, catalog: Catalog):
        self.location = location
        self.catalog = catalog
        self.con = duckdb.connect()
        if not location.is_local:
            self.con.register_filesystem(location.fs)
        self.refresh()
        from corpusdb.views import load_builtin_views, load_user_views

        load_builtin_views(self.con)
        self.broken_views = load_user_views(self)

    @property
    def url(self) -> str:
        return self.location.url

    def __repr__(self) -> str:
        return f"<corpusdb.Database {self.url}>"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def parts(self, table: str) -> list[str]:
        """Paths (inside the filesystem) of the Parquet parts of `table`, sorted."""
        if table not in TABLE_FOLDERS:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLE_FOLDERS)}")
        folder, _ = TABLE_FOLDERS[table]
        return self.location.list_files(folder, suffix=".parquet")

    def refresh(self) -> None:
        """Re-list every table's parts (after a job added some) and re-create the DuckDB views."""
        self.location.invalidate()
        for table, (_, hive) in TABLE_FOLDERS.items():
            paths = self.parts(table)
            if paths:
                urls = ", ".join(_quote(self.location.url_of(path)) for path in paths)
                options = "union_by_name = true" + (", hive_partitioning = true" if hive else "")
                body = f"select * from read_parquet([{urls}], {options})"
            else:
                body = _empty_select(TABLE_SCHEMAS[table])
            self.con.execute(f"create or replace view {table} as {body}")

    def sql(self, query: str, params: Iterable | dict | None = None) -> duckdb.DuckDBPyRelation:
        """Run SQL over the database; returns a DuckDB relation (`.pl()`, `.to_arrow_table()`, `.fetchall()`).

        Raises:
            QueryError: the statement does not parse or names an unknown table, view or column.
        """
        try:
            return self.con.sql(query, params=params)
        except duckdb.Error as exc:
            message = str(exc).strip().splitlines()[0]
            raise QueryError(f"{message}; tables and views: {', '.join(self.relations())}") from exc

    def relations(self) -> list[str]:
        """Names of the tables and views a query can use."""
        rows = self.con.execute("select view_name from duckdb_views() where not internal order by 1").fetchall()
        return [name for (name,) in rows]

    def save_catalog(self) -> None:
        save_catalog(self.location, self.catalog)

    def ingest(self, sources: list[str], **options) -> IngestReport:
        """Ingest files, folders or globs into `documents`; see `ingest.job.run_ingest` for options."""
        from ingest.job import run_ingest

        report = run_ingest(self, sources, **options)
        self.refresh()
        return report

    def score(self, model: str, name: str, **options) -> ScoreReport:
        """Score the documents not yet scored under `name` with a causal LM; see `corpusdb.scoring.run_score`."""
        from corpusdb.scoring import run_score

        return run_score(self, model, name, **options)

    def minhash(self, **options) -> MinhashReport:
        """MinHash signatures of new documents, then near-duplicate clusters; see `corpusdb.dedup.run_minhash`."""
        from corpusdb.dedup import run_minhash

        return run_minhash(self, **options)

    def create_view(self, name: str, sql: str, replace: bool = False) -> View:
        """Validate and save a user view (`views/NAME.sql`); see `corpusdb.views.create_view`."""
        from corpusdb.views import create_view

        create_view(self, name, sql, replace=replace)
        return self.view(name)

    def drop_view(self, name: str) -> None:
        """Remove a user view."""
        from corpusdb.views import drop_view

        drop_view(self, name)

    def views(self) -> list[dict]:
        """Built-in and user views with their descriptions."""
        from corpusdb.views import list_views

        return list_views(self)

    def view(self, view: str) -> View:
        """A view by name, a macro call (`difference('teacher', 'ref', alpha := 0.3)`) or a select."""
        from corpusdb.views import View

        return View(self, view)

    def stats(self) -> dict:
        """Documents and bytes in all and per source."""
        total = self.con.execute("select count(*), coalesce(sum(n_bytes), 0) from documents").fetchall()[0]
        rows = self.con.execute(
            "select source, count(*) as n_documents, sum(n_bytes) as n_bytes from documents group by source order by source"
        ).fetchall()
        return {
            "url": self.url,
            "n_documents": total[0],
            "n_bytes": int(total[1]),
            "n_parts": len(self.parts("documents")),
            "sources": [{"source": s, "n_documents": n, "n_bytes": int(b)} for s, n, b in rows],
        }


def init(url: str, storage_options: dict | None = None) -> Database:
    """Create a database at `url` (a local path or fsspec URL), or open it if one is there already."""
    location = Location(url, storage_options or {})
    if not location.exists(CATALOG_FILE):
        if location.is_local:
            location.fs.makedirs(location.path, exist_ok=True)
        save_catalog(location, Catalog.new())
    return Database(location, load_catalog(location))


def open(url: str, storage_options: dict | None = None) -> Database:  # noqa: A001 - mirrors sqlite3/duckdb naming
    """Open the database at `url`.

    Raises:
        DatabaseNotFoundError: no `corpusdb.json` there.
        StorageError: the URL cannot be reached or read.
    """
    location = Location(url, storage_options or {})
    return Database(location, load_catalog(location))

