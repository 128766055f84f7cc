"""Ingest throughput from a real S3 server (SeaweedFS on loopback) vs. a plain s3fs copy of the same bytes.

    python benchmarks/ingest_s3.py                 # uses demo/raw if `make demo` ran, else the fixture
    python benchmarks/ingest_s3.py --mb 64 --files 8
    python benchmarks/ingest_s3.py --small-files 100000 --repeat 1   # a crawl's shape: 100k files of 1-10 KB
    python benchmarks/ingest_s3.py --mb 512 --pin   # the server on one core, every client on the other

Prints MB/s of input bytes for: the baseline (s3fs `get` of the same objects to local disk, what an
`aws s3 cp --recursive` does), `corpusdb ingest` as one process, and as 2 shards at once (2 cores),
each with its ratio to the baseline, plus the same ingest from the local copy (no S3) to show what
reading over HTTP costs. Every ingest is the CLI in a fresh process (its start-up included); the
database is on local disk. Each run is repeated (--repeat) and the fastest kept. The CPU columns
say where the seconds go: the client's processes and the SeaweedFS server, which shares the cores.

With --pin the server's threads run on the last core and every client (the copy, each ingest,
local or S3) on the others, as if the server were another machine: then the ratio of the S3 ingest
to the local one is what reading over HTTP costs the client, not the server's share of two cores.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import shutil
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


def make_small_inputs(n: int, seed: int = 0) -> tuple[list[bytes], int]:
    """`n` JSONL files of 1-10 KB (one to a few records each), cut from the same texts."""
    import random

    rng = random.Random(seed)
    blobs, _ = make_inputs(8, 1)
    pool = [json.loads(line)["text"] for line in blobs[0].splitlines()]
    out = []
    for i in range(n):
        size, lines = rng.randint(1_000, 10_000), []
        while size > 0:
            text = rng.choice(pool)
            start = rng.randrange(max(1, len(text) - 200))
            piece = f"[file {i}] " + text[start : start + min(size, 4_000)]
            lines.append(json.dumps({"text": piece}).encode())
            size -= len(piece)
        out.append(b"\n".join(lines) + b"\n")
    return out, sum(map(len, out))


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    """CPU seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pin_server(pid: int) -> set[int]:
    """Move every thread of the server to the last core; returns the cores left for the clients."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--pin needs at least two cores")
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cores[-1]})
    return set(cores[:-1])


def timed(server_pid: int, repeat: int, command: list[str] | None = None, func=None, before=None) -> tuple[float, float, float]:
    """(wall seconds, client CPU seconds, server CPU seconds) of the fastest of `repeat` runs."""
    best = None
    for _ in range(repeat):
        if before:
            before()
        wall, client, server = time.perf_counter(), client_cpu(), server_cpu(server_pid)
        if command:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        else:
            func()
        run = (time.perf_counter() - wall, client_cpu() - client, server_cpu(server_pid) - server)
        best = run if best is None or run[0] < best[0] else best
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=128, help="input size in MB")
    parser.add_argument("--files", type=int, default=8, help="number of input objects")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, the fastest kept")
    parser.add_argument("--small-files", type=int, default=0, help="instead: this many files of 1-10 KB (a crawl's shape)")
    parser.add_argument("--pin", action="store_true", help="the server on the last core, the clients on the others")
    args = parser.parse_args()
    if args.small_files:
        blobs, total = make_small_inputs(args.small_files)
        args.files = len(blobs)
    else:
        blobs, total = make_inputs(args.mb, args.files)
    n_docs = sum(blob.count(b"\n") for blob in blobs)
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp) / "s3") as server:
        options = {"key": server["key"], "secret": server["secret"], "client_kwargs": {"endpoint_url": server["endpoint"]}}
        fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        fs.mkdir("bench")
        for start in range(0, len(blobs), 1000):  # concurrent uploads, a thousand at a time
            fs.pipe({f"bench/raw/part-{i:06d}.jsonl": blobs[i] for i in range(start, min(start + 1000, len(blobs)))})
        cli = [sys.executable, "-m", "corpusdb.cli", "ingest"]
        s3_args = ["-o", f"key={server['key']}", "-o", f"secret={server['secret']}", "-o", f"endpoint_url={server['endpoint']}"]
        common = ["s3://bench/raw/", "--source", "bench", "--no-progress", *s3_args]

        pid, repeat = server["pid"], args.repeat
        if args.pin:  # this process (the copy) and the ingests it starts inherit the clients' cores
            os.sched_setaffinity(0, pin_server(pid))
        fresh = lambda *paths: lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths]  # noqa: E731
        results = {}
        results["s3fs copy (baseline)"] = timed(
            pid, repeat, func=lambda: fs.get("bench/raw/", f"{tmp}/copy/", recursive=True), before=fresh(f"{tmp}/copy"))
        results["corpusdb ingest, 1 process"] = timed(pid, repeat, [*cli, f"{tmp}/db1", *common], before=fresh(f"{tmp}/db1"))
        local = [f"{tmp}/copy/", "--source", "bench", "--no-progress"]
        results["(local files, no S3) 1 process"] = timed(pid, repeat, [*cli, f"{tmp}/db3", *local], before=fresh(f"{tmp}/db3"))
        shards = lambda: [p.wait() for p in [  # noqa: E731
            subprocess.Popen([*cli, f"{tmp}/db2", *common, "--shard", f"{i}/2"], stdout=subprocess.DEVNULL) for i in range(2)
        ]]
        results["corpusdb ingest, 2 shards at once"] = timed(pid, repeat, func=shards, before=fresh(f"{tmp}/db2"))

    base = total / 1e6 / results["s3fs copy (baseline)"][0]
    print(f"input: {total / 1e6:.1f} MB of JSONL, {n_docs:,} documents in {args.files:,} objects on SeaweedFS (loopback); "
          f"fastest of {repeat}" + ("; the server on its own core, the clients on the other(s)" if args.pin else ""))
    print(f"{'run':<36} {'seconds':>8} {'MB/s':>8} {'docs/s':>9} {'files/s':>8} {'vs copy':>8} {'client CPU s':>13} "
          f"{'server CPU s':>13}")
    for name, (seconds, client, server_seconds) in results.items():
        rate = total / 1e6 / seconds
        print(f"{name:<36} {seconds:8.2f} {rate:8.1f} {n_docs / seconds:9,.0f} {args.files / seconds:8,.0f} {rate / base:7.2f}x "
              f"{client:13.2f} {server_seconds:13.2f}")


if __name__ == "__main__":
    main()
