"""Ingest throughput from a real S3 server (SeaweedFS on loopback) vs. a plain s3fs copy of the same bytes.

    python benchmarks/ingest_s3.py                 # uses demo/raw if `make demo` ran, else the fixture
    python benchmarks/ingest_s3.py --mb 64 --files 8

Prints MB/s of input bytes for: the baseline (s3fs `get` of the same objects to local disk, what an
`aws s3 cp --recursive` does), `corpusdb ingest` as one process, and as 2 shards at once (2 cores),
each with its ratio to the baseline, plus the same ingest from the local copy (no S3) to show what
reading over HTTP costs. Every run is the CLI in a fresh process; the database is on local disk.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import s3fs  # noqa: E402

from tests.s3server import seaweedfs  # noqa: E402


def make_inputs(target_mb: int, files: int) -> tuple[list[bytes], int]:
    """Plain JSONL files of about target_mb in all, from the demo corpus (or the fixture), unique docs."""
    demo = sorted((ROOT / "demo" / "raw").glob("*.jsonl.gz"))
    if demo:
        lines = [line for p in demo for line in gzip.decompress(p.read_bytes()).splitlines()]
    else:
        lines = [line for p in sorted((ROOT / "tests/data/corpus").glob("*.jsonl")) for line in p.read_bytes().splitlines()]
    records = [json.loads(line) for line in lines]
    buffers = [io.BytesIO() for _ in range(files)]
    total, copy, target = 0, 0, target_mb * 1_000_000
    while total < target:
        for i, record in enumerate(records):
            text = record["text"] if copy == 0 else f"[copy {copy}] {record['text']}"
            line = json.dumps({"text": text, "title": record.get("title")}).encode() + b"\n"
            buffers[(copy * len(records) + i) % files].write(line)
            total += len(line)
            if total >= target:
                break
        copy += 1
    return [b.getvalue() for b in buffers], total


def timed(command: list[str] | None = None, func=None) -> float:
    started = time.perf_counter()
    if command:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    else:
        func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=128, help="input size in MB")
    parser.add_argument("--files", type=int, default=8, help="number of input objects")
    args = parser.parse_args()
    blobs, total = make_inputs(args.mb, args.files)
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp) / "s3") as server:
        options = {"key": server["key"], "secret": server["secret"], "client_kwargs": {"endpoint_url": server["endpoint"]}}
        fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        fs.mkdir("bench")
        for i, blob in enumerate(blobs):
            fs.pipe(f"bench/raw/part-{i:03d}.jsonl", blob)
        cli = [sys.executable, "-m", "corpusdb.cli", "ingest"]
        s3_args = ["-o", f"key={server['key']}", "-o", f"secret={server['secret']}", "-o", f"endpoint_url={server['endpoint']}"]
        common = ["s3://bench/raw/", "--source", "bench", "--no-progress", *s3_args]

        results = {}
        results["s3fs copy (baseline)"] = timed(func=lambda: fs.get("bench/raw/", f"{tmp}/copy/", recursive=True))
        results["corpusdb ingest, 1 process"] = timed([*cli, f"{tmp}/db1", *common])
        local = [f"{tmp}/copy/", "--source", "bench", "--no-progress"]
        results["(local files, no S3) 1 process"] = timed([*cli, f"{tmp}/db3", *local])
        shards = lambda: [p.wait() for p in [  # noqa: E731
            subprocess.Popen([*cli, f"{tmp}/db2", *common, "--shard", f"{i}/2"], stdout=subprocess.DEVNULL) for i in range(2)
        ]]
        results["corpusdb ingest, 2 shards at once"] = timed(func=shards)

    base = total / 1e6 / results["s3fs copy (baseline)"]
    print(f"input: {total / 1e6:.1f} MB of JSONL in {args.files} objects on SeaweedFS (loopback)")
    print(f"{'run':<36} {'seconds':>8} {'MB/s':>8} {'vs copy':>8}")
    for name, seconds in results.items():
        rate = total / 1e6 / seconds
        print(f"{name:<36} {seconds:8.2f} {rate:8.1f} {rate / base:7.2f}x")


if __name__ == "__main__":
    main()
