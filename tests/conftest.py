"""Shared fixtures: the real-text fixture corpus, built databases and a real S3 server on loopback.

    python -m pytest tests -q
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import corpusdb
from tests.s3server import seaweedfs

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Folder of JSONL files (one per source) cut from real Debian/PyPI text: ingest/demo_corpus.py."""
    return CORPUS


def rows(db: corpusdb.Database, columns: str = "doc_id, source, text, n_bytes") -> list[tuple]:
    """Every row of `documents`, sorted: two tables are equal exactly when these are."""
    db.refresh()
    return db.sql(f"select {columns} from documents order by doc_id").fetchall()


def committed_parts(db: corpusdb.Database, table: str = "documents") -> list[tuple[str, int]]:
    """(content hash, rows) of a table's committed parts, sorted: equal exactly when the parts' bytes are."""
    db.refresh()
    return sorted((info["hash"], info["rows"]) for info in db.snapshot.tables[table].values())


def export_files(manifest: dict) -> list[str]:
    """The names an export folder holds when it is complete: its manifest, its dataset card (Parquet and
    JSONL) or MosaicML's index.json (MDS), and its parts' files, sorted."""
    parts = [p[key] for p in manifest["parts"] for key in ("file", "index", "metadata") if key in p]
    return sorted(["manifest.json", *(manifest[key] for key in ("card", "dataset_index") if manifest.get(key)), *parts])


def ingest_per_source(db: corpusdb.Database, folder: Path, **options) -> None:
    for path in sorted(folder.glob("*.jsonl*")):
        db.ingest([str(path)], source=path.name.split(".")[0], progress=False, **options)


@pytest.fixture
def fixture_db(tmp_path: Path, corpus_dir: Path) -> corpusdb.Database:
    """A local database holding the whole fixture corpus, one source per file."""
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, corpus_dir, meta={"title": "title"})
    return db


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> dict:
    """A real SeaweedFS S3 server on 127.0.0.1 with access-key authentication; yields its details."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_options(s3_server) -> dict:
    """fsspec storage options that authenticate against the test server."""
    return {"key": s3_server["key"], "secret": s3_server["secret"], "client_kwargs": {"endpoint_url": s3_server["endpoint"]}}


@pytest.fixture
def bucket(s3_options) -> str:
    """A fresh, empty bucket's name."""
    import s3fs

    name = f"t-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_options, skip_instance_cache=True).mkdir(name)
    return name


def fixture_texts(*sources: str) -> list[str]:
    """Texts of the fixture corpus files named by source (all files if none named)."""
    from corpusdb.train.models import read_texts

    paths = [CORPUS / f"{s}.jsonl" for s in sources] if sources else sorted(CORPUS.glob("*.jsonl"))
    return read_texts(paths)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny random-weight causal LMs with different tokenizers, saved with save_pretrained.

    gpt2: byte-level BPE of 1000 tokens, 64 positions; llama: BPE of 400 tokens trained on other
    text, 48 positions (rotary). Both are loaded later through the real from_pretrained path.
    """
    from corpusdb.train.models import build_model, train_tokenizer

    root = tmp_path_factory.mktemp("models")
    build_model(root / "gpt2", train_tokenizer(fixture_texts(), 1000), arch="gpt2", context=64, seed=1)
    build_model(root / "llama", train_tokenizer(fixture_texts("bible", "shakespeare"), 400), arch="llama", context=48, seed=2)
    return {"gpt2": root / "gpt2", "llama": root / "llama"}


def pytest_collection_modifyitems(config, items):
    """Skip tests marked gpu where no CUDA GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
