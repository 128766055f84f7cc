"""An ordered view as a distributed plan: `select * from documents [where ...] order by COLUMN [desc]`, range-partitioned.

    corpusdb export demo/db "select * from documents where source = 'web' order by n_bytes desc" out/longest --shards 4

A view that orders the rows of `documents` (or `instances`) by one numeric column, nulls last, after
any filter of each row on its own columns (no subquery or macro, which a task would answer over its own
documents only),
is exported as the curriculum is: each task keys its own documents parts' rows by the column (an
exact double: `plans.key_cast`), the ranges of the order come from the tasks' samples, and each range
is sorted by one task; the ranges concatenate into the global order. Rows that tie on the column
come in unit order (doc_id, or instance_id), and so does a single-process export of the same view
(`tie_broken`), so the two write the same bytes. Anything else that orders its rows is exported by
one process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corpusdb.distributed.calls import expression_sql
from corpusdb.distributed.plans import SORT_KEY, UNIT_ID, UNITS, Plan, order_keys, over, rows_sql

if TYPE_CHECKING:
    from corpusdb.db import Database

RELATIONS = ("documents", "instances")


@dataclass(frozen=True)
class Order:
    """A view that orders a relation's rows by one column."""

    relation: str  # documents or instances
    column: str
    descending: bool
    where: str  # the filter's SQL, or "" (none)


def _has(node, classes: set[str]) -> bool:
    """Whether DuckDB's parse tree `node` holds an expression of one of `classes` (e.g. a subquery)."""
    if isinstance(node, dict):
        return node.get("class") in classes or any(_has(v, classes) for v in node.values())
    return isinstance(node, list) and any(_has(v, classes) for v in node)


def _functions(node) -> set[str]:
    """The names of the functions DuckDB's parse tree `node` calls."""
    if isinstance(node, dict):
        own = {str(node.get("function_name", "")).lower()} if node.get("class") == "FUNCTION" else set()
        return own.union(*(_functions(v) for v in node.values()))
    return set().union(*(_functions(v) for v in node)) if isinstance(node, list) else set()


def _row_local(db: Database, where: dict) -> bool:
    """Whether a filter judges each row on its own columns alone: no subquery, window or aggregate, and no function
    but DuckDB's own (a macro, corpusdb's or a user's, may read a table: a task would read its own parts of it)."""
    if _has(where, {"SUBQUERY", "WINDOW", "AGGREGATE"}):
        return False
    called = _functions(where)
    if not called:
        return True
    defined = {name for (name,) in db.con.execute("select distinct lower(function_name) from duckdb_functions() "
                                                   "where not internal").fetchall()}
    return not called & defined


def read_order(db: Database, sql: str) -> Order | None:
    """The `Order` of `sql` where it is `select * from documents|instances [where ROW FILTER] order by COLUMN [asc|desc]`
    (nulls last), else None."""
    tree = json.loads(db.con.execute("select json_serialize_sql(?)", [sql]).fetchall()[0][0])
    statements = tree.get("statements") or []
    if tree.get("error") or len(statements) != 1:
        return None
    node = statements[0]["node"]
    table, stars = node.get("from_table") or {}, node.get("select_list") or []
    plain_star = (len(stars) == 1 and stars[0].get("class") == "STAR" and not stars[0].get("relation_name")
                  and not any(stars[0].get(k) for k in ("exclude_list", "replace_list", "columns", "expr",
                                                        "qualified_exclude_list", "rename_list")))
    if (node.get("type") != "SELECT_NODE" or not plain_star or table.get("type") != "BASE_TABLE"
            or str(table.get("table_name", "")).lower() not in RELATIONS or table.get("alias")
            or table.get("schema_name") or table.get("catalog_name") or table.get("at_clause") or table.get("sample")
            or node.get("group_expressions") or node.get("group_sets") or node.get("having") or node.get("qualify")
            or node.get("sample") or (node.get("cte_map") or {}).get("map")
            or node.get("aggregate_handling") != "STANDARD_HANDLING" or node.get("distinct")):
        return None
    modifiers = node.get("modifiers") or []
    if len(modifiers) != 1 or modifiers[0].get("type") != "ORDER_MODIFIER" or len(modifiers[0].get("orders", [])) != 1:
        return None
    (order,) = modifiers[0]["orders"]
    expression = order.get("expression") or {}
    nulls = order.get("null_order")
    if nulls == "ORDER_DEFAULT":  # DuckDB's default, unless a user set another
        nulls = db.con.execute("select current_setting('default_null_order')").fetchall()[0][0]
    if (expression.get("class") != "COLUMN_REF" or len(expression.get("column_names", [])) != 1
            or str(nulls).lower().replace(" ", "_") != "nulls_last"
            or order.get("type") not in ("ORDER_DEFAULT", "ASCENDING", "DESCENDING")):
        return None
    where = node.get("where_clause")
    if where is not None and not _row_local(db, where):
        return None
    return Order(str(table["table_name"]).lower(), expression["column_names"][0], order["type"] == "DESCENDING",
                 expression_sql(db.con, where) if where is not None else "")


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def order_plan(order: Order, view: str) -> Plan:
    """The plan of an ordered view: every row it keeps, keyed by its column (group 'a'; NULLs last, group 'b'), in
    ranges of the order (`ordered`), no numbering; the rows are the relation's own columns."""
    where = f" where {order.where}" if order.where else ""
    units = f"select {UNIT_ID}, n_bytes, true as scored, {_quoted(order.column)} as {SORT_KEY} from {{docs}}{where}"
    counts = f"select 0 as no_teacher, 0 as no_reference, 0 as no_either, count(*) as units, []::varchar[] as sources from {UNITS}"
    keys = order_keys("{key_cast}", "true" if order.descending else "false", ["n_bytes"])
    return over(Plan(view, units, counts, keys, ["n_bytes"], "all", "null", [], rows_sql(""), numbering="global",
                     key_column=SORT_KEY, ordered=True), order.relation)


def tie_broken(order: Order, sql: str) -> str:
    """`sql` (the ordered view) with its ties in unit order, as the distributed plan breaks them."""
    unit = "instance_id" if order.relation == "instances" else "doc_id"
    return (f"select * from ({sql}) order by {_quoted(order.column)} {'desc' if order.descending else 'asc'} nulls last, "
            f"{unit}")
