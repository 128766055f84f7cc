"""The MinHash job: signatures for every documents part, then near-duplicate clusters.

    corpusdb minhash demo/db --threshold 0.8

Signatures: each documents part gets one signature part `minhash/signatures/part-<key>.parquet`
(doc_id, signature UINTEGER[num_perm]), where the key hashes the documents part's path and
content hash and the signature settings, so equal names always hold equal bytes. Parts are
computed in worker processes, written atomically and committed (`corpusdb.versions`) every
`commit_seconds` and at the end, so a re-run computes only what is missing (new documents, or a
killed job's remainder), `--shard i/n` takes every n-th documents part, and signature parts of
other settings or of documents parts no longer live leave the table at the next commit.

Clusters: once every documents part has its committed signatures, the band join, verification and
clustering run in DuckDB (`corpusdb.dedup.cluster`) and the `minhash` table (doc_id, cluster_id,
cluster_size) is replaced, in one commit, by `minhash/clusters/part-<content hash>.parquet`.
Every document with at least one word has a row; `cluster_id` is the smallest doc_id of its
cluster (its own doc_id when it has no near duplicate).
"""

from __future__ import annotations

import json
import multiprocessing
import posixpath
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from tqdm.auto import tqdm

from corpusdb import failpoint
from corpusdb.db import Database
from corpusdb.dedup.cluster import CLUSTER_METHODS, Verification, bands_for, cluster, memory_limited, verify_mode
from corpusdb.dedup.exact import DEFAULT_MEMORY, ExactJaccard, parse_size
from corpusdb.dedup.minhash import HASHES, MinHasher
from corpusdb.storage import Location, WrittenFile, content_hash, storage_errors
from corpusdb.versions import Snapshot
from corpusdb.workers import document_tasks, run_tasks
from corpusdb.world import parse_shard

SIGNATURES = "minhash/signatures"
CLUSTERS = "minhash/clusters"
BATCH_DOCS = 2048  # documents per vectorised signing batch


@dataclass
class MinhashReport:
    """What a minhash job did."""

    n_parts: int = 0
    n_parts_done_before: int = 0
    n_parts_signed: int = 0
    n_documents_signed: int = 0
    n_stale_parts_removed: int = 0
    clustered: bool = False
    n_documents: int = 0
    n_clusters: int = 0
    n_duplicates: int = 0  # documents that are not their cluster's representative
    bands: int = 0
    rows: int = 0
    settings: dict = field(default_factory=dict)  # everything the signatures and clusters depend on
    signature_seconds: float = 0.0
    cluster_seconds: float = 0.0
    cluster_counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        rate = self.n_documents_signed / max(self.signature_seconds, 1e-9)
        lines = [
            f"signed {self.n_documents_signed:,} documents in {self.n_parts_signed} of {self.n_parts} parts "
            f"in {self.signature_seconds:.1f} s ({rate:,.0f} docs/s); {self.n_parts_done_before} parts were done before"
        ]
        if self.clustered:
            lines.append(
                f"clustered {self.n_documents:,} documents with {self.bands} bands x {self.rows} rows in "
                f"{self.cluster_seconds:.1f} s: {self.n_clusters:,} clusters of near-duplicates, "
                f"{self.n_duplicates:,} documents beyond one per cluster"
            )
            counts = self.cluster_counts
            if counts:
                lines.append(
                    f"{counts.get('n_candidate_pairs', 0):,} candidate pairs ({counts.get('n_large_bucket_pairs', 0):,} from "
                    f"buckets over max_bucket), {counts.get('n_exact_checks', 0):,} checked on their true Jaccard, "
                    f"{counts.get('n_edges', 0):,} verified edges ({self.settings.get('verify')}, {self.settings.get('method')})"
                )
        else:
            lines.append("clusters not updated: other shards' signatures are still missing; they cluster when the last shard finishes")
        return "\n".join(lines)


def signature_parts(documents: dict[str, dict], settings: dict) -> dict[str, str]:
    """{signature part path: documents part path} for a version's documents parts under `settings`."""
    return {
        f"{SIGNATURES}/part-{xxhash.xxh3_64_hexdigest(json.dumps([path, info['hash'], settings], sort_keys=True).encode())}"
        ".parquet": path
        for path, info in documents.items()
    }


def sign_rows(url: str, storage_options: dict, part: str, row_groups: tuple[int, ...] | None, settings: dict
              ) -> tuple[np.ndarray, np.ndarray]:
    """(doc_ids, signatures) of some row groups (None: all) of one documents part (runs in a worker process)."""
    location = Location(url, storage_options)
    hasher = MinHasher(num_perm=settings["num_perm"], seed=settings["seed"], ngram=settings["ngram"], hash=settings["hash"])
    with storage_errors(location.url_of(part)):
        with location.fs.open(part, "rb") as f:
            parquet = pq.ParquetFile(f)
            columns = ["doc_id", "text"]
            table = parquet.read(columns=columns) if row_groups is None else parquet.read_row_groups(list(row_groups), columns=columns)
    ids = table.column("doc_id").to_numpy()
    texts = table.column("text").to_pylist()
    signatures = np.concatenate(
        [hasher.signatures(texts[i : i + BATCH_DOCS]) for i in range(0, len(texts), BATCH_DOCS)]
    ) if texts else np.empty((0, hasher.num_perm), dtype=np.uint32)
    return ids, signatures


def write_signatures(location: Location, out_name: str, pieces: list[tuple[np.ndarray, np.ndarray]], num_perm: int) -> WrittenFile:
    """One signature part (doc_id, signature UINTEGER[num_perm]) from a documents part's pieces, in order."""
    ids = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, dtype=np.int64)
    signatures = np.concatenate([p[1] for p in pieces]) if pieces else np.empty((0, num_perm), dtype=np.uint32)
    offsets = np.arange(0, (len(ids) + 1) * num_perm, num_perm, dtype=np.int32)
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(signatures.ravel(), pa.uint32()))
    # random 32-bit values do not compress: store them plain
    return location.write_parquet(pa.table({"doc_id": pa.array(ids, pa.int64()), "signature": column}), SIGNATURES, out_name,
                                  compression="none")


def run_minhash(
    db: Database,
    *,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 1,
    hash: str = "xxh3",  # noqa: A002 - the CLI option's name
    threshold: float = 0.8,
    bands: int | None = None,
    rows: int | None = None,
    verify: str | bool = "exact",
    method: str = "components",
    max_bucket: int = 256,
    shard: str | tuple[int, int] | None = None,
    workers: int | None = None,
    cluster_when_done: bool = True,
    progress: bool | None = None,
    commit_seconds: float = 60.0,
    memory_limit: str | None = None,
    verify_memory: str | int | None = None,
) -> MinhashReport:
    """Compute missing MinHash signatures, then (when all are there) near-duplicate clusters.

    Args:
        ngram: words per shingle.
        num_perm: signature length (permutations).
        seed: datasketch seed of the permutations.
        hash: shingle hash, xxh3 (fast) or sha1 (datasketch's default hashfunc).
        threshold: Jaccard similarity of near-duplicates.
        bands, rows: LSH banding [default: datasketch's optimum for threshold, weighted to recall:
            more so with exact verification, 17 x 7 at 0.8 and 128 permutations, else 14 x 9].
        verify: which candidate pairs become edges: "exact" (true shingle Jaccard at least the
            threshold, computed from the texts where the estimate is between three standard errors
            below and four above it: above that band a pair is an edge, below it is not), "estimate"
            (estimated Jaccard at least the threshold plus half a standard error; no texts read, and
            on pages sharing a template it merges pages that are not near-duplicates) or
            "off" (every candidate of a small bucket; pairs from large buckets are still checked
            on the estimate).
        max_bucket: larger LSH buckets pair each member with its neighbours in signature order
            (`corpusdb.dedup.cluster.WINDOW`) instead of with all members; bounds the join.
        method: "components" (near-duplicates of near-duplicates join) or "star" (each cluster
            is a kept document and documents verified against it).
        shard: (i, n) or "i/n": sign every n-th documents part starting at i.
        workers: processes computing signatures [default: CPU count].
        cluster_when_done: build the clusters in DuckDB once every part has signatures (False
            when an executor clusters elsewhere, e.g. with Ray).
        commit_seconds: commit finished signature parts at least this often, and at the end.
        memory_limit: DuckDB's memory limit while clustering ("4GB"); the working tables spill
            beyond it. Bounds clustering's memory whatever the duplicate structure; the clusters
            do not depend on it [default: the connection's limit].
        verify_memory: exact verification holds the shingle sets of at most this many bytes at
            once ("1GB"), reading the documents again for each group of pairs beyond it; the
            clusters do not depend on it.

    Raises:
        ValueError: bad settings (the message names the valid range).
        StorageError: the database cannot be read or written.
    """

    if hash not in HASHES:
        raise ValueError(f"hash {hash!r} is not one of {', '.join(HASHES)}")
    verify = verify_mode(verify)
    if method not in CLUSTER_METHODS:
        raise ValueError(f"cluster method {method!r} is not one of {', '.join(CLUSTER_METHODS)}")
    if max_bucket < 2:
        raise ValueError(f"max_bucket ({max_bucket}) must be at least 2")
    if ngram < 1 or num_perm < 2:
        raise ValueError(f"ngram ({ngram}) must be at least 1 and num_perm ({num_perm}) at least 2")
    verify_bytes = parse_size(verify_memory) if verify_memory is not None else DEFAULT_MEMORY
    if bands is None or rows is None:
        best_bands, best_rows = bands_for(verify, threshold, num_perm)
        bands, rows = bands or best_bands, rows or best_rows
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(f"bands {bands} x rows {rows} must use at most num_perm = {num_perm} signature values")
    shard_index, num_shards = parse_shard(shard)
    with memory_limited(db.con, memory_limit):
        pass  # a bad size fails here, before any signature is computed
    workers = workers or multiprocessing.cpu_count()
    settings = {"ngram": ngram, "num_perm": num_perm, "seed": seed, "hash": hash}
    report = MinhashReport(bands=bands, rows=rows, settings={
        **settings, "threshold": threshold, "bands": bands, "rows": rows, "verify": verify, "method": method, "max_bucket": max_bucket,
    })
    db.writable()
    db.refresh()
    location = db.location
    started = time.perf_counter()

    expected = signature_parts(db.snapshot.tables["documents"], settings)
    existing = set(db.snapshot.tables["signatures"])
    report.n_stale_parts_removed = len(existing - set(expected))
    names = sorted(expected, key=lambda n: expected[n])
    mine = [name for position, name in enumerate(names) if position % num_shards == shard_index]
    todo = [name for name in mine if name not in existing]
    report.n_parts, report.n_parts_done_before = len(names), len(mine) - len(todo)

    signed: dict[str, dict] = {}  # written, not yet committed: path -> part info

    def commit_signatures() -> None:
        batch = dict(signed)
        signed.clear()

        def change(snapshot: Snapshot) -> str:
            wanted = signature_parts(snapshot.tables["documents"], settings)
            parts = snapshot.tables["signatures"]
            for path in [p for p in parts if p not in wanted]:
                del parts[path]  # other settings, or documents parts no longer live
            parts.update({path: info for path, info in batch.items() if path in wanted})
            return f"signatures of {len(batch)} documents parts"

        db.commit("minhash", change)

    # no clean-up of temporary files here: another job may be writing the same part right now
    # (`corpusdb vacuum` removes what killed jobs left)
    # (signature part, row groups): documents parts in order, cut into runs
    tasks = document_tasks(location, db.snapshot.tables["documents"], [(name, expected[name]) for name in todo])
    pending: dict[str, list] = {}  # signature part -> its pieces so far
    remaining = Counter(name for name, _ in tasks)  # pieces still to come per signature part
    with tqdm(total=sum(db.snapshot.tables["documents"][expected[name]].get("rows") or 0 for name in todo), unit="doc",
              desc="minhash signatures", disable=(not progress) if progress is not None else None, dynamic_ncols=True) as bar:
        last_commit = time.monotonic()

        def done(name: str, piece: tuple[np.ndarray, np.ndarray]) -> None:
            nonlocal last_commit
            pending.setdefault(name, []).append(piece)
            report.n_documents_signed += len(piece[0])
            rate = report.n_documents_signed / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(parts=f"{report.n_parts_signed}/{len(todo)}", docs_per_s=f"{rate:,.0f}", refresh=False)
            bar.update(len(piece[0]))
            remaining[name] -= 1
            if remaining[name]:
                return
            pieces = pending.pop(name)
            written = write_signatures(location, posixpath.basename(name), pieces, num_perm)
            signed[location.relpath(written.path)] = {"size": written.size, "hash": written.hash,
                                                      "rows": sum(len(p[0]) for p in pieces), "of": expected[name]}
            report.n_parts_signed += 1
            failpoint.after_part("minhash", report.n_parts_signed)
            if time.monotonic() - last_commit >= commit_seconds:
                commit_signatures()
                last_commit = time.monotonic()

        def arguments(task: tuple[str, tuple[int, ...] | None]) -> tuple:
            return (location.url, location.storage_options, location.join(expected[task[0]]), task[1], settings)

        try:
            run_tasks(sign_rows, [(task[0], arguments(task)) for task in tasks], done, workers=workers)
        finally:
            commit_signatures()  # what is signed is kept, also when a part fails
    report.signature_seconds = time.perf_counter() - started

    if set(expected) <= set(db.snapshot.tables["signatures"]) and cluster_when_done:
        started = time.perf_counter()
        _write_clusters(db, report, memory_limit, verify_bytes)
        report.cluster_seconds = time.perf_counter() - started
        report.clustered = True
    return report


def publish_clusters(db: Database, table: pa.Table, settings: dict) -> None:
    """Replace the minhash table (doc_id, cluster_id, cluster_size) in one commit and record its settings.

    The part is named by its content hash, so a clustering run twice (two shards finishing at
    once) writes the same bytes under the same name.
    """
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table.sort_by("doc_id"), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    written = db.location.write_atomic(data, CLUSTERS, f"part-{content_hash(data)[:16]}.parquet")

    def change(snapshot: Snapshot) -> str:
        snapshot.tables["minhash"] = {}
        snapshot.add_part("minhash", db.location, written, table.num_rows)
        snapshot.settings["minhash"] = settings
        return f"clusters of {table.num_rows:,} documents"

    db.commit("minhash", change)


def verification_of(db: Database, settings: dict, memory: int = DEFAULT_MEMORY) -> Verification:
    """How candidate pairs are verified under the job's settings (exact mode reads `db`'s texts,
    holding at most `memory` bytes of shingle sets)."""
    mode = verify_mode(settings["verify"])
    exact = None
    if mode == "exact":
        exact = ExactJaccard(db.con, hasher_of(settings), memory=memory)
    return Verification.of(mode, settings["threshold"], settings["num_perm"], exact)


def hasher_of(settings: dict) -> MinHasher:
    """The MinHasher of a clustering's settings (the `minhash` entry of a version's settings)."""
    return MinHasher(num_perm=settings["num_perm"], seed=settings["seed"], ngram=settings["ngram"], hash=settings["hash"])


def _write_clusters(db: Database, report: MinhashReport, memory_limit: str | None = None,
                    verify_memory: int = DEFAULT_MEMORY) -> None:
    con, settings = db.con, report.settings
    verification = verification_of(db, settings, verify_memory)
    report.cluster_counts = cluster(
        con, "signatures", bands=settings["bands"], rows=settings["rows"], num_perm=settings["num_perm"],
        verification=verification, max_bucket=settings["max_bucket"],
        method=settings.get("method", "components"), memory_limit=memory_limit,
    )
    if verification.exact is not None:
        report.cluster_counts["n_text_reads"] = verification.exact.n_reads
    publish_clusters(db, con.sql("select * from clusters").to_arrow_table(), settings)
    n_docs, n_clusters, n_dupes = con.execute(
        "select count(*), count(distinct cluster_id) filter (where cluster_size > 1), "
        "count(*) filter (where doc_id <> cluster_id) from clusters"
    ).fetchall()[0]
    report.n_documents, report.n_clusters, report.n_duplicates = n_docs, n_clusters, n_dupes
    con.execute("drop table clusters")
