"""SQL text: string literals, DuckDB's errors on one line, and checks that a text is exactly one statement.

    python -c "from corpusdb.statements import check_select; print(check_select('select 1;'))"
"""

from __future__ import annotations

import duckdb

from corpusdb.errors import QueryError


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def query_error(exc: duckdb.Error) -> str:
    """DuckDB's message on one line, its hints kept ("Did you mean", candidate bindings), its caret drawing dropped."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    kept = [line for line in lines if not set(line) <= {"^", " "}]
    message = "; ".join(kept) if kept else type(exc).__name__
    if isinstance(exc, duckdb.PermissionException):
        message += ("; queries may read only the database's own files: pass --allow PATH (allow= in Python), "
                    "or --unsafe for SQL you typed yourself")
    return message


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
        raise QueryError(f"{what} is not valid SQL: {query_error(exc)}") from exc
    kinds = [statement.type.name.lower() for statement in statements]
    if kinds != ["select"]:
        article = "an" if kinds and kinds[0][0] in "aeiou" else "a"
        found = f"{len(kinds)} statements ({', '.join(kinds)})" if len(kinds) != 1 else f"{article} {kinds[0]} statement"
        raise QueryError(f"{what} must be exactly one select statement, not {found}")
    return text


def check_statement(sql: str, kind: str) -> None:
    """Raise QueryError unless `sql` is exactly one statement of `kind` (e.g. create)."""
    kinds = [statement.type.name.lower() for statement in duckdb.extract_statements(sql)]
    if kinds != [kind]:
        raise QueryError(f"expected one {kind} statement, found {', '.join(kinds) or 'none'}")


# statements that write files or reach other databases: refused in confined SQL (`corpusdb sql`, `shell`, Database.sql)
FILE_STATEMENTS = ("COPY", "EXPORT", "ATTACH", "DETACH", "LOAD")


def check_read_only(sql: str) -> None:
    """Refuse a COPY, EXPORT, ATTACH, DETACH or LOAD in `sql`: SQL over a database reads it and never
    writes files (DuckDB's confinement lets it read the database's folder, and the same setting would
    let it write there: a `copy ... to 'DB/documents/part-....parquet'` would replace a committed part).

    Raises:
        QueryError: naming the statement and the ways to write a result.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return  # DuckDB reports the parse error itself, with its position
    for statement in statements:
        kind = statement.type.name
        if kind in FILE_STATEMENTS:
            raise QueryError(
                f"{kind.lower()} statements are refused: SQL over a database only reads (a copy into its folder would "
                "replace committed parts); write a result with `corpusdb export DB \"select ...\" OUT` or `corpusdb sql "
                "DB \"select ...\" --format csv > FILE`, or pass --unsafe (unsafe=True) for SQL you typed yourself"
            )
