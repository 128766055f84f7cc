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
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator

import duckdb

from corpusdb import docindex, versions
from corpusdb.catalog import CATALOG_FILE, TABLE_SCHEMAS, Catalog, catalog_bytes, load_catalog
from corpusdb.covers import FIELD as COVERS
from corpusdb.covers import check as covers_check
from corpusdb.covers import TABLES as COVERED_TABLES
from corpusdb.covers import instance_models, of_instances, task_parts
from corpusdb.errors import QueryError, VersionError
from corpusdb.integrity import check_sizes
from corpusdb.policies import load_builtin_views
from corpusdb.statements import check_read_only, check_select, check_statement, query_error, quote
from corpusdb.storage import Location
from corpusdb.tables import (
    ANNOTATION_VIEW_PREFIX,
    ANNOTATIONS,
    TABLE_FOLDERS,
    VIEW_NAME_RE,
    annotation_columns,
    annotation_prefix,
    annotation_view,
)
from corpusdb.versions import Snapshot

MEMORY_LIMIT_ENV = "CORPUSDB_MEMORY_LIMIT"  # DuckDB's memory limit for every database a process opens
TEMP_ENV = "CORPUSDB_TEMP_DIRECTORY"  # where DuckDB spills (default: the system's temporary folder)
MODEL_COLUMNS = {"model": "VARCHAR", "content_hash": "VARCHAR", "tokenizer_hash": "VARCHAR", "path": "VARCHAR", "unit": "VARCHAR"}


def _empty_select(columns: dict[str, str]) -> str:
    cols = ", ".join(f'null::{kind} as "{name}"' for name, kind in columns.items())
    return f"select {cols} where false"


def set_memory_limit(con: duckdb.DuckDBPyConnection, limit: str) -> None:
    """DuckDB's memory limit on `con`.

    Raises:
        ValueError: `limit` is not a size DuckDB reads.
    """
    try:
        con.execute("set memory_limit = ?", [str(limit)])
    except duckdb.Error as error:
        raise ValueError(f"memory limit {limit!r} is not a size DuckDB reads; give a number and a unit, e.g. 4GB or "
                         "500MB") from error


def own_spill_folder(con: duckdb.DuckDBPyConnection) -> str:
    """Make what `con` spills go to a folder of its own (DuckDB's default is `.tmp` in the working directory), made
    only when something spills; returns it, for the caller to remove with the connection."""
    spill = os.path.join(os.environ.get(TEMP_ENV) or tempfile.gettempdir(), f"corpusdb-spill-{uuid.uuid4().hex}")
    con.execute("set temp_directory = ?", [spill])
    return spill


def allowed_directories(location: Location) -> list[str]:
    """The spellings of a location's folder that DuckDB's `allowed_directories` must list."""
    if location.is_local:
        return [os.path.abspath(location.path).rstrip("/") + "/"]
    path = location.path.strip("/")
    return [f"{location.protocol}://{path}/", f"{location.protocol}:///{path}/"]


def _dependency_order(statements: dict[str, str]) -> list[str]:
    """The names of `statements` (view creations), each after the others whose name its SQL mentions as a word:
    DuckDB binds a view at creation, and one created before a view it reads fails and is tried again (each
    failed try binds it; an open of the experiment's 19 views spent 0.25 of its 1.1 s on them). A name in a
    string or a cycle only costs that retry."""
    words = {name: set(re.findall(r"[a-z_][a-z0-9_]*", sql.lower())) & statements.keys() - {name}
             for name, sql in statements.items()}
    order: list[str] = []
    seen: set[str] = set()
    for root in statements:  # depth first, without recursion (a chain may be longer than Python's stack)
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(sorted(words[root])))]
        while stack:
            name, others = stack[-1]
            other = next((o for o in others if o not in seen), None)
            if other is None:
                order.append(name)
                stack.pop()
            else:
                seen.add(other)
                stack.append((other, iter(sorted(words[other]))))
    return order


class Database:
    """An open corpus database at one version: its location, catalog, snapshot and a DuckDB connection.

    This is what jobs receive (ingest, score, minhash, annotate, export): tables, SQL and commits.
    `corpusdb.open` returns `corpusdb.api.Database`, which adds the jobs as methods.

    Args:
        as_of: a committed version to read instead of the latest (read-only).
        allow: more local paths or URLs DuckDB may read (e.g. a CSV the user joins against).
        unsafe: give DuckDB full access to files and extensions (SQL typed by the user).
        memory_limit: DuckDB's memory limit for this database's queries ("6GB"); beyond it sorts,
            joins and aggregates spill to a temporary folder of the connection's own. Default: the
            CORPUSDB_MEMORY_LIMIT environment variable, else DuckDB's (80% of RAM).
    """

    def __init__(self, location: Location, catalog: Catalog, *, as_of: int | None = None,
                 allow: Iterable[str] = (), unsafe: bool = False, memory_limit: str | None = None):
        self.location = location
        self.catalog = catalog
        self.as_of = as_of
        self.unsafe = unsafe
        self._con = self._connect(allow, memory_limit or os.environ.get(MEMORY_LIMIT_ENV) or None)
        # fsspec shares one filesystem object (and its listing cache) per storage options in a
        # process: a part another process committed since this process listed its folder must be seen
        location.invalidate()
        self.snapshot: Snapshot = versions.load(location, as_of)
        check_sizes(location, self.snapshot)  # what it reads is what was committed (corpusdb.integrity)
        self._annotation_views: set[str] = set()
        self._user_views: dict[str, str] = {}  # name: the statement that created it on this connection
        self.broken_views: list[str] = []
        self._tables_signature: list | None = None  # the columns of the views user views read, at their creation
        self._loaded: int | None = self.snapshot.version  # the version the DuckDB views show
        self._create_tables()
        load_builtin_views(self._con)  # after the tables they read, before user views that may use them
        self._load_user_views()

    @classmethod
    def connect(cls, url: str, storage_options: dict | None = None, *, as_of: int | None = None,
                allow: Iterable[str] = (), unsafe: bool = False, memory_limit: str | None = None):
        """Open the database at `url`, at its latest version or at version `as_of` (read-only).

        Raises:
            DatabaseNotFoundError: no `corpusdb.json` there.
            VersionError: `as_of` is not a committed version.
            StorageError: the URL cannot be reached or read.
        """
        location = Location(url, storage_options or {})
        return cls(location, _catalog(location), as_of=as_of, allow=allow, unsafe=unsafe, memory_limit=memory_limit)

    @classmethod
    def create(cls, url: str, storage_options: dict | None = None, *, memory_limit: str | None = None):
        """Create a database at `url` (a local path or fsspec URL), or open it if one is there already."""
        location = Location(url, storage_options or {})
        if not location.exists(CATALOG_FILE):
            if location.is_local:
                location.fs.makedirs(location.path, exist_ok=True)
            location.create_exclusive(catalog_bytes(Catalog.new()), CATALOG_FILE)
        return cls(location, _catalog(location), memory_limit=memory_limit)

    def _connect(self, allow: Iterable[str], memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        config = {} if self.unsafe else {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        con = duckdb.connect(config=config)
        # parts never change once written, so their footers can be cached for every later query
        con.execute("set parquet_metadata_cache = true")
        if memory_limit is not None:
            set_memory_limit(con, memory_limit)
        self._spilled = weakref.finalize(self, shutil.rmtree, own_spill_folder(con), True)
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
        self._spilled()  # DuckDB's temporary files, if anything spilled

    def parts(self, table: str) -> list[str]:
        """Paths (inside the filesystem) of the Parquet parts of `table` at this version, sorted."""
        if table not in TABLE_FOLDERS and table != ANNOTATIONS:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLE_FOLDERS)}, {ANNOTATIONS}")
        return [self.location.join(path) for path in self.snapshot.parts(table)]

    def refresh(self) -> None:
        """Read the latest committed version (unless opened `as_of` one) and re-create the views over it."""
        if self.as_of is None:
            self.location.invalidate()
            latest = versions.load(self.location)
            if latest.version == self.snapshot.version:
                return  # parts never change, so the same version is the same tables
            check_sizes(self.location, latest)
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
            schemas = [info.get("schema") for _, info in sorted(self.snapshot.tables.get(table, {}).items())]
            self._create_view(table, paths, TABLE_SCHEMAS[table], hive, schemas, derived=self._derived(table))
        self._create_annotation_views()
        rows = [
            f"({quote(name)}, {quote(str(entry.get('content_hash') or ''))}, {quote(str(entry.get('tokenizer_hash') or ''))}, "
            f"{quote(str(entry.get('model') or ''))}, {quote(entry.get('unit') or 'documents')})"
            for name, entry in sorted(self.snapshot.models.items())
        ]
        columns = ", ".join(MODEL_COLUMNS)
        body = f"select * from (values {', '.join(rows)}) as t({columns})" if rows else _empty_select(MODEL_COLUMNS)
        self._con.execute(f"create or replace view models as {body}")

    def _derived(self, table: str) -> str | None:
        """Columns a table's view adds to what its parts store (select-list SQL), or None.

        scores: the stored key `doc_id` is the key of the unit scored, an instance_id for instance
        scores (`corpusdb score --unit instances`); the view names it for what it is as `unit_id`
        (every score) and `instance_id` (instance scores only, else NULL). doc_id stays, for queries
        and databases written before.
        """
        if table != "scores":
            return None
        keyed = instance_models(self.snapshot)
        instances = f"case when model in ({', '.join(quote(m) for m in keyed)}) then doc_id end" if keyed else "null::bigint"
        return f"doc_id as unit_id, {instances} as instance_id"

    def restrict(self, parts: list[str]) -> tuple[int, int] | None:
        """Let this connection's `documents` show only `parts` (some of this version's documents parts),
        `instance_spans` only their spans, `scores` only the rows whose doc_id lies within theirs (every row of
        instance scores), each read from the parts that may hold them (`corpusdb.covers`), and each annotation
        view only the parts annotating them (or annotating no live part): what one task of a distributed plan
        reads (`corpusdb.distributed`). Returns the parts' (smallest, largest) doc_id, None where they hold none.

        Raises:
            ValueError: a path that is not a documents part of this version.
        """
        own = dict(zip(self.parts("documents"), sorted(self.snapshot.tables.get("documents", {}).items())))
        stray = [p for p in parts if p not in own]
        if stray:
            raise ValueError(f"{stray[0]} is not a documents part of {self.url} version {self.version}")
        _, hive = TABLE_FOLDERS["documents"]
        self._create_view("documents", list(parts), TABLE_SCHEMAS["documents"], hive, [own[p][1].get("schema") for p in parts])
        low, high = self._con.execute("select min(doc_id), max(doc_id) from documents").fetchall()[0]
        bounds = (low, high) if low is not None else (0, -1)  # no documents: no scores either
        _, hive = TABLE_FOLDERS["scores"]
        records = self.snapshot.tables.get("scores", {})
        # the score parts covering these parts (and those of unknown cover: `corpusdb.covers`); the range prunes
        # row groups by their statistics where doc_ids cluster, where they do not (content hashes) nothing else would
        relative = {own[p][0] for p in parts}  # as the version's records name them
        scores = task_parts(self.snapshot, relative)
        within = f"doc_id between {int(bounds[0])} and {int(bounds[1])}"
        # instance scores are keyed by instance_id, which no range of doc_ids bounds: theirs are kept whole (the
        # instances view joins only this task's documents' spans, so only their scores ever join)
        keyed = instance_models(self.snapshot)
        where = f"model in ({', '.join(quote(m) for m in keyed)}) or {within}" if keyed else within
        self._create_view("corpusdb_task_scores", [self.location.join(p) for p in scores], TABLE_SCHEMAS["scores"], hive,
                          [records[p].get("schema") for p in scores], derived=self._derived("scores"), where=where)
        spans = self.snapshot.tables.get("instance_spans", {})
        if spans:  # the spans of these documents alone (a span's doc_id is its document's), from the parts covering them
            _, hive = TABLE_FOLDERS["instance_spans"]
            read = task_parts(self.snapshot, relative, "instance_spans")
            self._create_view("instance_spans", [self.location.join(p) for p in read], TABLE_SCHEMAS["instance_spans"],
                              hive, [spans[p].get("schema") for p in read], derived=self._derived("instance_spans"),
                              where=within)
        # each annotation: the parts of these documents parts (an annotation part records the one it annotates, `of`),
        # an imported part that covers one of them, and any other whose documents are not known (no live `of` and no
        # covers: imported before `corpusdb models --covers`, or of a part since rewritten)
        for name, entry in sorted(self.snapshot.annotations.items()):
            read = task_parts(self.snapshot, relative, ANNOTATIONS, annotation_prefix(name))
            self._create_view(annotation_view(name), [self.location.join(p) for p in read],
                              {"doc_id": "BIGINT", **annotation_columns(entry)})
        # one keyless row per scored model (a NULL doc_id joins nothing): a policy's "no scores named X" check
        # sees every model of the version, as it does unrestricted
        models = sorted({m.group(1) for p in self.snapshot.parts("scores") if (m := re.search(r"(?:^|/)model=([^/]+)/", p))})
        if models:
            rows = ", ".join(f"({quote(m)})" for m in models)
            self._con.execute("create or replace view scores as select * from corpusdb_task_scores union all by name "
                              f"select null::bigint as doc_id, model from (values {rows}) as t(model)")
        else:
            self._con.execute("create or replace view scores as select * from corpusdb_task_scores")
        return (low, high) if low is not None else None

    def _create_view(self, view: str, paths: list[str], columns: dict[str, str], hive: bool = False,
                     schemas: list[str | None] | None = None, derived: str | None = None, where: str | None = None) -> None:
        """The view VIEW over the Parquet parts `paths` (an empty relation of `columns` without parts).

        Parts whose records carry their schema's key (`tables.schema_key`) are read one `read_parquet`
        per schema, without `union_by_name`, so binding reads one footer per schema instead of every
        part's (30k parts: seconds per query); where any part lacks the key, one `union_by_name` read.
        """
        body = self._parts_sql(paths, columns, hive, schemas, derived, where)
        try:
            self._con.execute(f"create or replace view {view} as {body}")
        except duckdb.IOException as exc:
            missing = [p for p in paths if not self.location.fs.exists(p)]
            if not missing:
                raise
            raise VersionError(
                f"{self.url}: version {self.version} lists {len(missing)} part(s) of {view} that are missing "
                f"(e.g. {self.location.url_of(missing[0])}); restore them, or read an earlier version with --as-of"
            ) from exc

    def parts_sql(self, table: str, parts: list[str], file_column: str | None = None) -> str:
        """SQL of the rows of some of `table`'s parts at this version (paths relative to the database), as its view
        reads them (`file_column`: a column naming each row's part, its URL as `location.url_of` gives it)."""
        records = self.snapshot.tables.get(table, {})
        _, hive = TABLE_FOLDERS[table]
        return self._parts_sql([self.location.join(p) for p in parts], TABLE_SCHEMAS[table], hive,
                               [records[p].get("schema") for p in parts], derived=self._derived(table), file_column=file_column)

    def documents_with_files(self, column: str) -> str:
        """SQL of the `documents` rows of this version, in the view's order, with each row's part (its URL, as
        `location.url_of` gives it) in `column`."""
        return self.parts_sql("documents", self.snapshot.parts("documents"), column)

    def _parts_sql(self, paths: list[str], columns: dict[str, str], hive: bool = False, schemas: list[str | None] | None = None,
                   derived: str | None = None, where: str | None = None, file_column: str | None = None) -> str:
        """The SQL of `_create_view`'s view (`file_column`: a column naming each row's file)."""
        if paths:
            hive_option = (", hive_partitioning = true" if hive else "") + (f", filename = {quote(file_column)}"
                                                                           if file_column else "")
            groups: dict[str, list[str]] = {}
            if schemas and all(schemas):
                for path, schema in zip(paths, schemas):
                    groups.setdefault(schema, []).append(path)
            else:
                groups = {"": paths}
            options = ("union_by_name = true" if len(groups) == 1 and "" in groups else "union_by_name = false") + hive_option
            body = " union all by name ".join(
                f"select * from read_parquet([{', '.join(quote(self.location.url_of(p)) for p in group)}], {options})"
                for group in groups.values())
        else:
            body = _empty_select({**columns, **({file_column: "VARCHAR"} if file_column else {})})
        if derived:
            body = f"select *, {derived} from ({body})"
        if where:
            body = f"select * from ({body}) where {where}"
        return body

    def _create_annotation_views(self) -> None:
        """One view `annotations_NAME` per annotation of the version; views of annotations it lacks are dropped."""
        wanted = {}
        for name, entry in sorted(self.snapshot.annotations.items()):
            prefix = annotation_prefix(name)
            paths = [self.location.join(p) for p in self.snapshot.parts(ANNOTATIONS, prefix)]
            self._create_view(annotation_view(name), paths, {"doc_id": "BIGINT", **annotation_columns(entry)})
            wanted[annotation_view(name)] = name
        for view in self._annotation_views - set(wanted):
            self._con.execute(f"drop view if exists {view}")
        self._annotation_views = set(wanted)

    def annotation_parts(self, name: str) -> list[str]:
        """Paths (inside the filesystem) of annotation NAME's parts at this version, sorted."""
        return [self.location.join(path) for path in self.snapshot.parts(ANNOTATIONS, annotation_prefix(name))]

    def _tables_columns(self) -> list:
        """The columns (name, type) of every view a user view can read but did not create: tables, annotations, models."""
        names = [*TABLE_FOLDERS, *sorted(self._annotation_views), "models"]
        return [(name, relation.columns, [str(t) for t in relation.types])
                for name in names for relation in [self._con.sql(f"select * from {name}")]]  # bound, not run

    def _load_user_views(self) -> None:
        """Create the version's user views (in any order they resolve); `broken_views` lists those that failed.

        Each is held to the rule `view create` applies (exactly one select) before DuckDB sees it.
        Files in `views/` are copies for people and other engines; they are never executed.
        DuckDB binds a view's SQL again at every query, so a view this connection created from the same
        statement over tables of the same columns stands as it is: a new version that adds a view (or
        parts, scores, annotations) creates only what is new or was broken, not every view again.
        """
        created = self._user_views
        signature = self._tables_columns() if self.snapshot.views or created else None
        statements = {name: f"create or replace view {name} as {entry.get('sql', '')}"
                      for name, entry in self.snapshot.views.items()}
        if signature != self._tables_signature or any(statements.get(n) != sql for n, sql in created.items()):
            for name in set(created) - set(statements):  # dropped since (names were checked at creation)
                self._con.execute(f"drop view if exists {name}")
            created = {}
        self._tables_signature = signature
        standing = set(created)  # created whole on this connection (a broken view is never recorded)
        pending = {}
        for name, entry in self.snapshot.views.items():
            if name in standing:
                continue
            try:
                if not VIEW_NAME_RE.match(name):
                    raise QueryError(f"bad view name {name!r}")
                pending[name] = f"create or replace view {name} as {check_select(entry.get('sql', ''))}"
                check_statement(pending[name], "create")
            except QueryError:
                pending.pop(name, None)
                continue
        broken = set(self.snapshot.views) - set(pending) - standing
        pending = {name: pending[name] for name in _dependency_order(pending)}  # a view after the views it reads
        created = dict(created)
        while pending:
            progress = False
            for name, statement in list(pending.items()):
                try:
                    self._con.execute(statement)
                except duckdb.Error:
                    continue
                del pending[name]
                created[name] = statements[name]
                progress = True
            if not progress:
                break
        self._user_views = created
        self.broken_views = sorted(broken | set(pending))

    def sql(self, query: str, params: Iterable | dict | None = None) -> duckdb.DuckDBPyRelation:
        """Run SQL over the database; returns a DuckDB relation (`.pl()`, `.to_arrow_table()`, `.fetchall()`).

        Raises:
            QueryError: the statement does not parse, names an unknown table, view or column, or
                a policy refuses its arguments (DuckDB's message and hints, on one line).
        """
        if not self.unsafe:
            check_read_only(query)
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
            missing = re.search(rf'name {ANNOTATION_VIEW_PREFIX}(\w+) does not exist', message)
            if missing and missing.group(1) not in self.snapshot.annotations:
                known = ", ".join(sorted(self.snapshot.annotations)) or "none yet"
                how = ("`corpusdb decontaminate DB --against EVALUATION_FILES`" if missing.group(1) == "decontamination" else
                       f"`corpusdb annotate DB {missing.group(1)}` (built-ins: quality, language, classifier --model M; or --fn "
                       "module:function, --from URL)")
                message += (f"; no annotation named {missing.group(1)!r} at version {self.version} (annotations: {known}): "
                            f"compute it with {how}")
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

    def register_parts(self, table: str, paths: Iterable[str], models: dict | None = None,
                       covers: dict[str, list[str]] | None = None) -> Snapshot:
        """Commit Parquet files already written under the table's folder as parts of `table` (with `models`
        entries for scores), e.g. tables computed by another engine; `minhash` parts replace the table's.

        `covers` (scores of documents, instance_spans) maps a part to the documents parts holding all its doc_ids
        (paths as `paths` takes them): a task of a distributed selection then reads the parts of its own documents
        only (`corpusdb.covers`). It is checked against the doc_ids; registering a part again updates its record.

        Raises:
            ValueError: an unknown table, a file outside the table's folder, or covers that miss a doc_id.
        """
        if table not in TABLE_FOLDERS:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLE_FOLDERS)}")
        if covers and table not in COVERED_TABLES:
            raise ValueError(f"covers is for parts of scores or instance_spans, not {table}")
        folder = self.location.join(TABLE_FOLDERS[table][0]) + "/"
        found = []
        for path in paths:
            full = path if path.startswith(folder) else self.location.join(path)
            if not full.startswith(folder):
                raise ValueError(f"{path} is not under {folder}; write parts of {table} there")
            found.append(versions.existing_part(self.location, full))
        relative = {self.location.relpath(written.path) for written, _, _ in found}
        covered = {self._relative(path): sorted({self._relative(part) for part in parts}) for path, parts in (covers or {}).items()}
        unknown = sorted(set(covered) - relative)
        if unknown:
            raise ValueError(f"register_parts: covers names {unknown[0]}, which is not among the parts to register")

        if table == "instance_spans":
            self._check_spans([written.path for written, _, _ in found])
        new_ids = {}  # documents: each part's doc_ids (each doc_id once: policies join a unit's text back by it)
        for written, _, _ in found if table == "documents" else ():
            path = self.location.relpath(written.path)
            new_ids[path] = docindex.read_doc_ids(self.location, [path])

        def change(snapshot: Snapshot) -> str:
            if table == "documents":
                self._refuse_repeated_doc_ids(snapshot, new_ids)
            if table == "minhash":
                snapshot.tables["minhash"] = {}
            keyed = [*instance_models(snapshot), *(m for m, entry in (models or {}).items() if entry.get("unit") == "instances")]
            by_instance = [path for path in covered if of_instances(path, keyed)]
            if by_instance:
                raise ValueError(f"register_parts: {by_instance[0]} holds scores of instances, whose covers go through "
                                 "the instances' spans; register it without covers and run `corpusdb models DB --covers`")
            covers_check(snapshot, covered, lambda path: docindex.read_doc_ids(self.location, [path]),
                         lambda part: docindex.read_doc_ids(self.location, [part]))
            for written, rows, fields in found:
                path = self.location.relpath(written.path)
                snapshot.add_part(table, self.location, written, rows, **fields,
                                  **({COVERS: covered[path]} if path in covered else {}))
            if table == "documents":
                docindex.update(self.location, snapshot, lambda path: new_ids[path] if path in new_ids
                                else docindex.read_doc_ids(self.location, [path]))
            snapshot.models.update(models or {})
            return f"{len(found)} parts of {table} registered"

        return self.commit("register", change)

    def _check_spans(self, paths: list[str]) -> None:
        """Raise ValueError where a part of instance spans holds a span that is not 0 <= byte_start <= byte_end with
        n_tokens >= 0, or a NULL there (`corpusdb instances` writes none: an instance is a byte range of its
        document), or where the parts repeat an instance_id (a policy ranks each instance once; the distributed plans
        assume each is one row). Reads those columns of the new parts alone: an instance_id the database holds already
        is not looked for (`corpusdb instances` ids each by a 64-bit hash of its document and span)."""
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ids = []
        for path in paths:
            with self.location.fs.open(path, "rb") as handle:
                spans = pq.read_table(handle, columns=["instance_id", "byte_start", "byte_end", "n_tokens"])
            ids.append(spans.column("instance_id").to_numpy())
            good = pc.and_kleene(pc.and_kleene(pc.greater_equal(spans["byte_start"], 0),
                                               pc.greater_equal(spans["byte_end"], spans["byte_start"])),
                                 pc.greater_equal(spans["n_tokens"], 0))
            bad = len(good) - pc.sum(pc.fill_null(good, False).cast("int64")).as_py() if len(good) else 0
            if bad:
                raise ValueError(f"register_parts: {self.location.relpath(path)} holds {bad:,} span(s) that are not "
                                 "0 <= byte_start <= byte_end with n_tokens >= 0 (or hold NULLs); an instance is a byte "
                                 "range of its document: fix them and register the part again")
        everything = np.sort(np.concatenate(ids)) if ids else np.empty(0, dtype=np.int64)
        repeated = np.unique(everything[1:][everything[1:] == everything[:-1]])
        if len(repeated):
            raise ValueError(f"register_parts: {len(repeated):,} instance_id(s) repeat in the parts (e.g. "
                             f"{int(repeated[0])}); each instance is one row: drop the repeats (or id each span by its "
                             "document and bytes, as `corpusdb instances` does) and register the parts again")

    def _relative(self, path: str) -> str:
        """A part's path relative to the database, given that or its full path."""
        return self.location.relpath(path) if path.startswith(self.location.path.rstrip("/") + "/") else path

    def _refuse_repeated_doc_ids(self, snapshot: Snapshot, new_ids: dict) -> None:
        """Raise ValueError where parts to register repeat a doc_id, or hold one `documents` already has."""
        import numpy as np

        ids = np.concatenate(list(new_ids.values())) if new_ids else np.empty(0, dtype=np.int64)
        within, committed = docindex.repeated(self.location, snapshot, ids)
        for found, where in ((within, "more than once in the parts"), (committed, "already in documents")):
            if len(found):
                raise ValueError(
                    f"register_parts: {len(found):,} doc_id(s) {where} (e.g. {int(found[0])}); documents holds each "
                    "doc_id once: drop those rows from the parts (doc_id is the text's content hash, so they are "
                    "the same documents; `corpusdb ingest` drops them itself) and register them again")

    def writable(self) -> None:
        """Raise unless this database may be changed (it was not opened `as_of` a version)."""
        if self.read_only:
            raise VersionError(f"{self.url} is open as of version {self.as_of}, read-only; open the latest version to change it")

    def stats(self) -> dict:
        """Documents and bytes in all and per source, the version, the scored models (documents or
        instances scored by each, and which), documents with near-duplicate clusters, the instances,
        the annotations and the views."""
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
            "annotations": self._annotations(),
            "views": sorted(self.snapshot.views),
        }

    def _annotations(self) -> dict[str, dict]:
        """Each annotation's kind, columns and rows, from the version's records (no file is read)."""
        out = {}
        for name, entry in sorted(self.snapshot.annotations.items()):
            rows = self.snapshot.n_rows(ANNOTATIONS, annotation_prefix(name))
            out[name] = {"kind": entry.get("kind"), "view": annotation_view(name), "n_rows": rows,
                         "columns": list(annotation_columns(entry))}
        return out

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
    return Database.create(url, storage_options)


def open(url: str, storage_options: dict | None = None, *, as_of: int | None = None, allow: Iterable[str] = (),  # noqa: A001
         unsafe: bool = False) -> Database:
    """Open the database at `url`, at its latest version or at version `as_of` (read-only); see `Database.connect`."""
    return Database.connect(url, storage_options, as_of=as_of, allow=allow, unsafe=unsafe)


__all__ = ["Database", "init", "open"]
