"""A sharded export: the driver cuts the selection into export parts on keys alone; shards write the parts.

    corpusdb export demo/db "difference('teacher', 'reference')" out/refined --shards 2
    corpusdb export s3://bkt/db refined s3://bkt/refined --shards 64 --executor ray --address auto

For a view that hands out documents' or instances' text unchanged (every built-in policy), the
driver runs the view for every column but the text, in place order (DuckDB sorts keys, never
text), and cuts the rows into export parts where a single-process export cuts them (a part ends at
the row whose running text bytes reach `part_size_mb`). Each part's rows go into a plan file in
the export folder (`plan-NNNNN-<key>.parquet`: recorded in the journal with the part's own files,
removed at the end). The parts are dealt to `shards` contiguous ranges; each shard (a local
process or a Ray task, which needs only the object store) reads its plans and the text of their
rows from the committed documents parts, and writes its parts. So the parts are the bytes a
single-process export writes and the manifest lists them in the same order; the driver holds one
batch of keys, never text. A shard whose process dies is run again (its parts are written again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpusdb.cut import PartReader, places_sql, with_text
from corpusdb.errors import ExportError
from corpusdb.export_base import claim
from corpusdb.part_sink import PartSink, load_tokenizer
from corpusdb.storage import Location

if TYPE_CHECKING:
    from corpusdb.db import Database

PLAN_BATCH_ROWS = 1 << 16


def plan_name(index: int, key: str) -> str:
    return f"plan-{index:05d}-{key}.parquet"


def plan_parts(db: Database, select: str, kind: str, names: list[str], out: Location, key: str, journal: dict, cutter,
               files) -> list[dict]:
    """Write the plan of each export part (its rows' columns `names` but the text, with their places) into `out`;
    returns per part its index, plan file and row count. `cutter` ends the parts as the single process does
    (`export_base.BytesCut`, `mds.ShardCut`); `files(index)` names the part's own files, claimed with its plan. No
    documents parts: no plan (nothing to place)."""
    if not db.snapshot.parts("documents"):
        return []
    query = places_sql(db, select, kind, ", ".join(f's."{name}"' for name in names if name != "text"))
    plans: list[dict] = []
    writer = stack = None
    cursor = db.con.cursor()
    try:
        for batch in cursor.sql(query).to_arrow_reader(PLAN_BATCH_ROWS):
            sizes = cutter.sizes(batch)
            while batch.num_rows:
                if writer is None:  # the next part: its plan and its files are ours before a byte is written
                    name = plan_name(len(plans), key)
                    claim(out, journal, name, *files(len(plans)))
                    stack = out.open_atomic(name)
                    writer = pq.ParquetWriter(stack.__enter__(), batch.schema)
                    plans.append({"index": len(plans), "plan": name, "rows": 0})
                # the cut of export's `_write_parts` (of MDSWriter's, for MDS)
                cut = cutter.end(sizes[len(sizes) - batch.num_rows:])
                take = batch.slice(0, min(cut, batch.num_rows))
                writer.write_batch(take)
                plans[-1]["rows"] += take.num_rows
                if cut > batch.num_rows:
                    break
                writer.close()
                stack.__exit__(None, None, None)
                writer = stack = None
                batch = batch.slice(cut)
        if writer is not None:
            writer.close()
            stack.__exit__(None, None, None)
            writer = stack = None
    except BaseException as exc:
        if stack is not None:
            stack.__exit__(type(exc), exc, exc.__traceback__)
        raise
    finally:
        cursor.close()
    return plans


def _plan_batches(out: Location, plan: dict):
    """A plan's rows (every column but the text, with places): its plan file, or its slices of the distributed
    cut's placed files (`corpusdb.distributed.places`) in the export's work folder."""
    if "plan" in plan:
        with out.fs.open(out.join(plan["plan"]), "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(PLAN_BATCH_ROWS)
        return
    from corpusdb.distributed.places import read_slices

    yield from read_slices(Location(out.url.rstrip("/") + "/" + plan["work"], out.storage_options), plan["slices"],
                           PLAN_BATCH_ROWS)


def write_shard(db_url: str, db_options: dict, documents: list[str], kind: str, names: list[str], out_url: str,
                out_options: dict, fmt: str, key: str, tokenizer: str | None, part_bytes: int, plans: list[dict]
                ) -> list[tuple[dict, dict | None]]:
    """A shard's export parts (anywhere: a process, a Ray task): each plan's rows with their text, written as the part
    of its index; returns per part in order its manifest entry and (MDS) its entry in `index.json`.

    Raises:
        ExportError: an MDS part whose rows did not make exactly one shard (a row whose `n_bytes` is not its text's
            UTF-8 length: the plan counted that).
    """

    reader = PartReader(Location(db_url, db_options), documents, kind)
    out = Location(out_url, out_options)
    loaded = load_tokenizer(tokenizer) if tokenizer else None
    entries = []
    for plan in plans:
        sink = PartSink(out, fmt, key, None, loaded, part_bytes, first_index=plan["index"])
        for batch in _plan_batches(out, plan):
            if "text" in batch.schema.names:  # the rows of an ordered policy's ranges, text included
                text = batch.column("text")
                columns = {**dict(zip(batch.schema.names, batch.columns)),
                           "text": text if text.type == pa.string() else text.cast(pa.string())}
                sink.add(pa.RecordBatch.from_arrays([columns[name] for name in names], names=names))
            else:
                sink.add(with_text(batch, reader, kind, names))
        if not sink.open and not sink.parts:
            raise RuntimeError(f"the plan of part {plan['index']} holds no rows; re-run the export")
        if sink.parts:  # MDS: the samples made another shard than the plan's
            sink.abort()
            raise ExportError(f"part {plan['index']}: its rows do not make one MDS shard of {part_bytes:,} bytes as "
                              "the plan cut it (a row's n_bytes is not the UTF-8 length of its text); export it without "
                              "--shards")
        sink.finish()
        entries.append((sink.parts[0], sink.shards[0] if sink.shards else None))
    return entries


def deal(plans: list[dict], shards: int) -> list[list[dict]]:
    """The plans in `shards` contiguous ranges of about equal counts (fewer where there are fewer plans)."""
    bounds = np.linspace(0, len(plans), min(shards, len(plans)) + 1).round().astype(int)
    return [plans[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
