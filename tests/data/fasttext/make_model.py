"""Train the fastText test classifier and record fastText's and datatrove's own answers for the test corpus.

    python -m venv .venv-datatrove && .venv-datatrove/bin/pip install 'datatrove[processing]==0.10.1' 'xxhash<4'
    .venv-datatrove/bin/python tests/data/fasttext/make_model.py   # -> tests/data/fasttext/{hq.bin,reference.jsonl}

Runs in a separate environment (fastText's trainer and datatrove are peers, never dependencies
of corpusdb, whose `fasttext` annotator predicts with fasttext-predict). The model is DCLM's
shape at toy size: `__label__hq` vs `__label__cc`, bigrams, trained with
`fasttext.train_supervised` on the first half of the documents of each source of
tests/data/corpus (hq: bible, shakespeare, python-docs, kernel-docs; cc: the rest), one thread.
The trainer of fasttext-numpy2-wheel 0.9.2 is not reproducible bit for bit (two finished runs
gave the same model once and different ones another time) and now and then stops with
"Encountered NaN" (run it again), so the model and the reference are written together, by one
run, and committed as a pair. For every document of the corpus, normalised as ingest
stores it, it records fastText's `predict(k=-1)` probabilities of the text with newlines as spaces,
and the verdict of datatrove's `FastTextClassifierFilter(keep_labels=[("hq", 0.5)],
newline_replacement=" ")`.
"""

import json
import sys
import tempfile
from pathlib import Path

import fasttext
from datatrove.data import Document
from datatrove.pipeline.filters import FastTextClassifierFilter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "quality"))
from make_reference import normalize  # noqa: E402 - corpusdb.text.normalize, in this venv without corpusdb
CORPUS = HERE.parent / "corpus"
HQ = {"bible", "shakespeare", "python-docs", "kernel-docs"}
THRESHOLD = 0.5


def documents() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        for number, line in enumerate(path.read_bytes().decode("utf-8").split("\n")):
            if line.strip():
                out.append((path.stem, number, normalize(json.loads(line)["text"])))
    return out


def main() -> None:
    docs = documents()
    lines = []
    for source in sorted({s for s, _, _ in docs}):
        mine = [t for s, _, t in docs if s == source]
        label = "hq" if source in HQ else "cc"
        # the first 100 words of each: a small vocabulary, so a small model file
        lines += [f"__label__{label} {' '.join(t.split()[:100])}" for t in mine[: len(mine) // 2] if t.strip()]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as train:
        train.write("\n".join(lines) + "\n")
    model = fasttext.train_supervised(train.name, dim=8, epoch=10, lr=0.5, wordNgrams=2, minCount=1, bucket=2000,
                                      thread=1, seed=7, verbose=0)
    model.save_model(str(HERE / "hq.bin"))
    # datatrove caches a model by its path (~/.cache/huggingface/assets): hand it this run's file under a new one
    copy = Path(tempfile.mkdtemp()) / f"hq-{abs(hash(model.get_words()[0])) % 10**9}-{Path(train.name).stem}.bin"
    copy.write_bytes((HERE / "hq.bin").read_bytes())
    step = FastTextClassifierFilter(str(copy), keep_labels=[("hq", THRESHOLD)], newline_replacement=" ")
    with open(HERE / "reference.jsonl", "w", encoding="utf-8") as sink:
        for source, number, text in docs:
            labels, probabilities = model.predict(text.strip().replace("\n", " "), k=-1)
            kept = bool(step.filter(Document(text=text, id=f"{source}:{number}")))
            sink.write(json.dumps({"file": f"corpus/{source}.jsonl", "line": number,
                                   "probabilities": {l.removeprefix("__label__"): float(p) for l, p in zip(labels, probabilities)},
                                   "datatrove_keeps": kept}) + "\n")
    print(f"{len(lines)} training lines; {len(docs)} documents recorded; model {(HERE / 'hq.bin').stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
