"""Loading a scoring model: any causal LM transformers can load, with its own tokenizer.

    python -c "from corpusdb.scoring.model import load_model; print(load_model('out/tiny').identity)"

NAME may be a local folder (`save_pretrained` output), a hub id the user can reach, or a GGUF
file (`path/model.gguf`, loaded with `gguf_file=`; needs the `gguf` package). Loading problems
become one-line `ModelError`s that say what to pass instead.
"""

from __future__ import annotations

import contextlib
import functools
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
    """Hub ids are `name` or `owner/name`; anything else is meant as a local path, and so is `out/name`
    where a local folder `out` exists (a missing checkpoint is reported at once, not after hub retries)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf") or (os.sep != "/" and os.sep in name):
        return True
    parent = Path(name).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def _hub_unreachable() -> str | None:
    """Why the model hub cannot be reached (its host does not resolve), or None. Loading a hub id then
    uses the local cache only, so a missing model is an error at once, not after 30 s of retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"{host} does not resolve: {exc.strerror or exc}"
    return None


def _hub_error(name: str, exc: Exception, offline: str | None, what: str = "model") -> ModelError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if offline:
        return ModelError(f"{what} {name!r} is not a local folder or .gguf file, nor in the local hub cache, and the hub "
                          f"cannot be reached ({offline}); pass a local path (a save_pretrained folder or a .gguf file)")
    return ModelError(f"{what} {name!r} cannot be loaded ({first}); pass a local folder, a .gguf file or a hub id you can reach")


def load_tokenizer(name: str, *, need_fast: bool = False, need_eos: bool = False):
    """A tokenizer from a folder (a tokenizer's or a model's), a .gguf file or a hub id.

    Raises:
        ModelError: it cannot be found or loaded, is not a fast (Rust) tokenizer where one is
            needed (offsets), or has no EOS token where one is needed (to end documents).
    """
    import transformers
    from transformers import AutoTokenizer

    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        source, extra = str(path.parent), {"gguf_file": path.name}
    elif path.is_dir():
        source, extra = str(path), {}
    elif _looks_like_path(name):
        raise ModelError(f"tokenizer {name!r} not found: no such folder or .gguf file; pass a tokenizer or model folder, "
                         "a .gguf file or a hub id")
    else:
        source, extra = name, {}
    offline = None if extra or path.is_dir() else _hub_unreachable()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError, TypeError) as exc:
        raise _hub_error(name, exc, offline, "tokenizer") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
    if need_fast and not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"tokenizer {name!r} is not a fast (Rust) tokenizer, which instances need for offsets; "
                         "convert it with PreTrainedTokenizerFast")
    if need_eos and tokenizer.eos_token_id is None:
        raise ModelError(f"tokenizer {name!r} has no EOS token to separate documents; set one with tokenizer.eos_token")
    return tokenizer


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
    offline = _hub_unreachable()
    return name, {"local_files_only": True, "_offline": offline} if offline else {}


@contextlib.contextmanager
def _quiet_gguf_progress():
    """Silence transformers' GGUF de-quantizing bar, a plain tqdm that `disable_progress_bar` does not reach
    (a job's own bar, or --no-progress, decides what is shown)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


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
    offline = extra.pop("_offline", None)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    quiet = contextlib.ExitStack()
    if "gguf_file" in extra:
        quiet.enter_context(_quiet_gguf_progress())
    try:
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
        except (OSError, ValueError) as exc:
            raise _hub_error(name, exc, offline) from exc
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
        quiet.close()
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
