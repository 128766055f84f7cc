"""The tasks of a distributed selection; each runs anywhere (a process, a Ray task) from its arguments alone.

    python -c "from corpusdb.distributed import tasks; print(tasks.keys_task.__doc__)"

- `keys_task`: over its documents parts (and their scores), the policy's units: the counts its
  checks need, and its keys (group, order key, unit id, weight, carried columns) sorted, written to
  the work folder; returns per group the count, the weight, the first and last unit and a sample
  of the order key.
- `histogram_task`, `rows_task`: a pass of the cut (`corpusdb.distributed.radix`) over its keys file.
- `filter_task`: its units at or before its group's cut, joined to their documents' rows (DuckDB
  reads the text of the task's own parts, never another task's), in the order of the policy;
  written as parts of the result or, where the policy numbers its rows, as a kept file for the ranges.
- `rank_task`: one range of one group's order from every kept file: numbered from the range's
  offset, written as a part of the result (or, for an export's plan, as a ranked file).
- `gather_task`: an export's plan: the ranked rows of a filter task's parts, back in place order.
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusdb import failpoint
from corpusdb.covers import task_parts
from corpusdb.distributed import radix
from corpusdb.distributed.plans import INTERNAL, KEPT, UNITS, fill
from corpusdb.export_base import part_end
from corpusdb.statements import quote
from corpusdb.storage import Location

SAMPLE = 64  # order keys a task returns per group, for the ranges of the numbered policies
BATCH_ROWS = 1 << 16  # rows a task holds at once of what DuckDB hands it
COUNTS = ("no_teacher", "no_reference", "no_either", "units", "sources")
KEPT_SPANS = "corpusdb_kept_spans"  # a filter task's kept instance spans (docs := 'instances')


_OPENED: dict = {}  # (pid, source): the last database a task of this process opened, reused by the next task
_INHERITED: list = []


def _open(source: dict, parts: list[str]):
    """The database of the selection, its documents restricted to `parts` (an open one reused: ~0.1 s an open)."""
    from corpusdb.db import Database

    key = (os.getpid(), json.dumps(source, sort_keys=True))
    db = _OPENED.get(key)
    if db is None:
        for (pid, _), stale in _OPENED.items():
            if pid == os.getpid():
                stale.close()
            else:  # a forked child never frees its parent's connection: its threads are not here
                _INHERITED.append(stale)
        _OPENED.clear()
        db = _OPENED[key] = Database.connect(source["url"], source["storage_options"], as_of=source["version"],
                                             memory_limit=source.get("memory_limit"))
    db.con.execute(f"drop table if exists {UNITS}")
    with contextlib.suppress(Exception):
        db.con.unregister(KEPT)
    db.restrict(parts)
    return db


def place_order(instances: bool) -> str:
    """The order of rows by place (an instance's place is its document's; its spans follow in the text's order)."""
    return "__part, __row, byte_start" if instances else "__part, __row"


def keys_name(index: int) -> str:
    return f"keys-{index:05d}.parquet"


def kept_name(index: int) -> str:
    return f"kept-{index:05d}.parquet"


def placed_name(index: int) -> str:
    """A task's rows in place order, every column but the text (an export's plan)."""
    return f"placed-{index:05d}.parquet"


def ranked_name(index: int) -> str:
    """A numbered range's rows for an export: in place order without the text, or in the policy's order with it."""
    return f"ranked-{index:05d}.parquet"


class PartsWriter:
    """Batches written as Parquet parts `PREFIX-NNNNN.parquet`, each ending at the row whose running text bytes reach
    `limit` (as an export cuts its parts), each published whole when it ends; never more than a batch in memory."""

    def __init__(self, location: Location, prefix: str, limit: int):
        self.location, self.prefix, self.limit = location, prefix, limit
        self.parts: list[dict] = []
        self._stack: contextlib.ExitStack | None = None
        self._writer = None
        self._rows = self._bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            sizes = batch.column(batch.schema.get_field_index("n_bytes")).to_numpy(zero_copy_only=False).astype(np.int64)
            take, _ = part_end(self._bytes, sizes, self.limit)
            piece = batch.slice(0, min(take, batch.num_rows))
            if self._writer is None:
                self._stack = contextlib.ExitStack()
                name = f"{self.prefix}-{len(self.parts):05d}.parquet"
                handle = self._stack.enter_context(self.location.open_atomic(name))
                self._writer = pq.ParquetWriter(handle, batch.schema)
                self.parts.append({"file": name, "n_rows": 0, "n_bytes": 0})
            self._writer.write_batch(piece, row_group_size=1 << 16)
            self._rows += piece.num_rows
            self._bytes += int(sizes[:piece.num_rows].sum())
            batch = batch.slice(piece.num_rows)
            if take <= piece.num_rows:
                self._end()

    def _end(self) -> None:
        self._writer.close()
        self._stack.close()  # published
        self.parts[-1].update(n_rows=self._rows, n_bytes=self._bytes)
        self._writer = self._stack = None
        self._rows = self._bytes = 0

    def close(self) -> list[dict]:
        if self._writer is not None:
            self._end()
        return self.parts

    def write_all(self, batches) -> list[dict]:
        """Write every batch and close; a failure drops the open part (its finished parts stay, as a re-run rewrites
        them). Returns the parts."""
        try:
            for batch in batches:
                self.write(batch)
        except BaseException:
            self.abort()
            raise
        return self.close()

    def abort(self) -> None:
        """Drop the open part (a failed task leaves no half part)."""
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def _write_batches(location: Location, name: str, reader: pa.RecordBatchReader, each=None) -> int:
    """Stream `reader` into the Parquet file `name`, published whole at the end; `each(batch)` sees every batch.
    Returns the rows written."""
    rows = 0
    with location.open_atomic(name) as handle, pq.ParquetWriter(handle, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch, row_group_size=1 << 16)
            rows += batch.num_rows
            if each is not None:
                each(batch)
    return rows


def groups(column: pa.ChunkedArray | pa.Array) -> list[tuple[str | None, int, int]]:
    """The runs (value, start, end) of a sorted column."""
    if not len(column):
        return []
    encoded = (column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column).dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    names = encoded.dictionary.to_pylist()
    return [(names[codes[s]] if codes[s] >= 0 else None, int(s), int(e)) for s, e in zip(starts, ends)]


def _read_keys(work: Location, index: int, columns: list[str] | None = None) -> tuple[pa.Table, list]:
    with work.fs.open(work.join(keys_name(index)), "rb") as handle:
        table = pq.read_table(handle, columns=columns)
    return table, groups(table.column("__grp"))


def _arrays(table: pa.Table | pa.RecordBatch, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    piece = table.slice(start, end - start)
    column = piece.schema.get_field_index
    return (piece.column(column("__k")).to_numpy(zero_copy_only=False), piece.column(column("__u")).to_numpy(zero_copy_only=False),
            piece.column(column("__w")).to_numpy(zero_copy_only=False).astype(np.int64))


def keys_task(source: dict, parts: list[str], work_url: str, index: int, plan: dict) -> dict:
    """The units of `parts` under the plan: their checks' counts, and per group count, weight, first, last, sample."""
    db = _open(source, parts)
    work = Location(work_url, source["out_options"])
    summary: dict = {}

    def summarise(batch: pa.RecordBatch) -> None:  # batches come in (group, k, unit_id) order
        for group, start, end in groups(batch.column(batch.schema.get_field_index("__grp"))):
            k, u, w = _arrays(batch, start, end)
            mine = summary.setdefault(group, {"count": 0, "weight": 0, "first": (float(k[0]), int(u[0])), "sample": [],
                                              "finite": True})
            mine["count"] += len(k)
            mine["weight"] += int(w.sum())
            mine["last"] = (float(k[-1]), int(u[-1]))
            mine["sample"].append(k[::max(1, len(k) // SAMPLE)])
            mine["finite"] &= bool(np.isfinite(k).all())

    with db.query_errors():
        db.con.execute(f"create temp table {UNITS} as {fill(plan['units'], docs=plan['docs'])}")
        counts = dict(zip(COUNTS, db.con.execute(plan["counts"]).fetchall()[0]))
        reader = db.con.sql(f"select * from ({plan['keys']}) order by __grp nulls last, __k, __u").to_arrow_reader(BATCH_ROWS)
        _write_batches(work, keys_name(index), reader, summarise)
    db.con.execute(f"drop table {UNITS}")
    for mine in summary.values():
        sample = np.concatenate(mine["sample"])
        mine["sample"] = sample[np.unique(np.linspace(0, len(sample) - 1, min(SAMPLE, len(sample))).astype(np.int64))]
    # the score parts this task's view read: its own where the parts record covers, else every one (`corpusdb.covers`)
    read = len(task_parts(db.snapshot, {db.location.relpath(p) for p in parts}))
    return {"counts": counts, "groups": summary, "score_parts": read}


def histogram_task(work_url: str, storage_options: dict, index: int, windows: dict, nbins: int) -> dict:
    """Per group of `windows`: the histogram of this task's units inside the group's window."""
    table, runs = _read_keys(Location(work_url, storage_options), index, list(INTERNAL))
    return {group: radix.histogram(*_arrays(table, start, end), windows[group], nbins)
            for group, start, end in runs if group in windows}


def rows_task(work_url: str, storage_options: dict, index: int, windows: dict) -> dict:
    """Per group of `windows`: this task's units inside the group's window (k, unit_id, weight)."""
    table, runs = _read_keys(Location(work_url, storage_options), index, list(INTERNAL))
    out = {}
    for group, start, end in runs:
        if group in windows:
            k, u, w = _arrays(table, start, end)
            rows = radix.window_slice(k, u, windows[group])
            out[group] = (k[rows], u[rows], w[rows])
    return out


def filter_task(source: dict, parts: list[str], work_url: str, index: int, plan: dict, cuts: dict, columns: list,
                boundaries: dict | None, out_url: str | None, limit: int, first: int | None = None) -> dict:
    """Keep this task's units at or before their group's cut, join their documents' rows, and write them.

    Unnumbered policies: the rows are parts of the result (`part-INDEX-NNNNN.parquet` in `out_url`, cut at
    `limit` text bytes). Numbered ones (`boundaries`: per group the order keys where its ranges start): a
    kept file in the work folder, and per group and range the count and weight kept, from which the driver
    offsets each range. DuckDB hands the rows over a batch at a time: the task holds its kept keys and one
    batch, whatever its size.

    Placed (`first`: the index of the task's first part among the version's documents parts; `columns` without
    the text): every column but the text, with each row's place (`__part`, `__row`: its part's index and its row
    there) in place order, an export's plan (`corpusdb.distributed.places`): unnumbered, the task's placed file;
    numbered, its kept file.
    """
    work = Location(work_url, source["out_options"])
    kept = []
    with work.fs.open(work.join(keys_name(index)), "rb") as handle:
        keys = pq.ParquetFile(handle)
        for batch in keys.iter_batches(BATCH_ROWS):
            mask = np.zeros(batch.num_rows, bool)
            for group, start, end in groups(batch.column(batch.schema.get_field_index("__grp"))):
                k, u, _ = _arrays(batch, start, end)
                mask[start:end] = radix.kept_mask(k, u, cuts.get(group))
            kept.append(batch.filter(pa.array(mask)))
        kept = pa.Table.from_batches(kept, schema=keys.schema_arrow)
    db = _open(source, parts)
    instances = plan["docs"] == "instances"
    have = {name for (name, *_) in db.con.execute(f"describe {plan['docs']}").fetchall()}
    # every column of the database's documents (or instances), in its order: a part of an older schema gives NULLs, as
    # the view does
    select = ", ".join(f'd."{name}"' if name in have else f'null::{kind} as "{name}"' for name, kind in columns)
    db.con.register(KEPT, kept)
    ranges: dict = {}
    try:
        with db.query_errors():
            files = ", ".join(quote(db.location.url_of(p)) for p in parts)  # paths in the filesystem
            if instances:  # only the kept spans are joined to their documents and cut (as `instances_of_kept` does)
                db.con.execute(f"create or replace temp table {KEPT_SPANS} as select i.* from instance_spans as i semi join "
                               f"{KEPT} as k on i.instance_id = k.__u where i.byte_end >= i.byte_start")
                documents = f"instances_of('{KEPT_SPANS}')"
                if first is not None:  # each instance's place is its document's
                    documents = (f"(select s.*, p.file_index, p.file_row_number from {documents} as s join (select doc_id, "
                                 f"file_index, file_row_number from read_parquet([{files}], union_by_name = true)) as p "
                                 "on s.doc_id = p.doc_id)")
            if first is None:
                query = fill(plan["rows"], columns=select, documents="documents" if not instances else documents, place="")
            else:  # every row's place, as `corpusdb.cut.places_sql` numbers it over all the parts, read with the row
                place = f"d.file_index + {int(first)} as __part, d.file_row_number as __row"
                query = fill(plan["rows"], columns=f"{place}, {select}",
                             place="" if instances else "file_index, file_row_number, ",
                             documents=documents if instances else f"read_parquet([{files}], union_by_name = true)")
                if boundaries is None:  # in place order without the keys (numbered: the ranks need them, and order)
                    query = f"select * exclude ({', '.join(INTERNAL)}) from ({query}) order by {place_order(instances)}"
            reader = db.con.sql(query).to_arrow_reader(BATCH_ROWS)
            if first is not None and boundaries is None:
                placed = _write_batches(work, placed_name(index), reader)
                failpoint.after_part("select", 1)
                return {"rows": placed}
            if boundaries is None:  # the result's own parts, without the keys
                written = PartsWriter(Location(out_url, source["out_options"]), f"part-{index:05d}", limit).write_all(
                    batch.drop_columns(list(INTERNAL)) for batch in reader)
                failpoint.after_part("select", 1)
                return {"rows": sum(p["n_rows"] for p in written), "parts": written}

            def count(batch: pa.RecordBatch) -> None:  # per group and range: the units and weight kept
                encoded = batch.column(batch.schema.get_field_index("__grp")).dictionary_encode()
                codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
                k, _, w = _arrays(batch, 0, batch.num_rows)
                names = encoded.dictionary.to_pylist()
                for code in np.unique(codes):  # a few groups; in place order (placed) their rows interleave
                    group, mine = names[code] if code >= 0 else None, codes == code
                    which = np.searchsorted(np.asarray(boundaries.get(group, []), dtype=np.float64), k[mine], "right")
                    counts = ranges.setdefault(group, {})
                    order = np.argsort(which, kind="stable")
                    starts = np.flatnonzero(np.r_[True, which[order][1:] != which[order][:-1]])
                    sums, sizes = np.add.reduceat(w[mine][order], starts), np.diff(np.r_[starts, len(order)])
                    for r, n, weight in zip(which[order][starts], sizes, sums):
                        before = counts.get(int(r), (0, 0))
                        counts[int(r)] = (before[0] + int(n), before[1] + int(weight))

            _write_batches(work, kept_name(index), reader, count)
    finally:
        db.con.unregister(KEPT)
        db.con.execute(f"drop table if exists {KEPT_SPANS}")
    failpoint.after_part("select", 1)
    return {"rows": sum(n for mine in ranges.values() for n, _ in mine.values()), "ranges": ranges}


@contextlib.contextmanager
def _connect(work: Location, memory_limit: str | None):
    """A DuckDB connection of its own that reads the work folder (no database: a rank or gather task), spilling to a
    folder of its own, removed with it."""
    import shutil

    import duckdb

    from corpusdb.db import own_spill_folder, set_memory_limit

    con = duckdb.connect()
    spill = own_spill_folder(con)
    try:
        if memory_limit:
            set_memory_limit(con, memory_limit)
        if not work.is_local:
            con.register_filesystem(work.fs)
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def _listing(files: list[str]) -> str:
    return ", ".join(quote(f) for f in files)


def rank_task(work_url: str, storage_options: dict, files: list[str], group: str | None, low: float | None,
              high: float | None, offset: int, total: int, ranks: list[str], index: int, out_url: str | None, limit: int,
              memory_limit: str | None, order: str = "__k, __u") -> dict:
    """The kept units of `group` with low <= k < high from every kept file, numbered from `offset`, in `order` (the
    policy's, or `__part, __row` for placed kept files): written as parts of the result in `out_url`, or (`out_url`
    None) as the range's ranked file in the work folder (an export's plan)."""
    work = Location(work_url, storage_options)
    where = ["__grp is not distinct from ?"] + (["__k >= ?"] if low is not None else []) + (["__k < ?"] if high is not None else [])
    params = [group] + [b for b in (low, high) if b is not None]
    query = f"select * from read_parquet([{_listing(files)}]) where {' and '.join(where)}"
    for rank in ranks:
        query = f"select *, {fill(rank, offset=int(offset), total=int(total))} from ({query})"
    with _connect(work, memory_limit) as con:
        reader = con.sql(f"select * exclude ({', '.join(INTERNAL)}) from ({query}) order by {order}",
                         params=params).to_arrow_reader(BATCH_ROWS)
        if out_url is None:
            return {"rows": _write_batches(work, ranked_name(index), reader)}
        written = PartsWriter(Location(out_url, storage_options), f"part-{index:05d}", limit).write_all(reader)
    failpoint.after_part("select", 1)
    return {"rows": sum(p["n_rows"] for p in written), "parts": written}


def gather_task(work_url: str, storage_options: dict, files: list[str], low: int, high: int, index: int,
                memory_limit: str | None, order: str = "__part, __row") -> dict:
    """The ranked rows placed in documents parts low..high (a filter task's parts), from every ranked file, in place
    order: the task's placed file."""
    work = Location(work_url, storage_options)
    with _connect(work, memory_limit) as con:
        reader = con.sql(f"select * from read_parquet([{_listing(files)}]) where __part between {int(low)} and {int(high)} "
                         f"order by {order}").to_arrow_reader(BATCH_ROWS)
        return {"rows": _write_batches(work, placed_name(index), reader)}
