"""Classifier annotator throughput: corpusdb's `classifier` annotator vs plain transformers loops, side by side.

    python benchmarks/classifier_throughput.py                       # demo/db if `make demo` ran, else the fixture
    python benchmarks/classifier_throughput.py --docs 2000 --model PATH_OR_HUB_ID   # e.g. FineWeb-Edu's classifier

The same real documents (a seeded sample of `--docs` from demo/db, or the test fixture) through one
sequence-classification model (by default a BERT-style regression head of FineWeb-Edu's shape at
small width, random weights, saved with save_pretrained), on the CPU with `--threads` torch threads:

- plain loop: `model(**tokenizer(text, truncation=True))` one document at a time (no padding);
- plain batches: 32 documents at a time in their own order, padded to the longest;
- corpusdb: `ClassifierAnnotator.annotate` (documents sorted by length, batches of about 16k padded
  tokens), and the `corpusdb annotate` job (Parquet in and out, commit) with 1 and 2 workers of
  one thread each.

It prints docs/s, the ratio to the plain loop, and the largest difference between corpusdb's
scores and the plain loop's. `--fasttext MODEL` does the same for the `fasttext` annotator (plain
loop: fastText's `predict(k=-1)` per document), e.g. tests/data/fasttext/hq.bin.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

import corpusdb  # noqa: E402
from benchmarks.minhash_throughput import load_texts  # noqa: E402 - the same seeded sample of demo/db or the fixture
from corpusdb.annotations.classifier import ClassifierAnnotator  # noqa: E402


def small_classifier(folder: Path, texts: list[str]) -> Path:
    """A BERT-style regression head (FineWeb-Edu's shape: one logit) of 4 layers, width 256, 512 positions."""
    from transformers import BertConfig, BertForSequenceClassification

    from corpusdb.train.models import train_tokenizer

    tokenizer = train_tokenizer(texts[:2000], 8000)
    tokenizer.model_max_length = 512
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                        num_labels=1, problem_type="regression")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def job_seconds(texts: list[str], annotator: str, **options) -> dict[int, float]:
    """Seconds of the `corpusdb annotate` job (Parquet in and out, commit) over `texts` in 8 parts, with 1 and 2 workers."""
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.jsonl"
        sample.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        db = corpusdb.init(str(Path(tmp) / "db"))
        db.ingest([str(sample)], source="sample", progress=False, part_size_mb=max(megabytes / 8, 0.05))
        jobs = {}
        for workers in (1, 2):
            started = time.perf_counter()
            db.annotate("bench", annotator, replace=True, workers=workers, progress=False, **options)
            jobs[workers] = time.perf_counter() - started
    return jobs


def bench_fasttext(texts: list[str], where: str, model_path: str, label: str | None) -> None:
    from corpusdb.annotations.fasttext_classifier import FastTextAnnotator

    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    annotator = FastTextAnnotator(model_path, label_name=label)
    model = annotator.model
    print(f"{len(texts):,} documents ({megabytes:.1f} MB) from {where}; {Path(model_path).name}\n")
    started = time.perf_counter()
    plain = [dict(zip(*model.predict(t.strip().replace("\n", " "), k=-1))) for t in texts if t.strip()]
    loop = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(texts), 1024):
        part = texts[start:start + 1024]
        annotator.annotate(pa.table({"doc_id": list(range(len(part))), "text": part}))
    ours = time.perf_counter() - started
    jobs = job_seconds(texts, "fasttext", model=model_path, label=label)
    print(f"{'':<52} {'time':>10} {'throughput':>17} vs plain loop")
    for name, seconds in (("plain loop: fastText predict(k=-1) per document", loop),
                          ("corpusdb FastTextAnnotator.annotate", ours),
                          ("corpusdb annotate job, 1 worker (Parquet, commit)", jobs[1]),
                          ("corpusdb annotate job, 2 workers", jobs[2])):
        print(f"{name:<52} {seconds:8.2f} s {len(texts) / seconds:10,.0f} docs/s {loop / seconds:6.2f}x")
    assert len(plain) <= len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--model", help="a sequence-classification model [default: a small random BERT regression head]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process runs")
    parser.add_argument("--fasttext", metavar="MODEL", help="benchmark the fasttext annotator with this model instead")
    parser.add_argument("--label", help="with --fasttext: the label whose probability is the score")
    args = parser.parse_args()
    texts, where = load_texts(args.docs)
    if args.fasttext:
        bench_fasttext(texts, where, args.fasttext, args.label)
        return
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or str(small_classifier(Path(tmp) / "classifier", texts))
        annotator = ClassifierAnnotator(model_path, threads=args.threads)
        model, tokenizer, _ = annotator.loaded
        limit = annotator._max_length(tokenizer)
        n_tokens = sum(min(len(ids), limit) for ids in tokenizer(texts, verbose=False)["input_ids"])
        print(f"{len(texts):,} documents ({megabytes:.1f} MB, {n_tokens:,} tokens after truncation to {limit}) from "
              f"{where}; {Path(model_path).name}; {args.threads} torch thread(s)\n")

        started = time.perf_counter()
        plain = []
        with torch.inference_mode():
            for text in texts:
                plain.append(model(**tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")).logits[0, 0].item())
        loop = time.perf_counter() - started

        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(texts[start:start + 32], truncation=True, max_length=limit, padding=True, return_tensors="pt")
                model(**batch)
        batches = time.perf_counter() - started

        started = time.perf_counter()
        ours = []
        for start in range(0, len(texts), 1024):
            part = texts[start:start + 1024]
            ours += annotator.annotate(pa.table({"doc_id": list(range(len(part))), "text": part})).column("score").to_pylist()
        annotate = time.perf_counter() - started
        empty = [i for i, t in enumerate(texts) if not (t and t.strip())]
        differ = max(abs(a - b) for i, (a, b) in enumerate(zip(ours, plain)) if i not in empty)

        jobs = job_seconds(texts, "classifier", model=model_path, threads=1)

    def row(name: str, seconds: float) -> str:
        return f"{name:<60} {seconds:8.2f} s {len(texts) / seconds:9,.1f} docs/s {n_tokens / seconds:10,.0f} tokens/s {loop / seconds:6.2f}x"

    print(f"{'':<60} {'time':>10} {'throughput':>16} {'':>17} vs plain loop")
    print(row("plain loop: one document per forward pass", loop))
    print(row("plain batches of 32 in input order, padded", batches))
    print(row("corpusdb ClassifierAnnotator.annotate (length-sorted)", annotate))
    print(row("corpusdb annotate job, 1 worker x 1 thread (Parquet, commit)", jobs[1]))
    print(row("corpusdb annotate job, 2 workers x 1 thread", jobs[2]))
    print(f"\nlargest |corpusdb score - plain loop score|: {differ:.2e}")


if __name__ == "__main__":
    main()
