"""Near-duplicate quality: corpusdb (estimate and exact verification) vs datasketch, rensa and datatrove.

    python benchmarks/dedup_quality.py                       # 3,000 real originals + edited copies
    python benchmarks/dedup_quality.py --originals 1000 --datatrove-python /tmp/dt/bin/python

The hard set (tests/near_duplicates.py): man pages, /usr/share/doc files and Python sources
(whatever of them this machine has; the test fixture otherwise), each with one or two edited
copies (word edits, truncation, a shared boilerplate header or footer, a paragraph inserted or
removed, whitespace and case). Every tool gets the same documents, 5-word shingles of the
lower-cased words, 128 permutations and threshold 0.8, and its clusters are its connected
components of accepted pairs. True Jaccard is exact (shingle sets).

- corpusdb: `corpusdb minhash` (ingest not counted), `--verify exact` (default) and `estimate`,
  `--cluster components` (default) and `star`; signatures once (time printed), then each mode's
  clustering timed on its own.
- datasketch: `MinHashLSH(threshold)` candidates, unverified (its usual use).
- rensa: `RMinHashLSH(threshold, 128, 16 bands)` (bands must divide 128) candidates kept at estimated Jaccard >= threshold.
- datatrove (separate venv; it pins `xxhash<4`): its MinhashDedupSignature/Buckets/Cluster steps
  with 14 buckets x 9 hashes (corpusdb's bands), when `--datatrove-python` is given.

Also the template case: documents that share 66 words of a licence plus 34 of their own (pairwise
Jaccard about 0.5) must not be merged.

`--web N` (the web-like set of tests/web_pages.py, N articles and N products): pages on 30 sites
and 5 shop templates whose boilerplate is 30-88% of a page, with syndicated, truncated, edited,
updated and re-listed copies. The truth is the exact Jaccard of every pair (not only pairs within
a family), so precision is over every pair a tool puts in one cluster and recall over every pair
at or above the threshold.

    python benchmarks/dedup_quality.py --originals 0 --templates 0 --web 2000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import corpusdb  # noqa: E402
from corpusdb.dedup.minhash import shingles  # noqa: E402
from tests.conftest import fixture_texts  # noqa: E402
from tests.near_duplicates import RANGES, TrueJaccard, co_clustered, evaluate, hard_set, template_set  # noqa: E402
from tests.web_pages import pair_jaccard, web_set  # noqa: E402


def real_texts(limit: int, seed: int = 0) -> tuple[list[str], str]:
    """Man pages, /usr/share/doc text files and Python sources, `limit` of each kind at most."""
    rng = random.Random(seed)
    kinds = {
        "man pages": sorted(Path("/usr/share/man").glob("man[1-8]/*.gz")),
        "/usr/share/doc": sorted(p for p in Path("/usr/share/doc").rglob("*") if p.is_file() and p.name != "copyright"
                                 and p.suffix in ("", ".txt", ".md", ".rst", ".gz") and "changelog" not in p.name.lower()),
        "python sources": sorted(p for p in Path("/usr/lib").glob("python3*/**/*.py") if "site-packages" not in p.parts),
    }
    texts, used = [], []
    for name, paths in kinds.items():
        rng.shuffle(paths)
        found = 0
        for path in paths:
            try:
                raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
                text = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
                continue
            if 80 <= len(text.split()) <= 5000:
                texts.append(text)
                found += 1
                if found >= limit:
                    break
        if found:
            used.append(f"{found} {name}")
    if len(texts) < limit:
        return fixture_texts(), "the test fixture"
    return texts, ", ".join(used)


def union_find_labels(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def run_corpusdb(records: list[dict], tmp: Path, modes: tuple[tuple[str, str], ...]) -> dict[str, tuple[list, float]]:
    """Labels and seconds per (verify, cluster) mode: the signatures are computed first (their time
    printed), so each mode's time is its clustering only."""
    path = tmp / "hard.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"], "rec": str(i)}) + "\n" for i, r in enumerate(records)))
    db = corpusdb.init(str(tmp / f"db-{len(records)}-{time.monotonic_ns()}"))
    db.ingest([str(path)], source="hard", meta={"rec": "rec"}, progress=False)
    started = time.perf_counter()
    db.minhash(progress=False, cluster_when_done=False)
    print(f"corpusdb signatures: {time.perf_counter() - started:.1f} s (the times below are clustering only)")
    out = {}
    for verify, method in modes:
        started = time.perf_counter()
        db.minhash(verify=verify, method=method, progress=False)
        seconds = time.perf_counter() - started
        db.refresh()
        label = dict(db.sql("select d.rec::int, m.cluster_id from documents d join minhash m using (doc_id)").fetchall())
        name = f"corpusdb --verify {verify}" + ("" if method == "components" else f" --cluster {method}")
        name += " (default)" if (verify, method) == ("exact", "components") else ""
        out[name] = ([label.get(i, -1 - i) for i in range(len(records))], seconds)
    return out


def run_datasketch(texts: list[str], threshold: float) -> tuple[list, float]:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=128, seed=1)
        for shingle in shingles(text, 5):
            m.update(" ".join(shingle).encode("utf-8"))
        lsh.insert(i, m)
        hashes.append(m)
    pairs = [(i, j) for i, m in enumerate(hashes) for j in lsh.query(m) if j != i]
    return union_find_labels(len(texts), pairs), time.perf_counter() - started


def run_rensa(texts: list[str], threshold: float) -> tuple[list, float]:
    from rensa import RMinHash, RMinHashLSH

    started = time.perf_counter()
    lsh = RMinHashLSH(threshold=threshold, num_perm=128, num_bands=16)
    hashes = []
    for i, text in enumerate(texts):
        m = RMinHash(num_perm=128, seed=1)
        m.update([" ".join(s) for s in shingles(text, 5)])
        lsh.insert(i, m)
        hashes.append(m)
    pairs = [(i, j) for i, m in enumerate(hashes) for j in lsh.query(m) if j != i and m.jaccard(hashes[j]) >= threshold]
    return union_find_labels(len(texts), pairs), time.perf_counter() - started


DATATROVE_SCRIPT = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupSignature, MinhashDedupBuckets,
                                              MinhashDedupCluster)
from datatrove.utils.hashing import HashConfig
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
out = sys.argv[2]
config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=9, n_grams=5)
started = time.perf_counter()
docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
MinhashDedupSignature(output_folder=f"{out}/sigs", config=config, language="en").run(iter(docs), 0, 1)
# one bucket task per bucket (datatrove needs the task count divisible by the buckets), as its launchers run them
for bucket in range(14):
    MinhashDedupBuckets(input_folder=f"{out}/sigs", output_folder=f"{out}/buckets", config=config).run(None, bucket, 14)
MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/remove_ids", config=config,
                    save_cluster_id=True).run(None, 0, 1)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def run_datatrove(python: str, records: list[dict], tmp: Path) -> tuple[list, float] | None:
    """datatrove in its own venv; its cluster ids come back through the documents it keeps."""
    path = tmp / "datatrove.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in records))
    script = tmp / "run_datatrove.py"
    script.write_text(DATATROVE_SCRIPT)
    result = subprocess.run([python, str(script), str(path), str(tmp / "dt")], capture_output=True, text=True)
    if result.returncode:
        print(f"datatrove failed: {result.stderr.strip().splitlines()[-1:]}")
        return None
    seconds = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
    return _datatrove_labels(tmp / "dt", len(records)), seconds


def _datatrove_labels(folder: Path, n: int) -> list[int]:
    """datatrove writes the pairs it merged per bucket; its clusters are their connected components."""
    import struct

    pairs = []
    for path in sorted((folder / "buckets").glob("*.dups")):
        data = path.read_bytes()
        for offset in range(0, len(data), 16):
            f1, d1, f2, d2 = struct.unpack("<4I", data[offset : offset + 16])
            pairs.append((d1, d2))
    return union_find_labels(n, pairs)


def web_case(n: int, threshold: float, skip_peers: bool, tmp: Path) -> None:
    """Every tool on the web-like set; precision and recall against the exact Jaccard of every pair."""
    records = web_set(fixture_texts(), n_articles=n, n_products=n, seed=0)
    texts = [r["text"] for r in records]
    jaccard = pair_jaccard(texts, floor=0.3)
    true = {pair for pair, value in jaccard.items() if value >= threshold}
    near = sum(threshold - 0.2 <= value < threshold for value in jaccard.values())
    print(f"web-like set: {len(records):,} pages, {len(true):,} pairs at J >= {threshold}, {near:,} pairs between "
          f"{threshold - 0.2:.1f} and {threshold}")
    runs = run_corpusdb(records, tmp, (("exact", "components"), ("estimate", "components"), ("exact", "star")))
    if not skip_peers:
        runs["datasketch MinHashLSH"] = run_datasketch(texts, threshold)
        runs["rensa (verified at est. J >= t)"] = run_rensa(texts, threshold)
    print(f"{'tool':46} {'precision':>9} {'recall':>7} {'largest':>8} {'time s':>7}")
    for name, (labels, seconds) in runs.items():
        merged = co_clustered(labels)
        precision = sum(jaccard.get(pair, 0.0) >= threshold for pair in merged) / max(len(merged), 1)
        recall = len(true & merged) / max(len(true), 1)
        largest = int(np.unique(labels, return_counts=True)[1].max())
        print(f"{name:46} {precision:9.3f} {recall:7.3f} {largest:8d} {seconds:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=3000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--templates", type=int, default=15000, help="documents in the template case (0: skip)")
    parser.add_argument("--datatrove-python", help="python of a venv with datatrove installed")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--web", type=int, default=0, help="articles and products in the web-like set (0: skip)")
    args = parser.parse_args()
    if args.web:
        with tempfile.TemporaryDirectory() as tmp:
            web_case(args.web, args.threshold, args.skip_peers, Path(tmp))
    if not args.originals:
        return
    texts, where = real_texts(args.originals // 3 + 1)
    records = hard_set(texts, args.originals, seed=0)
    print(f"hard set: {len(records):,} documents ({args.originals:,} originals from {where}, the rest edited copies); "
          f"threshold {args.threshold}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = run_corpusdb(records, tmp, (("estimate", "components"), ("exact", "components"), ("estimate", "star"),
                                           ("exact", "star")))
        doc_texts = [r["text"] for r in records]
        if not args.skip_peers:
            runs["datasketch MinHashLSH"] = run_datasketch(doc_texts, args.threshold)
            runs["rensa (verified at est. J >= t)"] = run_rensa(doc_texts, args.threshold)
            if args.datatrove_python:
                dt = run_datatrove(args.datatrove_python, records, tmp)
                if dt:
                    runs["datatrove (14 x 9)"] = dt
        jaccard = TrueJaccard(doc_texts)
        results = evaluate(records, {name: labels for name, (labels, _) in runs.items()}, args.threshold, jaccard)
        header = " ".join(f"{lo:.2f}-{min(hi, 1):.2f}" for lo, hi in RANGES)
        print(f"{'tool':42} {'precision':>9} {'recall':>7} {'rec>=.85':>8} {'J<.5':>5} {'time s':>7}   recall by true Jaccard: {header}")
        for name, result in results.items():
            by_range = " ".join(f"{found / total if total else float('nan'):9.3f}" for found, total in result["recall_by_range"].values())
            print(f"{name:42} {result['precision']:9.3f} {result['recall']:7.3f} {result['recall_085']:8.3f} "
                  f"{result['merged_below_05']:5d} {runs[name][1]:7.1f}   {by_range}")
        counts = " ".join(f"{total}" for _, total in next(iter(results.values()))["recall_by_range"].values())
        print(f"reference pairs per range: {counts}")
        if args.templates:
            docs = template_set(args.templates)
            template_records = [{"text": t, "family": i} for i, t in enumerate(docs)]
            labels, seconds = run_corpusdb(template_records, tmp, (("estimate", "components"),))["corpusdb --verify estimate"]
            sizes = np.unique(labels, return_counts=True)[1]
            print(f"template case: {len(docs):,} documents sharing 66 of 100 words: largest corpusdb cluster {sizes.max()} "
                  f"({seconds:.1f} s)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
