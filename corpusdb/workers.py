"""Worker processes of corpusdb's jobs: how they start (fork, with a fresh tqdm lock) and that they end with the job.

    python -c "from corpusdb.workers import worker_context; print(worker_context().get_start_method())"
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor

import pyarrow.parquet as pq

from corpusdb.storage import Location, storage_errors

CHUNK_DOCS = 32768  # documents per worker task (whole row groups of a documents part)


def worker_context() -> multiprocessing.context.BaseContext:
    """The start method of corpusdb's worker processes: fork where there is one.

    Workers only touch numpy, pyarrow and fsspec (all fork-safe), and unlike spawn fork needs no
    `if __name__ == "__main__"` guard in the user's script. A forked child holds only the forking
    thread, so a lock another thread held at that instant stays held for ever: tqdm's monitor
    thread takes tqdm's lock every few seconds, and a child creating a progress bar would wait on
    it (a shard of `test_cli_shards` hung once in tqdm's constructor on a loaded machine).
    Children therefore get a fresh tqdm lock. And the parent's objects are frozen for the garbage
    collector across the fork (`gc.freeze`, as Python's docs advise): a child that collected them
    would run destructors of the parent's DuckDB connections and Arrow buffers, whose threads and
    locks it does not have (a shard's process segfaulted in "Garbage-collecting" that way).
    """
    global _FORK_HOOK
    if "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    if not _FORK_HOOK:
        import os

        import gc

        os.register_at_fork(before=gc.freeze, after_in_parent=gc.unfreeze, after_in_child=_fresh_tqdm_lock)
        _FORK_HOOK = True
    return multiprocessing.get_context("fork")


_FORK_HOOK = False


def _fresh_tqdm_lock() -> None:
    from tqdm import tqdm
    from tqdm.std import TqdmDefaultWriteLock

    tqdm.set_lock(TqdmDefaultWriteLock())


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when the job that started it ends, even by SIGKILL.

    Linux delivers SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); elsewhere, and as a
    second guard, a thread notices the parent is gone (re-parented) and exits.
    """
    import os
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the guard was in place
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="corpusdb-parent-watch").start()


def row_group_chunks(location: Location, part: str, docs: int = CHUNK_DOCS) -> list[tuple[int, ...]]:
    """A documents part's row groups in consecutive runs of about `docs` rows: one task each."""
    with storage_errors(location.url_of(part)):
        with location.fs.open(part, "rb") as f:
            metadata = pq.ParquetFile(f).metadata
    chunks: list[tuple[int, ...]] = []
    current: list[int] = []
    rows = 0
    for group in range(metadata.num_row_groups):
        current.append(group)
        rows += metadata.row_group(group).num_rows
        if rows >= docs:
            chunks.append(tuple(current))
            current, rows = [], 0
    if current or not chunks:
        chunks.append(tuple(current))
    return chunks


def run_tasks(function: Callable, tasks: Iterable[tuple[str, tuple]], done: Callable[[str, object], None], *, workers: int,
              in_process: bool = False) -> None:
    """Run `function(*arguments)` for each (name, arguments) task and hand `done(name, result)` the results in task order.

    With more than one worker the tasks run in worker processes (`worker_context`, ending with this
    one), a bounded window of them in flight so results wait in memory only briefly; with one
    worker, one task, or `in_process`, here.
    """
    tasks = list(tasks)
    if in_process or workers <= 1 or len(tasks) <= 1:
        for name, arguments in tasks:
            done(name, function(*arguments))
        return
    processes = min(workers, len(tasks))
    with ProcessPoolExecutor(max_workers=processes, mp_context=worker_context(), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        queue: deque = deque()
        for name, arguments in tasks:
            queue.append((name, pool.submit(function, *arguments)))
            if len(queue) >= 2 * processes:
                name, future = queue.popleft()
                done(name, future.result())
        while queue:
            name, future = queue.popleft()
            done(name, future.result())


MIN_SLICE_DOCS = 256  # the fewest documents a slice of a part gets (split_for_workers)


def split_for_workers(tasks: list[tuple[str, object]], documents: dict[str, dict], parts: dict[str, str],
                      workers: int) -> list[tuple[str, object]]:
    """`tasks` with whole parts cut into row slices (`range(start, stop)`) until there are about 4 tasks per
    worker, so that a few large parts (one 38 MB input is one part) keep every worker busy. A slice
    has at least MIN_SLICE_DOCS documents; tasks stay in order, and slices of a part in row order."""
    target = 4 * workers
    if workers <= 1 or len(tasks) >= target:
        return tasks
    pieces = -(-target // max(len(tasks), 1))
    out: list[tuple[str, object]] = []
    for name, selector in tasks:
        rows = documents[parts[name]].get("rows") if selector is None else None
        n = min(pieces, (rows or 0) // MIN_SLICE_DOCS)
        if n < 2:
            out.append((name, selector))
            continue
        bounds = [round(i * rows / n) for i in range(n + 1)]
        out += [(name, range(bounds[i], bounds[i + 1])) for i in range(n)]
    return out


def read_rows(parquet: pq.ParquetFile, selector, columns: list[str] | None):
    """The rows of a documents part a task names: all (None), some row groups (a tuple), or a row slice (a range)."""
    if selector is None:
        return parquet.read(columns=columns)
    if isinstance(selector, range):  # the row groups that hold the slice, then the slice
        metadata, first, groups, start = parquet.metadata, None, [], 0
        for group in range(metadata.num_row_groups):
            stop = start + metadata.row_group(group).num_rows
            if stop > selector.start and start < selector.stop:
                groups.append(group)
                first = start if first is None else first
            start = stop
        table = parquet.read_row_groups(groups, columns=columns)
        return table.slice(selector.start - (first or 0), len(selector))
    return parquet.read_row_groups(list(selector), columns=columns)


def document_tasks(location: Location, documents: dict[str, dict], todo: list[tuple[str, str]]) -> list[tuple[str, tuple[int, ...] | None]]:
    """(name, row groups) tasks for `todo`'s (name, documents part) pairs, in order: a part of at most CHUNK_DOCS rows
    (per the version's record, `documents`) is one task without a footer read (many small parts on S3), a larger one
    is cut into runs of row groups (None: the whole part)."""
    tasks: list[tuple[str, tuple[int, ...] | None]] = []
    for name, part in todo:
        rows = documents[part].get("rows")
        if rows is not None and rows <= CHUNK_DOCS:
            tasks.append((name, None))
        else:
            tasks += [(name, groups) for groups in row_group_chunks(location, location.join(part))]
    return tasks
