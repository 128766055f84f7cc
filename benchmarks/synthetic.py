"""Synthetic corpora at scale, written with numpy/pyarrow and committed through corpusdb's public API.

    python benchmarks/synthetic.py /tmp/scale-db --n 1000000                   # documents of ~220 bytes, two scores
    python benchmarks/synthetic.py /tmp/scale-inst --n 1000000 --unit instances   # ~2 kB documents cut into ~250-byte instances

Texts are slices of one pool of pseudo-words (Zipf frequencies, ASCII), cut at random offsets, so every
document is distinct, the text compresses like prose and nothing is generated word by word: 50M documents
take a few minutes. doc_ids (and instance_ids) are random 64-bit integers, as content hashes are. Scores
are made-up log-likelihoods (teacher ~ -1 nat per byte, reference ~ -1.3) for `teacher` and `reference`,
registered with made-up identities; instances carry byte spans into their documents, as `corpusdb
instances` writes them. `benchmarks/scale.py` builds its databases here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SOURCES = np.array(["web", "books", "code", "wiki"])
MODELS = {"teacher": 1.0, "reference": 1.3}  # mean nats per byte
MARKER = "synthetic.json"


def word_pool(rng: np.random.Generator, n_bytes: int = 32_000_000) -> np.ndarray:
    """About `n_bytes` of pseudo-words separated by spaces (a newline every ~12 words), as uint8."""
    letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
    weights = 1.0 / np.arange(1, 27) ** 0.7
    vocab = set()
    for length in range(1, 12):
        chars = rng.choice(letters, size=(4000, length), p=weights / weights.sum())
        vocab.update(bytes(row) for row in chars)
    vocab = np.array(sorted(vocab), dtype=object)
    rng.shuffle(vocab)
    ranks = 1.0 / np.arange(1, len(vocab) + 1)
    picks = rng.choice(len(vocab), size=n_bytes // 7, p=ranks / ranks.sum())
    separators = np.where(rng.random(len(picks)) < 0.08, b"\n", b" ")
    joined = b"".join(w + s for w, s in zip(vocab[picks], separators))
    return np.frombuffer(joined, dtype=np.uint8)


def texts(rng: np.random.Generator, pool: np.ndarray, lengths: np.ndarray) -> pa.StringArray:
    """One text per length, each a slice of the pool at a random offset (built from buffers, no Python loop)."""
    lengths = lengths.astype(np.int64)
    starts = rng.integers(0, len(pool) - int(lengths.max()) - 1, len(lengths))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    data = pool[np.repeat(starts, lengths) + within]
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)


def score_table(rng: np.random.Generator, ids: np.ndarray, n_bytes: np.ndarray, scale: float) -> pa.Table:
    logprob = -(n_bytes * scale * rng.uniform(0.5, 1.5, len(ids)))
    return pa.table({"doc_id": ids, "sum_logprob": logprob, "n_tokens": np.maximum(n_bytes // 4, 1),
                     "n_bytes": n_bytes.astype(np.int64)})


def build(folder: Path, n: int, unit: str = "documents", part_rows: int = 500_000, seed: int = 0, progress: bool = True,
          covers: bool = False):
    """A database at `folder` with `n` scored documents (or `n` scored instances); reused when already built.
    `covers`: each part of spans records the documents part it covers (as `corpusdb instances` writes them).

    Returns the open database.
    """
    import corpusdb

    marker = folder / MARKER
    wanted = {"n": n, "unit": unit, "seed": seed, "part_rows": part_rows, **({"covers": True} if covers else {})}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return corpusdb.open(str(folder))
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} holds something else; remove it or pick another --dir")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    pool = word_pool(rng)
    db = corpusdb.init(str(folder))
    for sub in ("documents", "instances", *(f"scores/model={m}" for m in MODELS)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # instances: documents of ~2 kB cut into spans of 256 bytes (the last one shorter), ~8 per document
    span = 256
    per_doc = 8 if unit == "instances" else 1
    doc_rows = part_rows // per_doc
    written, part = 0, 0
    docs, spans, scores = [], [], {m: [] for m in MODELS}
    while written < n:
        m = min(doc_rows, -(-(n - written) // per_doc))
        if unit == "instances":
            lengths = rng.integers(span * 6 + 1, span * 10, m)
        else:
            lengths = rng.integers(120, 320, m)
        doc_ids = random_ids(rng, m)
        name = f"part-{part:05d}.parquet"
        table = pa.table({"doc_id": doc_ids, "source": pa.array(SOURCES[rng.integers(0, len(SOURCES), m)]),
                          "text": texts(rng, pool, lengths), "n_bytes": lengths.astype(np.int64)})
        pq.write_table(table, folder / "documents" / name, row_group_size=8192, compression="zstd")
        docs.append(str(folder / "documents" / name))
        if unit == "instances":
            counts = -(-lengths // span)
            doc_of = np.repeat(np.arange(m), counts)
            position = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            start = position * span
            end = np.minimum(start + span, lengths[doc_of])
            keep = slice(0, min(len(start), n - written))
            unit_ids = random_ids(rng, len(start))[keep]
            unit_bytes = (end - start)[keep]
            inst = pa.table({"instance_id": unit_ids, "doc_id": doc_ids[doc_of][keep],
                             "position": position[keep].astype(np.int32), "byte_start": start[keep],
                             "byte_end": end[keep], "n_tokens": np.maximum(unit_bytes // 4, 1), "n_bytes": unit_bytes})
            pq.write_table(inst, folder / "instances" / name, compression="zstd")
            spans.append(str(folder / "instances" / name))
        else:
            unit_ids, unit_bytes = doc_ids, lengths.astype(np.int64)
        for model, scale in MODELS.items():
            path = folder / "scores" / f"model={model}" / name
            pq.write_table(score_table(rng, unit_ids, unit_bytes, scale), path, compression="zstd")
            scores[model].append(str(path))
        written += len(unit_ids)
        part += 1
        if progress:
            print(f"\r  synthetic: {written:,} of {n:,} {unit} ({time.perf_counter() - started:.0f} s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    db.register_parts("documents", docs)
    if spans:  # spans part i cuts the documents of documents part i
        db.register_parts("instance_spans", spans, covers=dict(zip(spans, ([d] for d in docs))) if covers else None)
    models = {m: {"model": f"synthetic/{m}", "content_hash": f"synthetic-{m}", "tokenizer_hash": "synthetic", "unit": unit}
              for m in MODELS}
    db.register_parts("scores", [p for paths in scores.values() for p in paths], models=models)
    marker.write_text(json.dumps(wanted))
    return corpusdb.open(str(folder))


def jsonl_lines(rng: np.random.Generator, pool: np.ndarray, n: int, prefix: str = "") -> bytes:
    """`n` JSONL records {"text": ...} of synthetic documents (~220 bytes), unique by `prefix` and content."""
    import orjson

    column = texts(rng, pool, rng.integers(120, 320, n)).to_pylist()
    return b"".join(orjson.dumps({"text": f"{prefix}{t}"}) + b"\n" for t in column)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--unit", choices=("documents", "instances"), default="documents")
    args = parser.parse_args()
    started = time.perf_counter()
    db = build(args.folder, args.n, args.unit)
    print(f"{db.stats()['n_documents']:,} documents at {args.folder} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
