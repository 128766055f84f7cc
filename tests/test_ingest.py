"""Ingestion: formats, deduplication, idempotence, crash safety and shards, on the real-text fixture."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

import corpusdb
from corpusdb.text import doc_id, normalize
from tests.conftest import committed_parts, rows

CLI = [sys.executable, "-m", "corpusdb.cli"]


def jsonl_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def expected_ids(paths: list[Path]) -> set[int]:
    return {doc_id(normalize(record["text"])) for path in paths for record in jsonl_records(path)}


def part_files(db_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((db_path / "documents").glob("*"))}


def vacuumed(db_path: Path) -> list[str]:
    """Content hashes of the documents files on disk after `corpusdb vacuum --grace 0` (the uncommitted ones gone)."""
    from corpusdb.storage import content_hash

    assert _run_cli("vacuum", str(db_path), "--grace", "0").returncode == 0
    return sorted(content_hash(p.read_bytes()) for p in (db_path / "documents").glob("*"))


def test_ingest_fixture_has_every_document_once(fixture_db, corpus_dir):
    paths = sorted(corpus_dir.glob("*.jsonl"))
    got = rows(fixture_db, "doc_id")
    assert len(got) == len({r[0] for r in got})
    assert {r[0] for r in got} == expected_ids(paths)
    per_source = dict(fixture_db.sql("select source, count(*) from documents group by 1").fetchall())
    assert set(per_source) == {p.name.split(".")[0] for p in paths}
    lengths = fixture_db.sql("select count(*) from documents where n_bytes != octet_length(encode(text))").fetchall()[0]
    assert lengths == (0,)
    titles = fixture_db.sql("select count(*) from documents where title is null").fetchall()[0]
    assert titles == (0,)


def test_doc_id_is_the_hash_of_the_stored_text(fixture_db):
    for doc, text in fixture_db.sql("select doc_id, text from documents using sample 20 rows").fetchall():
        assert doc_id(text) == doc


def test_compressed_parquet_and_text_inputs_give_the_same_documents(tmp_path, corpus_dir):
    source = corpus_dir / "bible.jsonl"
    records = jsonl_records(source)
    gz = tmp_path / "in" / "bible.jsonl.gz"
    zst = tmp_path / "in" / "bible.jsonl.zst"
    parquet = tmp_path / "in" / "bible.parquet"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(source.read_bytes()))
    zst.write_bytes(zstandard.ZstdCompressor().compress(source.read_bytes()))
    pq.write_table(pa.table({"body": [r["text"] for r in records], "title": [r["title"] for r in records]}), parquet)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i, record in enumerate(records):
        (texts / f"{i:03d}.txt").write_text(record["text"], encoding="utf-8")
    want = expected_ids([source])
    for args, kwargs in [
        ([str(gz)], {}),
        ([str(zst)], {}),
        ([str(parquet)], {"text_field": "body"}),
        ([str(texts)], {}),
        ([str(texts / "*.txt")], {}),
    ]:
        db = corpusdb.init(str(tmp_path / f"db-{len(os.listdir(tmp_path))}"))
        report = db.ingest(args, source="bible", progress=False, **kwargs)
        assert {r[0] for r in rows(db, "doc_id")} == want, args
        assert report.n_docs_written == len(want)


def test_inputs_of_other_string_types_share_a_part(tmp_path, corpus_dir):
    """Small inputs of any format share parts: JSON lines and Parquet of large strings, with meta, in one part."""
    records = jsonl_records(corpus_dir / "bible.jsonl")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:20]))
    pq.write_table(pa.table({"text": pa.array([r["text"] for r in records[20:40]], pa.large_string()),
                             "title": pa.array([r["title"] for r in records[20:40]], pa.string())}),
                   folder / "b.parquet")
    db = corpusdb.init(str(tmp_path / "db"))
    report = db.ingest([str(folder)], source="bible", meta={"title": "title"}, progress=False)
    assert report.n_parts_written == 1
    got = {text: title for text, title in rows(db, "text, title")}
    assert got == {normalize(r["text"]): r["title"] for r in records[:40]}


def test_reingesting_the_same_inputs_changes_nothing(fixture_db, corpus_dir):
    before_rows = rows(fixture_db)
    before_parts = part_files(Path(fixture_db.url))
    report = fixture_db.ingest([str(corpus_dir / "bible.jsonl")], source="bible", meta={"title": "title"}, progress=False)
    assert report.n_inputs_done_before == 1 and report.n_docs_read == 0
    # The same text under another source name or options is a new input, but adds no documents.
    report = fixture_db.ingest([str(corpus_dir)], source="again", progress=False)
    assert report.n_docs_written == 0 and report.n_duplicates == report.n_docs_read > 0
    assert rows(fixture_db) == before_rows
    assert part_files(Path(fixture_db.url)) == before_parts


def test_duplicates_inside_and_across_inputs_are_written_once(tmp_path, corpus_dir):
    records = jsonl_records(corpus_dir / "fortunes.jsonl")[:50]
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [json.dumps(r) for r in records]
    (folder / "a.jsonl").write_text("\n".join(lines + lines[:10]) + "\n")
    # Same texts with other whitespace and line endings normalise to the same documents.
    variants = [json.dumps({"text": "  " + r["text"].replace("\n", "\r\n") + "\n"}) for r in records[5:20]]
    (folder / "b.jsonl").write_text("\n".join(variants) + "\n")
    db = corpusdb.init(str(tmp_path / "db"))
    report = db.ingest([str(folder)], source="f", progress=False)
    assert report.n_docs_read == 75
    assert report.n_docs_written == len({doc_id(normalize(r["text"])) for r in records})
    assert report.n_duplicates == 75 - report.n_docs_written
    assert len(rows(db, "doc_id")) == report.n_docs_written


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_crash_after_some_parts_then_rerun_equals_a_clean_run(tmp_path, corpus_dir):
    common = [str(corpus_dir), "--source", "fixture", "--meta", "title=title", "--part-size-mb", "0.01", "--no-progress",
              "--commit-every", "0"]
    clean = tmp_path / "clean"
    assert _run_cli("ingest", str(clean), *common).returncode == 0
    crashed = tmp_path / "crashed"
    result = _run_cli("ingest", str(crashed), *common, env={"CORPUSDB_FAILPOINT": "ingest.after_part=7"})
    assert result.returncode == 75, result.stderr
    partial = part_files(crashed)
    assert 0 < len(partial) < len(part_files(clean))
    result = _run_cli("ingest", str(crashed), *common)
    assert result.returncode == 0, result.stderr
    assert "input files were already done" in result.stdout
    assert rows(corpusdb.open(str(crashed)), "*") == rows(corpusdb.open(str(clean)), "*")
    assert committed_parts(corpusdb.open(str(crashed))) == committed_parts(corpusdb.open(str(clean)))  # byte-identical
    # the crashed run's uncommitted parts were never read; vacuum removes them
    assert vacuumed(crashed) == [h for h, _ in committed_parts(corpusdb.open(str(clean)))]
    assert not [p for p in crashed.rglob(".tmp-*")]


def _big_input(folder: Path, corpus_dir: Path, copies: int) -> None:
    """Many unique documents from the fixture text (each copy numbered), several files."""
    records = [r for p in sorted(corpus_dir.glob("*.jsonl")) for r in jsonl_records(p)]
    folder.mkdir()
    for file_number in range(4):
        with open(folder / f"big-{file_number}.jsonl", "w", encoding="utf-8") as handle:
            for copy in range(copies):
                for i, record in enumerate(records):
                    text = f"[{file_number}.{copy}.{i}] {record['text']}"
                    handle.write(json.dumps({"text": text}) + "\n")


def test_killed_ingest_then_rerun_equals_a_clean_run(tmp_path, corpus_dir):
    inputs = tmp_path / "in"
    _big_input(inputs, corpus_dir, copies=12)
    common = [str(inputs), "--source", "big", "--part-size-mb", "0.25", "--no-progress", "--commit-every", "0"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([*CLI, "ingest", str(killed), *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if len(list((killed / "documents").glob("part-*.parquet"))) >= 6 if (killed / "documents").exists() else False:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the job finished before it could be killed; make the input bigger"
    assert _run_cli("ingest", str(killed), *common).returncode == 0
    clean = tmp_path / "clean"
    assert _run_cli("ingest", str(clean), *common).returncode == 0
    got = rows(corpusdb.open(str(killed)), "doc_id, source, text")
    assert got == rows(corpusdb.open(str(clean)), "doc_id, source, text")
    assert len(got) == len({r[0] for r in got}) == 4 * 12 * sum(len(jsonl_records(p)) for p in corpus_dir.glob("*.jsonl"))
    assert committed_parts(corpusdb.open(str(killed))) == committed_parts(corpusdb.open(str(clean)))


def _overlapping_inputs(folder: Path, corpus_dir: Path) -> None:
    """Three files sharing documents, so which copy is kept shows in the `file` meta column."""
    sets = {
        "a.jsonl": ["bible", "fortunes"],
        "b.jsonl": ["fortunes", "kernel-docs", "bible"],
        "c.jsonl": ["kernel-docs", "shakespeare", "fortunes"],
    }
    folder.mkdir()
    for name, sources in sets.items():
        lines = [line for s in sources for line in (corpus_dir / f"{s}.jsonl").read_text().splitlines()]
        (folder / name).write_text("\n".join(lines) + "\n")


def test_shards_in_any_order_or_at_once_equal_a_single_run(tmp_path, corpus_dir):
    inputs = tmp_path / "in"
    _overlapping_inputs(inputs, corpus_dir)
    common = [str(inputs), "--source", "mix", "--meta", "file=@file", "--part-size-mb", "0.05", "--no-progress"]
    single = tmp_path / "single"
    assert _run_cli("ingest", str(single), *common).returncode == 0
    want = rows(corpusdb.open(str(single)), "*")
    assert len(want) == len({r[0] for r in want})

    ordered = tmp_path / "reverse"
    for shard in ("2/3", "1/3", "0/3"):
        assert _run_cli("ingest", str(ordered), *common, "--shard", shard).returncode == 0
    assert rows(corpusdb.open(str(ordered)), "*") == want

    together = tmp_path / "together"
    corpusdb.init(str(together))
    processes = [
        subprocess.Popen([*CLI, "ingest", str(together), *common, "--shard", f"{i}/3"], stderr=subprocess.PIPE)
        for i in range(3)
    ]
    assert [p.wait() for p in processes] == [0, 0, 0], [p.stderr.read()[-2000:] for p in processes]
    assert rows(corpusdb.open(str(together)), "*") == want


def test_memory_filesystem_inputs_and_database(corpus_dir):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/inputs/bible.jsonl", (corpus_dir / "bible.jsonl").read_bytes())
    memory.pipe("/inputs/git.jsonl.gz", gzip.compress((corpus_dir / "git-docs.jsonl").read_bytes()))
    db = corpusdb.init("memory://membase/db")
    report = db.ingest(["memory://inputs/"], source="mem", progress=False)
    assert report.n_inputs == 2
    want = expected_ids([corpus_dir / "bible.jsonl", corpus_dir / "git-docs.jsonl"])
    again = corpusdb.open("memory://membase/db")
    assert {r[0] for r in rows(again, "doc_id")} == want
    assert memory.exists("/membase/db/corpusdb.json")


def test_copying_a_database_folder_keeps_it_whole(fixture_db, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fixture_db.url, copy)
    assert rows(corpusdb.open(str(copy))) == rows(fixture_db)


def test_a_rerun_with_a_new_file_never_moves_committed_documents(tmp_path, corpus_dir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "b.jsonl").write_text((corpus_dir / "bible.jsonl").read_text())
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(inputs)], source="x", meta={"file": "@file"}, progress=False)
    before = dict(db.snapshot.tables["documents"])
    # a new file that sorts first and repeats every document: nothing moves, nothing is written
    (inputs / "a.jsonl").write_text((corpus_dir / "bible.jsonl").read_text())
    report = db.ingest([str(inputs)], source="x", meta={"file": "@file"}, progress=False)
    assert report.n_inputs_done_before == 1 and report.n_docs_written == 0 and report.n_duplicates == report.n_docs_read
    assert db.snapshot.tables["documents"] == before
    assert {f for (f,) in db.sql("select distinct file from documents").fetchall()} == {str(inputs / "b.jsonl")}
