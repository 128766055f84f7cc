"""Running a sharded job: local processes (default), Ray tasks on a cluster, or torchrun for GPU jobs.

    corpusdb ingest s3://bkt/db s3://bkt/raw/ --source raw --shards 64 --executor ray --address auto
    corpusdb minhash s3://bkt/db --shards 64 --executor ray --address auto

A job of n shards runs `ingest` or `minhash` (signatures) once per shard i/n. Each shard writes its
own parts and commits them (`corpusdb.versions`), so a shard that fails (a lost Ray node, a killed
process) is simply run again: by Ray (`max_retries`), or here for local processes, and a whole job
can be re-run to resume. Ingest shards deduplicate against each other at commit, in job order;
for minhash the shard that completes the signatures builds the clusters (in DuckDB for the local
executor, as Ray tasks for the Ray executor). Scoring and training use torchrun instead (`torchrun_command`).
"""

from __future__ import annotations

import multiprocessing
import shlex
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from corpusdb.workers import worker_context

EXECUTORS = ("local", "ray")
JOBS = ("ingest", "minhash", "annotate")


def run_shard(job: str, url: str, storage_options: dict, shard: tuple[int, int], options: dict) -> dict:
    """Run shard `shard` of `job` against the database at `url`; returns the shard's report (anywhere: a process, a Ray task)."""
    from corpusdb.db import Database

    if job == "ingest":
        from corpusdb.ingest.job import run_ingest

        options = dict(options)
        sources = options.pop("sources")
        return run_ingest(Database.create(url, storage_options), sources, shard=shard, progress=False, **options).to_dict()
    if job == "minhash":
        from corpusdb.dedup.job import run_minhash

        return run_minhash(Database.connect(url, storage_options), shard=shard, workers=1, progress=False, **options).to_dict()
    if job == "annotate":
        from corpusdb.annotations.job import run_annotate

        options = dict(options)
        name, annotator = options.pop("name"), options.pop("annotator")
        return run_annotate(Database.connect(url, storage_options), name, annotator, shard=shard, workers=1, progress=False,
                            **options).to_dict()
    raise ValueError(f"unknown job {job!r}; jobs are {', '.join(JOBS)}")


def map_tasks(function: Callable, arguments: list[tuple], *, executor: str = "local", workers: int | None = None,
              address: str | None = None, retries: int = 2, what: str = "a task") -> list:
    """`function(*args)` for each tuple of `arguments`, as local processes or Ray tasks; the results in order.

    A task whose process dies (a killed worker, a lost Ray node) is run again, up to `retries` times.
    `executor="inline"` runs them one after another in this process (tests, debugging).

    Raises:
        ValueError: unknown executor, Ray missing.
        RuntimeError: a task's process died more than `retries` times.
    """
    if executor == "inline":
        return [function(*args) for args in arguments]
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        try:
            import ray
        except ImportError as exc:
            raise ValueError("the Ray executor needs Ray: pip install 'corpusdb[ray]'") from exc
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(max_retries=retries, retry_exceptions=False)(function)
        return ray.get([task.remote(*args) for args in arguments])
    results: dict[int, object] = {}
    workers = workers or multiprocessing.cpu_count()
    for attempt in range(retries + 1):
        todo = [i for i in range(len(arguments)) if i not in results]
        if not todo:
            break
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=worker_context()) as pool:
                futures = {i: pool.submit(function, *arguments[i]) for i in todo}
                for i, future in futures.items():
                    results[i] = future.result()
        except BrokenProcessPool:
            if attempt == retries:
                raise RuntimeError(f"{what}'s process died {retries + 1} times; see its output above") from None
    return [results[i] for i in range(len(arguments))]


def run_sharded(job: str, url: str, *, shards: int, executor: str = "local", workers: int | None = None,
                address: str | None = None, storage_options: dict | None = None, retries: int = 2,
                cluster_with: str | None = None, **options) -> list[dict]:
    """Run all `shards` of `job` with `executor`; returns the shard reports in shard order.

    Args:
        job: ingest (options as for `Database.ingest`, with `sources`) or minhash (as for `Database.minhash`).
        executor: local (processes on this machine) or ray (tasks on the cluster at `address`).
        workers: local processes at once [default: CPU count].
        retries: times a failed shard is run again.
        cluster_with: minhash only: "duckdb" (the default for local) or "ray" (the default for ray).

    Raises:
        ValueError: unknown job or executor, bad shard count, Ray missing.
    """
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; jobs are {', '.join(JOBS)}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if shards < 1:
        raise ValueError(f"shards {shards} must be at least 1")
    storage_options = storage_options or {}
    cluster_with = cluster_with or ("ray" if executor == "ray" else "duckdb")
    if job == "minhash":
        options = {**options, "cluster_when_done": cluster_with == "duckdb"}
    reports = map_tasks(run_shard, [(job, url, storage_options, (i, shards), options) for i in range(shards)],
                        executor=executor, workers=workers, address=address, retries=retries, what=f"a {job} shard")
    if job == "minhash" and cluster_with == "ray":
        reports.append(_cluster_on_ray(url, storage_options, reports[0]["settings"]))
    return reports


def _cluster_on_ray(url: str, storage_options: dict, settings: dict) -> dict:
    """Build the clusters with Ray tasks from the settings the signature shards resolved."""
    import ray

    from corpusdb.db import Database
    from corpusdb.dedup.job import publish_clusters, verification_of
    from corpusdb.dedup.ray_cluster import cluster_with_ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    db = Database.connect(url, storage_options)
    table = cluster_with_ray(db, bands=settings["bands"], rows=settings["rows"], num_perm=settings["num_perm"],
                             verification=verification_of(db, settings), max_bucket=settings["max_bucket"],
                             method=settings.get("method", "components"))
    publish_clusters(db, table, settings)
    sizes = table.column("cluster_size").to_numpy()
    n_clusters = len(set(table.column("cluster_id").to_numpy()[sizes > 1].tolist()))
    return {"clustered_on": "ray", "n_documents": table.num_rows, "n_clusters": n_clusters}


def torchrun_command(argv: list[str], nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
                     module: str = "corpusdb.cli") -> str:
    """The torchrun command line that runs `python -m MODULE <argv>` on every GPU (scoring, training)."""
    parts = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}"]
    if nnodes > 1:
        parts += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint or 'HEAD_NODE:29400'}"]
    else:  # one node: rendezvous on a free local port, so two jobs on one machine never meet on 29500
        parts += ["--standalone"]
    return shlex.join([*parts, "-m", module, *argv])


def launch_torchrun(argv: list[str], nproc_per_node: int, module: str = "corpusdb.cli") -> int:
    """Run `torchrun_command` on this node, its command echoed to stderr; returns torchrun's exit status."""
    import subprocess

    command = torchrun_command(argv, nproc_per_node, module=module)
    print(f"running: {command}", file=sys.stderr, flush=True)
    return subprocess.run(shlex.split(command)).returncode
