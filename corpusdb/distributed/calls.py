"""A policy call read as the macro it names and each argument's SQL text, bound to the macro's parameters.

    python -c "from corpusdb.distributed.calls import read_call; print(read_call(\\"difference('t', 'r', alpha := 0.3)\\"))"

DuckDB's own parser reads the call (`json_serialize_sql`) and writes each argument back as SQL
(`json_deserialize_sql`), so an argument is whatever expression the user wrote (`0.3`, `map {'web':
0.2}`, `0.5::double`), kept as SQL: the distributed plan puts it where the macro would, so it has the
same type and value (0.3 stays a DECIMAL: `ceil(0.3 * 10)` is 3, where a float would give 4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import duckdb

from corpusdb.policies import builtin_views


@dataclass(frozen=True)
class Call:
    """A call of a built-in table macro: its name and every parameter's SQL text (defaults filled in)."""

    name: str
    args: dict[str, str]

    def sql(self, **replace: str) -> str:
        """The call as SQL, with some arguments replaced."""
        args = {**self.args, **replace}
        return f"{self.name}({', '.join(f'{k} := {v}' for k, v in args.items())})"


def _split(text: str) -> list[str]:
    """`text` split at its top-level commas (not inside quotes or brackets)."""
    pieces, depth, quote, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "'":
            quote = not quote
        elif not quote and char in "([{":
            depth += 1
        elif not quote and char in ")]}":
            depth -= 1
        elif not quote and depth == 0 and char == ",":
            pieces.append(text[start:i].strip())
            start = i + 1
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def signature(name: str) -> list[tuple[str, str | None]]:
    """The parameters of the built-in table macro `name`, each with its default's SQL (None: required).

    Raises:
        ValueError: no built-in table macro of that name.
    """
    # the files defining a table macro of their name (`dedup.sql` defines the view `dedup` too)
    macros = {f.name: re.search(rf"create or replace macro {f.name}\((.*?)\)\s+as table", f.text, re.DOTALL)
              for f in builtin_views() if f.kind != "scalar macro"}
    macros = {name: match for name, match in macros.items() if match}
    if name not in macros:
        raise ValueError(f"{name!r} is not a built-in policy; policies are {', '.join(sorted(macros))}")
    match = macros[name]
    params = []
    for piece in _split(match.group(1)):
        key, _, default = piece.partition(":=")
        params.append((key.strip(), default.strip() or None))
    return params


def view_call(name: str) -> str | None:
    """The policy call a built-in view is (the view `dedup` is `select * from dedup()`): "dedup()", else None."""
    for f in builtin_views():
        if f.name == name.strip() and f.kind == "view":
            match = re.search(rf"create or replace view {f.name} as\s+select \* from ({f.name}\(.*?\));", f.text, re.DOTALL)
            return match.group(1) if match else None
    return None


def expression_sql(con, expression: dict) -> str:
    """An expression of DuckDB's parse tree (`json_serialize_sql`) written back as SQL, by DuckDB."""
    template = json.loads(con.execute("select json_serialize_sql('select 1')").fetchall()[0][0])
    template["statements"][0]["node"]["select_list"] = [{**expression, "alias": ""}]
    return con.execute("select json_deserialize_sql(?)", [json.dumps(template)]).fetchall()[0][0].removeprefix("SELECT ")


def read_call(text: str) -> Call:
    """Parse `name(arg, ..., key := value, ...)` into a `Call` of that built-in policy (a built-in view that is a
    call, `dedup`, is that call).

    Raises:
        ValueError: not one call of a built-in policy, an unknown or repeated parameter, a required one missing.
    """
    text = view_call(text) or text
    con = duckdb.connect()
    tree = json.loads(con.execute("select json_serialize_sql(?)", [f"select * from {text.strip()}"]).fetchall()[0][0])
    node = (tree.get("statements") or [{}])[0].get("node", {}) if not tree.get("error") else {}
    source = node.get("from_table") or {}
    plain = (node.get("type") == "SELECT_NODE" and source.get("type") == "TABLE_FUNCTION" and not node.get("where_clause")
             and not node.get("modifiers") and len(node.get("select_list", [])) == 1 and not source.get("alias"))
    if not plain:
        detail = tree.get("error_message") or "not one call"
        raise ValueError(f"{text!r} is not a call of one policy ({detail}); write it as name(arg, key := value), "
                         "e.g. difference('teacher', 'reference', alpha := 0.5)")
    function = source["function"]
    name = function["function_name"]
    params = signature(name)
    names = [p for p, _ in params]
    args: dict[str, str] = {}
    for position, argument in enumerate(function["arguments"]):
        key = argument["name"] or (names[position] if position < len(names) else None)
        if key is None or key not in names:
            raise ValueError(f"{name}: no parameter {key or f'number {position + 1}'}; its parameters are {', '.join(names)}")
        if key in args:
            raise ValueError(f"{name}: parameter {key} given twice")
        args[key] = expression_sql(con, argument["expression"])
    missing = [p for p, default in params if default is None and p not in args]
    if missing:
        raise ValueError(f"{name}: parameter {missing[0]} is required")
    return Call(name, {p: args.get(p, default) for p, default in params})
