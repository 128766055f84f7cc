"""User views: selection policies saved by name, beside the built-ins of `sql/` (`corpusdb.policies`).

    corpusdb view list demo/db

User views are single `select`s
committed with the database's version (`corpusdb.versions`), created after the built-ins (they
may use them and each other) and copied to `views/NAME.sql` for people and other engines.
Creating a view checks that DuckDB's parser reads it as exactly one select and runs it: a
missing column or relation, or a policy refusing its arguments, is a one-line `QueryError` and
nothing is saved.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import TYPE_CHECKING

import duckdb

from corpusdb.errors import QueryError
from corpusdb.policies import builtin_views
from corpusdb.statements import check_select
from corpusdb.tables import ANNOTATION_VIEW_PREFIX, TABLE_FOLDERS, VIEW_NAME_RE

if TYPE_CHECKING:
    from corpusdb.db import Database

NAME_RE = VIEW_NAME_RE
USER_VIEWS = "views"


def reserved_names() -> set[str]:
    """Names a user view may not take: the tables, `models` and the built-ins (and any `annotations_*`)."""
    return set(TABLE_FOLDERS) | {"models", "annotations"} | {v.name for v in builtin_views()}


def create_view(db: Database, name: str, sql: str, replace: bool = False, check_seconds: float | None = 600.0) -> int | None:
    """Validate `sql` (one select) as view NAME, commit it, and write `views/NAME.sql`; returns its rows now.

    The view is run in full before it is saved, so a policy that refuses its arguments (a score
    name with no scores, alpha out of range, units it cannot judge) fails here and nothing is
    saved. The run is bounded by `check_seconds` (None: no bound): a view that does not finish in
    time is refused; check_seconds=0 checks only that it binds and returns None instead of a count.

    Raises:
        ValueError: a bad or reserved name, or NAME exists and replace is False.
        QueryError: the SQL is not one select, or does not run (the message names the missing
            column or relation, or the policy's complaint), or does not finish in check_seconds.
    """
    db.writable()
    if not NAME_RE.match(name):
        raise ValueError(f"view name {name!r} must be lowercase letters, digits and '_', starting with a letter or '_'")
    if name in reserved_names():
        raise ValueError(f"{name!r} is a table or built-in view; choose another name")
    inside = [v.name for v in builtin_views() if "create or replace macro" in v.text and name in v.steps]
    if inside:  # query_table(docs) inside a macro finds its own CTE of that name before any view
        raise ValueError(f"{name!r} names a step (CTE) of the built-in {', '.join(inside)}, which would read that step "
                         f"instead of your view when passed docs := {name!r}; choose another name")
    if name.startswith(ANNOTATION_VIEW_PREFIX):
        raise ValueError(f"{name!r}: names starting with {ANNOTATION_VIEW_PREFIX!r} are the annotations' views; choose another name")
    if name in db.snapshot.views and not replace:
        raise ValueError(f"view {name!r} exists; pass --replace to overwrite it")
    sql = check_select(sql, f"view {name!r}")
    previous = db.snapshot.views.get(name, {}).get("sql")
    timer = None
    try:
        db.con.execute(f"create or replace view {name} as {sql}")  # binds: names, columns, types
        n_rows = None
        if check_seconds != 0:
            if check_seconds is not None:
                timer = threading.Timer(check_seconds, db.con.interrupt)
                timer.start()
            n_rows = db.con.execute(f"select count(*) from {name}").fetchall()[0][0]
    except duckdb.InterruptException as exc:
        _restore(db, name, previous)
        raise QueryError(f"view {name!r} did not finish in {check_seconds:g} s (a recursive CTE that never ends?), so "
                         "nothing was saved; pass a larger --check-seconds, or --check-seconds 0 to save it after checking "
                         "only that it binds") from exc
    except duckdb.Error as exc:
        _restore(db, name, previous)
        raise QueryError(f"view {name!r} is not valid SQL over this database: {db.explain_error(exc)}") from exc
    finally:
        if timer is not None:
            timer.cancel()
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
    out = []  # the user's own first: in a long list they are what one looks for
    for name in sorted(db.snapshot.views):
        kind = "user view (broken)" if name in db.broken_views else "user view"
        out.append({"name": name, "kind": kind, "description": db.snapshot.views[name].get("sql", ""), "params": ""})
    out += [
        {"name": v.name, "kind": f"built-in {v.kind}", "description": v.purpose, "params": v.params}
        for v in sorted(builtin_views(), key=lambda v: v.name)
    ]
    if not db.read_only:
        for path in db.location.list_files(USER_VIEWS, suffix=".sql"):
            name = path.rsplit("/", 1)[-1][: -len(".sql")]
            if name not in db.snapshot.views:
                out.append({"name": name, "kind": "ignored file",
                            "description": f"{USER_VIEWS}/{name}.sql is not a committed view and never runs; "
                                           f"remove it, or save it with `corpusdb view create`", "params": ""})
    return out


def describe_view(db: Database, name: str) -> dict:
    """One view in full: name, kind, purpose, params, notes (a built-in's header comment: its rules,
    coverage and `missing` options included) and SQL.

    Raises:
        QueryError: no view of that name (the message lists them).
    """
    for v in builtin_views():
        if v.name == name:
            notes = []
            for line in v.text.splitlines():
                if not line.startswith("--"):
                    break
                if not re.match(r"^--\s*(purpose|depends|params):", line):
                    notes.append(line[2:].strip())
            return {"name": name, "kind": f"built-in {v.kind}", "purpose": v.purpose, "params": v.params,
                    "notes": " ".join(notes), "sql": v.text}
    if name in db.snapshot.views:
        kind = "user view (broken)" if name in db.broken_views else "user view"
        return {"name": name, "kind": kind, "purpose": "", "params": "", "notes": "",
                "sql": db.snapshot.views[name].get("sql", "")}
    known = sorted({v.name for v in builtin_views()} | set(db.snapshot.views))
    raise QueryError(f"no view named {name!r}; views: {', '.join(known)}")


def relation_sql(db: Database, view: str) -> str:
    """SQL that selects the rows of VIEW: a view name, a macro call such as
    `difference('teacher', 'ref', alpha := 0.3)`, or a full `select`.

    Raises:
        QueryError: no such view (the message lists them).
    """
    text = view.strip().rstrip(";")
    if re.match(r"^(select|with|from)\b", text, re.I):
        # a select that ends in a line comment is wrapped in `(...)` by its callers: end it with a newline
        return text + "\n" if "--" in text.rsplit("\n", 1)[-1] else text
    if NAME_RE.match(text) and text not in db.relations():
        raise QueryError(f"no table or view named {text!r}; views: {', '.join(db.relations())}")
    return f"select * from {text}"
