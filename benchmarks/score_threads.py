"""CPU scoring threads: tokens/s of `corpusdb score` with each --threads value, side by side, and the ratio to the default.

    python benchmarks/score_threads.py                                   # small GPT-2, fixture corpus
    python benchmarks/score_threads.py --model "$(python -c 'from corpusdb.train.demo import smollm2_gguf; print(smollm2_gguf())')" \
        --db demo/db --docs 40                                           # SmolLM2-135M on demo documents

Each setting scores the same documents under its own score name in a fresh copy of the database,
with the model loaded once (the Python API's `loaded=`), so the numbers compare the forward passes
only. The default (`--threads` unset: the available cores other work is not using when the job
starts) is listed first.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpusdb  # noqa: E402
from corpusdb.scoring import load_model, run_score  # noqa: E402
from corpusdb.scoring.job import default_threads  # noqa: E402
from corpusdb.train.models import build_model, read_texts, train_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a corpusdb database to take documents from [default: the test fixture corpus]")
    parser.add_argument("--docs", type=int, default=60, help="documents scored by each setting")
    parser.add_argument("--model", help="a model folder, .gguf file or hub id [default: a small GPT-2 built here]")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts to compare with the default")
    parser.add_argument("--context", type=int, default=1024)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = corpusdb.init(f"{tmp}/db")
        if args.db:
            source = corpusdb.open(args.db)
            texts = [t for (t,) in source.sql(f"select text from documents where n_bytes between 500 and 20000 "
                                              f"order by uniform(doc_id, 1) limit {args.docs}").fetchall()]
        else:
            texts = read_texts(sorted((ROOT / "tests" / "data" / "corpus").glob("*.jsonl")))[: args.docs]
        corpus = Path(tmp) / "docs.jsonl"
        import json

        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        db.ingest([str(corpus)], source="bench", progress=False)
        model = args.model
        if model is None:
            model = f"{tmp}/model"
            build_model(model, train_tokenizer(texts, 4096), arch="gpt2", size="5m", context=args.context, seed=0)
        loaded = load_model(model, device="cpu")
        settings = [None] + [int(t) for t in args.threads.split(",")]
        results = []
        for threads in settings:
            copy = f"{tmp}/db-{threads}"
            shutil.copytree(f"{tmp}/db", copy)
            report = run_score(corpusdb.open(copy), model, "bench", loaded=loaded, threads=threads, device="cpu",
                               context=min(args.context, loaded.context), progress=False)
            results.append((threads, report))
        base = results[0][1].tokens_per_second
        print(f"{len(texts)} documents, {results[0][1].n_tokens:,} tokens, {Path(str(model)).name}, "
              f"{default_threads()} default thread(s) on this machine")
        print(f"{'threads':>16}  {'tokens/s':>10}  {'vs default':>10}")
        for threads, report in results:
            label = f"default ({report.threads})" if threads is None else str(threads)
            print(f"{label:>16}  {report.tokens_per_second:>10,.0f}  {report.tokens_per_second / base:>9.2f}x")


if __name__ == "__main__":
    main()
