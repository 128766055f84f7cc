"""A view's cut: the rows it keeps, as places in the committed documents parts, numbered into blocks.

    python -c "import corpusdb; from corpusdb.cut import text_kind; \
      print(text_kind(corpusdb.open('demo/db'), \"select * from difference('teacher', 'reference')\"))"

A selection of MiniPLM's size keeps ~100 GB of text. Exporting it before training starts makes the
first batch wait for all of it; but most views hand out documents' text unchanged (a policy keeps
rows, it does not rewrite them). For those the text need never pass through DuckDB: the view is
run for its keys alone (doc_id and n_bytes, and an instance's byte span), which reads no text
column at all, and each key is joined to its place in the documents parts (DuckDB's
`file_index` and `file_row_number`). Sorted by place and cut into blocks of about `block_bytes`,
the cut is a few arrays (28 bytes per kept row) and a small JSON file; a block's text is then read
from the one or two row groups that hold it, when a stream needs it.

Which views qualify is decided on DuckDB's own parse tree (`json_serialize_sql`), conservatively:
a view is *pass-through* when it selects `*` or bare columns (`doc_id`, `text`, and over instances
`byte_start`, `byte_end` unrenamed and unreplaced) from one relation that is itself pass-through:
`documents`, `instances`, `dedup`, a user view that qualifies, or a built-in policy whose `docs`
qualifies. Any filter, order, limit or extra column is allowed; a join, a union, a grouping, a
CTE or a rewritten column is not. Everything else keeps the export path, which is exact for any
SQL. A cut is only ever reused for exactly the same inputs (`corpusdb.provenance`).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpusdb.statements import quote
from corpusdb.storage import Location, storage_errors
from corpusdb.text import string_buffers

if TYPE_CHECKING:
    from corpusdb.db import Database

CUT = "cut.json"
# Built-in policies whose rows are rows of their `docs` relation, every column of it unchanged.
PASS_THROUGH_POLICIES = frozenset({
    "curriculum", "dedup", "difference", "difference_by_source", "difference_bytes", "difference_sampled",
    "filter_classifier", "filter_decontaminated", "filter_language", "filter_length", "filter_loss", "filter_quality",
    "filter_source", "mixture", "quota",
})
KINDS = {"documents": "documents", "instances": "instances", "dedup": "documents"}
SPAN = ("byte_start", "byte_end")
ARRAYS = ("part", "row", "doc_id", "n_bytes")


class NotPassThrough(Exception):
    """The view may change the text it hands out (the reason is the message)."""


def text_kind(db: Database, sql: str) -> tuple[str | None, str]:
    """("documents" or "instances", "") where `sql` hands out rows of that relation with their text
    unchanged, or (None, why not)."""
    try:
        return _select_kind(db, sql, depth=0), ""
    except NotPassThrough as exc:
        return None, str(exc)


def _tree(db: Database, sql: str) -> dict:
    tree = json.loads(db.con.execute("select json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise NotPassThrough("the SQL is not one select DuckDB can parse")
    return tree["statements"][0]["node"]


def _select_kind(db: Database, sql: str, depth: int) -> str:
    if depth > 32:
        raise NotPassThrough("views nest more than 32 deep")
    return _node_kind(db, _tree(db, sql), depth)


def _node_kind(db: Database, node: dict, depth: int) -> str:
    if node.get("type") != "SELECT_NODE":
        raise NotPassThrough(f"a {node.get('type', '?').lower().replace('_node', '')} (only a plain select qualifies)")
    if node.get("cte_map", {}).get("map"):
        raise NotPassThrough("a WITH clause")
    if node.get("group_expressions") or node.get("group_sets") or node.get("having") \
            or node.get("aggregate_handling") != "STANDARD_HANDLING":
        raise NotPassThrough("a grouping")
    for modifier in node.get("modifiers", []):
        if modifier.get("type") not in ("ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER"):
            raise NotPassThrough(f"a {modifier.get('type', '?').lower()}")
    kind = _table_kind(db, node.get("from_table") or {}, depth)
    _check_columns(node.get("select_list", []), ("doc_id", "text", *(SPAN if kind == "instances" else ())))
    return kind


def _table_kind(db: Database, table: dict, depth: int) -> str:
    kind = table.get("type")
    if kind == "BASE_TABLE":
        if table.get("schema_name") or table.get("catalog_name") or table.get("at_clause") or table.get("column_name_alias"):
            raise NotPassThrough(f"a qualified or renamed table {table.get('table_name')!r}")
        return _name_kind(db, table["table_name"], depth)
    if kind == "SUBQUERY":
        if table.get("column_name_alias"):
            raise NotPassThrough("a subquery with renamed columns")
        return _node_kind(db, table["subquery"]["node"], depth + 1)
    if kind == "TABLE_FUNCTION":
        function = table.get("function") or {}
        name = str(function.get("function_name", "")).lower()
        if name not in PASS_THROUGH_POLICIES or function.get("schema") or function.get("catalog") \
                or table.get("column_name_alias"):
            raise NotPassThrough(f"{name}(...) is not a policy that keeps rows unchanged")
        docs = "documents"
        for argument in function.get("arguments", []):
            if argument.get("name") == "docs":
                value = argument.get("expression") or {}
                literal = value.get("literal") or {}
                if value.get("class") != "CONSTANT" or literal.get("kind") != "STRING":
                    raise NotPassThrough(f"{name}(docs := ...) is not a string naming a relation")
                docs = literal["text"]
        return _name_kind(db, docs, depth)
    raise NotPassThrough(f"a {str(kind).lower().replace('_', ' ')} in FROM (only one relation qualifies)")


def _name_kind(db: Database, name: str, depth: int) -> str:
    name = name.lower()
    if name in KINDS:
        return KINDS[name]
    view = db.snapshot.views.get(name)
    if view is None:
        raise NotPassThrough(f"{name!r} is not documents, instances or a view over them")
    return _select_kind(db, view["sql"], depth + 1)


def _check_columns(select_list: list[dict], needed: tuple[str, ...]) -> None:
    """Every column in `needed` must leave the select as it came in (from a star or a bare column)."""
    present: set[str] = set()
    for expression in select_list:
        alias = expression.get("alias") or ""
        if expression.get("class") == "STAR":
            if expression.get("columns") or expression.get("expr") or expression.get("rename_list"):
                raise NotPassThrough("COLUMNS(...) or a renaming star")
            replaced = {str(entry.get("key", "")).lower() for entry in expression.get("replace_list", [])}
            if replaced & set(needed):
                raise NotPassThrough(f"a star that replaces {sorted(replaced & set(needed))[0]!r}")
            excluded = {str(name).lower() for name in expression.get("exclude_list", [])}
            excluded |= {str(entry[-1] if isinstance(entry, list) else entry).lower()
                         for entry in expression.get("qualified_exclude_list", [])}
            present |= set(needed) - excluded
        elif expression.get("class") == "COLUMN_REF":
            column = str(expression["column_names"][-1]).lower()
            out = alias.lower() or column
            if out in needed and column != out:
                raise NotPassThrough(f"{column} renamed to {out!r}")
            present.add(out)
        elif alias.lower() in needed:
            raise NotPassThrough(f"{alias!r} is computed")
    missing = [column for column in needed if column not in present]
    if missing:
        raise NotPassThrough(f"no {missing[0]!r} column")


def byte_spans(texts: pa.Array, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray | None = None
               ) -> pa.StringArray:
    """The bytes [start, end) of text `rows[i]` (of text i where rows is None) for each span, clamped to
    the text as SQL's slicing is, gathered with numpy.

    Raises:
        ValueError: a span cuts a UTF-8 character in two (as the instances view's `decode` refuses it).
    """
    offsets, data = string_buffers(texts)
    rows = np.arange(len(texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    ends = np.clip(np.asarray(ends, dtype=np.int64), 0, offsets[rows + 1] - offsets[rows])
    starts = np.clip(np.asarray(starts, dtype=np.int64), 0, ends)
    low, high = offsets[rows] + starts, offsets[rows] + ends
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(high - low, out=out[1:])
    if np.all(low[1:] >= high[:-1]):
        # spans in text order that do not overlap (instances as cut): a mask of gaps and spans, one pass
        bounds = np.empty(2 * len(low) + 2, dtype=np.int64)
        bounds[0], bounds[1:-1:2], bounds[2:-1:2], bounds[-1] = 0, low, high, len(data)
        pattern = np.zeros(len(bounds) - 1, dtype=np.bool_)
        pattern[1::2] = True
        picked = data[np.repeat(pattern, np.diff(bounds))]
    else:  # every output byte's source: its span's first byte plus its place in the span
        picked = data[np.repeat(low - out[:-1], high - low) + np.arange(out[-1], dtype=np.int64)]
    result = pa.LargeStringArray.from_buffers(len(rows), pa.py_buffer(out), pa.py_buffer(picked))
    try:
        result.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"an instance's byte span cuts a character in two ({exc}); instance spans must "
                         "start and end on character boundaries, as `corpusdb instances` cuts them") from exc
    return result.cast(pa.string())


class PartReader:
    """The text of rows named by place (documents part, row), read from the parts a row group at a time."""

    def __init__(self, location: Location, parts: list[str], kind: str):
        self.location, self.parts, self.kind = location, parts, kind
        self._groups: dict[int, np.ndarray] = {}  # part -> first row of each row group, and the row count
        self.row_groups_read = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_groups": {}}

    def texts(self, parts: np.ndarray, rows: np.ndarray, doc_ids: np.ndarray, spans: tuple | None = None) -> pa.Array:
        """The texts of the rows (sorted by place) as an Arrow string array, checked against their doc_ids;
        an instance's text is its byte span."""
        pieces: list[pa.Array] = []
        bounds = np.flatnonzero(np.diff(parts)) + 1
        for start, end in zip([0, *bounds], [*bounds, len(parts)]):
            if end > start:
                texts, at = self._read(int(parts[start]), rows[start:end], doc_ids[start:end])
                piece = texts.take(at) if spans is None else byte_spans(texts, spans[0][start:end], spans[1][start:end], at)
                pieces.append(piece if piece.type == pa.string() else piece.cast(pa.string()))
        return pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())

    def _read(self, part: int, rows: np.ndarray, doc_ids: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """The text of the row groups of `part` that hold `rows`, and each row's index in it (checked
        against `doc_ids`)."""
        url = self.location.url_of(self.location.join(self.parts[part]))
        with storage_errors(url), self.location.fs.open(self.location.join(self.parts[part]), "rb") as f:
            parquet = pq.ParquetFile(f)
            if part not in self._groups:
                sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)]
                self._groups[part] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            firsts = self._groups[part]
            group_of = np.searchsorted(firsts, rows, side="right") - 1
            groups = np.unique(group_of)
            table = parquet.read_row_groups([int(g) for g in groups], columns=["doc_id", "text"])
        self.row_groups_read += len(groups)
        # the rows' positions in the concatenation of the row groups read
        offsets = np.concatenate([[0], np.cumsum(firsts[groups + 1] - firsts[groups])])
        at = offsets[np.searchsorted(groups, group_of)] + rows - firsts[group_of]
        if not np.array_equal(table.column("doc_id").to_numpy()[at], doc_ids):
            raise RuntimeError(f"{url} does not hold the rows its place names (a part changed after it was "
                               "committed?); run `corpusdb check` on the database")
        return table.column("text").combine_chunks(), at


class Cut:
    """A view's kept rows as (documents part, row) places, sorted by place, numbered into blocks.

    Blocks are what `train.ViewDataset` shuffles and shards; `read(b)` reads block b's text from
    the parts. The arrays are memory-mapped, so DataLoader workers share them through the page
    cache, and a pickled Cut carries only its folder.
    """

    pretokenized = False

    def __init__(self, folder: str | os.PathLike, storage_options: dict | None = None):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / CUT).read_text())
        self.kind = self.manifest["kind"]
        self.reader = PartReader(Location(self.manifest["database"], storage_options or {}), self.manifest["parts"],
                                 self.kind)
        self.starts = np.asarray(self.manifest["block_starts"], dtype=np.int64)
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            names = ARRAYS + (SPAN if self.kind == "instances" else ())
            self._arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in names}
        return self._arrays

    def read(self, index: int) -> tuple[np.ndarray, list[str]]:
        """(doc_ids, texts) of block `index`, in place order (an instance's text is its byte span)."""
        lo, hi = int(self.starts[index]), int(self.starts[index + 1])
        block = {name: np.asarray(values[lo:hi]) for name, values in self.arrays.items()}
        spans = (block["byte_start"], block["byte_end"]) if self.kind == "instances" else None
        return block["doc_id"], self.reader.texts(block["part"], block["row"], block["doc_id"], spans).to_pylist()


def places_sql(db: Database, sql: str, kind: str, columns: str) -> str:
    """`columns` (over `s`, the rows of `sql`) with each row's place, `part` and `row`, in place order.

    The join reads only the documents parts' doc_id column; a row whose doc_id has no document
    gets a null place.
    """
    files = ", ".join(quote(db.location.url_of(db.location.join(p))) for p in db.snapshot.parts("documents"))
    return (f"select d.file_index as __part, d.file_row_number as __row, {columns} from ({sql}) s "
            f"left join (select doc_id, file_index, file_row_number from read_parquet([{files}], union_by_name = true)) d "
            f"on s.doc_id = d.doc_id order by __part, __row{', s.byte_start' if kind == 'instances' else ''}")


def placed_batches(db: Database, sql: str, kind: str, cursor, batch_rows: int = 1 << 16):
    """The rows of `sql` (pass-through, of `kind`) as Arrow batches in place order, every column of the view,
    the text read from the parts a batch at a time: DuckDB sorts only the other columns."""
    names = db.sql(f"select * from ({sql}) limit 0").columns
    others = [name for name in names if name != "text"]
    reader = PartReader(db.location, db.snapshot.parts("documents"), kind)
    query = places_sql(db, sql, kind, ", ".join(f's."{name}"' for name in others))
    for batch in cursor.sql(query).to_arrow_reader(batch_rows) if db.snapshot.parts("documents") else ():
        yield with_text(batch, reader, kind, names)


def with_text(batch: pa.RecordBatch, reader: PartReader, kind: str, names: list[str]) -> pa.RecordBatch:
    """A batch of `places_sql` (every column but the text, with the rows' places) as the view's rows: the columns
    `names` in order, the text read from the parts (an instance's: its byte span)."""
    parts, rows = _places(batch)
    spans = (batch.column("byte_start").to_numpy(), batch.column("byte_end").to_numpy()) if kind == "instances" else None
    columns = {name: batch.column(name) for name in names if name != "text"}
    columns["text"] = reader.texts(parts, rows, batch.column("doc_id").to_numpy(), spans)
    return pa.RecordBatch.from_arrays([columns[name] for name in names], names=names)


def _places(batch) -> tuple[np.ndarray, np.ndarray]:
    if batch.column("__part").null_count:
        raise RuntimeError("the view hands out a doc_id that is not in documents, so its text cannot be read from "
                           "the parts; report this view to corpusdb's maintainers")
    return (batch.column("__part").to_numpy().astype(np.int32), batch.column("__row").to_numpy().astype(np.int64))


def make_cut(db: Database, sql: str, kind: str, folder: str | os.PathLike, block_bytes: int, record: dict) -> Cut:
    """The cut of `sql` (a pass-through select of `kind`) in `folder`, made now or reused from there.

    `record` is the selection's provenance; the folder is named for it by the caller, and a cut
    there is reused only if it was made from the same inputs with the same block size.
    """
    folder = Path(folder)
    if (folder / CUT).exists():
        cut = Cut(folder, db.location.storage_options)
        if cut.manifest.get("inputs_hash") == record["inputs_hash"] and cut.manifest.get("block_bytes") == block_bytes:
            return cut
    span = SPAN if kind == "instances" else ()
    keys = ("doc_id", "n_bytes", *span)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in ARRAYS + span}
    if db.snapshot.parts("documents"):
        cursor = db.con.cursor()
        try:
            with db.query_errors():
                for batch in cursor.sql(places_sql(db, sql, kind, ", ".join(f"s.{c}" for c in keys))).to_arrow_reader(1 << 16):
                    parts, rows = _places(batch)
                    chunks["part"].append(parts)
                    chunks["row"].append(rows)
                    for name in keys:
                        chunks[name].append(batch.column(name).to_numpy(zero_copy_only=False).astype(np.int64))
        finally:
            cursor.close()
    arrays = {name: np.concatenate(values) if values else np.empty(0, np.int32 if name == "part" else np.int64)
              for name, values in chunks.items()}
    starts = block_starts(arrays["n_bytes"], block_bytes)
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in arrays.items():
        _write_atomic(folder / f"{name}.npy", lambda f, v=values: np.save(f, v))
    manifest = {"format": "corpusdb-cut", "kind": kind, "database": db.url, "parts": db.snapshot.parts("documents"),
                "block_bytes": block_bytes, "block_starts": starts.tolist(), "n_rows": int(len(arrays["doc_id"])),
                "n_bytes": int(arrays["n_bytes"].sum()), **record}
    _write_atomic(folder / CUT, lambda f: f.write(json.dumps(manifest).encode()))  # last: the cut is complete
    return Cut(folder, db.location.storage_options)


def block_starts(n_bytes: np.ndarray, limit: int) -> np.ndarray:
    """First row of each block, and the row count last: a block ends at the row where its text reaches `limit`
    (the rule export uses for its parts), so every block but the last holds at least `limit` bytes."""
    running = np.cumsum(n_bytes, dtype=np.int64)
    starts = [0]
    while starts[-1] < len(n_bytes):
        base = running[starts[-1] - 1] if starts[-1] else 0
        starts.append(min(int(np.searchsorted(running, base + limit, side="left")) + 1, len(n_bytes)))
    return np.asarray(starts, dtype=np.int64)


def _write_atomic(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as f:
            write(f)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
