"""`export --format mds|litdata` vs. the libraries' own writers fed the same rows, side by side.

    python benchmarks/streaming_export.py                    # the demo database's documents
    python benchmarks/streaming_export.py --db demo/db --view documents --repeat 2

corpusdb's side is the whole export (the view's query, the text read from the parts, encoding,
atomic writes, the manifest). The peers' side is the loop a user would write: the same rows, read
once into memory beforehand (not timed), written by `streaming.MDSWriter` (every column, the same
encodings as corpusdb's shards) and by `litdata`'s `BinaryWriter` (keys, text, n_bytes), with the
same shard and chunk size. CPU seconds (process time) and the ratio corpusdb / peer; the best of
--repeat runs counts. Needs mosaicml-streaming and litdata (`make setup` installs both).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpusdb  # noqa: E402
from corpusdb import mds  # noqa: E402


def streaming_base():
    """mosaicml-streaming's `streaming.base`, entered without `streaming.vision` (which needs torchvision)."""
    spec = importlib.util.find_spec("streaming")
    package = types.ModuleType("streaming")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["streaming"] = package
    import streaming.base

    return streaming.base


def best(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=str(ROOT / "demo" / "db"))
    parser.add_argument("--view", default="documents")
    parser.add_argument("--part-size-mb", type=float, default=64.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from litdata.streaming.writer import BinaryWriter

    base = streaming_base()
    db = corpusdb.open(args.db)
    table = db.view(args.view).relation().to_arrow_table()
    rows = table.to_pylist()
    columns = mds.encodings(table.schema)
    size = int(args.part_size_mb * 1024 * 1024)
    keys = [name for name in ("doc_id", "instance_id", "byte_start", "byte_end", "text", "n_bytes") if name in table.schema.names]
    light = [{name: row[name] for name in keys} for row in rows]
    print(f"{len(rows):,} rows, {sum(r['n_bytes'] for r in rows) / 1e6:.1f} MB of text, view {args.view!r}, "
          f"shards/chunks of {args.part_size_mb:g} MB")
    work = Path(tempfile.mkdtemp(prefix="streaming-export-"))
    try:
        def ours(fmt: str):
            def run():
                shutil.rmtree(work / fmt, ignore_errors=True)
                db.view(args.view).export(str(work / fmt), format=fmt, part_size_mb=args.part_size_mb, progress=False)
            return run

        def mds_writer():
            shutil.rmtree(work / "theirs-mds", ignore_errors=True)
            with base.MDSWriter(out=str(work / "theirs-mds"), columns=columns, size_limit=size) as writer:
                for row in rows:
                    writer.write(row)

        def litdata_writer():
            shutil.rmtree(work / "theirs-litdata", ignore_errors=True)
            writer = BinaryWriter(str(work / "theirs-litdata"), chunk_bytes=size)
            for index, row in enumerate(light):
                writer.add_item(index, row)
            writer.done()
            writer.merge()

        print(f"{'format':<8} {'corpusdb s':>11} {'peer s':>8} {'ratio':>6}  peer")
        for fmt, peer, name in (("mds", mds_writer, "streaming.MDSWriter"), ("litdata", litdata_writer, "litdata BinaryWriter")):
            mine, theirs = best(ours(fmt), args.repeat), best(peer, args.repeat)
            print(f"{fmt:<8} {mine:>11.2f} {theirs:>8.2f} {mine / theirs:>6.2f}  {name}")
        # the same shards: corpusdb's bytes are MDSWriter's
        shards = [[(folder / s["raw_data"]["basename"]).read_bytes() for s in json.loads((folder / "index.json").read_text())["shards"]]
                  for folder in (work / "mds", work / "theirs-mds")]
        print(f"MDS shards byte-identical to MDSWriter's: {shards[0] == shards[1]} ({len(shards[0])} shards)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        db.close()


if __name__ == "__main__":
    main()
