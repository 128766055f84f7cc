"""The `classifier` annotator: any sequence-classification model's scores, as FineWeb-Edu's and NeMo Curator's classifiers run.

    corpusdb annotate demo/db edu --annotator classifier --model HuggingFaceFW/fineweb-edu-classifier
    corpusdb sql demo/db "select count(*) from filter_classifier('edu', min_score := 3, key := 'int_score')"

A model loaded with `AutoModelForSequenceClassification` (a folder written by `save_pretrained`,
or a hub id) reads each document's text, truncated to `max_length` tokens (the model's limit by
default), in batches of similar lengths (little padding), in bf16 on a GPU and fp32 on the CPU
(`threads` torch threads per worker); a batch holds documents of about equal
length, so padding costs at most about a tenth. Columns:

- a regression head (one output, or `problem_type` "regression"): `score` (the logit) and
  `int_score` (the score rounded and clamped to [0, 5], as FineWeb-Edu keeps `int_score >= 3`);
- a classification head: `label` (the most likely label's name), `score` (the probability of
  `label_name` when one is asked for, else of the predicted label) and `probabilities` (every
  label's softmax probability, a MAP).

The annotation is bound to the model's content hash and tokenizer hash (a hub id: its cached
snapshot's files), `max_length` and `label_name`, so another model under the same name is refused.
An empty document gets NULLs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from corpusdb.errors import ModelError

INT_RANGE = (0, 5)  # FineWeb-Edu's educational score scale
TOKENS_PER_BATCH = 16384  # padded tokens per forward pass
PADDING = 1.1  # a batch's longest document has at most this many times (+ 8) the tokens of its shortest
REGRESSION_COLUMNS = {"score": "DOUBLE", "int_score": "INTEGER"}
CLASSIFICATION_COLUMNS = {"label": "VARCHAR", "score": "DOUBLE", "probabilities": "MAP(VARCHAR, DOUBLE)"}


_LOADED: dict[tuple, tuple] = {}  # per process: (model name, content hash, device, threads) -> (model, tokenizer, device)


class ClassifierAnnotator:
    """Scores of a sequence-classification model per document (see the module's text)."""

    kind = "classifier"
    reads = ("text",)

    def __init__(self, model: str, *, label_name: str | None = None, max_length: int | None = None,
                 device: str | None = None, threads: int | None = None):
        if not model:
            raise ValueError("the classifier annotator needs --model (a save_pretrained folder or a hub id of a "
                             "sequence-classification model)")
        self.model_name = str(model)
        self.label_name = label_name
        self.max_length = max_length
        self.device = device
        self.threads = threads
        self._loaded = None
        config = self._config()
        self.regression = config.num_labels == 1 or getattr(config, "problem_type", None) == "regression"
        labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        if label_name is not None and (self.regression or label_name not in labels):
            raise ValueError(f"--label {label_name!r}: the model {'is a regression head' if self.regression else 'has labels ' + ', '.join(labels)}"
                             f"{'; leave --label out' if self.regression else '; name one of them'}")
        self.labels = labels
        self.commit = getattr(config, "_commit_hash", None)  # a hub model's snapshot: its identity where not on disk
        self.columns = REGRESSION_COLUMNS if self.regression else CLASSIFICATION_COLUMNS
        self._identity: dict | None = None

    def _config(self):
        from transformers import AutoConfig

        from corpusdb.scoring.model import _source

        source, extra = _source(self.model_name)
        offline = extra.pop("_offline", None)
        try:
            config = AutoConfig.from_pretrained(source, **extra)
        except (OSError, ValueError) as exc:
            from corpusdb.scoring.model import _hub_error

            raise _hub_error(self.model_name, exc, offline) from exc
        if not getattr(config, "id2label", None) or not config.num_labels:
            raise ModelError(f"model {self.model_name!r} has no classification head (num_labels); pass a model saved "
                             "from AutoModelForSequenceClassification")
        return config

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}  # loaded again in each worker

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._loaded = None

    def identity(self) -> dict:
        if self._identity is None:
            from corpusdb.scoring.identity import content_identity, hub_identity, tokenizer_hash

            found = content_identity(self.model_name)
            if found is None:
                found = hub_identity(self.model_name, self.commit)
            _, tokenizer, _ = self.loaded
            self._identity = {"model": Path(self.model_name).name or self.model_name, "content_hash": found["content_hash"],
                              "tokenizer_hash": tokenizer_hash(tokenizer), "max_length": self._max_length(tokenizer),
                              "label_name": self.label_name, "head": "regression" if self.regression else "classification"}
        return self._identity

    @property
    def loaded(self):
        """(model, tokenizer, device), loaded once per process (a worker gets the annotator again with each task)."""
        if self._loaded is not None:
            return self._loaded
        from corpusdb.scoring.identity import content_identity

        local = content_identity(self.model_name)  # a model retrained into the same folder is loaded again
        key = (self.model_name, local["content_hash"] if local else None, self.device, self.threads)
        self._loaded = _LOADED.get(key)
        if self._loaded is None:
            import torch
            import transformers
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from corpusdb.scoring.model import _source

            if self.threads:
                torch.set_num_threads(self.threads)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            source, extra = _source(self.model_name)
            extra.pop("_offline", None)
            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, **extra)
                dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
                model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype, **extra).to(device).eval()
            except (OSError, ValueError) as exc:
                raise ModelError(f"model {self.model_name!r} cannot be loaded as a sequence classifier "
                                 f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from exc
            finally:
                transformers.logging.set_verbosity(verbosity)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            self._loaded = _LOADED[key] = (model, tokenizer, device)
        return self._loaded

    def _max_length(self, tokenizer) -> int:
        if self.max_length:
            return int(self.max_length)
        limit = getattr(tokenizer, "model_max_length", None)
        positions = getattr(self.loaded[0].config, "max_position_embeddings", None)
        candidates = [v for v in (limit, positions) if isinstance(v, int) and 0 < v < 1_000_000]
        return min(candidates) if candidates else 512

    def logits(self, texts: list[str]) -> np.ndarray:
        """The model's logits (float64, one row per text), batched by length."""
        import torch

        model, tokenizer, device = self.loaded
        if self.threads and torch.get_num_threads() != self.threads:  # a forked worker starts with torch's default
            torch.set_num_threads(self.threads)
        encoded = tokenizer(texts, truncation=True, max_length=self._max_length(tokenizer), verbose=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        start = 0
        while start < len(order):  # ascending lengths: a batch's last row is its longest
            end = start + 1
            shortest = len(encoded[order[start]])
            while (end < len(order) and (end - start + 1) * len(encoded[order[end]]) <= TOKENS_PER_BATCH
                   and len(encoded[order[end]]) <= PADDING * shortest + 8):  # padding is compute thrown away
                end += 1
            rows = order[start:end]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            with torch.inference_mode():
                logits = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device)).logits
            out[rows] = logits.float().cpu().numpy()
            start = end
        return out

    def annotate(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        present = [i for i, t in enumerate(texts) if t and t.strip()]
        logits = self.logits([texts[i] for i in present]) if present else np.zeros((0, len(self.labels)))
        n = len(texts)
        if self.regression:
            score: list[float | None] = [None] * n
            whole: list[int | None] = [None] * n
            for row, i in enumerate(present):
                value = float(logits[row, 0])
                score[i] = value
                whole[i] = int(round(max(INT_RANGE[0], min(value, INT_RANGE[1])))) if math.isfinite(value) else None
            return pa.table({"score": pa.array(score, pa.float64()), "int_score": pa.array(whole, pa.int32())})
        shifted = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        label: list[str | None] = [None] * n
        score = [None] * n
        maps: list[list | None] = [None] * n
        wanted = self.labels.index(self.label_name) if self.label_name is not None else None
        for row, i in enumerate(present):
            best = int(np.argmax(logits[row]))
            label[i] = self.labels[best]
            score[i] = float(probabilities[row, best if wanted is None else wanted])
            maps[i] = [(name, float(p)) for name, p in zip(self.labels, probabilities[row])]
        return pa.table({"label": pa.array(label, pa.string()), "score": pa.array(score, pa.float64()),
                         "probabilities": pa.array(maps, pa.map_(pa.string(), pa.float64()))})
