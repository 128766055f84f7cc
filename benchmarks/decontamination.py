"""Decontamination: corpusdb's n-gram annotator vs datatrove's NGramsDecontFilter, side by side, and the index's memory.

    make bench-datatrove                                  # once: datatrove 0.10.1 in .venv-datatrove
    python benchmarks/decontamination.py                  # demo/db if `make demo` ran, else the fixture
    python benchmarks/decontamination.py --docs 5000 --evals 1000 --ngram 13
    python benchmarks/decontamination.py --index-ngrams 10000000 --no-compare   # the index at 10M n-grams

The same real documents (a seeded sample of `--docs` from demo/db, or the test fixture) and one
evaluation set: `--evals` passages of 13 to 40 words cut from sampled documents (half of them
from documents of the sample, re-cased, so that they match) and as many word-shuffled passages
(which do not). Each tool on one core:

- datatrove: `NGramsDecontIndexer.compute_hashes` over the evaluation texts (its index holds
  64-bit hashes), then `NGramsDecontFilter.filter` on every document (it stops at a document's
  first matching n-gram), in its own virtual environment (a peer, never a dependency).
- corpusdb: `NgramIndex.build`, then `DecontaminationAnnotator.annotate` in this process (every
  n-gram of every document, with the byte ranges it covers), and the whole `corpusdb
  decontaminate` job (Parquet in and out, commit) with 1 and 2 worker processes.

It prints docs/s and the ratio to datatrove's filter, and how many documents each flags (their
words differ: datatrove tokenizes with spaCy and reads "1,234.5" as one number, corpusdb takes runs
of letters and digits). `--index-ngrams N` builds an index of N distinct synthetic n-grams and prints
its build time, size and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import corpusdb  # noqa: E402
from benchmarks.annotate_throughput import datatrove_results  # noqa: E402
from benchmarks.minhash_throughput import load_texts  # noqa: E402 - the same seeded sample of demo/db or the fixture
from corpusdb.annotations.decontamination import DecontaminationAnnotator, NgramIndex  # noqa: E402

DATATROVE = r'''
import json, sys, time
import numpy as np
from datatrove.data import Document
from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
from datatrove.utils.hashing import create_hash_func
from datatrove.utils.text import simplify_text, ngrams
from datatrove.utils.word_tokenizers import load_word_tokenizer
docs_path, evals_path, index_folder, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = NGramsDecontConfig(n_grams=n, find_query_ngrams=True)
tokenizer = load_word_tokenizer("en")
hash_func = create_hash_func(config.hash_config)
tokenizer.word_tokenize("warm up spaCy")
started = time.perf_counter()
hashes = set()
for line in open(evals_path, encoding="utf-8"):  # the indexer's compute_hashes, without lighteval's task loading
    tokens = tokenizer.word_tokenize(simplify_text(json.loads(line)["text"], config.norm_config))
    hashes.update(map(hash_func, map(" ".join, ngrams(tokens, n))))
np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(f"{index_folder}/evals.index.hashes")
indexed = time.perf_counter() - started
step = NGramsDecontFilter(index_folder, config=config)
step.filter(Document(text="warm up", id="0"))  # loads the index
rows = [json.loads(line)["text"] for line in open(docs_path, encoding="utf-8")]
started = time.perf_counter()
flags = [step.filter(Document(text=t, id=str(i))) is not True for i, t in enumerate(rows)]
filtered = time.perf_counter() - started
print(json.dumps({"index": indexed, "filter": filtered, "flags": flags, "n_hashes": len(hashes)}))
'''


def evaluation_set(texts: list[str], count: int, seed: int = 11) -> list[str]:
    """`count` passages from the sample, re-cased (they match), and `count` word-shuffled ones (they do not)."""
    rng = random.Random(seed)
    long = [t.split() for t in texts if len(t.split()) >= 60]
    out = []
    for _ in range(count):
        w = rng.choice(long)
        start, length = rng.randrange(len(w) - 45), rng.randrange(13, 41)
        out.append(" ".join(w[start:start + length]).upper())
        shuffled = w[start:start + length]
        rng.shuffle(shuffled)
        out.append(" ".join(shuffled))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_index(n_ngrams: int, n: int) -> None:
    """An index of about `n_ngrams` distinct n-grams of random words from a 50k vocabulary, in texts of 1,000 words."""
    rng = np.random.default_rng(5)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, 8)) for _ in range(50_000)]  # letters only: digit runs all read as 0
    words_per_text = 1000
    n_texts = -(-n_ngrams // (words_per_text - n + 1))

    def texts():
        for _ in range(n_texts):
            yield " ".join(vocab[i] for i in rng.integers(0, len(vocab), words_per_text))

    before = peak_rss_mb()
    started = time.perf_counter()
    index = NgramIndex.build(texts(), n)
    seconds = time.perf_counter() - started
    print(f"index of {len(index):,} distinct {n}-grams ({n_texts:,} texts of {words_per_text} words): built in {seconds:.1f} s "
          f"({len(index) / seconds:,.0f} n-grams/s), {index.keys.nbytes / 1e6:.0f} MB ({index.keys.nbytes / len(index):.0f} "
          f"bytes each); peak RSS {peak_rss_mb():,.0f} MB (before: {before:,.0f} MB)")
    probe_h1, probe_h2 = index.h1[::7].copy(), index.h2[::7].copy()
    started = time.perf_counter()
    found = index.contains(probe_h1, probe_h2)
    seconds = time.perf_counter() - started
    assert found.all()
    print(f"lookups: {len(probe_h1):,} present keys in {seconds:.2f} s ({len(probe_h1) / seconds:,.0f} lookups/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000, help="documents in the sample")
    parser.add_argument("--evals", type=int, default=500, help="matching passages in the evaluation set (as many that do not)")
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--datatrove-python", default=str(ROOT / ".venv-datatrove" / "bin" / "python"),
                        help="python of a venv with datatrove[processing] (make bench-datatrove)")
    parser.add_argument("--index-ngrams", type=int, default=0, help="also build an index of this many synthetic n-grams")
    parser.add_argument("--no-compare", action="store_true", help="skip the side-by-side run (with --index-ngrams)")
    args = parser.parse_args()
    if args.index_ngrams:
        bench_index(args.index_ngrams, args.ngram)
        if args.no_compare:
            return
    texts, where = load_texts(args.docs)
    evals = evaluation_set(texts, args.evals)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts):,} documents ({megabytes:.1f} MB) from {where}; {len(evals):,} evaluation texts; "
          f"{args.ngram}-grams; one core each unless noted\n")
    with tempfile.TemporaryDirectory() as tmp:
        sample, evals_path = Path(tmp) / "sample.jsonl", Path(tmp) / "evals.jsonl"
        sample.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        evals_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in evals), encoding="utf-8")

        started = time.perf_counter()
        index = NgramIndex.build(evals, args.ngram)
        ours_index = time.perf_counter() - started
        index.save(Path(tmp) / "index.npy")
        annotator = DecontaminationAnnotator(str(Path(tmp) / "index.npy"), args.ngram, index.content_hash(), len(index))
        started = time.perf_counter()
        ours_flags = []
        for start in range(0, len(texts), 1024):
            batch = texts[start:start + 1024]
            out = annotator.annotate(pa.table({"doc_id": list(range(len(batch))), "text": batch}))
            ours_flags += [m > 0 for m in out.column("n_matched").to_pylist()]
        ours = time.perf_counter() - started

        db = corpusdb.init(str(Path(tmp) / "db"))
        db.ingest([str(sample)], source="sample", progress=False, part_size_mb=max(megabytes / 8, 0.05))
        jobs = {}
        for workers in (1, 2):
            started = time.perf_counter()
            db.decontaminate([str(evals_path)], ngram=args.ngram, replace=True, workers=workers, progress=False)
            jobs[workers] = time.perf_counter() - started

        folder = Path(tmp) / "datatrove-index"
        folder.mkdir()
        theirs = datatrove_results(args.datatrove_python, DATATROVE, sample, evals_path, folder, args.ngram)

        def row(name: str, seconds: float, baseline: float | None) -> str:
            ratio = f"{baseline / seconds:6.2f}x" if baseline else "     -"
            return f"{name:<64} {seconds:8.2f} s {len(texts) / seconds:10,.0f} docs/s {megabytes / seconds:7.2f} MB/s {ratio}"

        base = theirs["filter"] if theirs else None
        print(f"{'':<64} {'time':>10} {'throughput':>17} {'':>12} vs datatrove's filter")
        if theirs:
            print(f"datatrove 0.10.1 index: {theirs['n_hashes']:,} hashes in {theirs['index']:.2f} s")
            print(row("datatrove 0.10.1 NGramsDecontFilter (stops at the first match)", theirs["filter"], base))
        print(f"corpusdb index: {len(index):,} n-grams in {ours_index:.2f} s")
        print(row("corpusdb DecontaminationAnnotator.annotate (every n-gram)", ours, base))
        print(row("corpusdb decontaminate job, 1 worker (Parquet in and out, commit)", jobs[1], base))
        print(row("corpusdb decontaminate job, 2 workers", jobs[2], base))
        if theirs:
            both = sum(a and b for a, b in zip(ours_flags, theirs["flags"]))
            print(f"\ndocuments flagged: corpusdb {sum(ours_flags):,}, datatrove {sum(theirs['flags']):,}, both {both:,}, "
                  f"corpusdb only {sum(ours_flags) - both:,}, datatrove only {sum(theirs['flags']) - both:,}")
        kept = db.sql("select count(*) from filter_decontaminated()").fetchall()[0][0]
        print(f"filter_decontaminated() keeps {kept:,} of {len(texts):,} documents")


if __name__ == "__main__":
    main()
