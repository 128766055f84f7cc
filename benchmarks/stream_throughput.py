"""Streaming throughput of the training adapter vs. what a student consumes and vs. a plain reader.

    python benchmarks/stream_throughput.py            # demo/db if `make demo` ran, else the fixture corpus

Rows (packed tokens per second, seq_len 256, batches of 16):
- baseline: pyarrow reads the same Parquet parts and the main process tokenizes and packs;
- ViewDataset over text, 2 DataLoader workers (tokenizing in the workers);
- ViewDataset over a pre-tokenized export (`corpusdb export --format tokens`), 2 workers;
- what a CPU training step of a small GPT-2 (the CPU experiment's student) consumes, for scale.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

import corpusdb  # noqa: E402
from corpusdb.train import ViewDataset  # noqa: E402
from corpusdb.train.models import make_model, train_tokenizer  # noqa: E402

SEQ, BATCH = 256, 16


def open_db() -> tuple[corpusdb.Database, str]:
    demo = ROOT / "demo" / "db"
    if (demo / "corpusdb.json").exists():
        return corpusdb.open(str(demo)), "demo/db"
    db = corpusdb.init(tempfile.mkdtemp())
    for path in sorted((ROOT / "tests/data/corpus").glob("*.jsonl")):
        db.ingest([str(path)], source=path.stem, progress=False)
    return db, "the test fixture"


def rate(loader, limit_tokens: int) -> float:
    started, tokens = time.perf_counter(), 0
    for batch in loader:
        tokens += batch.numel()
        if tokens >= limit_tokens:
            break
    return tokens / (time.perf_counter() - started)


def baseline(parts: list[Path], tokenizer, limit_tokens: int) -> float:
    """pyarrow + tokenize + pack in the main process."""
    started, tokens, held = time.perf_counter(), 0, []
    eos = tokenizer.eos_token_id
    for part in parts:
        texts = pq.read_table(part, columns=["text"]).column("text").to_pylist()
        for start in range(0, len(texts), 1024):
            for ids in tokenizer(texts[start : start + 1024], add_special_tokens=False, verbose=False)["input_ids"]:
                held += ids + [eos]
            whole = len(held) // (SEQ + 1) * (SEQ + 1)
            tokens += whole
            torch.tensor(np.array(held[:whole]).reshape(-1, SEQ + 1))
            held = held[whole:]
            if tokens >= limit_tokens:
                return tokens / (time.perf_counter() - started)
    return tokens / (time.perf_counter() - started)


def step_rate(tokenizer) -> float:
    model = make_model(tokenizer, size="small", context=SEQ)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, len(tokenizer), (BATCH, SEQ + 1))
    for i in range(6):
        if i == 1:
            started = time.perf_counter()
        logits = model(input_ids=batch[:, :-1]).logits
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return 5 * BATCH * SEQ / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5_000_000, help="tokens to stream per run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    db, where = open_db()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = [t for (t,) in db.sql("select text from documents order by doc_id limit 5000").fetchall()]
        tokenizer = train_tokenizer(texts, 4096)
        tokenizer.save_pretrained(tmp / "tok")
        text_ds = ViewDataset(db, "documents", tokenizer, SEQ, batch_size=BATCH, block_mb=4, cache_dir=str(tmp / "cache"))
        parts = sorted((tmp / "cache").glob("*/part-*.parquet"))
        db.view("select doc_id, source, text, n_bytes from documents order by doc_id").export(
            str(tmp / "tokens"), format="tokens", tokenizer=str(tmp / "tok"), part_size_mb=4)
        token_ds = ViewDataset.from_export(str(tmp / "tokens"), seq_len=SEQ, batch_size=BATCH)
        print(f"documents from {where}; seq_len {SEQ}, batch {BATCH}, {args.workers} workers, {args.tokens:,} tokens per run")

        def loader(ds):
            return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=args.workers)

        # the workers run first: a tokenizer used in the parent runs single-threaded after a fork
        text_rate = rate(loader(text_ds), args.tokens)
        token_rate = rate(loader(token_ds), args.tokens)
        base = baseline(parts, tokenizer, args.tokens)
        rows = [
            ("pyarrow + tokenize in the main process (baseline)", base),
            (f"ViewDataset, text, {args.workers} workers", text_rate),
            (f"ViewDataset, pre-tokenized export, {args.workers} workers", token_rate),
        ]
        student = step_rate(tokenizer)
        print(f"{'source':56} {'tokens/s':>12} {'vs baseline':>12} {'vs student step':>16}")
        for name, value in rows:
            print(f"{name:56} {value:12,.0f} {value / base:11.1f}x {value / student:15.1f}x")
        print(f"{'a CPU training step of the small GPT-2 student consumes':56} {student:12,.0f}")


if __name__ == "__main__":
    main()
