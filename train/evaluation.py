"""Held-out loss per document: what the experiment's statistics resample.

Each document is scored on its own, as `corpusdb.train.pretrain.evaluate` scores a stream: EOS then
its tokens, predicted in windows of `seq_len` (each window starts without context), so a
document's loss does not depend on which documents sit beside it. Windows of all documents are
batched by length with right padding (a causal model's real tokens never see the padding after
them) and only real tokens count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def model_source(model: Path | str) -> tuple[str, dict]:
    """What transformers' from_pretrained takes for a model folder, hub id or .gguf file."""
    path = Path(model)
    return (str(path.parent), {"gguf_file": path.name}) if path.suffix == ".gguf" else (str(path), {})


def load_model(model: Path, device: str):
    """A causal LM and its tokenizer from a folder, hub id or .gguf file, in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, extra = model_source(model)
    return AutoModelForCausalLM.from_pretrained(source, **extra).to(device).eval(), AutoTokenizer.from_pretrained(source, **extra)


def document_nats(model, tokenizer, texts: list[str], seq_len: int, device: str, dtype=None, batch_size: int = 32) -> np.ndarray:
    """The summed loss (nats) of every document's tokens, one float per text."""
    import torch
    import torch.nn.functional as F

    eos = tokenizer.eos_token_id
    windows: list[tuple[int, list[int]]] = []
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]):
        stream = [eos, *ids]
        for start in range(0, len(stream) - 1, seq_len):
            windows.append((i, stream[start : start + seq_len + 1]))
    windows.sort(key=lambda w: len(w[1]))
    nats = np.zeros(len(texts), dtype=np.float64)
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        for b in range(0, len(windows), batch_size):
            batch = windows[b : b + batch_size]
            width = max(len(w) for _, w in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width - 1), dtype=torch.bool)
            for row, (_, w) in enumerate(batch):
                ids[row, : len(w)] = torch.tensor(w)
                mask[row, : len(w) - 1] = True
            ids = ids.to(device)
            logits = model(input_ids=ids[:, :-1], attention_mask=mask.long().to(device)).logits.float()
            losses = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").cpu()
            sums = (losses * mask).sum(dim=1).double().numpy()
            np.add.at(nats, [doc for doc, _ in batch], sums)
    return nats


def bits_per_byte(nats: np.ndarray, n_bytes: np.ndarray) -> float:
    return float(nats.sum() / n_bytes.sum() / math.log(2))
