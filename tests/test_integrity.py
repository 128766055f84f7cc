"""Integrity: only corpusdb writes a database's files (issue 26)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli
from tests.views_fixture import build


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


REFUSED = "statements are refused: SQL over a database only reads (a copy into its folder would replace committed parts)"


def test_ad_hoc_sql_cannot_write_the_databases_files(tmp_path):
    db = build(tmp_path / "db")
    folder = tmp_path / "db"
    part = db.parts("documents")[0]
    before = files_of(folder)
    outside = tmp_path / "mine"
    outside.mkdir()
    runner = CliRunner()
    attacks = [
        f"copy (select * from documents limit 1) to '{part}' (format parquet)",  # replace a committed part
        f"copy (select '{{}}' as x) to '{folder / '_versions' / '00000000000000000099.json'}'",  # forge a version
        f"select 1; copy (select * from documents) to '{folder / 'documents' / 'part-new.parquet'}'",
        f"copy (select 1 as x) to '{outside / 'x.csv'}'",  # a folder opened with --allow stays read-only too
        "attach ':memory:' as other",
        f"export database '{outside / 'dump'}'",
    ]
    for attack in attacks:
        for command in (["sql", db.url, attack, "--allow", str(outside)],):
            result = runner.invoke(cli, command)
            assert result.exit_code == 1 and REFUSED in result.output and result.output.count("\n") == 1, (attack, result.output)
        shell = runner.invoke(cli, ["shell", db.url, "--allow", str(outside)], input=attack + ";\nselect count(*) as n from documents;\n")
        assert REFUSED in shell.stderr and shell.stdout.endswith("n\n-\n7\n(1 row)\n"), (attack, shell.output)
    with pytest.raises(corpusdb.QueryError, match="copy statements are refused"):
        corpusdb.open(db.url).sql(f"copy (select 1) to '{outside / 'y.csv'}'")
    assert files_of(folder) == before and list(outside.iterdir()) == []
    assert corpusdb.open(db.url).sql("select count(*) from documents").fetchall() == [(7,)]
    # reads still work, and --unsafe is the explicit way out for SQL one typed oneself
    assert runner.invoke(cli, ["sql", db.url, "select count(*) as n from documents"]).output.endswith("7\n(1 row)\n")
    result = runner.invoke(cli, ["sql", db.url, f"copy (select doc_id from documents) to '{outside / 'ids.csv'}'", "--unsafe"])
    assert result.exit_code == 0 and len((outside / "ids.csv").read_text().splitlines()) == 8


@pytest.mark.s3
def test_a_long_lived_reader_on_s3_sees_what_another_process_commits(s3_options, bucket, tmp_path):
    import json
    import subprocess
    import sys

    url = f"s3://{bucket}/db"
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"first batch {i}"}) + "\n" for i in range(5)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": f"second batch {i}"}) + "\n" for i in range(7)))
    corpusdb.init(url, storage_options=s3_options).ingest([str(tmp_path / "a.jsonl")], progress=False, storage_options={})
    reader = corpusdb.open(url, storage_options=s3_options)
    assert reader.sql("select count(*) from documents").fetchall() == [(5,)]
    reader.location.fs.find(f"{bucket}/db")  # anything in this process that lists the folders: fsspec caches what it saw
    script = ("import json, sys, corpusdb; corpusdb.open(sys.argv[1], storage_options=json.loads(sys.argv[2]))"
              ".ingest([sys.argv[3]], progress=False, storage_options={})")
    writer = subprocess.run([sys.executable, "-c", script, url, json.dumps(s3_options), str(tmp_path / "b.jsonl")],
                            capture_output=True, text=True)
    assert writer.returncode == 0, writer.stderr
    assert corpusdb.open(url, storage_options=s3_options).sql("select count(*) from documents").fetchall() == [(12,)]
    reader.refresh()
    assert reader.sql("select count(*) from documents").fetchall() == [(12,)]
