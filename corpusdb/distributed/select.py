"""The driver of a distributed selection: summaries, the exact cut, the filter and the ranges, on tasks.

    corpusdb select demo/db "difference('teacher', 'reference', alpha := 0.5)" out/refined --shards 4
    corpusdb select s3://bkt/db "quota(map {'web': 1e12})" s3://bkt/sel --shards 512 --executor ray --address auto

The documents parts are dealt to `shards` tasks of contiguous parts. Each task computes its units
and keys (`tasks.keys_task`); the driver checks the summed counts (the policy's own errors), gets
each group's threshold from DuckDB, and narrows the cut pass by pass over histograms
(`corpusdb.distributed.radix`) until a window of at most `resolve_rows` units is fetched and
resolved. Each task then keeps its units at or before the cut and joins their rows (text
included, for the kept rows only). Policies that number their rows (`difference_sampled`,
`difference_by_source`, `quota`'s running totals) have their kept units split into ranges of the
order, offset from the tasks' counts, and numbered by one task per range. The result is the rows
of the single-process query, ties included: `manifest.json`, written last, lists the parts in
the policy's order (for an unordered policy, in the order of the documents parts) as an export's
manifest does, so `ViewDataset.from_export(URL)` streams them on every rank (and `corpusdb train
--export URL`), each rank reading its own blocks.

What the driver receives is the summaries (per task and group: counts, a 64-key sample, and per
pass at most `nbins` bins) and at most `resolve_rows` units: never the keys.
"""

from __future__ import annotations

import json
import os
import pickle
import posixpath
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from corpusdb.db import MEMORY_LIMIT_ENV, set_memory_limit
from corpusdb.distributed import radix, tasks
from corpusdb.distributed.calls import read_call
from corpusdb.distributed.plans import NO_DOCUMENTS, fill, key_cast, plan_for
from corpusdb.errors import QueryError
from corpusdb.execute import map_tasks
from corpusdb.provenance import provenance
from corpusdb.statements import quote
from corpusdb.storage import Location

if TYPE_CHECKING:
    from corpusdb.db import Database

MANIFEST = "manifest.json"  # as an export's: `ViewDataset.from_export` streams a selection's parts
WORK = "_work"
PART_RE = re.compile(r"part-\d{5}-\d{5}\.parquet")
NBINS = 1024
RESOLVE_ROWS = 1 << 16


@dataclass
class Selection:
    """A distributed selection's result: its parts in order, and what it took."""

    url: str
    files: list[str]
    rows: int
    cuts: dict  # per group: the last kept unit (order key, unit_id), or None where nothing is kept
    passes: int
    received_bytes: int  # what the driver received from its tasks (pickled): the summaries, never the keys
    seconds: dict = field(default_factory=dict)  # wall seconds per stage (keys, histogram, resolve, filter, rank)
    task_peak_rss: int = 0  # the largest peak RSS of a process that ran a task (bytes; inline: this process's)
    score_parts_read: int = 0  # score parts the keys tasks read, all told (each its own where parts record covers)
    score_parts: int = 0  # score parts of the version


def _measured(function, *args) -> tuple:
    """`function(*args)` and the peak RSS of the process that ran it (bytes)."""
    result = function(*args)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Driver:
    def __init__(self, executor: str, workers: int | None, address: str | None, progress: bool):
        self.options = {"executor": executor, "workers": workers, "address": address}
        self.progress, self.received, self.seconds, self.task_rss = progress, 0, {}, 0

    def run(self, stage: str, function, arguments: list[tuple]) -> list:
        started = time.perf_counter()
        try:
            measured = map_tasks(_measured, [(function, *args) for args in arguments], what=f"a {stage} task",
                                 **self.options)
        except QueryError as exc:
            if "Out of Memory" not in str(exc):
                raise
            raise QueryError(f"a {stage} task ran out of memory ({str(exc).split(';')[0]}): give each task fewer "
                             "documents (more --shards) or more memory (--task-memory-limit, CORPUSDB_MEMORY_LIMIT)") from exc
        self.received += len(pickle.dumps(measured))
        results = [result for result, _ in measured]
        self.task_rss = max([self.task_rss, *(rss for _, rss in measured)])
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
        if self.progress:
            print(f"  select: {stage} ({len(arguments)} tasks, {time.perf_counter() - started:.1f} s)", file=sys.stderr)
        return results


def _sql_list(values: list) -> str:
    return "[" + ", ".join("NULL" if v is None else quote(str(v)) for v in values) + "]::varchar[]"


def check_models(db: Database, plan):
    """The checks of the policy's units (score names, per, units) on an empty documents relation, before any task;
    returns the plan, its order key cast for the type of its key column where it has one (`plans.key_cast`).

    Raises:
        QueryError: the units do not bind (the macro's words).
        ValueError: a key column the plan cannot order by exactly.
    """
    db.con.execute(f"create or replace temp view {NO_DOCUMENTS} as select * from {plan.docs} where false")
    units = fill(plan.units, docs=NO_DOCUMENTS)
    try:
        with db.query_errors():
            db.con.execute(f"select count(*) from ({units})").fetchall()
            types = dict(db.con.execute(f"select column_name, column_type from (describe {units})").fetchall())
    except QueryError as exc:  # the macro's own words: not the line of the plan's SQL that DuckDB quotes
        raise QueryError(re.sub(r"; LINE \d+: [^;]*", "", str(exc))) from exc.__cause__
    return key_cast(plan, types[plan.key_column]) if plan.key_column else plan


def _check(db: Database, plan, counts: dict, sources: list) -> None:
    """The policy's own checks, on the units' summed counts: its errors, word for word."""
    with db.query_errors():
        listing = f"(select list(distinct source order by source) as sources from (select unnest({_sql_list(sources)}) as source))"
        for check in plan.checks:
            filled = fill(check, sources="listing.sources", **{k: int(v) for k, v in counts.items()})
            db.con.execute(f"with listing as {listing} select {filled} from listing").fetchall()


def _threshold(db: Database, plan, group, count: int, weight: int):
    with db.query_errors():
        return db.con.execute("select " + fill(plan.threshold, group="NULL" if group is None else quote(group),
                                                count=count, weight=weight)).fetchall()[0][0]


def _ranges(sample: np.ndarray, cut: tuple | None, n: int) -> list[float]:
    """Up to n - 1 order keys where the ranges of one group's kept units start (from the tasks' samples)."""
    if cut is None or n <= 1:
        return []
    keys = np.unique(sample[sample <= cut[0]])
    if len(keys) <= 1:
        return []
    picks = np.unique(np.quantile(keys, np.linspace(0, 1, n + 1)[1:-1], method="lower"))
    return [float(x) for x in picks if x > keys[0]]


def select(db: Database, call: str, out: str, *, shards: int | None = None, executor: str = "local",
           workers: int | None = None, address: str | None = None, storage_options: dict | None = None,
           nbins: int = NBINS, resolve_rows: int = RESOLVE_ROWS, part_size_mb: float = 64.0, overwrite: bool = False,
           memory_limit: str | None = None, progress: bool = False) -> Selection:
    """Compute the policy call over `db` as tasks, writing its rows as Parquet parts in `out`.

    Args:
        call: a built-in cut policy's call, e.g. "difference('teacher', 'reference', alpha := 0.5)", or a built-in
            view that is one ("dedup").
        shards: tasks (each a run of contiguous documents parts) [default: two per CPU]. Each task reads the
            score parts that cover its documents parts (`corpusdb.covers`; `corpusdb score` records them), and
            every score part that records none: where none do, every task reads all the scores, so few large
            tasks, not one per part.
        executor: "local" (processes), "ray" (tasks on the cluster at `address`) or "inline" (this process).
        nbins, resolve_rows: bins per pass of the cut, and the window fetched whole (both bound the driver's memory).
        part_size_mb: text bytes per part (a part ends at the row that reaches it; each task writes its own parts).
        storage_options: fsspec options for `out` [default: the database's].
        overwrite: replace a selection already in `out`.
        memory_limit: DuckDB's memory limit in each task ("2GB") [default: CORPUSDB_MEMORY_LIMIT, else DuckDB's].

    Raises:
        ValueError: not a call of a policy with a distributed plan, a selection already in `out`, bad settings.
        QueryError: the policy refuses its arguments or the database's coverage (its own message).
    """
    plan = plan_for(read_call(call))
    if nbins < 2 or nbins & (nbins - 1):
        raise ValueError(f"nbins must be a power of two of at least 2, not {nbins}")
    if resolve_rows < 1:
        raise ValueError(f"resolve_rows must be at least 1, not {resolve_rows}")
    storage_options = storage_options if storage_options is not None else db.location.storage_options
    target = Location(out, storage_options)
    if target.exists(MANIFEST):
        kind = json.loads(target.read_bytes(MANIFEST)).get("kind")
        if kind != "selection":
            raise ValueError(f"{out} holds an export, not a selection ({MANIFEST}); pick another folder")
        if not overwrite:
            raise ValueError(f"{out} holds a selection already ({MANIFEST}); pass overwrite=True (--overwrite) to replace it")
    groups_of_parts = plan_groups(db, shards)
    # the database's own storage options for reading it; `storage_options` for the selection's folder
    source = task_source(db, storage_options, memory_limit)
    work = Location(out.rstrip("/") + "/" + WORK, storage_options)
    driver = Driver(executor, workers, address, progress)
    plan = check_models(db, plan)
    try:
        return _select(db, plan, groups_of_parts, source, work, target, driver, nbins, resolve_rows, out,
                       max(1, int(part_size_mb * 1024 * 1024)))
    finally:
        if work.fs.exists(work.path):  # the keys and kept files: done with, or of a failed run
            work.fs.rm(work.path, recursive=True)


@dataclass
class Cut:
    """Where each group's kept units end, and what the ranges of the numbered policies start from."""

    cuts: dict  # per group: the last kept unit (order key, unit_id), or None where nothing is kept
    passes: int
    units: dict  # per group: its units
    samples: dict  # per group: the tasks' samples of its order keys
    score_parts_read: int = 0  # score parts the keys tasks read, all told

    def boundaries(self, shards: int) -> dict:
        """Per group the order keys where its ranges start: about two ranges per task in all, shared by units."""
        total = max(1, sum(self.units.values()))
        return {g: _ranges(self.samples[g], self.cuts[g], max(1, round(2 * shards * n / total))) for g, n in self.units.items()}


def task_source(db: Database, out_options: dict, memory_limit: str | None) -> dict:
    """What a task opens: the database at this version (its own storage options), the options of the output's folder,
    DuckDB's memory limit per task [default: CORPUSDB_MEMORY_LIMIT, else DuckDB's].

    Raises:
        ValueError: a memory limit DuckDB does not read (before any task starts).
    """
    memory_limit = memory_limit or os.environ.get(MEMORY_LIMIT_ENV)
    if memory_limit:
        import duckdb

        with duckdb.connect() as con:
            set_memory_limit(con, memory_limit)
    return {"url": db.url, "storage_options": db.location.storage_options, "out_options": out_options,
            "version": db.version, "memory_limit": memory_limit}


def plan_groups(db: Database, shards: int | None) -> list[list[str]]:
    """The documents parts dealt to `shards` tasks of contiguous parts [default: two per CPU].

    Raises:
        ValueError: no documents, or shards below 1.
    """
    parts = db.parts("documents")
    if not parts:
        raise ValueError(f"{db.url} has no documents; ingest some first")
    shards = min(shards or 2 * (os.cpu_count() or 1), len(parts))
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return [parts[i * len(parts) // shards:(i + 1) * len(parts) // shards] for i in range(shards)]


def find_cut(db: Database, plan, groups_of_parts: list, source: dict, work: Location, driver: Driver, nbins: int,
             resolve_rows: int) -> Cut:
    """The keys tasks, the policy's checks on their summed counts, and the cut, narrowed pass by pass."""
    storage_options, shards, plan_dict = source["out_options"], len(groups_of_parts), plan.__dict__
    summaries = driver.run("keys", tasks.keys_task, [(source, g, work.url, i, plan_dict) for i, g in enumerate(groups_of_parts)])
    counts = {name: sum(s["counts"][name] for s in summaries) for name in tasks.COUNTS if name != "sources"}
    # a task without units (documents without instances) lists no sources: NULL
    sources = sorted({x for s in summaries for x in s["counts"]["sources"] or []}, key=lambda x: (x is None, x or ""))
    _check(db, plan, counts, sources)

    searches: dict = {}
    samples: dict = {}
    units: dict = {}  # per group: its units (the searches' counts narrow to their windows)
    for group in sorted({g for s in summaries for g in s["groups"]}, key=lambda x: (x is None, x or "")):
        mine = [s["groups"][group] for s in summaries if group in s["groups"]]
        if not all(m["finite"] for m in mine):
            raise ValueError(f"{plan.call}: an order key is not finite (an infinite score?); a distributed cut needs "
                             "finite ones: run it in one process (`corpusdb sql`, `corpusdb export` without --shards)")
        count, weight = sum(m["count"] for m in mine), sum(m["weight"] for m in mine)
        first, last = min(m["first"] for m in mine), max(m["last"] for m in mine)
        if plan.rule == "all":  # an order without a cut: every unit is kept
            search = radix.Search(plan.rule, None, (*first, *last), count)
            search.finish(last)
        else:
            threshold = _threshold(db, plan, group, count, weight)
            search = radix.Search(plan.rule, threshold, (*first, *last), count)
            if threshold is None:
                search.finish(None)
            elif threshold > weight or (plan.rule == "through" and threshold >= weight):  # every unit is kept
                search.finish(last)
        searches[group], units[group] = search, count
        samples[group] = np.concatenate([m["sample"] for m in mine])

    passes = 0
    while not all(s.done for s in searches.values()):
        passes += 1
        small = {g: s.window for g, s in searches.items() if not s.done and s.count <= resolve_rows}
        large = {g: s.window for g, s in searches.items() if not s.done and s.count > resolve_rows}
        if small:
            found = driver.run("resolve", tasks.rows_task, [(work.url, storage_options, i, small) for i in range(shards)])
            for group in small:
                got = [f[group] for f in found if group in f]
                searches[group].resolve(*(np.concatenate([g[j] for g in got]) if got else np.zeros(0) for j in range(3)))
        if large:
            found = driver.run("histogram", tasks.histogram_task,
                               [(work.url, storage_options, i, large, nbins) for i in range(shards)])
            for group in large:
                searches[group].narrow(radix.merge([f[group] for f in found if group in f]))
    return Cut({g: s.cut for g, s in searches.items()}, passes, units, samples, sum(s["score_parts"] for s in summaries))


def rank_arguments(plan, cut: Cut, boundaries: dict, filtered: list[dict], work: Location, shards: int, how: tuple) -> list:
    """The rank tasks' arguments: per group (in the policy's order, nulls last) and range, its offset from the kept
    counts of the ranges before it; `how` is the rest of `tasks.rank_task`'s arguments after the range's index."""
    kept_files = [work.url_of(work.join(tasks.kept_name(i))) for i in range(shards)]
    total = sum(f["rows"] for f in filtered)
    arguments, offset = [], 0
    for group in sorted(cut.cuts, key=lambda x: (x is None, x or "")):
        edges = [None, *boundaries[group], None]
        if plan.numbering == "group":
            offset = 0
        for r in range(len(edges) - 1):
            got = [f["ranges"].get(group, {}).get(r, (0, 0)) for f in filtered]
            arguments.append((work.url, work.storage_options, kept_files, group, edges[r], edges[r + 1], offset, total,
                              plan.ranks, len(arguments), *how))
            offset += sum(w if plan.rank_by == "weight" else c for c, w in got)
    return arguments


def _select(db: Database, plan, groups_of_parts: list, source: dict, work: Location, target: Location, driver: Driver,
            nbins: int, resolve_rows: int, out: str, limit: int) -> Selection:
    shards, plan_dict = len(groups_of_parts), plan.__dict__
    cut = find_cut(db, plan, groups_of_parts, source, work, driver, nbins, resolve_rows)
    cuts, passes = cut.cuts, cut.passes
    columns = [tuple(c) for c in db.con.execute(f"select column_name, column_type from (describe {plan.docs})").fetchall()]
    boundaries = cut.boundaries(shards) if plan.ranks or plan.ordered else None
    filtered = driver.run("filter", tasks.filter_task, [
        (source, g, work.url, i, plan_dict, cuts, columns, boundaries, out, limit) for i, g in enumerate(groups_of_parts)])
    if plan.ranks or plan.ordered:
        written = driver.run("rank", tasks.rank_task, rank_arguments(plan, cut, boundaries, filtered, work, shards,
                                                                     (out, limit, source["memory_limit"])))
    else:
        written = filtered
    parts = [part for w in written for part in w["parts"]]
    manifest = {"format": "parquet", "kind": "selection", "view": plan.call, "database": db.url, "version": db.version,
                "inputs_hash": provenance(db, f"select * from {plan.call}")["inputs_hash"],
                "n_rows": sum(p["n_rows"] for p in parts), "n_bytes": sum(p["n_bytes"] for p in parts), "parts": parts,
                "cuts": {str(g): c for g, c in cuts.items()}, "tasks": shards, "passes": passes}
    target.write_atomic(json.dumps(manifest, indent=1).encode(), MANIFEST)
    listed = {p["file"] for p in parts}
    for path in target.fs.find(target.path):  # an earlier selection's parts, or a killed run's, that this one did not write
        name = posixpath.relpath(path, target.path)
        if PART_RE.fullmatch(name) and name not in listed:
            target.remove(path)
    files = [target.url_of(target.join(p["file"])) for p in parts]
    return Selection(target.url, files, manifest["n_rows"], cuts, passes, driver.received, driver.seconds, driver.task_rss,
                     cut.score_parts_read, len(db.snapshot.parts("scores")))
