"""Bad input gets one line naming the file, the line and the fix, and never leaves a half table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli
from tests.conftest import rows

SKIP = "or pass --on-error skip to skip and count bad records"


@pytest.fixture
def bad_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.jsonl").write_bytes(
        b'{"text": "good one"}\n{"text": "broken\n{"body": "x", "id": 3}\n{"text": 5}\n{"text": "caf\xe9"}\n[1, 2]\n'
    )
    (folder / "latin1.txt").write_bytes(b"caf\xe9")
    (folder / "notes.xyz").write_text("what format am I?")
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), folder / "nocolumn.parquet")
    pq.write_table(pa.table({"text": ["a", None]}), folder / "nulls.parquet")
    return folder


def ingest(tmp_path: Path, *args: str):
    return CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), *args, "--no-progress"])


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "bad.jsonl",
            "{dir}/bad.jsonl line 2: malformed JSON (unexpected control character in string: line 1 column 17 (char 16)); "
            f"fix the line {SKIP}",
        ),
        ("latin1.txt", f"{{dir}}/latin1.txt: not valid UTF-8 (byte 0xe9 at offset 3); re-encode the file as UTF-8 {SKIP}"),
        ("notes.xyz", "{dir}/notes.xyz: cannot tell the format from the file name; pass --format jsonl|parquet|text"),
        ("nothere.jsonl", "{dir}/nothere.jsonl: not found; check the path (and bucket name)"),
        ("nomatch*.jsonl", "{dir}/nomatch*.jsonl: matches no files; check the path or glob"),
        (
            "nocolumn.parquet",
            "{dir}/nocolumn.parquet: no column 'text' (columns: body, n); name the text column with --text-field",
        ),
        ("nulls.parquet", f"{{dir}}/nulls.parquet row 2: column 'text' is null; clean the column {SKIP}"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path, bad_dir, name, message):
    result = ingest(tmp_path, str(bad_dir / name))
    assert result.exit_code == 1
    assert result.output == f"Error: {message.format(dir=bad_dir)}\n"
    assert not (tmp_path / "db").exists()  # the failed first ingest leaves no empty database behind


def test_each_kind_of_bad_record_has_its_message(tmp_path, bad_dir):
    lines = (bad_dir / "bad.jsonl").read_bytes().splitlines(keepends=True)
    expected = {
        2: "malformed JSON (unexpected control character in string: line 1 column 17 (char 16)); fix the line",
        3: "no field 'text' (fields: body, id); name the text field with --text-field",
        4: "field 'text' is int, not a string; name a string field with --text-field",
        5: "not valid UTF-8 (byte 0xe9 at offset 13); re-encode the file as UTF-8",
        6: "not a JSON object; write one object per line",
    }
    for number, message in expected.items():
        single = tmp_path / f"line{number}.jsonl"
        single.write_bytes(lines[0] + lines[number - 1])
        result = CliRunner().invoke(cli, ["ingest", str(tmp_path / f"db{number}"), str(single), "--no-progress"])
        assert result.output == f"Error: {single} line 2: {message} {SKIP}\n"


def test_skip_mode_counts_bad_records_and_keeps_good_ones(tmp_path, bad_dir):
    result = ingest(tmp_path, str(bad_dir / "bad.jsonl"), str(bad_dir / "nulls.parquet"), "--on-error", "skip", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bad_records"] == {"malformed_json": 2, "missing_field": 1, "wrong_type": 2, "not_utf8": 1}
    assert report["n_bad_records"] == 6
    assert report["n_docs_written"] == 2
    assert sorted(r[2] for r in rows(corpusdb.open(str(tmp_path / "db")))) == ["a", "good one"]


def test_a_failing_input_removes_the_parts_it_wrote(tmp_path, corpus_dir):
    good = (corpus_dir / "fortunes.jsonl").read_text()
    path = tmp_path / "late-error.jsonl"
    path.write_text(good + '{"text": oops}\n')
    result = ingest(tmp_path, str(path), "--part-size-mb", "0.005")
    assert result.exit_code == 1
    assert f"{path} line {good.count(chr(10)) + 1}: malformed JSON" in result.output
    assert not (tmp_path / "db").exists()  # nothing committed: no part, and no empty database left behind
    corpusdb.init(str(tmp_path / "db"))
    result = ingest(tmp_path, str(path), "--part-size-mb", "0.005")  # into a database that was there: it stays
    assert result.exit_code == 1 and not list((tmp_path / "db" / "documents").glob("*.parquet"))
    assert corpusdb.open(str(tmp_path / "db")).version == 0



def test_an_input_read_whole_is_committed_when_the_next_fails_at_once(tmp_path):
    """Small inputs share a part; one that fails on its first line still leaves those read before it done."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text('{"text": "first input"}\n')
    (inputs / "b.jsonl").write_text('{"text": oops}\n{"text": "never read"}\n')
    result = ingest(tmp_path, str(inputs))
    assert result.exit_code == 1 and "b.jsonl line 1: malformed JSON" in result.output
    db = corpusdb.open(str(tmp_path / "db"))
    assert [entry["url"].endswith("a.jsonl") for entry in db.snapshot.inputs.values()] == [True]
    assert [row[2] for row in rows(db)] == ["first input"]


def test_inputs_before_a_failing_one_stay_done_and_the_fixed_rerun_equals_a_clean_run(tmp_path, corpus_dir):
    # Parts and markers are written behind the parsing, across inputs: the first input's marker
    # may still be in flight when the second fails. It must land; the second's parts must not.
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = (corpus_dir / "fortunes.jsonl").read_text()
    (inputs / "a.jsonl").write_text((corpus_dir / "bible.jsonl").read_text())
    (inputs / "b.jsonl").write_text(good + '{"text": oops}\n')
    result = ingest(tmp_path, str(inputs), "--part-size-mb", "0.005")
    assert result.exit_code == 1 and "b.jsonl line" in result.output
    db = tmp_path / "db"
    snapshot = corpusdb.open(str(db)).snapshot  # a.jsonl was committed before the error was raised
    assert [entry["url"].endswith("a.jsonl") for entry in snapshot.inputs.values()] == [True]
    kept = {p.name for p in (db / "documents").glob("*.parquet")}
    assert kept == {path.rsplit("/", 1)[1] for path in snapshot.tables["documents"]}  # none of b.jsonl's parts

    (inputs / "b.jsonl").write_text(good)
    assert ingest(tmp_path, str(inputs), "--part-size-mb", "0.005").exit_code == 0
    clean = tmp_path / "clean"
    clean.mkdir()
    assert ingest(clean, str(inputs), "--part-size-mb", "0.005").exit_code == 0
    assert rows(corpusdb.open(str(db)), "*") == rows(corpusdb.open(str(clean / "db")), "*")

@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard", "3/2"], "shard 3/2 is out of range; use i/n with 0 <= i < n"),
        (["--shard", "half"], "shard 'half' is not i/n, e.g. 0/4 (shards are numbered from 0)"),
        (["--meta", "x"], "--meta 'x' is not COLUMN=FIELD, e.g. --meta url=metadata.url"),
        (["--meta", "text=body"], "meta column 'text' must be an identifier other than doc_id, n_bytes, source, text"),
        (["-o", "novalue"], "storage option 'novalue' is not KEY=VALUE, e.g. -o endpoint_url=http://127.0.0.1:8333"),
    ],
)
def test_bad_arguments_name_the_valid_choices(tmp_path, corpus_dir, args, message):
    result = ingest(tmp_path, str(corpus_dir / "bible.jsonl"), *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


def test_not_a_database_and_bad_sql(tmp_path, fixture_db):
    runner = CliRunner()
    result = runner.invoke(cli, ["sql", str(tmp_path / "nodb"), "select 1"])
    assert result.output == (
        f"Error: {tmp_path}/nodb: no corpusdb database here (no corpusdb.json); create one with `corpusdb init {tmp_path}/nodb`\n"
    )
    result = runner.invoke(cli, ["sql", fixture_db.url, "select * from zzzz"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: Catalog Error: Table with name zzzz does not exist!; "
        "tables and views: dedup, documents, instance_spans, instances, losses, minhash, models, scores, signatures\n"
    )
    result = runner.invoke(cli, ["sql", fixture_db.url, "select n_byte from documnts"])
    assert result.output == 'Error: Catalog Error: Table with name documnts does not exist!; Did you mean "documents"?\n'
    result = runner.invoke(cli, ["sql", fixture_db.url, "select n_byte from documents"])
    assert result.output == ('Error: Binder Error: Referenced column "n_byte" not found in FROM clause!; '
                             'Candidate bindings: "n_bytes", "title"\n')
    result = runner.invoke(cli, ["sql", fixture_db.url, "selct 1"])
    assert result.output == 'Error: Parser Error: syntax error at or near "selct"; LINE 1: selct 1\n'
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "corpusdb.json").write_text("{not json")
    result = runner.invoke(cli, ["stats", str(tmp_path / "broken")])
    assert result.output.startswith(f"Error: {tmp_path}/broken/corpusdb.json: not valid JSON (")
    assert result.output.endswith("); restore it from a backup\n")


def test_skip_counts_deep_json_damaged_parquet_and_empty_compressed_files_with_file_and_line(tmp_path):
    """Issue 26, item 5: each is skipped and counted like other bad records (and an error without skip)."""
    folder = tmp_path / "in"
    folder.mkdir()
    deep = '{"text": ' + "[" * 5000 + "]" * 5000 + "}"
    (folder / "deep.jsonl").write_text('{"text": "good one"}\n' + deep + '\n{"text": "good two"}\n')
    (folder / "surrogate.jsonl").write_text('{"text": "good three"}\n{"text": "bad \\ud800 x"}\n')
    pq.write_table(pa.table({"text": ["a" * 1000] * 100}), folder / "whole.parquet")
    whole = (folder / "whole.parquet").read_bytes()
    (folder / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.jsonl.gz").write_bytes(b"")
    (folder / "empty.jsonl.zst").write_bytes(b"")
    expected = {
        "deep.jsonl": "deep.jsonl line 2: malformed JSON (depth limit exceeded",
        "surrogate.jsonl": "surrogate.jsonl line 2: malformed JSON (no low surrogate in string",
        "truncated.parquet": "truncated.parquet: not a readable Parquet file (Parquet magic bytes not found in footer",
        "empty.jsonl.gz": "empty.jsonl.gz: empty gzip file (0 bytes): not valid gzip data; download or copy it again",
        "empty.jsonl.zst": "empty.jsonl.zst: empty zstd file (0 bytes): not valid zstd data; download or copy it again",
    }
    for name, message in expected.items():
        result = CliRunner().invoke(cli, ["ingest", str(tmp_path / f"db-{name}"), str(folder / name), "--no-progress"])
        assert result.exit_code == 1 and result.output.startswith(f"Error: {folder / name}") and message in result.output, result.output
        assert result.output.endswith(f"{SKIP}\n") and result.output.count("\n") == 1
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(folder), "--on-error", "skip", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "5 bad records skipped (damaged_file: 1, empty_file: 2, malformed_json: 2)" in result.output
    for message in expected.values():
        assert message in result.output
    texts = sorted(t for (t,) in corpusdb.open(str(tmp_path / "db")).sql("select text from documents").fetchall())
    assert texts == ["a" * 1000, "good one", "good three", "good two"]
