"""A distributed selection (`corpusdb select`, tasks over the parts) beside the single-process export of the same call.

    python benchmarks/distributed.py                                     # 1M documents in 100 parts, 8 tasks
    python benchmarks/distributed.py --n 50000000 --parts 500 --shards 16 --task-memory-limit 1GB
    python benchmarks/distributed.py --unit instances --n 10000000 --parts 100 --covers   # MiniPLM's unit

Builds (or reuses) a synthetic database (`benchmarks/synthetic.py`: documents of ~220 bytes, random
64-bit doc_ids, teacher and reference scores), then for each call runs, each in a fresh process:
- one process: `db.view(call).export(OUT, format="parquet")`, the single-process path (DuckDB ranks
  every key in one query, then the text of the kept rows is streamed into parts);
- tasks: `corpusdb.distributed.select(db, call, OUT, shards=N)` as local processes (2 at once on
  2 cores), each task's DuckDB under --task-memory-limit;
- with --export, also `db.view(call).export(OUT, shards=N)`: the same parquet export cut by the tasks
  (`corpusdb.distributed.places`) and written by N shards, checked byte for byte against one process.
- with --covers, the selection twice: over the version whose score parts do not say which documents parts they
  cover (every task reads every score row: "tasks"), and over the next version, where the same parts are
  registered again with `covers` (each covers its documents part, as a scoring job records it: "covered").
It prints wall time, CPU (the process and its children), the peak RSS of the driver and of the
largest task process, the seconds per stage, the passes of the cut, the bytes the driver received,
and whether both wrote the same rows (count and an order-free hash of doc_id and score).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS = ("difference('teacher', 'reference', alpha := 0.5)", "difference_bytes('teacher', 'reference', alpha := 0.5)",
         "quota(map {'web': 2000000000, 'code': 500000000}, seed := 1)", "curriculum('reference', stages := 4)")

CHILD = """
import json, sys, time, resource
import corpusdb
side, db_path, call, out, options, report_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]), sys.argv[6]
db = corpusdb.open(db_path, as_of=options.pop("as_of", None))
started = time.perf_counter()
if side in ("single", "export"):
    if side == "export":
        import os
        os.environ["CORPUSDB_MEMORY_LIMIT"] = options["memory_limit"]
    more = {"shards": options["shards"], "workers": 2} if side == "export" else {}
    manifest = db.view(call).export(out, format="parquet", progress=False, **more)
    report = {"rows": manifest["n_rows"], "files": [out + "/" + p["file"] for p in manifest["parts"]]}
    import hashlib
    digest = hashlib.sha256()
    for name in report["files"]:
        with open(name, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    report["bytes"] = digest.hexdigest()
    report["task_rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # the largest task or shard process
else:
    from corpusdb.distributed.select import select
    selection = select(db, call, out, workers=2, **options)
    report = {"rows": selection.rows, "files": selection.files, "passes": selection.passes,
              "received": selection.received_bytes, "stages": selection.seconds, "task_rss_gb": selection.task_peak_rss / 1e9,
              "score_parts": f"{selection.score_parts_read}/{selection.score_parts}"}
report["wall"] = time.perf_counter() - started
report["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
import duckdb
duckdb.execute("set enable_progress_bar = false")
files = report.pop("files")
names = duckdb.sql(f"select * from read_parquet({files}) limit 0").columns
column = next(name for name in ("score", "quota_running", "curriculum_rank") if name in names)
report["digest"] = [str(x) for x in duckdb.sql(f"select count(*), sum(hash(doc_id, {column})) from read_parquet({files})").fetchall()[0]]
open(report_path, "w").write(json.dumps(report))
"""


def run(side: str, db: str, call: str, out: Path, options: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    report_path = out.parent / f"report-{side}.json"
    report_path.unlink(missing_ok=True)
    result = subprocess.run([sys.executable, "-c", CHILD, side, db, call, str(out), json.dumps(options), str(report_path)],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(report_path.read_text())
    report["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shutil.rmtree(out, ignore_errors=True)
    return report


def cover(path: str) -> tuple[int, int]:
    """Register the synthetic score parts again, each with the documents part it covers (same name), or over
    instances record the covers of the spans and scores with `corpusdb models --covers` (`covers.record`: one join,
    timed); returns the versions before and after (once: a database whose parts carry covers already returns those)."""
    import corpusdb
    from corpusdb.covers import record

    db = corpusdb.open(path)
    records = db.snapshot.tables["scores"]
    if not all("covers" in info for info in records.values()):
        if db.snapshot.tables.get("instance_spans"):
            started = time.perf_counter()
            given = record(db)
            print(f"models --covers: {given} parts in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        else:
            db.register_parts("scores", sorted(records), covers={p: ["documents/" + p.rsplit("/", 1)[1]] for p in records})
        db = corpusdb.open(path)
    before = corpusdb.open(path, as_of=db.version - 1)
    assert not any("covers" in info for info in before.snapshot.tables["scores"].values())
    return before.version, db.version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--task-memory-limit", default="1GB")
    parser.add_argument("--dir", default="/tmp/corpusdb-distributed")
    parser.add_argument("--calls", default="all", help="comma-separated indices into the calls, or all")
    parser.add_argument("--export", action="store_true", help="also a sharded parquet export cut by the tasks")
    parser.add_argument("--unit", choices=("documents", "instances"), default="documents",
                        help="rank documents, or instances (--n of them, ~8 a document; the calls take docs := 'instances')")
    parser.add_argument("--covers", action="store_true",
                        help="the selection without and with score parts that record the documents parts they cover")
    args = parser.parse_args()
    folder = Path(args.dir)
    started = time.perf_counter()
    # built in a process of its own: a child's peak RSS (ru_maxrss) starts from what this process holds when it starts
    # the child, so this one must stay small
    name = f"db-{args.n}-{args.parts}" + ("-instances" if args.unit == "instances" else "")
    prepare = subprocess.run([sys.executable, __file__, "--prepare", str(folder / name), str(args.n), str(args.parts),
                              str(args.covers), args.unit], stdout=subprocess.PIPE, text=True, check=True)
    uncovered, covered = json.loads(prepare.stdout.splitlines()[-1])
    print(f"database: {args.n:,} {args.unit} in {args.parts} parts ({time.perf_counter() - started:.0f} s to build or reuse)")
    calls = CALLS if args.calls == "all" else [CALLS[int(i)] for i in args.calls.split(",")]
    if args.unit == "instances":
        calls = [call[:-1] + ", docs := 'instances')" for call in calls]
    options = {"shards": args.shards, "memory_limit": args.task_memory_limit}
    if args.covers:
        options["as_of"] = uncovered
    print(f"{'call':58} {'side':7} {'wall s':>7} {'cpu s':>7} {'rss GB':>7} {'task GB':>7} {'passes':>6} {'recv KB':>8}  same  stages")
    for call in calls:
        db = str(folder / name)
        single = run("single", db, call, folder / "out-single", {})
        tasks = run("tasks", db, call, folder / "out-tasks", options)
        same = single["digest"] == tasks["digest"]
        print(f"{call[:58]:58} {'one':7} {single['wall']:7.1f} {single['cpu']:7.1f} {single['rss_gb']:7.2f} {'':>7} {'':>6} "
              f"{'':>8}  {single['rows']:,} rows")
        stages = " ".join(f"{k} {v:.1f}" for k, v in tasks["stages"].items())
        print(f"{'':58} {'tasks':7} {tasks['wall']:7.1f} {tasks['cpu']:7.1f} {tasks['rss_gb']:7.2f} {tasks['task_rss_gb']:7.2f} "
              f"{tasks['passes']:6} {tasks['received'] / 1e3:8.0f}  {same}  {stages}  (ratio wall {tasks['wall'] / single['wall']:.2f}x; "
              f"score parts read {tasks['score_parts']})")
        if args.covers:
            near = run("tasks", db, call, folder / "out-covered", {**options, "as_of": covered})
            stages = " ".join(f"{k} {v:.1f}" for k, v in near["stages"].items())
            print(f"{'':58} {'covered':7} {near['wall']:7.1f} {near['cpu']:7.1f} {near['rss_gb']:7.2f} {near['task_rss_gb']:7.2f} "
                  f"{near['passes']:6} {near['received'] / 1e3:8.0f}  {near['digest'] == single['digest']}  {stages}  "
                  f"(ratio wall {near['wall'] / single['wall']:.2f}x one process, {near['wall'] / tasks['wall']:.2f}x tasks; "
                  f"cpu {near['cpu'] / tasks['cpu']:.2f}x; score parts read {near['score_parts']})")
        if args.export:
            sharded = run("export", db, call, folder / "out-export", {**options, "as_of": covered} if args.covers else options)
            print(f"{'':58} {'export':7} {sharded['wall']:7.1f} {sharded['cpu']:7.1f} {sharded['rss_gb']:7.2f} "
                  f"{sharded['task_rss_gb']:7.2f} {'':>6} "
                  f"{'':>8}  {sharded['bytes'] == single['bytes']}  (the same bytes as one process's export; ratio wall "
                  f"{sharded['wall'] / single['wall']:.2f}x)")


def prepare(path: str, n: int, parts: int, covers: bool, unit: str) -> None:
    """Build (or reuse) the database; with covers, record its parts' covers. Prints the versions without and with
    covers as JSON."""
    from synthetic import build

    build(Path(path), n, unit=unit, part_rows=-(-n // parts))
    print(json.dumps(cover(path) if covers else [None, None]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--prepare"]:
        prepare(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "True", sys.argv[6])
    else:
        main()
