"""Scoring throughput: corpusdb's packed scorer vs. a plain transformers loop on the same documents and model.

    python benchmarks/score_throughput.py                          # CPU: small GPT-2, fixture corpus
    python benchmarks/score_throughput.py --db demo/db --docs 2000 # real demo documents
    python benchmarks/score_throughput.py --size 100m --context 1024 --device cuda --docs 20000   # GPU

Baseline ("plain HF loop"): documents in table order, one context window per row, rows padded to
the longest in the batch with an attention mask, fp32, the same token budget per batch. corpusdb:
`run_score` (windows packed several to a row, sorted by length, tokenization in a background
thread, bf16 autocast on GPU). Both score the same windows (same context and stride), so both
compute the same tokens; the benchmark checks their sums agree and prints tokens/s (scored document
tokens per second), the ratio, and on CUDA the model FLOPs utilisation 2 * params * computed
tokens/s over the GPU's bf16 dense peak (--peak-tflops, default 989 for an H100 SXM).
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
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import corpusdb  # noqa: E402
from corpusdb.scoring import load_model, run_score  # noqa: E402
from corpusdb.scoring.windows import windows  # noqa: E402
from corpusdb.train.models import build_model, read_texts, train_tokenizer  # noqa: E402


def plain_loop(loaded, texts: list[str], context: int, stride: int, batch_tokens: int, device: str) -> tuple[np.ndarray, int]:
    """Per-document sums from padded batches of one window per row, fp32, no sorting; returns (sums, computed tokens)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    rows = []  # (doc, window input ids, first scored prediction)
    for doc, text in enumerate(texts):
        seq = [loaded.bos_id, *tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]
        rows += [(doc, seq[w.start : w.end], w.skip) for w in windows(len(seq), context, stride)]
    sums = np.zeros(len(texts))
    per_batch = max(1, batch_tokens // context)
    computed = 0
    for i in range(0, len(rows), per_batch):
        chunk = rows[i : i + per_batch]
        width = max(len(ids) for _, ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), loaded.bos_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (_, ids, _) in enumerate(chunk):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
            computed += len(ids)
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
            logprobs = -F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:].to(device), reduction="none").cpu()
        for r, (doc, ids, skip) in enumerate(chunk):
            sums[doc] += float(logprobs[r, skip : len(ids) - 1].double().sum())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return sums, computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a corpusdb database to take documents from [default: the test fixture corpus]")
    parser.add_argument("--docs", type=int, default=0, help="score the first N documents (0: all)")
    parser.add_argument("--size", default="small", help="corpusdb.train.models size: tiny, small, 5m, 20m, 100m")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak for MFU")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = ROOT / "tests" / "data" / "corpus"
        if args.db:
            source = corpusdb.open(args.db)
        else:
            source = corpusdb.init(str(tmp / "fixture"))
            for path in sorted(corpus.glob("*.jsonl")):
                source.ingest([str(path)], source=path.stem, progress=False)
        limit = f"limit {args.docs}" if args.docs else ""
        docs = source.sql(f"select doc_id, source, text from documents order by doc_id {limit}").to_arrow_table()
        db = corpusdb.init(str(tmp / "db"))
        import pyarrow.parquet as pq

        pq.write_table(docs.append_column("n_bytes", [[len(t.encode()) for t in docs.column("text").to_pylist()]]),
                       tmp / "docs.parquet")
        db.ingest([str(tmp / "docs.parquet")], source="bench", progress=False)
        texts = db.sql("select text from documents").to_arrow_table().column("text").to_pylist()
        ids = db.sql("select doc_id from documents").to_arrow_table().column("doc_id").to_pylist()

        tokenizer = train_tokenizer(read_texts(sorted(corpus.glob("*.jsonl"))), 4096)
        build_model(tmp / "model", tokenizer, size=args.size, context=args.context)
        loaded = load_model(str(tmp / "model"), device=args.device)
        params = sum(p.numel() for p in loaded.model.parameters())
        stride = args.context // 2
        print(f"{len(texts):,} documents ({sum(len(t.encode()) for t in texts) / 1e6:.1f} MB), GPT-2 {args.size} "
              f"({params / 1e6:.1f}M parameters), context {args.context}, stride {stride}, {args.batch_tokens} tokens/batch, {args.device}")

        plain_loop(loaded, texts[:20], args.context, stride, args.batch_tokens, args.device)  # warm-up
        t0 = time.perf_counter()
        base_sums, base_computed = plain_loop(loaded, texts, args.context, stride, args.batch_tokens, args.device)
        base_s = time.perf_counter() - t0

        report = run_score(db, str(tmp / "model"), "bench", context=args.context, stride=stride,
                           batch_tokens=args.batch_tokens, device=args.device, loaded=loaded, progress=False)
        got = dict(db.sql("select doc_id, sum_logprob from scores").fetchall())
        ours = np.array([got[i] if got[i] is not None else 0.0 for i in ids])
        n_tokens = report.n_tokens
        worst = float(np.max(np.abs(ours - base_sums) / np.maximum(1, np.abs(base_sums))))

        rows = [("plain HF loop, fp32 (baseline)", base_s, base_computed, 1.0),
                (f"corpusdb score, {report.precision}", report.seconds, report.n_computed, base_s / report.seconds)]
        print(f"{'run':36} {'seconds':>8} {'tokens/s':>11} {'vs plain':>9}" + ("   MFU" if args.device.startswith("cuda") else ""))
        for name, seconds, computed, ratio in rows:
            line = f"{name:36} {seconds:8.2f} {n_tokens / seconds:11,.0f} {ratio:8.2f}x"
            if args.device.startswith("cuda"):
                line += f" {2 * params * computed / seconds / (args.peak_tflops * 1e12):6.1%}"
            print(line)
        print(f"padding: corpusdb {report.n_padding / (report.n_computed + report.n_padding):.1%}; "
              f"largest relative difference of sums between the two runs: {worst:.1e}")


if __name__ == "__main__":
    main()
