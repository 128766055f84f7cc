"""Every step at N documents (or instances), side by side with the hand-written DuckDB query over the same Parquet.

    python benchmarks/scale.py --n 1000000                               # CI-friendly (a few minutes, ~0.5 GB of disk)
    python benchmarks/scale.py --n 1000000,4000000,16000000 --keep /big   # the growth curve, with the exponents
    python benchmarks/scale.py --n 50000000 --dir /big/scale-50m          # by hand: ~20 GB of disk
    python benchmarks/scale.py --n 50000000 --unit instances --dir /big/scale-50m-instances

The database is synthetic (`benchmarks/synthetic.py`: ~220-byte documents, or ~2 kB documents cut
into ~250-byte instances, with teacher and reference scores committed through `register_parts`).
Each step runs in a fresh process, once through corpusdb (`corpusdb.open`, a policy, an export,
`ViewDataset`, an ingest) and once as the query a DuckDB user would write by hand over the same
files (read_parquet globs, no corpusdb). Both consume every column of every row (Arrow batches,
text included) and print the rows' count and an order-independent checksum of their ids, which
must agree. The table shows CPU seconds (all threads, the step only, not the interpreter's start),
wall seconds and peak RSS of the process, and the ratios corpusdb / hand-written.

Steps: difference, difference_bytes, curriculum and a per-source quota (each consumed whole);
export parquet and tokens of difference (vs DuckDB `COPY` and, for tokens, COPY plus a plain batched
tokenizer loop); `ViewDataset` time to first batch (a fresh selection, and again with the cut known);
a 1,000-document ingest into this database vs into an empty one; bulk ingest of --bulk documents of
JSONL vs DuckDB `read_json` -> `COPY` with a content hash.

`CORPUSDB_MEMORY_LIMIT=5GB python benchmarks/scale.py ...` bounds corpusdb's DuckDB (it spills beyond
the limit); the hand-written side keeps DuckDB's default (80% of RAM).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOC_STEPS = ("difference", "difference_bytes", "curriculum", "quota", "export_parquet", "export_tokens", "first_batch",
             "first_batch_again", "ingest_1000", "ingest_bulk")
INSTANCE_STEPS = ("difference", "difference_bytes", "curriculum", "quota", "export_parquet", "first_batch",
                  "first_batch_again")

# -- the hand-written side -------------------------------------------------------------------------

def _globs(db: str) -> dict:
    return {"docs": f"read_parquet('{db}/documents/*.parquet')",
            "teacher": f"read_parquet('{db}/scores/model=teacher/*.parquet')",
            "reference": f"read_parquet('{db}/scores/model=reference/*.parquet')",
            "spans": f"read_parquet('{db}/instances/*.parquet')"}


# sql/uniform.sql's seeded draw at seed 0, written out: the quota's order
UNIFORM = ("(((((doc_id::hugeint + 9223372036854775808) * 1000003 + 1) % 2305843009213693951)::double + 0.5) "
           "/ 2305843009213693951)")


def hand_sql(step: str, db: str, unit: str) -> str:
    """The query a DuckDB user writes for each policy: rank on keys and scores, cut, join the text back."""
    g = _globs(db)
    if unit == "instances":
        units = (f"select i.instance_id as unit_id, i.n_bytes from {g['spans']} i")
        back = (f"select i.instance_id, i.doc_id, i.position, i.byte_start, i.byte_end, i.n_tokens, d.source, "
                f"decode(encode(d.text)[i.byte_start + 1:i.byte_end]) as text, i.n_bytes, k.score "
                f"from {g['spans']} i join kept k on i.instance_id = k.unit_id join {g['docs']} d on d.doc_id = i.doc_id")
    else:
        units = f"select doc_id as unit_id, n_bytes from {g['docs']}"
        back = f"select d.*, k.score from {g['docs']} d join kept k on d.doc_id = k.unit_id"
    keys = (f"keys as (select u.unit_id, u.n_bytes, (t.sum_logprob - r.sum_logprob) / u.n_bytes as score "
            f"from ({units}) u join {g['teacher']} t on t.doc_id = u.unit_id join {g['reference']} r on r.doc_id = u.unit_id "
            f"where u.n_bytes > 0)")
    if step in ("difference", "export_parquet", "export_tokens", "first_batch"):
        return (f"with {keys}, cut as (select score, unit_id from keys order by score desc, unit_id "
                f"limit 1 offset (select ceil(0.5 * count(*))::bigint - 1 from keys)), "
                f"kept as (select keys.* from keys, cut where keys.score > cut.score "
                f"or (keys.score = cut.score and keys.unit_id <= cut.unit_id)) {back}")
    if step == "difference_bytes":
        return (f"with {keys}, ranked as (select unit_id, score, sum(n_bytes) over (order by score desc, unit_id "
                f"rows unbounded preceding) - n_bytes as before from keys), "
                f"kept as (select * from ranked where before < (select 0.5 * sum(n_bytes) from keys)) {back}")
    if step == "curriculum":
        if unit == "instances":  # every span ranked on its key, then cut from its document in rank order
            return (f"with ranked as (select r.doc_id as unit_id, -r.sum_logprob / r.n_bytes as loss_per_byte, "
                    f"row_number() over (order by -r.sum_logprob / r.n_bytes, r.doc_id) as curriculum_rank "
                    f"from {g['reference']} r where r.n_bytes > 0) "
                    f"select i.instance_id, i.doc_id, i.position, i.byte_start, i.byte_end, i.n_tokens, d.source, "
                    f"decode(encode(d.text)[i.byte_start + 1:i.byte_end]) as text, i.n_bytes, k.loss_per_byte, "
                    f"k.curriculum_rank from {g['spans']} i join {g['docs']} d on d.doc_id = i.doc_id "
                    f"left join ranked k on k.unit_id = i.instance_id order by k.curriculum_rank nulls last, i.instance_id")
        return (f"with ranked as (select r.doc_id, -r.sum_logprob / r.n_bytes as loss_per_byte, "
                f"row_number() over (order by -r.sum_logprob / r.n_bytes, r.doc_id) as curriculum_rank "
                f"from {g['reference']} r where r.n_bytes > 0) "
                f"select d.*, k.loss_per_byte, k.curriculum_rank from {g['docs']} d left join ranked k using (doc_id) "
                f"order by k.curriculum_rank nulls last, d.doc_id")
    if step == "quota":
        if unit == "instances":  # the source is the document's: a keys-only join, then the kept spans cut
            spans = (f"(select i.instance_id as unit_id, i.n_bytes, d.source from {g['spans']} i "
                     f"join (select doc_id, source from {g['docs']}) d on d.doc_id = i.doc_id)")
            return (f"with units as materialized {spans}, keys as (select unit_id, source, n_bytes, sum(n_bytes) over "
                    f"(partition by source order by {UNIFORM.replace('doc_id', 'unit_id')}, unit_id rows unbounded "
                    f"preceding) as running from units), "
                    f"budget as (select source, 0.25 * sum(n_bytes) as budget from units group by source), "
                    f"kept as (select keys.unit_id from keys join budget using (source) where running <= budget) "
                    f"select i.instance_id, i.doc_id, i.position, i.byte_start, i.byte_end, i.n_tokens, d.source, "
                    f"decode(encode(d.text)[i.byte_start + 1:i.byte_end]) as text, i.n_bytes "
                    f"from {g['spans']} i semi join kept k on i.instance_id = k.unit_id join {g['docs']} d on d.doc_id = i.doc_id")
        return (f"with keys as (select doc_id, source, n_bytes, sum(n_bytes) over (partition by source order by "
                f"{UNIFORM}, doc_id rows unbounded preceding) as running from {g['docs']}), "
                f"budget as (select source, 0.25 * sum(n_bytes) as budget from {g['docs']} group by source), "
                f"kept as (select keys.doc_id from keys join budget using (source) where running <= budget) "
                f"select d.* from {g['docs']} d semi join kept using (doc_id)")
    raise ValueError(step)


def corpusdb_sql(step: str, db, unit: str) -> str:
    docs = ", docs := 'instances'" if unit == "instances" else ""
    if step == "difference":
        return f"select * from difference('teacher', 'reference'{docs})"
    if step == "difference_bytes":
        return f"select * from difference_bytes('teacher', 'reference'{docs})"
    if step == "curriculum":
        return f"select * from curriculum('reference'{docs})"
    if step == "quota":  # a quarter of each source's bytes (as the hand-written query computes them)
        table = "instances" if unit == "instances" else "documents"
        budgets = ", ".join(f"'{s}': {0.25 * b!r}" for s, b in db.sql(
            f"select source, sum(n_bytes)::double from {table} group by 1 order by 1").fetchall())
        return f"select * from quota(map {{{budgets}}}{docs})"
    raise ValueError(step)


def consume(relation) -> dict:
    """Read every batch of a DuckDB relation (all columns); rows and an order-independent checksum of the unit ids."""
    rows, checksum = 0, 0
    for batch in relation.to_arrow_reader(65536):
        key = "instance_id" if "instance_id" in batch.schema.names else "doc_id"
        ids = batch.column(key).to_numpy(zero_copy_only=False).astype("uint64")
        rows += batch.num_rows
        checksum = (checksum + int(ids.sum(dtype="uint64"))) % 2**64
    return {"rows": rows, "checksum": checksum}


def tokenizer_for(folder: Path) -> str:
    """A byte-level BPE of 4,096 tokens trained on a sample of the corpus' texts (saved once next to the database)."""
    path = folder.parent / f"{folder.name}-tokenizer"
    if not (path / "tokenizer.json").exists():
        import pyarrow.parquet as pq

        from corpusdb.train.models import train_tokenizer

        first = sorted((folder / "documents").glob("*.parquet"))[0]
        texts = pq.read_table(first, columns=["text"]).column("text").to_pylist()[:20000]
        train_tokenizer(texts, 4096).save_pretrained(str(path))
    return str(path)


# -- one step in a child process ---------------------------------------------------------------------

def run_step(step: str, side: str, db_path: str, unit: str, work: str) -> dict:
    import duckdb

    started_cpu, started = time.process_time(), time.perf_counter()
    out: dict = {}
    if side == "hand":
        con = duckdb.connect()
        sql = "" if step.startswith("ingest") else hand_sql(step, db_path, unit)
        if step == "ingest_1000":  # the baseline of a small ingest is the same ingest into an empty database
            out.update(_corpusdb_ingest(step, db_path, work, empty=True))
        elif step in ("export_parquet", "export_tokens"):
            target = Path(work) / "hand-export"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            con.execute(f"copy ({sql}) to '{target}' (format parquet, per_thread_output true, file_size_bytes '256MB')")
            if step == "export_tokens":
                out["tokens"] = _tokenize_plain(target, tokenizer_for(Path(db_path)), Path(work) / "hand-tokens")
            out.update(consume(con.sql(f"select * exclude (text) from read_parquet('{target}/*.parquet')")))
        elif step == "first_batch":
            reader = con.sql(sql).to_arrow_reader(1024)
            out.update(rows=reader.read_next_batch().num_rows, checksum=None)
        elif step.startswith("ingest"):
            out.update(_hand_ingest(con, step, work))
        else:
            out.update(consume(con.sql(sql)))
    else:
        import corpusdb

        if step.startswith("ingest"):
            out.update(_corpusdb_ingest(step, db_path, work))
        else:
            db = corpusdb.open(db_path)
            if step in ("export_parquet", "export_tokens"):
                target = Path(work) / "corpusdb-export"
                fmt = "tokens" if step == "export_tokens" else "parquet"
                tokenizer = tokenizer_for(Path(db_path)) if fmt == "tokens" else None
                manifest = db.view(corpusdb_sql("difference", db, unit)).export(
                    str(target), format=fmt, tokenizer=tokenizer, overwrite=True, progress=False)
                out.update(rows=manifest["n_rows"], checksum=None, tokens=manifest.get("n_tokens"))
                if fmt == "parquet":
                    out.update(consume(duckdb.sql(f"select * exclude (text) from read_parquet('{target}/*.parquet')")))
            elif step.startswith("first_batch"):
                from corpusdb.train import ViewDataset

                cache = Path(work) / "corpusdb-cache"
                if step == "first_batch":
                    shutil.rmtree(cache, ignore_errors=True)
                tokenizer = tokenizer_for(Path(db_path))
                made = time.perf_counter()
                dataset = ViewDataset(db, corpusdb_sql("difference", db, unit), tokenizer, seq_len=1024,
                                      batch_size=8, cache_dir=str(cache))
                cut = time.perf_counter()
                loader = __import__("torch").utils.data.DataLoader(dataset, batch_size=8)
                out.update(rows=next(iter(loader)).shape[0], checksum=None, cut_s=cut - made,
                           after_cut_s=time.perf_counter() - cut)
            else:
                out.update(consume(db.sql(corpusdb_sql(step, db, unit))))
    out["cpu_s"] = time.process_time() - started_cpu
    out["wall_s"] = time.perf_counter() - started
    return out


def _tokenize_plain(folder: Path, tokenizer_path: str, target: Path) -> int:
    """The plain loop a user writes: batches of texts through the tokenizer, token ids appended to one .bin file."""
    import numpy as np
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    total = 0
    with open(target, "wb") as handle:
        for path in sorted(folder.glob("*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["text"]):
                for ids in tokenizer(batch.column("text").to_pylist(), add_special_tokens=False)["input_ids"]:
                    array = np.array([*ids, tokenizer.eos_token_id], dtype=np.uint16)
                    handle.write(array.tobytes())
                    total += len(array)
    return total


def _small_input(work: str, n: int = 1000) -> str:
    import numpy as np

    from benchmarks.synthetic import jsonl_lines, word_pool

    path = Path(work) / f"small-{time.time_ns()}.jsonl"
    rng = np.random.default_rng(time.time_ns() % 2**32)
    path.write_bytes(jsonl_lines(rng, word_pool(rng, 2_000_000), n, prefix=f"{path.stem} "))
    return str(path)


def _bulk_input(work: str, n: int) -> str:
    import numpy as np

    from benchmarks.synthetic import jsonl_lines, word_pool

    path = Path(work) / f"bulk-{n}.jsonl"
    if not path.exists():
        rng = np.random.default_rng(1)
        pool = word_pool(rng)
        with open(path.with_suffix(".tmp"), "wb") as handle:
            for start in range(0, n, 1_000_000):
                handle.write(jsonl_lines(rng, pool, min(1_000_000, n - start), prefix=f"{start} "))
        path.with_suffix(".tmp").rename(path)
    return str(path)


def _corpusdb_ingest(step: str, db_path: str, work: str, empty: bool = False) -> dict:
    import corpusdb

    if step == "ingest_1000":  # into this database (or an empty one), after the input is written (not timed)
        source, target = _small_input(work), str(Path(work) / "empty-db") if empty else db_path
        if empty:
            shutil.rmtree(target, ignore_errors=True)
    else:
        source, target = os.environ["SCALE_BULK_INPUT"], str(Path(work) / "bulk-db")
        shutil.rmtree(target, ignore_errors=True)
    started_cpu, started = time.process_time(), time.perf_counter()
    report = corpusdb.init(target).ingest([source], source="bench", progress=False)
    return {"rows": report.n_docs_written, "checksum": None, "cpu_s_inner": time.process_time() - started_cpu,
            "wall_s_inner": time.perf_counter() - started}


def _hand_ingest(con, step: str, work: str) -> dict:
    """DuckDB by hand: read_json -> COPY to Parquet with a content hash of the text."""
    source = os.environ["SCALE_BULK_INPUT"]
    target = Path(work) / "hand-ingest.parquet"
    started_cpu, started = time.process_time(), time.perf_counter()
    con.execute(f"copy (select (hash(text)::hugeint - 9223372036854775808)::bigint as doc_id, 'bench' as source, text, strlen(text) as n_bytes "
                f"from read_json('{source}', format = 'newline_delimited', columns = {{'text': 'VARCHAR'}})) "
                f"to '{target}' (format parquet, compression zstd)")
    rows = con.sql(f"select count(*) from read_parquet('{target}')").fetchall()[0][0]
    return {"rows": rows, "checksum": None, "cpu_s_inner": time.process_time() - started_cpu,
            "wall_s_inner": time.perf_counter() - started}


# -- the driver -----------------------------------------------------------------------------------

def child(step: str, side: str, db_path: str, unit: str, work: str, env: dict | None = None) -> dict:
    """Run one step in a fresh process under /usr/bin/time -v: its result, and its own peak RSS."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.scale import run_step; "
            f"print('RESULT', json.dumps(run_step({step!r}, {side!r}, {db_path!r}, {unit!r}, {work!r})))")
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    # (DuckDB's progress bar may share the line)
    lines = [line[line.index("RESULT ") :] for line in proc.stdout.splitlines() if "RESULT " in line]
    if proc.returncode or not lines:
        errors = [line for line in proc.stderr.splitlines() if line.strip() and "\t" not in line[:1]]
        return {"error": (errors or ["?"])[-1][:200]}
    result = json.loads(lines[-1][7:])
    peak = next(line for line in proc.stderr.splitlines() if "Maximum resident set size" in line)
    result["rss_gb"] = int(peak.split(":")[1]) / 1e6
    for key in ("cpu_s", "wall_s"):
        result[key] = result.pop(f"{key}_inner", result[key])
    return result


def best(repeat: int, *args) -> dict:
    """The run of least CPU time of `repeat` runs of a step (the peak RSS is that run's)."""
    runs = [child(*args) for _ in range(repeat)]
    return min(runs, key=lambda r: r.get("cpu_s", float("inf")))


def run_size(n: int, unit: str, folder: Path, work: Path, steps: tuple[str, ...], bulk: int, repeat: int = 1,
             hand: bool = True) -> dict[str, dict]:
    from benchmarks.synthetic import build

    started = time.perf_counter()
    build(folder, n, unit)
    print(f"\n{n:,} synthetic {unit} at {folder} ({time.perf_counter() - started:.0f} s to build or reuse)")
    env = {"SCALE_BULK_INPUT": _bulk_input(str(work), bulk)} if "ingest_bulk" in steps else {}
    header = f"{'step':22} {'corpusdb cpu':>12} {'wall':>7} {'RSS GB':>7} {'by hand cpu':>12} {'wall':>7} {'RSS GB':>7} " \
             f"{'cpu x':>6} {'RSS x':>6}  rows"
    print(header)
    results = {}
    for step in steps:
        # a fresh first batch must not find the cut of the run before, nor a 1,000-document ingest the last one's documents
        times = 1 if step in ("first_batch", "first_batch_again", "ingest_1000") else repeat
        ours = best(times, step, "corpusdb", str(folder), unit, str(work), env)
        baseline = {} if step == "first_batch_again" or not hand else best(times, step, "hand", str(folder), unit, str(work), env)
        results[step] = {"corpusdb": ours, "hand": baseline}
        if "error" in ours or "error" in baseline:
            print(f"{step:22} error: {ours.get('error') or baseline.get('error')}")
            continue
        same = ""
        if baseline and ours.get("checksum") is not None and baseline.get("checksum") is not None:
            same = "same rows" if (ours["rows"], ours["checksum"]) == (baseline["rows"], baseline["checksum"]) else "ROWS DIFFER"
        by_hand = (f"{baseline['cpu_s']:12.2f} {baseline['wall_s']:7.2f} {baseline['rss_gb']:7.2f} "
                   f"{ours['cpu_s'] / max(baseline['cpu_s'], 1e-9):6.2f} {ours['rss_gb'] / max(baseline['rss_gb'], 1e-9):6.2f}"
                   if baseline else f"{'':12} {'':7} {'':7} {'':6} {'':6}")
        if "cut_s" in ours:  # ViewDataset: the policy's cut (made, or found), then the first batch
            same = f"(cut {ours['cut_s']:.1f} s, then {ours['after_cut_s']:.1f} s to the batch)"
        print(f"{step:22} {ours['cpu_s']:12.2f} {ours['wall_s']:7.2f} {ours['rss_gb']:7.2f} {by_hand}  {ours['rows']:,} {same}",
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1000000", help="documents (or instances), or a comma-separated growth curve")
    parser.add_argument("--unit", choices=("documents", "instances"), default="documents")
    parser.add_argument("--steps", default="", help="comma-separated subset of the steps")
    parser.add_argument("--bulk", type=int, default=0, help="documents for ingest_bulk [default: N, at most 4M]")
    parser.add_argument("--dir", type=Path, help="where the database of one size is built and kept (reused if there)")
    parser.add_argument("--keep", type=Path, help="folder where databases of every size are built and kept")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each query step; the least CPU time counts")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--no-baseline", action="store_true", help="run corpusdb's side only (e.g. again under "
                        "CORPUSDB_MEMORY_LIMIT, which bounds corpusdb's DuckDB and not the hand-written query's)")
    args = parser.parse_args()
    sizes = [int(float(x)) for x in args.n.split(",")]
    steps = tuple(s for s in (args.steps.split(",") if args.steps else
                              (INSTANCE_STEPS if args.unit == "instances" else DOC_STEPS)) if s)
    scratch = Path(tempfile.mkdtemp(prefix="corpusdb-scale-"))
    all_results = {}
    try:
        for n in sizes:
            root = args.keep or scratch
            folder = args.dir if args.dir and len(sizes) == 1 else root / f"{args.unit}-{n}"
            work = root / f"work-{args.unit}-{n}"
            work.mkdir(parents=True, exist_ok=True)
            all_results[n] = run_size(n, args.unit, folder, work, steps, args.bulk or min(n, 4_000_000), args.repeat,
                                      hand=not args.no_baseline)
            shutil.rmtree(work, ignore_errors=True)
        if len(sizes) > 1:
            print("\ngrowth exponents (CPU seconds, corpusdb; log(t2/t1) / log(n2/n1) between successive sizes)")
            for step in steps:
                points = [(n, all_results[n][step]["corpusdb"].get("cpu_s")) for n in sizes]
                exps = [math.log(t2 / t1) / math.log(n2 / n1) for (n1, t1), (n2, t2) in zip(points, points[1:])
                        if t1 and t2 and t1 > 0]
                print(f"  {step:22} " + "  ".join(f"{e:5.2f}" for e in exps))
        if args.json:
            args.json.write_text(json.dumps(all_results, indent=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
