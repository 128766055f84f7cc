"""`make demo`'s MiniPLM steps (`corpusdb.train.demo`) on the fixture corpus, with a tiny teacher instead of SmolLM2."""

from __future__ import annotations

import json

import corpusdb
from tests.conftest import CORPUS, ingest_per_source
from corpusdb.train.demo import main


def test_demo_steps_select_instances_and_show_them(tmp_path, tiny_models, capsys):
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    out = tmp_path / "miniplm"
    args = ["--db", db.url, "--out", str(out), "--teacher", str(tiny_models["gpt2"]), "--teacher-name", "teacher",
            "--pool-mb", "0.15", "--sample-kb", "40", "--reference-mb", "0.3", "--reference-size", "tiny", "--reference-steps", "6",
            "--vocab-size", "400", "--tokens", "48", "--no-progress"]
    main(args)
    printed = capsys.readouterr().out
    db = corpusdb.open(db.url)
    n = db.sql("select count(*) from demo_sample_instances").fetchall()[0][0]
    assert n > 50 and db.sql("select count(*) from demo_refined").fetchall()[0][0] == -(-n // 2)
    # the sample and the reference's slice do not overlap; the scored instances hold at most 40 kB, from many documents
    assert db.sql("select count(*) from demo_sample s join demo_reference_slice r using (doc_id)").fetchall() == [(0,)]
    assert 0 < db.sql("select sum(n_bytes) from demo_sample").fetchall()[0][0] <= 150_000
    assert 30_000 < db.sql("select sum(n_bytes) from demo_sample_instances").fetchall()[0][0] <= 40_000
    assert db.sql("select count(distinct doc_id) from demo_sample_instances").fetchall()[0][0] > 20
    assert "$ corpusdb instances" in printed and "$ corpusdb score" in printed and "--unit instances" in printed
    assert "Top three (kept first):" in printed and "Bottom three (dropped first):" in printed
    top = printed.split("Top three (kept first):")[1].splitlines()[1:4]
    assert all(line.startswith("  +") or line.startswith("  -") for line in top)
    assert "<img" in (out / "report.html").read_text()
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert sum(p["rows"] for p in manifest["parts"]) == -(-n // 2)
    main(args)  # a re-run reuses what is done (instances, scores, the reference) and prints the same ranking
    again = capsys.readouterr().out
    assert again.split("Top three (kept first):")[1] == printed.split("Top three (kept first):")[1]
    assert "scored 0 instances" in again
