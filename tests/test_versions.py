"""Committed versions: every job commits, reads see exactly one version, writers racing on local disk and a real
S3 server (SeaweedFS) never lose each other's commits, and a selection re-made as of a version is byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb import versions
from corpusdb.cli import cli
from corpusdb.storage import Location
from tests.conftest import CORPUS, committed_parts, ingest_per_source, rows

CLI = [sys.executable, "-m", "corpusdb.cli"]


def _race(location: Location, writers: int, commits: int) -> None:
    """`writers` threads each commit `commits` changes at once; every change must land exactly once."""
    start = threading.Barrier(writers)
    errors = []

    def writer(w: int) -> None:
        start.wait()
        try:
            for c in range(commits):
                versions.commit(location, "test", lambda s, key=f"{w}-{c}": s.settings.setdefault("race", {}).update({key: 1}))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    latest = versions.load(location)
    assert sorted(latest.settings["race"]) == sorted(f"{w}-{c}" for w in range(writers) for c in range(commits))
    assert versions.version_numbers(location) == list(range(1, writers * commits + 1))  # no gap, no version twice


def test_writers_committing_at_once_all_land_on_local_disk(tmp_path):
    _race(Location(str(tmp_path / "db")), writers=8, commits=8)


def test_without_hard_links_commits_fall_back_to_an_exclusive_create(tmp_path, monkeypatch):
    def no_links(source, target):  # as on filesystems that have none (some network and FUSE mounts)
        raise PermissionError(1, "Operation not permitted", target)

    monkeypatch.setattr(os, "link", no_links)
    _race(Location(str(tmp_path / "db")), writers=4, commits=5)


@pytest.mark.s3
def test_writers_committing_at_once_all_land_on_s3(s3_options, bucket):
    _race(Location(f"s3://{bucket}/db", s3_options), writers=6, commits=5)


def test_every_job_commits_and_reads_see_only_committed_parts(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    assert db.version == 0 and db.sql("select count(*) from documents").fetchall() == [(0,)]
    ingest_per_source(db, CORPUS)
    n_sources = len(list(CORPUS.glob("*.jsonl")))
    assert db.version == n_sources
    db.create_view("short", "select * from documents where n_bytes < 2000")
    db.minhash(workers=1, progress=False)
    history = versions.history(db.location)
    assert [s.operation for s in history[:3]] == ["minhash", "minhash", "view create"]
    # a part file that no commit lists (a job still writing, or killed) is never read
    stray = Path(db.url) / "documents" / "part-0000000000000000-00000-deadbeef.parquet"
    stray.write_bytes((Path(db.url) / db.snapshot.parts("documents")[0]).read_bytes())
    assert corpusdb.open(db.url).sql("select count(*) from documents").fetchall() == [(357,)]
    result = CliRunner().invoke(cli, ["versions", db.url, "--limit", "2", "--format", "csv"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "version,created_at,operation,summary,n_documents,n_parts,models,views"
    assert lines[1].startswith(f"{n_sources + 3},") and ",minhash,clusters of 357 documents,357," in lines[1]
    # as of an older version: the view did not exist yet
    old = corpusdb.open(db.url, as_of=n_sources)
    assert old.snapshot.views == {} and old.sql("select count(*) from documents").fetchall() == [(357,)]
    with pytest.raises(corpusdb.VersionError, match="open as of version 9, read-only; open the latest version to change it"):
        old.create_view("x", "select 1 as doc_id")
    with pytest.raises(corpusdb.VersionError, match=r"version 99 does not exist \(versions 1..12\); `corpusdb versions DB` lists them"):
        corpusdb.open(db.url, as_of=99)
    # vacuum removes the stray file, and nothing any version reads
    result = CliRunner().invoke(cli, ["vacuum", db.url, "--grace", "0", "--json"])
    assert json.loads(result.output)["files_removed"] == [f"documents/{stray.name}"]
    assert rows(corpusdb.open(db.url)) == rows(db)


def test_a_selection_exported_as_of_a_version_is_byte_identical_after_more_data(tmp_path, tiny_models):
    db = corpusdb.init(str(tmp_path / "db"))
    for source in ("bible", "fortunes", "git-docs"):
        db.ingest([str(CORPUS / f"{source}.jsonl")], source=source, progress=False)
    db.score(str(tiny_models["gpt2"]), "teacher", progress=False)
    db.score(str(tiny_models["llama"]), "reference", progress=False)
    db.create_view("refined", "select * from difference('teacher', 'reference', alpha := 0.5)")
    version = db.version
    runner = CliRunner()
    first = tmp_path / "first"
    assert runner.invoke(cli, ["export", db.url, "refined", str(first), "--no-progress", "--part-size-mb", "0.02"]).exit_code == 0
    # unordered views come out by doc_id: the same export twice is byte-identical
    twice = db.view("refined").export(str(tmp_path / "twice"), part_size_mb=0.02)
    for part in twice["parts"]:
        assert (tmp_path / "twice" / part["file"]).read_bytes() == (first / part["file"]).read_bytes()
    # more documents, ingested and scored by both models: the latest selection changes ...
    db.ingest([str(CORPUS / "kernel-docs.jsonl")], source="kernel-docs", progress=False)
    db.score(str(tiny_models["gpt2"]), "teacher", progress=False)
    db.score(str(tiny_models["llama"]), "reference", progress=False)
    latest = db.view("refined").export(str(tmp_path / "latest"), part_size_mb=0.02)
    assert latest["n_rows"] > twice["n_rows"] and latest["inputs_hash"] != twice["inputs_hash"]
    # ... and as of the old version it is re-made byte for byte
    again = tmp_path / "again"
    result = runner.invoke(cli, ["export", db.url, "refined", str(again), "--no-progress", "--part-size-mb", "0.02",
                                 "--as-of", str(version)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["inputs_hash"] == twice["inputs_hash"]
    assert [p["file"] for p in manifest["parts"]] == [p["file"] for p in twice["parts"]]
    for part in manifest["parts"]:
        assert (again / part["file"]).read_bytes() == (first / part["file"]).read_bytes()


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_two_identical_ingests_started_together_both_succeed_and_lose_nothing(tmp_path):
    """Case 8: on the old code one of two identical ingests failed about half the time, and once a part was lost."""
    common = [str(CORPUS), "--source", "fixture", "--part-size-mb", "0.02", "--no-progress", "--commit-every", "0"]
    clean = tmp_path / "clean"
    assert subprocess.run([*CLI, "ingest", str(clean), *common], capture_output=True).returncode == 0
    want = rows(corpusdb.open(str(clean)))
    for attempt in range(6):
        url = str(tmp_path / f"race-{attempt}")
        corpusdb.init(url)
        first = _cli("ingest", url, *common)
        time.sleep(0.05 * attempt)
        second = _cli("ingest", url, *common)
        results = [(p.wait(), p.stderr.read()) for p in (first, second)]
        assert [code for code, _ in results] == [0, 0], results
        assert rows(corpusdb.open(url)) == want, attempt
        again = subprocess.run([*CLI, "ingest", url, *common], capture_output=True, text=True)
        assert "12 input files were already done" in again.stdout or "input files were already done" in again.stdout


def test_jobs_of_different_kinds_at_once_keep_every_catalog_entry(tmp_path, tiny_models):
    """Case 8: a view created or a model scored while minhash ran was lost from the catalog."""
    url = str(tmp_path / "db")
    db = corpusdb.init(url)
    ingest_per_source(db, CORPUS)
    for attempt in range(2):
        jobs = [
            _cli("minhash", url, "--workers", "1", "--no-progress", "--num-perm", str(64 + attempt)),
            _cli("view", "create", url, f"v{attempt}", "--sql", "select * from documents where n_bytes > 100"),
            _cli("score", url, "--model", str(tiny_models["gpt2"]), "--as", f"m{attempt}", "--context", "64", "--no-progress"),
        ]
        results = [(p.wait(), p.stderr.read()[-500:]) for p in jobs]
        assert [code for code, _ in results] == [0, 0, 0], results
    latest = corpusdb.open(url)
    assert sorted(latest.snapshot.views) == ["v0", "v1"] and sorted(latest.snapshot.models) == ["m0", "m1"]
    assert latest.snapshot.settings["minhash"]["num_perm"] == 65
    result = subprocess.run([*CLI, "score", url, "--model", str(tiny_models["gpt2"]), "--as", "m0", "--context", "32"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "scores 'm0' were made with context=64, not 32" in result.stderr


def test_readers_during_a_sharded_ingest_never_fail_and_see_whole_versions(tmp_path):
    """Case 9: 15-25% of queries failed while `ingest --shards 2` ran."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    records = [json.loads(line) for path in sorted(CORPUS.glob("*.jsonl")) for line in path.read_text().splitlines()]
    for f in range(8):  # overlapping files, so the shards' commits also rewrite each other's parts
        with open(inputs / f"f{f}.jsonl", "w") as handle:
            for i, record in enumerate(records):
                if (i + f) % 3:
                    handle.write(json.dumps({"text": f"[{i % 200}] {record['text']}"}) + "\n")
    url = str(tmp_path / "db")
    corpusdb.init(url)
    job = _cli("ingest", url, str(inputs), "--source", "x", "--shards", "2", "--part-size-mb", "0.02", "--commit-every", "0")
    seen, failures = [], []
    while job.poll() is None:
        try:
            db = corpusdb.open(url)
            n, distinct = db.sql("select count(*), count(distinct doc_id) from documents").fetchall()[0]
            seen.append((db.version, n, distinct))
            db.close()
        except Exception as exc:  # noqa: BLE001 - counted
            failures.append(repr(exc))
    assert job.returncode == 0, job.stderr.read()[-2000:]
    assert not failures, failures[:3]
    assert len(seen) > 5
    for version, n, distinct in seen:  # each read saw one committed version, whole
        assert n == versions.read(Location(url), version).n_rows("documents") if version else n == 0
    final = rows(corpusdb.open(url))
    single = corpusdb.init(str(tmp_path / "single"))
    single.ingest([str(inputs)], source="x", progress=False, part_size_mb=0.02)
    assert final == rows(single) and len(final) == len({r[0] for r in final})


@pytest.mark.s3
def test_two_ingests_into_s3_at_once_both_land(tmp_path, s3_options, bucket):
    url = f"s3://{bucket}/db"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_options["key"], "AWS_SECRET_ACCESS_KEY": s3_options["secret"],
           "AWS_ENDPOINT_URL": s3_options["client_kwargs"]["endpoint_url"]}
    corpusdb.init(url, storage_options=s3_options)
    files = sorted(CORPUS.glob("*.jsonl"))
    jobs = [_cli("ingest", url, *map(str, half), "--source", "x", "--no-progress", "--commit-every", "0", env=env)
            for half in (files[::2], files[1::2])]
    results = [(p.wait(), p.stderr.read()[-1000:]) for p in jobs]
    assert [code for code, _ in results] == [0, 0], results
    db = corpusdb.open(url, storage_options=s3_options)
    got = db.sql("select count(*), count(distinct doc_id) from documents").fetchall()[0]
    assert got == (357, 357)
    assert committed_parts(db) and db.version == len(files)


def test_a_format_1_database_is_upgraded_on_first_open(tmp_path):
    import shutil

    db = corpusdb.init(str(tmp_path / "new"))
    ingest_per_source(db, CORPUS)
    db.create_view("short", "select * from documents where n_bytes < 2000")
    old = tmp_path / "old"
    shutil.copytree(db.url, old, ignore=shutil.ignore_patterns("_versions"))
    (old / "corpusdb.json").write_text(json.dumps({
        "format": "corpusdb", "format_version": 1, "created_at": "2026-01-01T00:00:00+00:00", "tables": {},
        "models": {}, "views": {"short": {"file": "views/short.sql"}},
    }))
    (old / "_jobs" / "ingest").mkdir(parents=True)
    leftover = old / "_jobs" / "ingest" / f".tmp-0123456789abcdef.json-{'f' * 32}"  # a killed marker write
    leftover.write_text("{")
    upgraded = corpusdb.open(str(old))
    assert not leftover.exists()
    assert upgraded.version == 1 and rows(upgraded) == rows(db)
    assert upgraded.sql("select count(*) from short").fetchall() == db.sql("select count(*) from short").fetchall()
    assert json.loads((old / "corpusdb.json").read_text())["format_version"] == 2


def _add_parts(location: Location, table: str, n: int, start: int = 0) -> None:
    """One commit recording `n` made-up parts (the version log is tested on its own; no file is read)."""
    def change(snapshot):
        for i in range(start, start + n):
            snapshot.tables[table][f"{table}/part-{i:06d}.parquet"] = {"size": 100 + i, "hash": f"{i:032x}", "rows": i}
    versions.commit(location, "test", change)


def test_a_commit_writes_its_change_and_every_version_reads_back_whole(tmp_path):
    """Versions between checkpoints are deltas: one part added to a table of 5,000 writes a file of its own
    size, and every version (as of it, in history, after parts were dropped) reads back as committed."""
    location = Location(str(tmp_path / "db"))
    _add_parts(location, "documents", 5000)
    expected = {1: versions.load(location).content()}
    for step in range(2, 40):
        if step % 7 == 0:  # a drop and a setting, not only additions
            versions.commit(location, "drop", lambda s, k=step: (s.tables["documents"].pop(f"documents/part-{k:06d}.parquet"),
                                                                 s.settings.update({"step": {"n": k}}))[1])
        else:
            _add_parts(location, "scores" if step % 2 else "documents", 1, start=10_000 + step)
        expected[step] = versions.load(location).content()
    sizes = {n: (tmp_path / "db" / "_versions" / versions.version_file(n)).stat().st_size for n in expected}
    checkpoints = [n for n in expected if n == 1 or n % versions.CHECKPOINT_EVERY == 0]
    assert checkpoints == [1, 16, 32] and all(sizes[n] > 300_000 for n in checkpoints)
    assert all(sizes[n] < 1_000 for n in expected if n not in checkpoints)
    for number, content in expected.items():
        assert versions.load(location, as_of=number).content() == content
    assert [s.content() for s in versions.history(location)] == [expected[n] for n in sorted(expected, reverse=True)]
    assert [s.version for s in versions.history(location, limit=5)] == [39, 38, 37, 36, 35]
    assert versions.depends_on(location, 39) == [39, 38, 37, 36, 35, 34, 33, 32]


def test_vacuum_makes_the_oldest_kept_version_whole(tmp_path):
    """Dropping the versions a kept delta was read from first rewrites that delta as a checkpoint."""
    db = corpusdb.init(str(tmp_path / "db"))
    for step in range(20):
        versions.commit(db.location, "test", lambda s, k=step: s.settings.setdefault("steps", {}).update({str(k): k}))
    before = {n: versions.load(db.location, as_of=n).content() for n in (19, 20)}
    assert versions.depends_on(db.location, 19) == [19, 18, 17, 16]
    from corpusdb.vacuum import vacuum

    report = vacuum(corpusdb.open(db.url), keep_versions=2, grace_seconds=0)
    assert report["versions_removed"] == list(range(1, 19))
    assert versions.version_numbers(db.location) == [19, 20] and versions.depends_on(db.location, 20) == [20, 19]
    assert {n: versions.load(db.location, as_of=n).content() for n in (19, 20)} == before


def test_vacuum_removes_only_corpusdb_files_and_never_through_a_link_out(tmp_path):
    """A killed job's part goes; a user's file in a table folder stays, and a table folder moved to
    another disk and linked back is not entered (vacuum once deleted every file of the link's target)."""
    db = corpusdb.init(str(tmp_path / "db"))
    (tmp_path / "in.jsonl").write_text('{"text": "one document"}\n{"text": "another document"}\n')
    db.ingest([str(tmp_path / "in.jsonl")], source="web", progress=False)
    documents = tmp_path / "db" / "documents"
    orphan = documents / "part-0123456789abcdef-00000-deadbeef.parquet"  # as a killed ingest leaves it
    orphan.write_bytes(b"PAR1 unfinished")
    notes = documents / "notes.txt"
    notes.write_text("mine")
    elsewhere = tmp_path / "bigger-disk"
    (elsewhere / "model=x").mkdir(parents=True)
    outside = [elsewhere / "notes.txt", elsewhere / "model=x" / "part-0123.parquet"]
    for path in outside:
        path.write_text("not corpusdb's to delete")
    (tmp_path / "db" / "annotations").symlink_to(elsewhere, target_is_directory=True)
    (documents / "linked").symlink_to(elsewhere, target_is_directory=True)
    before = rows(corpusdb.open(db.url))

    result = CliRunner().invoke(cli, ["vacuum", db.url, "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert not orphan.exists() and notes.read_text() == "mine" and all(path.exists() for path in outside)
    assert "kept 1 files corpusdb did not name (documents/notes.txt)" in result.output
    assert "did not enter annotations" in result.output
    assert rows(corpusdb.open(db.url)) == before
    from corpusdb.vacuum import vacuum

    again = vacuum(corpusdb.open(db.url), grace_seconds=0)
    assert again["files_removed"] == [] and again["foreign_files_kept"] == ["documents/notes.txt"]
    assert "annotations" in again["links_not_followed"] and all(path.exists() for path in outside)
