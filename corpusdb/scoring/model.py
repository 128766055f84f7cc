"""Loading a scoring model: any causal LM transformers can load, with its own tokenizer.

    python -c "from corpusdb.scoring.model import load_model; print(load_model('out/tiny').identity)"

NAME may be a local folder (`save_pretrained` output), a hub id the user can reach, or a GGUF
file (`path/model.gguf`, loaded with `gguf_file=`; needs the `gguf` package). Loading problems
become one-line `ModelError`s that say what to pass instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from corpusdb.errors import ModelError

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model")


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer, and what identifies them in the catalog."""

    model: object
    tokenizer: object
    context: int
    bos_id: int | None
    identity: dict = field(default_factory=dict)


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf") or (os.sep != "/" and os.sep in name)


def _source(name: str) -> tuple[str, dict]:
    """(what to pass to from_pretrained, extra keyword arguments) for NAME."""
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").exists() and not list(path.glob("*.gguf")):
            raise ModelError(f"model {name!r}: the folder has no config.json; pass a folder written by save_pretrained or a .gguf file")
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and len(ggufs) == 1:
            return str(path), {"gguf_file": ggufs[0].name}
        return str(path), {}
    if _looks_like_path(name):
        raise ModelError(f"model {name!r} not found: no such folder or .gguf file; pass a save_pretrained folder, a .gguf file or a hub id")
    return name, {}


def load_model(name: str, *, device: str = "cpu", attn_implementation: str | None = "sdpa", trust_remote_code: bool = False) -> LoadedModel:
    """Load model and tokenizer for scoring.

    Raises:
        ModelError: NAME cannot be found or loaded, is not a causal LM, or its tokenizer is unusable.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    source, extra = _source(name)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {name!r} cannot be loaded ({first}); pass a local folder, a .gguf file or a hub id you can reach") from exc
        architectures = list(getattr(config, "architectures", None) or [])
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            architectures and not any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
        ):
            kind = architectures[0] if architectures else config.model_type
            raise ModelError(f"model {name!r} is a {kind}, not a causal language model; score with a decoder-only LM (GPT-2, Llama, SmolLM2, ...)")
        kwargs = dict(extra, trust_remote_code=trust_remote_code)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model, info = AutoModelForCausalLM.from_pretrained(source, output_loading_info=True, **kwargs)
        except (OSError, ValueError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"model {name!r} cannot be loaded ({first})") from exc
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ModelError(f"model {name!r} lacks {len(missing)} weights (e.g. {missing[0]}); it is not a complete causal LM checkpoint")
        if Path(source).is_dir() and not extra and not any((Path(source) / f).exists() for f in TOKENIZER_FILES):
            raise ModelError(f"model {name!r}: its tokenizer cannot be loaded (no tokenizer files in the folder); save one with tokenizer.save_pretrained")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"model {name!r}: its tokenizer cannot be loaded ({str(exc).strip().splitlines()[0]}); save one with tokenizer.save_pretrained") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {name!r}: its tokenizer is not a fast (Rust) tokenizer; convert it with PreTrainedTokenizerFast")
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise ModelError(f"model {name!r}: its tokenizer has {len(tokenizer)} tokens but the model only {n_embeddings} embeddings; pair it with its own tokenizer")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    context = _context_length(model.config, tokenizer)
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    identity = {
        "model": name,
        "gguf_file": extra.get("gguf_file"),
        "architecture": type(model).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "vocab_size": len(tokenizer),
        "tokenizer": type(tokenizer).__name__,
        "revision": getattr(config, "_commit_hash", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return LoadedModel(model=model, tokenizer=tokenizer, context=context, bos_id=bos_id, identity=identity)


def _context_length(config, tokenizer) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 1:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 1 < limit < 1_000_000:
        return limit
    raise ModelError("the model's config names no context length; pass --context")
