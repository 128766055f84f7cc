"""Small language models and byte-level BPE tokenizers built locally (no hub download needed).

    python -m corpusdb.train.models out/tiny --size tiny --texts tests/data/corpus/bible.jsonl

Tests, benchmarks and the CPU experiment preset build their teacher, reference and student models
here and save them with `save_pretrained`, so every later step loads them through the real
`from_pretrained` path, exactly as it loads a model from the hub.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = "<|endoftext|>"

# name -> (layers, width, heads); sizes are for a vocabulary of a few thousand tokens.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 64, 2),  # tests: ~0.1M parameters plus embeddings
    "small": (4, 128, 4),  # CPU experiment
    "5m": (6, 256, 4),  # reference model of the GPU preset
    "20m": (8, 384, 6),  # students of the GPU preset
    "100m": (12, 768, 12),  # teacher of the GPU preset
}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style) with `<|endoftext|>` as BOS, EOS and padding."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[SPECIAL], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL)


def make_model(tokenizer: PreTrainedTokenizerFast, *, size: str = "tiny", arch: str = "gpt2", context: int = 256, seed: int = 0):
    """A randomly initialised causal LM for `tokenizer` (no dropout: pre-training runs see each token about once).

    Args:
        size: one of SIZES.
        arch: gpt2 (learned absolute positions) or llama (rotary positions, RMSNorm, SwiGLU).
        context: maximum sequence length in tokens.
    """
    import torch

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; sizes are {', '.join(SIZES)}")
    layers, width, heads = SIZES[size]
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=context, n_embd=width, n_layer=layers, n_head=heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
        )
        return GPT2LMHeadModel(config)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 8 // 3 // 8 * 8,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=context, tie_word_embeddings=True, **ids,
        )
        return LlamaForCausalLM(config)
    raise ValueError(f"unknown arch {arch!r}; use gpt2 or llama")


def build_model(
    out: str | Path, tokenizer: PreTrainedTokenizerFast, *, size: str = "tiny", arch: str = "gpt2",
    context: int = 256, seed: int = 0,
):
    """`make_model`, saved with its tokenizer under `out` (`save_pretrained`); returns the model."""
    model = make_model(tokenizer, size=size, arch=arch, context=context, seed=seed)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model


def read_texts(paths: Iterable[str | Path], field: str = "text") -> list[str]:
    """Texts from JSONL files (tests and the CLI below)."""
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            texts.extend(json.loads(line)[field] for line in handle if line.strip())
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a small random-weight causal LM and its BPE tokenizer.")
    parser.add_argument("out")
    parser.add_argument("--texts", nargs="+", required=True, help="JSONL files to train the tokenizer on")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--size", default="tiny", choices=list(SIZES))
    parser.add_argument("--arch", default="gpt2", choices=["gpt2", "llama"])
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()
    tokenizer = train_tokenizer(read_texts(args.texts), args.vocab_size)
    model = build_model(args.out, tokenizer, size=args.size, arch=args.arch, context=args.context)
    print(f"{args.out}: {args.arch} {args.size}, {model.num_parameters():,} parameters, vocabulary {len(tokenizer)}")


if __name__ == "__main__":
    main()
