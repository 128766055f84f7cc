"""The `fasttext` annotator: a fastText supervised classifier's label probabilities, as DCLM's quality filter runs it.

    corpusdb annotate demo/db hq --annotator fasttext --model openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin --label hq
    corpusdb sql demo/db "select count(*) from filter_classifier('hq', alpha := 0.1)"     # DCLM keeps its top 10%

Any fastText supervised model (`.bin` or `.ftz`): DCLM's `__label__hq` classifier, a FineWeb-2 or
NeMo Curator fastText filter, your own. Each document's text, with newlines replaced by
`newline` (a space by default, as DCLM and FineWeb's language id read it; datatrove's
`FastTextClassifierFilter` replaces them with nothing unless told), is scored by fastText's
`predict(k=-1)`. Columns, like the `classifier` annotator's: `label` (the most likely label,
without `__label__`), `score` (the probability of `--label`, else of the predicted label) and
`probabilities` (every label's probability, a MAP). An empty document gets NULLs. The annotation
is bound to the model file's content hash, `--label` and `newline`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

PREFIX = "__label__"
COLUMNS = {"label": "VARCHAR", "score": "DOUBLE", "probabilities": "MAP(VARCHAR, DOUBLE)"}

_LOADED: dict[tuple, object] = {}  # per process: (model path, size, mtime) -> fastText model


class FastTextAnnotator:
    """Label probabilities of a fastText supervised model per document (see the module's text)."""

    kind = "fasttext"
    columns = COLUMNS
    reads = ("text",)

    def __init__(self, model: str, *, label_name: str | None = None, newline: str = " "):
        if not model:
            raise ValueError("the fasttext annotator needs --model (a fastText supervised model, .bin or .ftz)")
        if not Path(model).is_file():
            raise ValueError(f"fastText model {model} not found; pass the path of a supervised model file (.bin or .ftz)")
        self.model_path = str(model)
        self.newline = newline
        # every label, sorted (fasttext-predict has no labels(): predict(k=-1) names them all)
        names, _ = self.model.predict("a", k=-1, threshold=0.0)
        self.labels = sorted(str(label).removeprefix(PREFIX) for label in names)
        if label_name is not None and label_name.removeprefix(PREFIX) not in self.labels:
            raise ValueError(f"--label {label_name!r}: the model's labels are {', '.join(self.labels)}")
        self.label_name = None if label_name is None else label_name.removeprefix(PREFIX)
        self._hash: str | None = None

    @property
    def model(self):
        stat = Path(self.model_path).stat()
        key = (self.model_path, stat.st_size, stat.st_mtime_ns)  # a model file written again is loaded again
        if key not in _LOADED:
            try:
                import fasttext
            except ImportError as exc:
                raise ValueError("the fasttext annotator needs fastText: pip install 'corpusdb[annotate]'") from exc
            try:
                _LOADED[key] = fasttext.load_model(self.model_path)
            except ValueError as exc:
                raise ValueError(f"{self.model_path} is not a fastText model ({exc}); pass a supervised .bin or .ftz") from exc
        return _LOADED[key]

    def identity(self) -> dict:
        from corpusdb.storage import content_hash

        if self._hash is None:
            self._hash = content_hash(Path(self.model_path).read_bytes())
        return {"model": Path(self.model_path).name, "model_hash": self._hash, "label_name": self.label_name,
                "newline": self.newline}

    def annotate(self, batch: pa.Table) -> pa.Table:
        model = self.model
        label: list[str | None] = []
        score: list[float | None] = []
        maps: list[list | None] = []
        for text in batch.column("text").to_pylist():
            line = (text or "").strip().replace("\n", self.newline)
            if not line.strip():
                label.append(None)
                score.append(None)
                maps.append(None)
                continue
            names, probabilities = model.predict(line, k=-1)
            pairs = {str(n).removeprefix(PREFIX): float(p) for n, p in zip(names, probabilities)}
            for name in self.labels:
                pairs.setdefault(name, 0.0)  # a label fastText gave no probability at all
            best = str(names[0]).removeprefix(PREFIX)
            label.append(best)
            score.append(pairs[self.label_name if self.label_name is not None else best])
            maps.append([(name, pairs[name]) for name in self.labels])
        return pa.table({"label": pa.array(label, pa.string()), "score": pa.array(score, pa.float64()),
                         "probabilities": pa.array(maps, pa.map_(pa.string(), pa.float64()))})
