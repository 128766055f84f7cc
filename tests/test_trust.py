"""Selections you can trust: one regression test per case of the trust issue that is not covered by a
module's own tests (scores: test_score; policies: test_views; concurrency and versions: test_versions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

import corpusdb
from tests.conftest import export_files
from corpusdb.cli import cli
from corpusdb.errors import ExportError, QueryError
from tests.views_fixture import build


@pytest.fixture
def db(tmp_path) -> corpusdb.Database:
    return build(tmp_path / "db")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_case_1_an_export_never_deletes_a_users_file(db, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "part-of-my-thesis.txt").write_text("years of work")
    result = invoke("export", db.url, "documents", str(existing), "--no-progress")
    assert result.exit_code == 1
    assert result.output == (f"Error: {existing} holds 1 file(s) corpusdb did not write (e.g. 'part-of-my-thesis.txt'); "
                             "export into a new or empty folder (nothing there was changed)\n")
    result = invoke("export", db.url, "documents", str(existing), "--no-progress", "--overwrite")
    assert result.exit_code == 1 and "corpusdb did not write" in result.output
    assert [p.name for p in existing.iterdir()] == ["part-of-my-thesis.txt"]
    assert (existing / "part-of-my-thesis.txt").read_text() == "years of work"


def test_case_2_a_redefined_view_is_never_exported_or_streamed_stale(db, tmp_path, tiny_models):
    from corpusdb.train import ViewDataset

    db.create_view("refined", "select * from difference('teacher', 'reference', alpha := 1, missing := 'exclude')")
    out = tmp_path / "refined"
    assert invoke("export", db.url, "refined", str(out), "--no-progress").output.startswith("exported 5 rows")
    streamed = ViewDataset(corpusdb.open(db.url), "refined", tokenizer=str(tiny_models["gpt2"]), seq_len=8, shuffle=False,
                           cache_dir=str(tmp_path / "cache"))
    assert streamed.blocks.manifest["n_rows"] == 5
    result = invoke("view", "create", db.url, "refined", "--replace", "--sql",
                    "select * from difference('teacher', 'reference', alpha := 0.4, missing := 'exclude')")
    assert result.exit_code == 0
    result = invoke("export", db.url, "refined", str(out), "--no-progress")
    assert result.exit_code == 1 and "already holds another export ('refined' at version" in result.output
    result = invoke("export", db.url, "refined", str(out), "--no-progress", "--overwrite")
    assert result.output.startswith("exported 2 rows")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["definitions"]["refined"] == "select * from difference('teacher', 'reference', alpha := 0.4, missing := 'exclude')"
    assert set(manifest["models"]) == {"teacher", "reference"} and manifest["models"]["teacher"]["content_hash"] == "fixture-teacher"
    streamed = ViewDataset(corpusdb.open(db.url), "refined", tokenizer=str(tiny_models["gpt2"]), seq_len=8, shuffle=False,
                           cache_dir=str(tmp_path / "cache"))
    assert streamed.blocks.manifest["n_rows"] == 2
    # the same selection again is reused, and says so
    result = invoke("export", db.url, "refined", str(out), "--no-progress")
    assert result.output.startswith("already exported (same selection, data and settings): 2 rows")


def test_case_4_a_misspelled_score_name_is_an_error_everywhere(db, tmp_path):
    bad = "difference('teachr', 'reference')"
    message = "Error: Invalid Input Error: difference: no scores named 'teachr'; scored models: reference, teacher\n"
    for args in (["sql", db.url, f"select * from {bad}"], ["view", "stats", db.url, bad],
                 ["export", db.url, bad, str(tmp_path / "out"), "--no-progress"],
                 ["view", "create", db.url, "refined", "--sql", f"select * from {bad}"]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        assert result.output.endswith(message.removeprefix("Error: ")), (args, result.output)
    assert not (tmp_path / "out").exists() and "refined" not in corpusdb.open(db.url).snapshot.views
    for bad in ("curriculum('teachr')", "filter_loss('teachr', max_loss := 1)"):
        result = invoke("sql", db.url, f"select * from {bad}")
        assert result.exit_code == 1 and "no scores named 'teachr'; scored models: reference, teacher" in result.output
    # a view that is valid but selects nothing is saved, with a warning
    result = CliRunner().invoke(cli, ["view", "create", db.url, "nothing", "--sql", "select * from documents where n_bytes > 1e9"])
    assert result.exit_code == 0 and result.stdout.startswith("view 'nothing' saved (0 rows now)")
    assert result.stderr == "Warning: view 'nothing' selects no rows now; check its filters and score names\n"
    with pytest.warns(UserWarning, match="view 'nothing2' selects no rows now"):
        db.create_view("nothing2", "select * from documents where false")


def test_case_5_report_parameters_are_checked(db, tmp_path):
    for alpha in ("-1", "1.5", "0"):
        result = invoke("report", db.url, "--out", str(tmp_path / "r.html"), "--alpha", alpha)
        assert result.exit_code == 2 and f"Invalid value for '--alpha': {float(alpha)} is not in the range 0<x<=1." in result.output
    assert not (tmp_path / "r.html").exists()


def test_case_7_export_targets_and_empty_score_names(db, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    result = invoke("export", db.url, "documents", str(target), "--no-progress")
    assert result.output == f"Error: {target} is a file; export into a folder (a new or empty one)\n"
    # a failed export leaves no folder behind
    failing = "select *, case when n_bytes >= 20 then error('boom') end as x from documents order by n_bytes"
    result = invoke("export", db.url, failing, str(tmp_path / "new"), "--no-progress", "--part-size-mb", "0.00001")
    assert result.exit_code == 1 and result.output == "Error: Invalid Input Error: boom\n"
    assert not (tmp_path / "new").exists()
    # ... and an existing export as it was
    assert invoke("export", db.url, "dedup", str(tmp_path / "old"), "--no-progress").exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    result = invoke("export", db.url, failing, str(tmp_path / "old"), "--no-progress", "--overwrite", "--part-size-mb", "0.00001")
    assert result.exit_code == 1 and {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
    # killed while replacing it: the old export is still whole and readable, and a re-run finishes the job
    script = (f"import corpusdb; corpusdb.open({db.url!r}).view('documents').export({str(tmp_path / 'old')!r}, "
              "overwrite=True, part_size_mb=0.00001)")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**__import__("os").environ, "CORPUSDB_FAILPOINT": "export.after_part=2"})
    assert killed.returncode == 75, killed.stderr
    assert json.loads((tmp_path / "old" / "manifest.json").read_bytes()) == json.loads(before["manifest.json"])
    from corpusdb.train.dataset import Blocks

    assert len(Blocks(str(tmp_path / "old"))) == 1 and Blocks(str(tmp_path / "old")).read(0)[0].size == 5
    done = db.view("documents").export(str(tmp_path / "old"), overwrite=True, part_size_mb=0.00001)
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == export_files(done)
    # a score name without rows is listed by `models` and does not break the report
    db.commit("fixture", lambda s: s.models.update({"unscored": {"model": "x", "content_hash": "y"}}))
    listed = json.loads(invoke("models", db.url, "--format", "json").output)
    assert [(m["name"], m["n_documents"]) for m in listed] == [("reference", 6), ("teacher", 7), ("unscored", 0)]
    result = invoke("report", db.url, "--out", str(tmp_path / "report.html"))
    assert result.exit_code == 0, result.output
    assert "Score names without scores: unscored." in (tmp_path / "report.html").read_text()


def test_case_10_opening_a_database_runs_nothing_but_queries(db, tmp_path):
    pwned = tmp_path / "pwned.csv"
    for sql, message in [
        (f"select 1 as x; copy (select 'x') to '{pwned}'", "must be exactly one select statement, not 2 statements (select, copy)"),
        (f"copy (select 'x') to '{pwned}'", "must be exactly one select statement, not a copy statement"),
        (f"attach '{tmp_path / 'other.db'}'", "not an attach statement"),
        ("install httpfs", "not a load statement"),
        ("select * from read_csv('/etc/passwd')", 'Permission Error: Cannot access file "/etc/passwd"'),
    ]:
        result = invoke("view", "create", db.url, "evil", "--sql", sql)
        assert result.exit_code == 1 and message in result.output, (sql, result.output)
    assert not pwned.exists() and not (tmp_path / "other.db").exists()
    # a file dropped into views/ is never executed, and `view list` says so
    (Path(db.url) / "views").mkdir(exist_ok=True)
    (Path(db.url) / "views" / "evil.sql").write_text(f"select 1 as x; copy (select 'x') to '{pwned}'")
    result = invoke("stats", db.url)
    assert result.exit_code == 0 and not pwned.exists()
    listed = invoke("view", "list", db.url, "--format", "json")
    ignored = [row for row in json.loads(listed.output) if row["name"] == "evil"]
    assert ignored and ignored[0]["kind"] == "ignored file" and "is not a committed view and never runs" in ignored[0]["description"]
    # a version edited by hand to hold a copy statement is held to the same rule: not run, reported broken
    db.commit("fixture", lambda s: s.views.update({"sneaky": {"sql": f"select 1; copy (select 'x') to '{pwned}'"}}))
    reopened = corpusdb.open(db.url)
    assert reopened.broken_views == ["sneaky"] and not pwned.exists()
    assert any(r["name"] == "sneaky" and r["kind"] == "user view (broken)" for r in reopened.views())
    with pytest.raises(QueryError, match="view 'sneaky' is saved but does not run over this version"):
        reopened.sql("select * from sneaky")
    # confined DuckDB: no other files, not even through a view; the user's own SQL may ask for more
    with pytest.raises(QueryError, match="pass --allow PATH"):
        reopened.sql("select * from read_csv('/etc/passwd')").fetchall()
    csv = tmp_path / "labels.csv"
    csv.write_text("doc_id,label\n1,a\n")
    assert invoke("sql", db.url, f"select count(*) as n from '{csv}'", "--allow", str(csv), "--format", "csv").output == "n\n1\n"
    assert invoke("sql", db.url, f"select count(*) as n from '{csv}'", "--unsafe", "--format", "csv").output == "n\n1\n"
    with pytest.raises(duckdb.Error):
        reopened.con.execute("set enable_external_access = true")


def test_case_11_a_manifest_names_only_files_of_its_own_folder(db, tmp_path):
    from corpusdb.train import ViewDataset

    out = tmp_path / "export"
    manifest = db.view("documents").export(str(out))
    secret = tmp_path / "secret.parquet"
    secret.write_bytes((out / manifest["parts"][0]["file"]).read_bytes())
    for name in ("../secret.parquet", str(secret), "sub/part.parquet", ".."):
        manifest["parts"][0]["file"] = name
        (out / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ExportError, match=f"the manifest names {name!r}, which is not a file of its own folder"):
            ViewDataset.from_export(str(out), tokenizer=None, seq_len=8)
        with pytest.raises(ExportError, match="not a file of its own folder"):
            db.view("documents").export(str(out))


def test_python_errors_name_the_fix(db):
    with pytest.raises(QueryError, match="difference: alpha must be in"):
        db.view("difference('teacher', 'reference', alpha := 2)").stats()
    result = subprocess.run([sys.executable, "-m", "corpusdb.cli", "sql", db.url, "select * from difference('t', 'r')"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
