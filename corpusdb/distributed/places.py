"""A sharded export's plan from the distributed cut: no process runs the policy over every key.

    corpusdb export demo/db "difference('teacher', 'reference', alpha := 0.5)" out/refined --shards 4 --format megatron

`corpusdb export VIEW --shards N` of a call of a policy with a distributed plan
(`corpusdb.distributed.plans`) finds the cut as `corpusdb select` does (keys tasks, the checks, the
passes), then each filter task writes its kept rows without their text, each with its place (its
documents part's index in the version and its row there), in place order: a placed file per task,
so the task files in order are the export's rows in order. Numbered policies number their ranges
first (rank tasks write each range in place order) and each filter task's parts gather their rows
back from the ranges. One plan task walks the placed files' `n_bytes` column and cuts the rows
into export parts with the single-process rule (`export_base.part_end`; MDS: MDSWriter's shards,
`mds.ShardCut`, from the samples' columns but the text); each part is a list of
slices of placed files, which the export's shards (`corpusdb.export_shards.write_shard`) read with
the rows' text from the documents parts. So the parts are the bytes of a single-process export.
The driver receives the summaries and one entry per export part; the plan task reads 8 bytes a
kept row (MDS: the kept rows' columns but the text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from corpusdb.distributed import tasks
from corpusdb.distributed.calls import read_call
from corpusdb.distributed.orders import order_plan, read_order
from corpusdb.distributed.plans import plan_for
from corpusdb.distributed.select import (NBINS, RESOLVE_ROWS, Driver, check_models, find_cut, plan_groups, rank_arguments,
                                         task_source)
from corpusdb.storage import Location

if TYPE_CHECKING:
    from corpusdb.db import Database


def distributed_plan(view: str, db: Database | None = None, sql: str | None = None):
    """The distributed plan of `view` where it is a call of a policy that has one, or (`sql`: the view's SQL, over
    `db`) a relation ordered by one column (`corpusdb.distributed.orders`), else None (the driver plans)."""
    try:
        return plan_for(read_call(view))
    except ValueError:
        pass
    order = read_order(db, sql) if db is not None and sql is not None else None
    return order_plan(order, view) if order is not None else None


def placed_plans(db: Database, plan, work: Location, limit: int, shards: int, how: dict, progress: bool | None,
                 ordered: bool = False, mds_columns: dict | None = None) -> list[dict]:
    """The export parts of the policy's rows, each {index, rows, slices: [[file, start, stop], ...]} in order, the files
    in `work`; `how`: executor, workers, address, memory_limit (DuckDB's in each task). None selected: no parts.

    In place order (an unordered policy), the files hold every column but the text, with the rows' places; in the
    policy's own order (`ordered`: it numbers its rows and orders by the numbers), the ranges' rows with their text,
    which the filter tasks read from their own parts and the rank tasks from the filter tasks' files: the text
    crosses the network once, as in a shuffle, and no task reads another's documents parts.
    """
    groups = plan_groups(db, shards)
    source = task_source(db, work.storage_options, how.get("memory_limit"))
    driver = Driver(how["executor"], how.get("workers"), how.get("address"), bool(progress))
    plan = check_models(db, plan)
    cut = find_cut(db, plan, groups, source, work, driver, NBINS, RESOLVE_ROWS)
    columns = [tuple(c) for c in db.con.execute(f"select column_name, column_type from (describe {plan.docs})").fetchall()
               if ordered or c[0] != "text"]
    order = tasks.place_order(plan.docs == "instances")
    firsts = [sum(len(g) for g in groups[:i]) for i in range(len(groups))]
    ranged = bool(plan.ranks) or plan.ordered  # numbered, or in an order of its own: in ranges of the order
    boundaries = cut.boundaries(len(groups)) if ranged else None
    filtered = driver.run("filter", tasks.filter_task, [
        (source, g, work.url, i, plan.__dict__, cut.cuts, columns, boundaries, None, limit, None if ordered else firsts[i])
        for i, g in enumerate(groups)])
    files = [tasks.placed_name(i) for i, f in enumerate(filtered) if f["rows"]]
    if ranged:
        arguments = [(*a, "__k, __u" if ordered else order) for a in
                     rank_arguments(plan, cut, boundaries, filtered, work, len(groups), (None, limit, source["memory_limit"]))]
        ranked = driver.run("rank", tasks.rank_task, arguments)
        files = [tasks.ranked_name(i) for i, r in enumerate(ranked) if r["rows"]]
        if not ordered:  # each filter task's parts gather their rows back from the ranges, in place order
            listing = [work.url_of(work.join(name)) for name in files]
            filtered = driver.run("gather", tasks.gather_task, [
                (work.url, work.storage_options, listing, firsts[i], firsts[i] + len(g) - 1, i, source["memory_limit"], order)
                for i, g in enumerate(groups)]) if listing else []
            files = [tasks.placed_name(i) for i, f in enumerate(filtered) if f["rows"]]
    return driver.run("plan", plan_task, [(work.url, work.storage_options, files, limit, mds_columns)])[0]


def plan_task(work_url: str, storage_options: dict, files: list[str], limit: int, mds_columns: dict | None = None
              ) -> list[dict]:
    """The rows of the placed `files`, in order, cut into export parts where a single-process export cuts them (a part
    ends at the row whose running text bytes reach `limit`; an MDS shard, `mds_columns` its samples' columns, as
    MDSWriter ends it): each part's slices of the files. Reads `n_bytes` alone (MDS: the samples' columns but the
    text), a row group at a time."""
    from corpusdb.export_base import BytesCut
    from corpusdb.mds import ShardCut

    work = Location(work_url, storage_options)
    cutter = ShardCut(mds_columns, limit) if mds_columns else BytesCut(limit)
    plans: list[dict] = []
    current = None
    for name in files:
        with work.fs.open(work.join(name), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            offset = 0
            for group in range(parquet.metadata.num_row_groups):
                table = parquet.read_row_group(group, columns=cutter.read)
                sizes = np.concatenate([cutter.sizes(b) for b in table.to_batches()] or [np.empty(0, np.int64)])
                rows = len(sizes)
                start = 0
                while start < rows:
                    if current is None:
                        current = {"index": len(plans), "rows": 0, "slices": []}
                        plans.append(current)
                    cut = cutter.end(sizes[start:])
                    take = min(cut, rows - start)
                    slices = current["slices"]
                    if take and slices and slices[-1][0] == name and slices[-1][2] == offset + start:
                        slices[-1][2] += take
                    elif take:
                        slices.append([name, offset + start, offset + start + take])
                    current["rows"] += take
                    if cut <= rows - start:  # the part ends in this row group
                        current = None
                    start += take
                offset += rows
    return plans


def read_slices(work: Location, slices: list[list], batch_rows: int):
    """The rows of each slice [placed file, start, stop] in order, as record batches of at most `batch_rows` rows,
    reading only the row groups that hold them."""
    for name, start, stop in slices:
        with work.fs.open(work.join(name), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            first = 0
            for group in range(parquet.metadata.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                low, high = max(start, first), min(stop, first + rows)
                if low < high:
                    table = parquet.read_row_group(group).slice(low - first, high - low)
                    yield from table.to_batches(batch_rows)
                first += rows
