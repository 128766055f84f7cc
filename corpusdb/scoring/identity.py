"""What a model *is*: a content hash of its weight, config and tokenizer files, whatever its path.

    python -c "from corpusdb.scoring.identity import content_identity; print(content_identity('out/teacher'))"

A score name is bound to this hash: the same files under another path (or a relative vs an
absolute path) are the same model; a checkpoint retrained into the same folder is another one.
Files are hashed with xxh3-128 in 8 MB blocks; hashes are cached by (path, size, mtime) under
`$XDG_CACHE_HOME/corpusdb` (or `CORPUSDB_CACHE_DIR`), so a 14 GB teacher is read once.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import xxhash

MODEL_FILES = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.ckpt", "*.msgpack", "*.h5", "*.index.json", "config.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
    "special_tokens_map.json", "added_tokens.json", "spiece.model", "*.tiktoken", "*.py",
)
# training state that sits beside the weights in trainer checkpoints and does not change the model
IGNORED = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "training_args.bin", "trainer_state.json")
BLOCK = 8 << 20


def _cache_file() -> Path:
    root = os.environ.get("CORPUSDB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "corpusdb")
    return Path(root) / "file-hashes.json"


def file_hash(path: Path, cache: dict) -> str:
    """xxh3-128 of a file's bytes (from `cache` when its size and mtime are unchanged)."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in cache:
        digest = xxhash.xxh3_128()
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
        cache[key] = digest.hexdigest()
    return cache[key]


def model_files(path: Path) -> list[Path]:
    """The files that make up a model at `path` (a folder or a single .gguf file), sorted."""
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and any(fnmatch.fnmatch(p.name, pattern) for pattern in MODEL_FILES)
        and not any(fnmatch.fnmatch(p.name, pattern) for pattern in IGNORED)
    )


def content_identity(name: str) -> dict | None:
    """{"content_hash", "files"} of a local model folder or .gguf file; None for a hub id (not on disk).

    The hash covers each file's name and bytes, so renaming the folder keeps it and retraining
    into it changes it.
    """
    path = Path(name).expanduser()
    if not path.exists():
        return None
    files = model_files(path)
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    size = len(cache)
    pairs = [(p.name, file_hash(p, cache)) for p in files]
    if len(cache) != size:
        try:  # best effort: a read-only home only costs re-hashing next time
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".tmp-{os.getpid()}-{cache_path.name}")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_path)
        except OSError:
            pass
    digest = xxhash.xxh3_128_hexdigest(json.dumps(pairs).encode())
    return {"content_hash": digest, "files": len(pairs), "bytes": sum(p.stat().st_size for p in files)}


def hub_identity(name: str, revision: str | None) -> dict:
    """The identity of a hub model loaded from the local cache: its files' hash where the snapshot is
    found, else the repository and commit (which name its content on the hub)."""
    if revision:
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(name, revision=revision, local_files_only=True)
            found = content_identity(folder)
            if found and found["files"]:
                return found
        except Exception:  # noqa: BLE001 - any failure falls back to the commit id
            pass
    return {"content_hash": xxhash.xxh3_128_hexdigest(f"hub:{name}@{revision}".encode()), "files": 0, "bytes": 0}


def tokenizer_hash(tokenizer) -> str:
    """Hash of a fast tokenizer's full definition (vocabulary, merges, normalisation, special tokens):
    two models share a tokenizer exactly when these are equal, whatever files it came from."""
    backend = tokenizer.backend_tokenizer.to_str()
    specials = json.dumps({k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())})
    return xxhash.xxh3_128_hexdigest((backend + specials).encode())
