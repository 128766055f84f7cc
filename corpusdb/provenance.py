"""What a selection is made of: the SQL with every view and policy it reads, the data, the models.

    python -c "import corpusdb; from corpusdb.provenance import provenance; \
      print(provenance(corpusdb.open('demo/db'), 'select * from dedup'))"

An export's manifest and the training adapter's cache key hold this record, so a subset can never
be silently stale: redefining a view, replacing a built-in policy with a new corpusdb release,
ingesting or rescoring anything the query reads, or retraining a model under the same name all
change `inputs_hash`, and a reuse is only ever of exactly the same thing.

`definitions` are the user views and built-in views and macros the query reads, transitively,
with their SQL as they are now (a view's name is taken as read wherever it appears in the text,
also inside a string such as `docs := 'refined'`, and a macro's wherever it is called, so the
record may name more than is read, never less). The data is the content hashes of every part of each table those texts name,
and of each annotation whose view (`annotations_NAME`) they name, with its producer.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

import duckdb

from corpusdb.policies import builtin_views
from corpusdb.tables import ANNOTATIONS, TABLE_FOLDERS, annotation_prefix, annotation_view

if TYPE_CHECKING:
    from corpusdb.db import Database

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TABLES = tuple(TABLE_FOLDERS)
IDENTITY_KEYS = ("model", "content_hash", "tokenizer_hash", "context", "stride", "precision", "architecture", "unit", "instances")


def definitions(db: Database, sql: str) -> dict[str, str]:
    """{name: SQL} of the user views and built-in views and macros `sql` reads, transitively."""
    user = {name: entry.get("sql", "") for name, entry in db.snapshot.views.items()}
    builtin = {view.name: view for view in builtin_views()}
    found: dict[str, str] = {}
    todo = [(sql, False)]
    while todo:
        text, is_builtin = todo.pop()
        # a built-in names what it reads as identifiers; its comments and messages name other things
        text = _code(text, strings=is_builtin)
        for word in {w.lower() for w in WORD.findall(text)} - set(found):
            if word in user:
                found[word] = user[word]
                todo.append((found[word], False))
            elif word in builtin and (builtin[word].kind == "view" or re.search(rf"\b{word}\s*\(", text, re.I)):
                found[word] = builtin[word].text  # a macro is read where it is called, not where a CTE shares its name
                todo.append((found[word], True))
    return dict(sorted(found.items()))


POLICY_CALL = re.compile(r"\b(difference(?:_[a-z]+)*|curriculum|filter_[a-z]+|quota|mixture|dedup)\s*\(", re.I)
MISSING_ARG = re.compile(r"\bmissing\s*:=\s*'([A-Za-z_]+)'", re.I)


def missing_choices(db: Database, sql: str) -> list[dict]:
    """Each explicit `missing := '...'` the selection passes to a built-in policy, in `sql` or a user
    view it reads: what it chose to do with units the policy could not judge (an export's manifest
    records them; without one, every policy judged every unit, or the selection would have failed)."""
    texts = {"": sql, **{name: text for name, text in definitions(db, sql).items() if name in db.snapshot.views}}
    out = []
    for view, text in texts.items():
        text = _code(text, strings=False)
        for call in POLICY_CALL.finditer(text):
            depth, end, top = 1, call.end(), []
            while end < len(text) and depth:  # the call's own arguments, nested calls blanked out
                char = text[end]
                depth += (char == "(") - (char == ")")
                top.append(char if depth == 1 and char not in "()" else " ")
                end += 1
            for choice in MISSING_ARG.finditer("".join(top)):
                out.append({"policy": call.group(1).lower(), "missing": choice.group(1), **({"view": view} if view else {})})
    return out


def _code(sql: str, strings: bool) -> str:
    """SQL without its comments (and without its string literals with `strings`), by DuckDB's own tokenizer."""
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error:
        return sql  # not SQL DuckDB can read: every word counts, as before
    out = []
    for (start, kind), (end, _) in zip(tokens, [*tokens[1:], (len(sql), None)]):
        if kind == duckdb.token_type.comment:
            out.append("\n")
        elif kind == duckdb.token_type.string_const and strings:
            out.append("'' ")
        else:
            out.append(sql[start:end])
    return sql[: tokens[0][0]] + "".join(out) if tokens else sql


def _names_annotation(text: str, name: str) -> bool:
    """Whether `text` calls a policy that takes an annotation by name (`filter_classifier('NAME', ...)`)."""
    return re.search(rf"\bfilter_classifier\s*\(\s*(name\s*:=\s*)?'{re.escape(name)}'", text, re.IGNORECASE) is not None


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_.-]){re.escape(name)}(?![A-Za-z0-9_.-])", text) is not None


def provenance(db: Database, sql: str) -> dict:
    """The version, SQL, definitions, tables, models and `inputs_hash` of the rows `sql` selects."""
    found = definitions(db, sql)
    texts = [sql, *found.values()]
    words = {w.lower() for text in texts for w in WORD.findall(text)}
    tables = sorted(t for t in TABLES if t in words)
    models = {
        name: {k: entry[k] for k in IDENTITY_KEYS if k in entry}
        for name, entry in sorted(db.snapshot.models.items())
        if any(_mentions(text, name) for text in texts)
    }
    data = {table: sorted((path, info["hash"]) for path, info in db.snapshot.tables[table].items()) for table in tables}
    registry = {name: {k: entry.get(k) for k in ("content_hash", "tokenizer_hash")}
                for name, entry in sorted(db.snapshot.models.items())} if "models" in words else {}
    # annotations read: their producers and the content hashes of their parts
    annotations = {
        name: {"kind": entry.get("kind"), "producer": entry.get("producer"), "columns": entry.get("columns"),
               "parts": sorted((path, db.snapshot.tables[ANNOTATIONS][path]["hash"])
                               for path in db.snapshot.parts(ANNOTATIONS, annotation_prefix(name)))}
        for name, entry in sorted(db.snapshot.annotations.items())
        if annotation_view(name) in words or any(_names_annotation(text, name) for text in texts)
    }
    payload = [sql, found, data, models, registry] + ([annotations] if annotations else [])
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    tables += [annotation_view(name) for name in annotations]
    return {"version": db.version, "sql": sql, "definitions": found, "tables": tables, "models": models,
            "annotations": {name: {k: v for k, v in a.items() if k != "parts"} for name, a in annotations.items()},
            "inputs_hash": digest}


def is_ordered(db: Database, sql: str) -> bool:
    """Whether `sql` hands out rows in an order of its own (an ORDER BY at the top of its plan)."""
    try:
        plan = json.loads(db.con.execute(f"explain (format json) {sql}").fetchall()[0][1])
    except (duckdb.Error, ValueError, IndexError):
        return False
    node = plan[0] if isinstance(plan, list) else plan
    while node:
        name = str(node.get("name", "")).strip().upper()
        if name in ("ORDER_BY", "TOP_N"):
            return True
        if name not in ("PROJECTION", "FILTER", "STREAMING_LIMIT", "LIMIT", "CTE") or not node.get("children"):
            return False
        # a materialised CTE's first child is what it materialises, its last the query's rows
        node = node["children"][-1]
    return False
