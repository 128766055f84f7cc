"""`make demo`'s MiniPLM steps (`corpusdb.train.demo`) on the fixture corpus, with a tiny teacher instead of SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_the_readme_quotes_the_figures_make_demo_recorded(tmp_path):
    """`make demo` records its corpus's figures in results/demo_figures.json; the README must quote them."""
    from corpusdb.ingest.demo_figures import figures, sentence

    root = Path(__file__).resolve().parent.parent
    recorded = json.loads((root / "results" / "demo_figures.json").read_text())
    readme = " ".join((root / "README.md").read_text().split())
    assert f"With every package installed {sentence(recorded)}" in readme
    # and the figures are what they say, on a real database: the fixture corpus with two near-copies added
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    text = db.sql("select text from documents order by doc_id limit 1").fetchall()[0][0]
    (tmp_path / "copies.jsonl").write_text("".join(json.dumps({"text": text + suffix}) + "\n" for suffix in (" again", " once more")))
    db.ingest([str(tmp_path / "copies.jsonl")], source="copies", progress=False)
    db.minhash(workers=1, progress=False)
    found = figures(corpusdb.open(db.url))
    n, n_bytes, n_sources = db.sql("select count(*), sum(n_bytes), count(distinct source) from documents").fetchall()[0]
    assert found == {"documents": n, "bytes": n_bytes, "sources": n_sources, "near_duplicates": found["near_duplicates"]}
    assert found["near_duplicates"] >= 2
    assert sentence(found).startswith(f"the demo corpus is {n:,} documents, {n_bytes / 1e6:.1f} MB of text in {n_sources} sources")
