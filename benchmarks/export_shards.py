"""`export --shards N` vs. the single-process export of the same view, side by side: wall time, CPU, peak RSS.

    python benchmarks/export_shards.py                              # demo/db (or the test fixture), 2 shards
    python benchmarks/export_shards.py --shards 2 --formats parquet,tokens --view documents

Each export runs in a fresh process, one after the other, into a new folder: wall time of the
export call, CPU of the process and its shards (`resource`, children reaped), the driver's peak
RSS; the parts are compared byte for byte. The tokens format tokenizes with a byte-level
BPE of 8,000 tokens trained on the first 2,000 documents (saved once beside the outputs).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time, resource
import corpusdb
db = corpusdb.open(sys.argv[1])
options = json.loads(sys.argv[3])
started = time.perf_counter()
manifest = db.view(sys.argv[4]).export(sys.argv[2], progress=False, **options)
print(json.dumps({"wall": time.perf_counter() - started, "parts": len(manifest["parts"]), "rows": manifest["n_rows"],
                  "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def run(db: str, out: Path, view: str, options: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, db, str(out), json.dumps(options), view], capture_output=True,
                            text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report["total_wall"] = time.perf_counter() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=str(ROOT / "demo" / "db"))
    parser.add_argument("--view", default="documents")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--formats", default="parquet,tokens")
    parser.add_argument("--part-size-mb", type=float, default=8.0)
    args = parser.parse_args()
    from corpusdb.train.models import train_tokenizer

    import corpusdb

    work = Path(tempfile.mkdtemp(prefix="export-shards-"))
    try:
        db = args.db
        if not (Path(db) / "corpusdb.json").exists():
            fixture = corpusdb.init(str(work / "db"))
            for path in sorted((ROOT / "tests/data/corpus").glob("*.jsonl")):
                fixture.ingest([str(path)], source=path.stem, progress=False)
            db = str(work / "db")
        texts = [t for (t,) in corpusdb.open(db).sql("select text from documents limit 2000").fetchall()]
        train_tokenizer(texts, 8000).save_pretrained(str(work / "tokenizer"))
        print(f"{args.view!r} of {db}, parts of {args.part_size_mb:g} MB, {args.shards} shards (local processes)")
        print(f"{'format':<8} {'one wall s':>10} {'shards wall s':>13} {'speed-up':>8} {'one CPU s':>9} {'shards CPU s':>12} "
              f"{'one RSS GB':>10} {'driver RSS GB':>13}  same bytes")
        for fmt in args.formats.split(","):
            options = {"format": fmt, "part_size_mb": args.part_size_mb,
                       **({"tokenizer": str(work / "tokenizer")} if fmt in ("tokens", "megatron", "datatrove") else {})}
            one = run(db, work / f"one-{fmt}", args.view, options)
            many = run(db, work / f"many-{fmt}", args.view, {**options, "shards": args.shards})
            names = sorted(p.name for p in (work / f"one-{fmt}").iterdir() if p.name != "manifest.json")
            same = all((work / f"one-{fmt}" / n).read_bytes() == (work / f"many-{fmt}" / n).read_bytes() for n in names)
            print(f"{fmt:<8} {one['wall']:>10.2f} {many['wall']:>13.2f} {one['wall'] / many['wall']:>8.2f} {one['cpu']:>9.1f} "
                  f"{many['cpu']:>12.1f} {one['rss_gb']:>10.2f} {many['rss_gb']:>13.2f}  {same} ({one['parts']} parts)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
