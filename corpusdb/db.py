"""A corpus database: a folder of Parquet tables plus `corpusdb.json`, queried through DuckDB.

    python -c "import corpusdb; db = corpusdb.open('demo/db'); print(db.version, db.sql('select count(*) from documents').fetchall())"

`open` reads the latest committed version (or the one named by `as_of`) and registers one DuckDB
view per table (`documents`, `scores`, ...) over exactly the parts that version lists, so a
reader never sees a part a job is still writing, and a version read later gives the same rows.
Object storage is read through `duckdb.register_filesystem` with the same fsspec filesystem
corpusdb writes with, so credentials and endpoints are configured once.

DuckDB runs confined: it may read files only under the database's folder (and paths the caller
names with `allow`), never write files, attach databases or install extensions, so a view saved
by someone else cannot read `/etc/passwd` or write anywhere. `unsafe=True` lifts this for SQL the
user types on their own machine (`corpusdb sql --unsafe`).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import duckdb

from corpusdb import versions
from corpusdb.catalog import CATALOG_FILE, TABLE_SCHEMAS, Catalog, catalog_bytes, load_catalog
from corpusdb.errors import QueryError, VersionError
from corpusdb.storage import Location
from corpusdb.versions import Snapshot

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
    "instance_spans": ("instances", False),
}
MODEL_COLUMNS = {"model": "VARCHAR", "content_hash": "VARCHAR", "tokenizer_hash": "VARCHAR", "path": "VARCHAR", "unit": "VARCHAR"}


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _empty_select(columns: dict[str, str]) -> str:
    cols = ", ".join(f"null::{kind} as {name}" for name, kind in columns.items())
    return f"select {cols} where false"


def query_error(exc: duckdb.Error) -> str:
    """DuckDB's message on one line, its hints kept ("Did you mean", candidate bindings), its caret drawing dropped."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    kept = [line for line in lines if not set(line) <= {"^", " "}]
    message = "; ".join(kept) if kept else type(exc).__name__
    if isinstance(exc, duckdb.PermissionException):
        message += ("; queries may read only the database's own files: pass --allow PATH (allow= in Python), "
                    "or --unsafe for SQL you typed yourself")
    return message


def allowed_directories(location: Location) -> list[str]:
    """The spellings of a location's folder that DuckDB's `allowed_directories` must list."""
    if location.is_local:
        return [os.path.abspath(location.path).rstrip("/") + "/"]
    path = location.path.strip("/")
    return [f"{location.protocol}://{path}/", f"{location.protocol}:///{path}/"]


class Database:
    """An open corpus database at one version: its location, catalog, snapshot and a DuckDB connection.

    Args:
        as_of: a committed version to read instead of the latest (read-only).
        allow: more local paths or URLs DuckDB may read (e.g. a CSV the user joins against).
        unsafe: give DuckDB full access to files and extensions (SQL typed by the user).
    """

    def __init__(self, location: Location, catalog: Catalog, *, as_of: int | None = None,
                 allow: Iterable[str] = (), unsafe: bool = False):
        self.location = location
        self.catalog = catalog
        self.as_of = as_of
        self.unsafe = unsafe
        self._con = self._connect(allow)
        self.snapshot: Snapshot = versions.load(location, as_of)
        from corpusdb.views import load_builtin_views

        self._loaded: int | None = self.snapshot.version  # the version the DuckDB views show
        self._create_tables()
        load_builtin_views(self._con)  # after the tables they read, before user views that may use them
        self._load_user_views()

    def _connect(self, allow: Iterable[str]) -> duckdb.DuckDBPyConnection:
        config = {} if self.unsafe else {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        con = duckdb.connect(config=config)
        if not self.location.is_local:
            con.register_filesystem(self.location.fs)
        if not self.unsafe:
            dirs, files = allowed_directories(self.location), []
            for extra in allow:
                where = Location(extra, self.location.storage_options)
                if where.fs.isfile(where.path):
                    files += [os.path.abspath(where.path)] if where.is_local else [where.url_of(where.path)]
                else:
                    dirs += allowed_directories(where)
            con.execute("set allowed_directories = ?", [dirs])
            if files:
                con.execute("set allowed_paths = ?", [files])
            con.execute("set enable_external_access = false")
        return con

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, its views over this database's current version.

        A commit or refresh only moves `snapshot`; the views follow at the next use of `con`, so a
        job committing every minute over 100k parts does not re-read every part's footer each time.
        """
        if self._loaded != self.snapshot.version:
            self._load()
        return self._con

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def version(self) -> int:
        """The committed version this database reads (0: nothing committed yet)."""
        return self.snapshot.version

    @property
    def read_only(self) -> bool:
        return self.as_of is not None

    def __repr__(self) -> str:
        return f"<corpusdb.Database {self.url} version {self.version}>"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def parts(self, table: str) -> list[str]:
        """Paths (inside the filesystem) of the Parquet parts of `table` at this version, sorted."""
        if table not in TABLE_FOLDERS:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLE_FOLDERS)}")
        return [self.location.join(path) for path in self.snapshot.parts(table)]

    def refresh(self) -> None:
        """Read the latest committed version (unless opened `as_of` one) and re-create the views over it."""
        if self.as_of is None:
            self.location.invalidate()
            latest = versions.load(self.location)
            if latest.version == self.snapshot.version:
                return  # parts never change, so the same version is the same tables
            self.snapshot = latest
        self._loaded = None  # re-created at the next use of `con`

    def _load(self) -> None:
        """Re-create the table views and user views over `self.snapshot` (the built-ins never change)."""
        self._loaded = self.snapshot.version  # before: loading the user views uses `con`
        try:
            self._create_tables()
            self._load_user_views()
        except BaseException:
            self._loaded = None
            raise

    def _create_tables(self) -> None:
        for table, (_, hive) in TABLE_FOLDERS.items():
            paths = self.parts(table)
            if paths:
                urls = ", ".join(quote(self.location.url_of(path)) for path in paths)
                options = "union_by_name = true" + (", hive_partitioning = true" if hive else "")
                body = f"select * from read_parquet([{urls}], {options})"
            else:
                body = _empty_select(TABLE_SCHEMAS[table])
            try:
                self._con.execute(f"create or replace view {table} as {body}")
            except duckdb.IOException as exc:
                missing = [p for p in paths if not self.location.fs.exists(p)]
                if not missing:
                    raise
                raise VersionError(
                    f"{self.url}: version {self.version} lists {len(missing)} part(s) of {table} that are missing "
                    f"(e.g. {self.location.url_of(missing[0])}); restore them, or read an earlier version with --as-of"
                ) from exc
        rows = [
            f"({quote(name)}, {quote(str(entry.get('content_hash') or ''))}, {quote(str(entry.get('tokenizer_hash') or ''))}, "
            f"{quote(str(entry.get('model') or ''))}, {quote(entry.get('unit') or 'documents')})"
            for name, entry in sorted(self.snapshot.models.items())
        ]
        columns = ", ".join(MODEL_COLUMNS)
        body = f"select * from (values {', '.join(rows)}) as t({columns})" if rows else _empty_select(MODEL_COLUMNS)
        self._con.execute(f"create or replace view models as {body}")

    def _load_user_views(self) -> None:
        from corpusdb.views import load_user_views

        self.broken_views = load_user_views(self)

    def sql(self, query: str, params: Iterable | dict | None = None) -> duckdb.DuckDBPyRelation:
        """Run SQL over the database; returns a DuckDB relation (`.pl()`, `.to_arrow_table()`, `.fetchall()`).

        Raises:
            QueryError: the statement does not parse, names an unknown table, view or column, or
                a policy refuses its arguments (DuckDB's message and hints, on one line).
        """
        try:
            return self.con.sql(query, params=params)
        except duckdb.Error as exc:
            raise QueryError(self.explain_error(exc)) from exc

    @contextlib.contextmanager
    def query_errors(self) -> Iterator[None]:
        """Turn DuckDB errors raised inside (while a query runs) into one-line `QueryError`s."""
        try:
            yield
        except duckdb.Error as exc:
            raise QueryError(self.explain_error(exc)) from exc

    def explain_error(self, exc: duckdb.Error) -> str:
        """A DuckDB error as one line, with what to do where DuckDB does not say."""
        message = query_error(exc)
        if isinstance(exc, duckdb.CatalogException):
            # DuckDB's guess is kept when it names one of ours, not a system table like pg_sequences
            relations = self.relations()
            guess = re.search(r'; Did you mean "([^"]+)"\??', message)
            if guess and guess.group(1) not in relations:
                message = message[: guess.start()] + message[guess.end():]
                guess = None
            if not guess:
                message += f"; tables and views: {', '.join(relations)}"
            for name in self.broken_views:  # a saved view that no longer runs reads as "does not exist"
                if re.search(rf"\b{name}\b", message):
                    message += (f"; view {name!r} is saved but does not run over this version "
                                "(`corpusdb view list` shows it as broken; re-create it with --replace)")
        return message

    def relations(self) -> list[str]:
        """Names of the tables and views a query can use."""
        rows = self.con.execute("select view_name from duckdb_views() where not internal order by 1").fetchall()
        return [name for (name,) in rows]

    def commit(self, operation: str, change: Callable[[Snapshot], str | None]) -> Snapshot:
        """Apply `change` to the latest version and commit it (see `corpusdb.versions.commit`); then read it
        (its views are made at the next use of `con`)."""
        self.writable()
        self.snapshot = versions.commit(self.location, operation, change)
        return self.snapshot

    def register_parts(self, table: str, paths: Iterable[str], models: dict | None = None) -> Snapshot:
        """Commit Parquet files already written under the table's folder as parts of `table` (with `models`
        entries for scores), e.g. tables computed by another engine; `minhash` parts replace the table's.

        Raises:
            ValueError: an unknown table, or a file outside the table's folder.
        """
        if table not in TABLE_FOLDERS:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLE_FOLDERS)}")
        folder = self.location.join(TABLE_FOLDERS[table][0]) + "/"
        found = []
        for path in paths:
            full = path if path.startswith(folder) else self.location.join(path)
            if not full.startswith(folder):
                raise ValueError(f"{path} is not under {folder}; write parts of {table} there")
            found.append(versions.existing_part(self.location, full))

        def change(snapshot: Snapshot) -> str:
            if table == "minhash":
                snapshot.tables["minhash"] = {}
            for written, rows in found:
                snapshot.add_part(table, self.location, written, rows)
            snapshot.models.update(models or {})
            return f"{len(found)} parts of {table} registered"

        return self.commit("register", change)

    def writable(self) -> None:
        """Raise unless this database may be changed (it was not opened `as_of` a version)."""
        if self.read_only:
            raise VersionError(f"{self.url} is open as of version {self.as_of}, read-only; open the latest version to change it")

    def ingest(self, sources: list[str], **options) -> IngestReport:
        """Ingest files, folders or globs into `documents`; see `ingest.job.run_ingest` for options."""
        from ingest.job import run_ingest

        self.writable()
        report = run_ingest(self, sources, **options)
        self.refresh()
        return report

    def score(self, model: str, name: str, **options) -> ScoreReport:
        """Score the documents not yet scored under `name` with a causal LM; see `corpusdb.scoring.run_score`."""
        from corpusdb.scoring import run_score

        self.writable()
        return run_score(self, model, name, **options)

    def minhash(self, **options) -> MinhashReport:
        """MinHash signatures of new documents, then near-duplicate clusters; see `corpusdb.dedup.run_minhash`."""
        from corpusdb.dedup import run_minhash

        self.writable()
        return run_minhash(self, **options)

    def create_view(self, name: str, sql: str, replace: bool = False) -> View:
        """Validate and commit a user view (a warning if it selects no rows); see `corpusdb.views.create_view`."""
        from corpusdb.views import create_view

        if not create_view(self, name, sql, replace=replace):
            warnings.warn(f"view {name!r} selects no rows now; check its filters and score names", stacklevel=2)
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

    def models(self) -> list[dict]:
        """Score names with their model's identity, documents scored, tokens and bits per byte."""
        from corpusdb.models import list_models

        return list_models(self)

    def stats(self) -> dict:
        """Documents and bytes in all and per source, the version, the scored models (documents or
        instances scored by each, and which), documents with near-duplicate clusters, the instances
        and the views."""
        total = self.con.execute("select count(*), coalesce(sum(n_bytes), 0) from documents").fetchall()[0]
        rows = self.con.execute(
            "select source, count(*) as n_documents, sum(n_bytes) as n_bytes from documents group by source order by source"
        ).fetchall()
        return {
            "url": self.url,
            "version": self.version,
            "n_documents": total[0],
            "n_bytes": int(total[1]),
            "n_parts": len(self.snapshot.parts("documents")),
            "sources": [{"source": s, "n_documents": n, "n_bytes": int(b)} for s, n, b in rows],
            "models": sorted(self.snapshot.models),
            "scored": self._scored_documents(),
            "n_clustered": sum(int(info.get("rows") or 0) for info in self.snapshot.tables.get("minhash", {}).values()),
            "units": {name: entry.get("unit") or "documents" for name, entry in sorted(self.snapshot.models.items())},
            "instances": self._instances(),
            "views": sorted(self.snapshot.views),
        }

    def _instances(self) -> dict | None:
        """How the documents were cut into instances (`corpusdb instances`) and how many there are, or None."""
        settings = self.snapshot.settings.get("instances")
        if not settings:
            return None
        rows = sum(int(info.get("rows") or 0) for info in self.snapshot.tables.get("instance_spans", {}).values())
        return {"n_instances": rows, "tokens": settings.get("tokens"), "tokenizer": settings.get("tokenizer"),
                "tokenizer_hash": settings.get("tokenizer_hash")}

    def _scored_documents(self) -> dict[str, int]:
        """Documents with scores per score name, from the version's part records (no file is read)."""
        counts = {name: 0 for name in self.snapshot.models}
        for path, info in self.snapshot.tables.get("scores", {}).items():
            folder = path.split("/")[1] if path.count("/") >= 2 else ""
            if folder.startswith("model="):
                name = folder[len("model="):]
                counts[name] = counts.get(name, 0) + int(info.get("rows") or 0)
        return dict(sorted(counts.items()))


def _catalog(location: Location) -> Catalog:
    catalog = load_catalog(location)
    if catalog.format_version == 1:
        from corpusdb.legacy import upgrade

        catalog = upgrade(location, catalog)
    return catalog


def init(url: str, storage_options: dict | None = None) -> Database:
    """Create a database at `url` (a local path or fsspec URL), or open it if one is there already."""
    location = Location(url, storage_options or {})
    if not location.exists(CATALOG_FILE):
        if location.is_local:
            location.fs.makedirs(location.path, exist_ok=True)
        location.create_exclusive(catalog_bytes(Catalog.new()), CATALOG_FILE)
    return Database(location, _catalog(location))


def open(url: str, storage_options: dict | None = None, *, as_of: int | None = None, allow: Iterable[str] = (),  # noqa: A001
         unsafe: bool = False) -> Database:
    """Open the database at `url`, at its latest version or at version `as_of` (read-only).

    Raises:
        DatabaseNotFoundError: no `corpusdb.json` there.
        VersionError: `as_of` is not a committed version.
        StorageError: the URL cannot be reached or read.
    """
    location = Location(url, storage_options or {})
    return Database(location, _catalog(location), as_of=as_of, allow=allow, unsafe=unsafe)


__all__ = ["Database", "init", "open"]
