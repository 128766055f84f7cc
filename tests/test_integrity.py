"""Integrity: only corpusdb writes a database's files (issue 26)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import corpusdb
from tests.conftest import export_files
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


FOREVER = "with recursive r(n) as (select 1 union all select n + 1 from r) select n as doc_id from r"


def test_view_create_runs_a_view_for_a_bounded_time_and_says_how_to_pass_the_sql(tmp_path):
    db = build(tmp_path / "db")
    runner = CliRunner()
    result = runner.invoke(cli, ["view", "create", db.url, "forever", "--sql", FOREVER, "--check-seconds", "1"])
    assert result.exit_code == 1 and result.output == (
        "Error: view 'forever' did not finish in 1 s (a recursive CTE that never ends?), so nothing was saved; pass a "
        "larger --check-seconds, or --check-seconds 0 to save it after checking only that it binds\n")
    assert "forever" not in corpusdb.open(db.url).snapshot.views
    assert db.sql("select count(*) from documents").fetchall() == [(7,)]  # the connection still answers
    result = runner.invoke(cli, ["view", "create", db.url, "forever", "--sql", FOREVER + " limit 3", "--check-seconds", "0"])
    assert result.exit_code == 0 and "checked: one select that binds; not run" in result.output
    result = runner.invoke(cli, ["view", "create", db.url, "bad", "--sql", "select nope from documents", "--check-seconds", "0"])
    assert result.exit_code == 1 and 'Referenced column "nope" not found' in result.output  # binding is still checked
    for args, left in ((["select", "*", "from", "documents"], "'select * from documents'"), (["--sql", "select", "*", "from", "documents"], "'* from documents'")):
        result = runner.invoke(cli, ["view", "create", db.url, "short", *args])
        assert result.exit_code == 2 and "the view's SQL must be one quoted argument after --sql" in result.output and left in result.output
    result = runner.invoke(cli, ["view", "create", db.url, "short"])
    assert result.exit_code == 2 and "pass the view's select with --sql, as one quoted argument, e.g. corpusdb view create DB " \
                                      "short --sql \"select * from documents where n_bytes < 2000\"" in " ".join(result.output.split())


def test_a_replaced_part_is_caught_at_open_and_a_flipped_byte_by_verify(tmp_path):
    db = build(tmp_path / "db")
    runner = CliRunner()
    result = runner.invoke(cli, ["verify", db.url, "--no-progress"])
    assert result.exit_code == 0 and result.output.startswith("verified 5 parts (") and "of version 5: every size and content hash" in result.output
    web = next(p for p in db.parts("documents") if corpusdb.open(db.url).sql(f"select count(*) from read_parquet('{p}') where source = 'web'").fetchall()[0][0])
    original = Path(web).read_bytes()
    # a same-size change (a byte of the first data page, which an open does not read): open cannot see it, verify can
    flipped = bytearray(original)
    flipped[10] ^= 0x01
    Path(web).write_bytes(bytes(flipped))
    corpusdb.open(db.url)  # sizes match: opens
    result = runner.invoke(cli, ["verify", db.url, "--no-progress"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"damaged: {web} (documents): content hash ") and lines[0].endswith("(same size: changed in place)")
    assert lines[1] == "Error: 1 of 5 parts of version 5 are not the ones committed; restore them from a copy, or read an earlier version with --as-of"
    # a replaced part of another size: every open refuses, naming the part and the version to go back to
    Path(web).write_bytes(original[: len(original) // 2])
    with pytest.raises(corpusdb.VersionError, match=rf"version 5 lists 1 part\(s\) whose size is not the committed one \(e.g. "
                                                    rf"{web}: {len(original) // 2:,} bytes, committed {len(original):,}: replaced or "
                                                    rf"truncated since\); restore them, or read no earlier version: every one reads it"):
        corpusdb.open(db.url)
    result = runner.invoke(cli, ["sql", db.url, "select count(*) from documents"])
    assert result.exit_code == 1 and "whose size is not the committed one" in result.output
    assert "1 of 5 parts" in runner.invoke(cli, ["verify", db.url, "--no-progress"]).output  # verify reports it too
    Path(web).write_bytes(original)
    assert runner.invoke(cli, ["verify", db.url, "--no-progress"]).exit_code == 0


def test_the_way_back_is_the_newest_version_that_does_not_read_the_part(tmp_path):
    db = build(tmp_path / "db")
    part = db.parts("minhash")[0]  # committed last (version 5)
    Path(part).write_bytes(b"not the clusters")
    with pytest.raises(corpusdb.VersionError, match=r"read version 4, the newest that does not read it \(--as-of 4\)"):
        corpusdb.open(db.url)
    assert corpusdb.open(db.url, as_of=4).sql("select count(*) from documents").fetchall() == [(7,)]


def test_an_export_leaves_another_export_s_lock_in_flight_alone(tmp_path):
    """An export that ends removes a killed holder's leftover lock temporaries, never a young one: that is another
    export creating the lock right now (its hard link would then fail: "not found", as three ranks exporting one
    selection at once did under load)."""
    import os
    import time

    from corpusdb.export import LOCK, ExportLock
    from corpusdb.storage import TMP_PREFIX

    db = build(tmp_path / "db")
    out = tmp_path / "out"
    out.mkdir()
    young, old = out / f"{TMP_PREFIX}{LOCK}-{'a' * 32}", out / f"{TMP_PREFIX}{LOCK}-{'b' * 32}"
    for path in (young, old):
        path.write_text("{}")
    os.utime(old, (time.time() - 2 * ExportLock.LEASE,) * 2)
    assert db.view("documents").export(str(out))["n_rows"] == 7
    assert young.exists() and not old.exists()


def test_one_export_at_a_time_into_a_folder(tmp_path, monkeypatch, capsys):
    """Issue 26, item 7: an export waits while a live one holds the folder's lock, takes over a killed one's,
    and two real concurrent --overwrite exports (or ranks exporting one selection at once) leave a folder
    whose manifest lists exactly its parts."""
    import json
    import socket
    import subprocess
    import sys
    import threading
    import time

    from corpusdb.export import ExportLock

    db = build(tmp_path / "db")
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (out / ".corpusdb-export.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid,
                                                            "heartbeat": time.time()}))
    killer = threading.Timer(2.0, sleeper.kill)  # the live holder dies two seconds from now
    killer.start()
    started = time.perf_counter()
    try:
        assert db.view("documents").export(str(out))["n_rows"] == 7  # waited, then took over the dead one's lock
    finally:
        killer.cancel()
        sleeper.kill()
        sleeper.wait()
    assert time.perf_counter() - started >= 2.0
    assert f"waiting for the export writing into {out} (host {socket.gethostname()}, pid {sleeper.pid}) to finish" in capsys.readouterr().err
    # a lock from another machine is waited for until its heartbeat is older than the lease, then taken over
    monkeypatch.setattr(ExportLock, "LEASE", 2.0)
    (out / ".corpusdb-export.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "heartbeat": time.time()}))
    started = time.perf_counter()
    assert db.view("filter_source(['web'])").export(str(out), overwrite=True)["n_rows"] == 3
    assert time.perf_counter() - started >= 1.5 and not (out / ".corpusdb-export.lock").exists()
    # processes at once, each replacing the export, or each making the same one (ranks): all succeed, one at a time,
    # and the manifest names exactly the parts there
    script = ("import sys, corpusdb; corpusdb.open(sys.argv[1]).view(sys.argv[2]).export(sys.argv[3], overwrite=sys.argv[4] == '1', "
              "part_size_mb=0.00001)")
    for folder, views, overwrite in ((out, ("documents", "filter_source(['books'])"), "1"), (tmp_path / "ranks", ("documents",) * 3, "0")):
        runs = [subprocess.Popen([sys.executable, "-c", script, db.url, view, str(folder), overwrite], stderr=subprocess.PIPE, text=True)
                for view in views]
        results = [(run.wait(), run.stderr.read()) for run in runs]
        assert all(code == 0 for code, _ in results), results
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sorted(p.name for p in folder.iterdir()) == export_files(manifest)
