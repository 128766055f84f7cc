"""Sharded jobs on executors: local processes and a local Ray cluster over a real S3 server give the exact tables of one process."""

from __future__ import annotations

import json
import random

import pytest

import corpusdb
from corpusdb.annotations import annotator_for
from corpusdb.execute import run_sharded, torchrun_command
from tests.conftest import CORPUS, export_files, fixture_texts


def _corpus_files(folder) -> list[str]:
    """The fixture corpus plus near-copies of 40 of its documents (one word changed), in 4 files."""
    rng = random.Random(1)
    texts = [t for t in fixture_texts() if len(t.split()) >= 80]
    copies = []
    for text in rng.sample(texts, 40):
        words = text.split()
        words[rng.randrange(len(words))] = "zebra"
        copies.append(" ".join(words))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate([fixture_texts()[:180], fixture_texts()[180:], copies[:20], copies[20:]]):
        path = folder / f"part-{i}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
        paths.append(str(path))
    return paths


def _tables(db: corpusdb.Database) -> tuple[list, list]:
    db.refresh()
    documents = db.sql("select doc_id, source, text, n_bytes from documents order by doc_id").fetchall()
    clusters = db.sql("select doc_id, cluster_id, cluster_size from minhash order by doc_id").fetchall()
    return documents, clusters


def _single(url: str, paths: list[str], storage_options: dict | None = None) -> corpusdb.Database:
    db = corpusdb.init(url, storage_options=storage_options)
    db.ingest(paths, source="mix", progress=False, part_size_mb=0.05)
    db.minhash(workers=1, progress=False)
    return db


def test_local_processes_equal_one_process(tmp_path):
    paths = _corpus_files(tmp_path / "in")
    single = _single(str(tmp_path / "single"), paths)
    url = str(tmp_path / "sharded")
    reports = run_sharded("ingest", url, shards=3, workers=2, sources=paths, source="mix", part_size_mb=0.05)
    assert len(reports) == 3 and sum(r["n_inputs_processed"] for r in reports) == 4
    run_sharded("minhash", url, shards=2, workers=2)
    documents, clusters = _tables(corpusdb.open(url))
    assert (documents, clusters) == _tables(single)
    assert sum(1 for _, c, s in clusters if s > 1) >= 60  # the planted near-copies were found


def test_torchrun_command():
    command = torchrun_command(["score", "s3://b/db", "--model", "m", "--as", "t"], nproc_per_node=8, nnodes=2,
                               rdzv_endpoint="head:29400")
    assert command.endswith("-m torch.distributed.run --nproc_per_node=8 --nnodes=2 --rdzv_backend=c10d "
                            "--rdzv_endpoint=head:29400 -m corpusdb.cli score s3://b/db --model m --as t")
    single = torchrun_command(["train", "db"], nproc_per_node=2, module="corpusdb.train.pretrain")
    assert single.endswith("-m torch.distributed.run --nproc_per_node=2 --standalone -m corpusdb.train.pretrain train db")


@pytest.fixture
def ray_cluster(request):
    """A local Ray cluster with 2 CPUs; parametrize with env vars for its workers."""
    ray = pytest.importorskip("ray")
    env = getattr(request, "param", {})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env} if env else None)
    yield ray
    ray.shutdown()


@pytest.mark.s3
def test_ray_over_s3_equals_the_local_executor(ray_cluster, tmp_path, s3_options, bucket):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    paths = _corpus_files(tmp_path / "in")
    for path in paths:
        fs.put_file(path, f"{bucket}/raw/{path.rsplit('/', 1)[1]}")
    raw = [f"s3://{bucket}/raw/part-{i}.jsonl" for i in range(4)]
    local = _single(f"s3://{bucket}/local", raw, s3_options)
    url = f"s3://{bucket}/ray"
    run_sharded("ingest", url, shards=3, executor="ray", storage_options=s3_options, sources=raw, source="mix", part_size_mb=0.05)
    reports = run_sharded("minhash", url, shards=2, executor="ray", storage_options=s3_options)
    assert reports[-1]["clustered_on"] == "ray"
    assert _tables(corpusdb.open(url, storage_options=s3_options)) == _tables(local)
    # the annotate job as Ray tasks: the same rows as one local process
    reports = run_sharded("annotate", url, shards=2, executor="ray", storage_options=s3_options, name="language",
                          annotator=annotator_for("language"))
    assert sum(r["n_documents"] for r in reports) == local.sql("select count(*) from documents").fetchall()[0][0]
    local.annotate("language", progress=False, workers=1)
    query = "select doc_id, language, language_score from annotations_language order by doc_id"
    assert corpusdb.open(url, storage_options=s3_options).sql(query).fetchall() == local.sql(query).fetchall()
    # a sharded export as Ray tasks, from S3 to S3 (plans, text and parts all in the object store): one process's bytes
    db = corpusdb.open(url, storage_options=s3_options)
    one = db.view("dedup").export(f"s3://{bucket}/export-one", part_size_mb=0.05)
    many = db.view("dedup").export(f"s3://{bucket}/export-ray", part_size_mb=0.05, shards=3, executor="ray")
    assert len(one["parts"]) > 3 and many["parts"] == one["parts"]
    fs.invalidate_cache()  # every object left, the tasks' work folder's included (SeaweedFS lists an emptied folder a while)
    assert sorted(p.split("/export-ray/", 1)[1] for p in fs.find(f"{bucket}/export-ray")) == export_files(one)
    for part in one["parts"]:
        assert fs.cat_file(f"{bucket}/export-one/{part['file']}") == fs.cat_file(f"{bucket}/export-ray/{part['file']}")


@pytest.mark.parametrize("ray_cluster", [{"CORPUSDB_FAILPOINT": "ingest.after_part=1"}], indirect=True)
def test_a_ray_task_killed_mid_job_is_retried_and_the_result_is_exact(ray_cluster, tmp_path):
    paths = _corpus_files(tmp_path / "in")
    once = tmp_path / "crashed-once"
    ray_cluster.shutdown()
    ray_cluster.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"CORPUSDB_FAILPOINT": "ingest.after_part=1", "CORPUSDB_FAILPOINT_ONCE": str(once)}})
    url = str(tmp_path / "ray")
    run_sharded("ingest", url, shards=2, executor="ray", sources=paths, source="mix", part_size_mb=0.05)
    assert once.exists()  # one task did die after its first part
    single = corpusdb.init(str(tmp_path / "single"))
    single.ingest(paths, source="mix", progress=False, part_size_mb=0.05)
    assert _tables(corpusdb.open(url))[0] == _tables(single)[0]
    run_sharded("minhash", url, shards=2, executor="ray")
    single.minhash(workers=1, progress=False)
    assert _tables(corpusdb.open(url)) == _tables(single)


def test_cli_shards(tmp_path):
    from click.testing import CliRunner

    from corpusdb.cli import cli

    paths = _corpus_files(tmp_path / "in")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(tmp_path / "db"), *paths, "--source", "mix", "--shards", "2", "--part-size-mb", "0.05"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ingested ") and "in 2 shards (local)" in result.output
    result = runner.invoke(cli, ["minhash", str(tmp_path / "db"), "--shards", "2", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert _tables(corpusdb.open(str(tmp_path / "db"))) == _tables(_single(str(tmp_path / "single"), paths))
    result = runner.invoke(cli, ["minhash", str(tmp_path / "db"), "--shards", "2", "--executor", "spark"])
    assert result.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in result.output
    assert CORPUS.exists()
