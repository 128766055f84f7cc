"""Selection policies as SQL: the built-in views and macros in `sql/`, and user views in `views/`.

    corpusdb view list demo/db

Built-ins are one `.sql` file per view or table macro, with a header (`-- purpose:`, `-- depends:`,
`-- params:`), executed on every open in dependency order. User views are single `select`s
committed with the database's version (`corpusdb.versions`), created after the built-ins (they
may use them and each other) and copied to `views/NAME.sql` for people and other engines.
Creating a view checks that DuckDB's parser reads it as exactly one select and runs it: a
missing column or relation, or a policy refusing its arguments, is a one-line `QueryError` and
nothing is saved.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from corpusdb.errors import QueryError

if TYPE_CHECKING:
    from corpusdb.db import Database

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
USER_VIEWS = "views"
HEADER_KEYS = ("purpose", "depends", "params")


def builtin_dir() -> Path:
    """The folder of the built-in policies: `sql/` of the source tree, or where the wheel put it."""
    for candidate in (Path(__file__).resolve().parent.parent / "sql", Path(sys.prefix) / "share" / "corpusdb" / "sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("corpusdb's sql/ folder is missing; reinstall corpusdb")


@dataclass(frozen=True)
class ViewFile:
    """One `.sql` file: its name, header fields and text."""

    name: str
    kind: str  # "view", "macro" or "scalar macro"
    purpose: str
    depends: tuple[str, ...]
    params: str
    text: str


def parse(path: Path) -> ViewFile:
    """Read a built-in `.sql` file and its header.

    Raises:
        ValueError: a header line is missing.
    """
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^--\s*(purpose|depends|params):\s*(.*)$", line)
        if match:
            header.setdefault(match.group(1), match.group(2).strip())
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise ValueError(f"{path}: header line '-- {missing[0]}:' is missing")
    if re.search(rf"create or replace view {path.stem}\b", text):
        kind = "view"
    elif re.search(rf"create or replace macro {path.stem}\(.*\) as table", text, re.S):
        kind = "macro"
    else:
        kind = "scalar macro"
    depends = tuple(d.strip() for d in header["depends"].split(",") if d.strip())
    return ViewFile(path.stem, kind, header["purpose"], depends, header["params"], text)


@functools.cache
def builtin_views() -> tuple[ViewFile, ...]:
    """Every built-in file, in an order where each comes after what it depends on (read once per process)."""
    files = {f.name: f for f in (parse(p) for p in sorted(builtin_dir().glob("*.sql")))}
    ordered: list[ViewFile] = []
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in done or name not in files:
            return
        if name in trail:
            raise ValueError(f"sql/{name}.sql: circular depends: {' -> '.join(trail + (name,))}")
        for dependency in files[name].depends:
            visit(dependency, trail + (name,))
        done.add(name)
        ordered.append(files[name])

    for name in sorted(files):
        visit(name, ())
    return tuple(ordered)


def load_builtin_views(con: duckdb.DuckDBPyConnection) -> None:
    for view in builtin_views():
        con.execute(view.text)


def check_select(sql: str, what: str = "a view") -> str:
    """`sql` stripped, if DuckDB's parser reads it as exactly one select statement.

    Raises:
        QueryError: it does not parse, or is not one select (a COPY, ATTACH, SET, a second statement ...).
    """
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryError(f"{what} needs a select statement; the SQL is empty")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        from corpusdb.db import query_error

        raise QueryError(f"{what} is not valid SQL: {query_error(exc)}") from exc
    kinds = [statement.type.name.lower() for statement in statements]
    if kinds != ["select"]:
        article = "an" if kinds and kinds[0][0] in "aeiou" else "a"
        found = f"{len(kinds)} statements ({', '.join(kinds)})" if len(kinds) != 1 else f"{article} {kinds[0]} statement"
        raise QueryError(f"{what} must be exactly one select statement, not {found}")
    return text


def load_user_views(db: Database) -> list[str]:
    """Create the version's user views (in any order they resolve); returns those that failed.

    Each is held to the rule `view create` applies (exactly one select) before DuckDB sees it.
    Files in `views/` are copies for people and other engines; they are never executed.
    """
    pending = {}
    for name, entry in db.snapshot.views.items():
        try:
            if not NAME_RE.match(name):
                raise QueryError(f"bad view name {name!r}")
            pending[name] = f"create or replace view {name} as {check_select(entry.get('sql', ''))}"
            check_statement(pending[name], "create")
        except QueryError:
            pending.pop(name, None)
            continue
    broken = set(db.snapshot.views) - set(pending)
    while pending:
        progress = False
        for name, statement in list(pending.items()):
            try:
                db.con.execute(statement)
            except duckdb.Error:
                continue
            del pending[name]
            progress = True
        if not progress:
            break
    return sorted(broken | set(pending))


def check_statement(sql: str, kind: str) -> None:
    """Raise QueryError unless `sql` is exactly one statement of `kind` (e.g. create)."""
    kinds = [statement.type.name.lower() for statement in duckdb.extract_statements(sql)]
    if kinds != [kind]:
        raise QueryError(f"expected one {kind} statement, found {', '.join(kinds) or 'none'}")


def reserved_names(db: Database) -> set[str]:
    from corpusdb.db import TABLE_FOLDERS

    return set(TABLE_FOLDERS) | {"models"} | {v.name for v in builtin_views()}


def create_view(db: Database, name: str, sql: str, replace: bool = False) -> int:
    """Validate `sql` (one select) as view NAME, commit it, and write `views/NAME.sql`; returns its rows now.

    The view is run in full before it is saved, so a policy that refuses its arguments (a score
    name with no scores, alpha out of range) fails here and nothing is saved.

    Raises:
        ValueError: a bad or reserved name, or NAME exists and replace is False.
        QueryError: the SQL is not one select, or does not run (the message names the missing
            column or relation, or the policy's complaint).
    """
    db.writable()
    if not NAME_RE.match(name):
        raise ValueError(f"view name {name!r} must be lowercase letters, digits and '_', starting with a letter or '_'")
    if name in reserved_names(db):
        raise ValueError(f"{name!r} is a table or built-in view; choose another name")
    if name in db.snapshot.views and not replace:
        raise ValueError(f"view {name!r} exists; pass --replace to overwrite it")
    sql = check_select(sql, f"view {name!r}")
    previous = db.snapshot.views.get(name, {}).get("sql")
    try:
        db.con.execute(f"create or replace view {name} as {sql}")
        n_rows = db.con.execute(f"select count(*) from {name}").fetchall()[0][0]
    except duckdb.Error as exc:
        _restore(db, name, previous)
        raise QueryError(f"view {name!r} is not valid SQL over this database: {db.explain_error(exc)}") from exc
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    def change(snapshot) -> str:
        if name in snapshot.views and not replace:
            raise ValueError(f"view {name!r} was created meanwhile by another job; pass --replace to overwrite it")
        if snapshot.views.get(name, {}).get("sql") != sql:  # the same SQL again commits nothing
            snapshot.views[name] = {"sql": sql, "created_at": now}
        return f"view {name}"

    try:
        db.commit("view create", change)
    except BaseException:
        _restore(db, name, previous)
        raise
    db.location.write_atomic((sql + "\n").encode("utf-8"), USER_VIEWS, f"{name}.sql")
    return n_rows


def _restore(db: Database, name: str, previous: str | None) -> None:
    if previous is None:
        db.con.execute(f"drop view if exists {name}")
    else:
        db.con.execute(f"create or replace view {name} as {previous}")


def drop_view(db: Database, name: str) -> None:
    """Remove a user view (its SQL stays in earlier versions).

    Raises:
        ValueError: no such user view.
    """
    db.writable()

    def change(snapshot) -> str:
        if name not in snapshot.views:
            raise ValueError(f"no user view {name!r}; `corpusdb view list` shows the views")
        del snapshot.views[name]
        return f"view {name}"

    db.commit("view drop", change)
    db.con.execute(f"drop view if exists {name}")
    db.location.remove(db.location.join(USER_VIEWS, f"{name}.sql"))


def list_views(db: Database) -> list[dict]:
    """Built-in and user views: name, kind, purpose (or SQL) and parameters; files in views/ that are
    not committed views are listed as ignored."""
    out = [
        {"name": v.name, "kind": f"built-in {v.kind}", "description": v.purpose, "params": v.params}
        for v in sorted(builtin_views(), key=lambda v: v.name)
    ]
    for name in sorted(db.snapshot.views):
        kind = "user view (broken)" if name in db.broken_views else "user view"
        out.append({"name": name, "kind": kind, "description": db.snapshot.views[name].get("sql", ""), "params": ""})
    if not db.read_only:
        for path in db.location.list_files(USER_VIEWS, suffix=".sql"):
            name = path.rsplit("/", 1)[-1][: -len(".sql")]
            if name not in db.snapshot.views:
                out.append({"name": name, "kind": "ignored file",
                            "description": f"{USER_VIEWS}/{name}.sql is not a committed view and never runs; "
                                           f"remove it, or save it with `corpusdb view create`", "params": ""})
    return out


def relation_sql(db: Database, view: str) -> str:
    """SQL that selects the rows of VIEW: a view name, a macro call such as
    `difference('teacher', 'ref', alpha := 0.3)`, or a full `select`.

    Raises:
        QueryError: no such view (the message lists them).
    """
    text = view.strip().rstrip(";")
    if re.match(r"^(select|with|from)\b", text, re.I):
        return text
    if NAME_RE.match(text) and text not in db.relations():
        raise QueryError(f"no table or view named {text!r}; views: {', '.join(db.relations())}")
    return f"select * from {text}"


class View:
    """A view of a database (a view name, a macro call or a select) with what users do with it."""

    def __init__(self, db: Database, view: str):
        self.db = db
        self.name = view
        self.sql = relation_sql(db, view)

    def __repr__(self) -> str:
        return f"<corpusdb.View {self.name!r} of {self.db.url}>"

    def relation(self) -> duckdb.DuckDBPyRelation:
        """The rows, as a DuckDB relation (`.pl()`, `.to_arrow_table()`, `.fetchall()`)."""
        return self.db.sql(self.sql)

    def stats(self) -> dict:
        """Documents, bytes, tokens, per-source shares and score quantiles; see `corpusdb.analysis.view_stats`."""
        from corpusdb.analysis import view_stats

        return view_stats(self.db, self.name)

    def compare(self, other: str | View) -> dict:
        """Overlap with another view; see `corpusdb.analysis.compare_views`."""
        from corpusdb.analysis import compare_views

        return compare_views(self.db, self.name, other.name if isinstance(other, View) else other)

    def export(self, url: str, **options) -> dict:
        """Write the rows to URL as a training subset; see `corpusdb.export.export_view`. Returns the manifest."""
        from corpusdb.export import export_view

        return export_view(self.db, self.name, url, **options)
