"""Quality annotator throughput: corpusdb's `quality` annotator vs. datatrove's own filters, side by side.

    make bench-datatrove                               # once: datatrove 0.10.1 in .venv-datatrove (a separate venv)
    python benchmarks/annotate_throughput.py           # demo/db if `make demo` ran, else the fixture
    python benchmarks/annotate_throughput.py --docs 500 --datatrove-python /path/to/venv/bin/python

The same real documents (a seeded sample of `--docs` from demo/db, or the test fixture), each
tool on one core:

- datatrove: GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter(filter_no_terminal_punct
  =False) and FineWebQualityFilter (FineWeb's settings), every filter on every document (an
  annotation holds every signal), in its own virtual environment (datatrove is a peer, never a
  dependency); also as a pipeline that stops at a document's first failing filter, as datatrove
  runs them when it only filters.
- corpusdb: `QualityAnnotator.annotate` in this process (every rule's number for every document),
  and the whole `corpusdb annotate DB quality` job (read Parquet parts, annotate, write, commit) with
  1 and 2 worker processes.

Then it checks that `filter_quality` keeps exactly the documents datatrove's filters keep, per
filter, on this sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

import corpusdb  # noqa: E402
from benchmarks.minhash_throughput import load_texts  # noqa: E402 - the same seeded sample of demo/db or the fixture
from corpusdb.annotations.quality import QualityAnnotator  # noqa: E402

DATATROVE = r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
filters = {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
           "c4": C4QualityFilter(filter_no_terminal_punct=False), "fineweb": FineWebQualityFilter()}
filters["gopher_quality"].filter(Document(text="warm up spaCy", id="0"))  # load the tokenizer outside the timing
def verdict(step, text):
    try:
        result = step.filter(Document(text=text, id="x"))
    except ZeroDivisionError:
        return "ZeroDivisionError"
    return True if result is True else result[1]
started = time.perf_counter()
verdicts = [{name: verdict(step, row["text"]) for name, step in filters.items()} for row in rows]
every = time.perf_counter() - started
def chain(text):
    """FineWeb's pipeline as a chain: each filter reads the document as the one before left it (C4 edits it)."""
    doc = Document(text=text, id="x")
    for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb"):
        try:
            if filters[name].filter(doc) is not True:
                return False
        except ZeroDivisionError:
            return False
    return True
for row, found in zip(rows, verdicts):
    found["chain"] = chain(row["text"])
started = time.perf_counter()
for row in rows:
    for step in filters.values():
        if verdict(step, row["text"]) is not True:
            break
pipeline = time.perf_counter() - started
print(json.dumps({"every": every, "pipeline": pipeline, "verdicts": verdicts}))
'''


def datatrove_results(python: str, script: str, *arguments) -> dict | None:
    """The JSON `script` prints last, run with `python` (a venv with datatrove: `make bench-datatrove`) on one
    OpenMP thread; None, said on stdout, where that venv does not exist."""
    if not Path(python).exists():
        print(f"(no datatrove at {python}: `make bench-datatrove` creates it; datatrove rows skipped)\n")
        return None
    done = subprocess.run([python, "-c", script, *map(str, arguments)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        raise SystemExit("datatrove failed; see above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000, help="documents in the sample")
    parser.add_argument("--one-part", action="store_true",
                        help="ingest the sample as one documents part (one large input): the jobs then cut it into row slices")
    parser.add_argument("--datatrove-python", default=str(ROOT / ".venv-datatrove" / "bin" / "python"),
                        help="python of a venv with datatrove[processing] (make bench-datatrove)")
    args = parser.parse_args()
    texts, where = load_texts(args.docs)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts):,} documents ({megabytes:.1f} MB) from {where}; one core each unless noted\n")
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.jsonl"
        sample.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")

        annotator = QualityAnnotator()
        annotator.annotate(pa.table({"doc_id": [0], "text": ["warm up spaCy"]}))  # load spaCy outside the timing
        started = time.perf_counter()
        for start in range(0, len(texts), 1024):
            batch = texts[start:start + 1024]
            annotator.annotate(pa.table({"doc_id": list(range(len(batch))), "text": batch}))
        ours = time.perf_counter() - started

        db = corpusdb.init(str(Path(tmp) / "db"))
        db.ingest([str(sample)], source="sample", progress=False,
                  part_size_mb=megabytes * 2 if args.one_part else max(megabytes / 8, 0.05))
        print(f"the sample is {len(db.snapshot.parts('documents'))} documents part(s)\n")
        jobs = {}
        for workers in (1, 2):
            started = time.perf_counter()
            db.annotate("quality", replace=True, workers=workers, progress=False)
            jobs[workers] = time.perf_counter() - started

        theirs = datatrove_results(args.datatrove_python, DATATROVE, sample)

        def row(name: str, seconds: float, baseline: float | None) -> str:
            ratio = f"{baseline / seconds:6.2f}x" if baseline else "     -"
            return f"{name:<68} {seconds:8.2f} s {len(texts) / seconds:10,.0f} docs/s {megabytes / seconds:7.2f} MB/s {ratio}"

        base = theirs["every"] if theirs else None
        print(f"{'':<68} {'time':>10} {'throughput':>17} {'':>12} vs datatrove (every filter)")
        if theirs:
            print(row("datatrove 0.10.1: 4 filters, every filter on every document", theirs["every"], base))
            print(row("datatrove 0.10.1: 4 filters as a pipeline (stops at the first fail)", theirs["pipeline"], base))
        print(row("corpusdb QualityAnnotator.annotate (every rule's number)", ours, base))
        print(row("corpusdb annotate job, 1 worker (Parquet in and out, commit)", jobs[1], base))
        print(row("corpusdb annotate job, 2 workers", jobs[2], base))

        if theirs:
            from corpusdb.text import doc_id, normalize

            by_id = {doc_id(normalize(t)): v for t, v in zip(texts, theirs["verdicts"])}
            present = {i for (i,) in db.sql("select doc_id from documents").fetchall()}
            print("\nfilter_quality vs datatrove's verdicts on this sample (documents kept by each):")
            for rule, verdict in (("gopher_quality", "gopher_quality"), ("gopher_repetition", "gopher_repetition"),
                                  ("c4", "c4"), ("fineweb", "fineweb")):
                kept = {i for (i,) in db.sql(f"select doc_id from filter_quality(rules := ['{rule}'])").fetchall()}
                expected = {i for i in present if by_id[i][verdict] is True}
                print(f"  {rule:<18} corpusdb {len(kept):6,}  datatrove {len(expected):6,}  differ {len(kept ^ expected):4,}")
            together = {i for (i,) in db.sql("select doc_id from filter_quality()").fetchall()}
            chained = {i for (i,) in db.sql("select doc_id from filter_quality(chain := true)").fetchall()}
            expected = {i for i in present if by_id[i]["chain"] is True}
            print(f"  {'all four, chain':<18} corpusdb {len(chained):6,}  datatrove {len(expected):6,}  differ "
                  f"{len(chained ^ expected):4,}  (all four on the stored text: {len(together):,}, differ "
                  f"{len(together ^ expected):,} from datatrove's chain)")


if __name__ == "__main__":
    main()
