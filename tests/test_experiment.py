"""The MiniPLM experiment end to end on the fixture corpus (the pipeline, not the effect's sign)."""

from __future__ import annotations

import json

import pytest

import corpusdb
from tests.conftest import CORPUS, ingest_per_source
from corpusdb.train.experiment import SUBSETS, parse_args, run

QUICK = ["--set", "pool_mb=0", "--set", "teacher_steps=20", "--set", "reference_steps=10", "--set", "student_steps=10",
         "--set", "seq_len=64", "--set", "vocab_size=400", "--set", "eval_docs_per_source=5", "--set", "num_workers=0"]


def test_cpu_preset_runs_the_whole_recipe(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    out = tmp_path / "results"
    config = parse_args(["--db", db.url, "--out", str(out), *QUICK])
    assert config.student_steps == 10 and config.seeds == [0, 1] and config.teacher_size == "small"
    results = run(config)

    assert set(results["subsets"]) == set(SUBSETS)
    splits = results["splits"]
    assert splits["train"]["documents"] + splits["heldout"]["documents"] == splits["pool"]["documents"] == 357
    assert 0 < splits["reference_slice"]["documents"] < splits["train"]["documents"] / 5
    reopened = corpusdb.open(db.url)
    # every subset holds alpha of the training split's bytes, overshooting by less than one document
    budget = config.alpha * splits["train"]["bytes"]
    largest = reopened.sql("select max(n_bytes) from exp_results_train").fetchall()[0][0]
    for name, subset in results["subsets"].items():
        assert len(subset["runs"]) == 2 and 0 < subset["bits_per_byte_mean"] < 12, name
        assert budget <= subset["bytes"] < budget + largest, name
    assert reopened.sql("select count(distinct model) from scores").fetchall() == [(2,)]
    # held-out clusters never reach training
    leak = reopened.sql("select count(*) from exp_results_train t join exp_results_heldout h using (cluster)").fetchall()
    assert leak == [(0,)]
    uniform = [r["bits_per_byte"] for r in results["subsets"]["uniform"]["runs"]]
    difference = results["subsets"]["difference"]
    gaps = [r["bits_per_byte"] - u for r, u in zip(difference["runs"], uniform)]
    assert abs(difference["paired_gap_mean"] - sum(gaps) / 2) < 1e-12 and difference["seeds_better"] == sum(g < 0 for g in gaps)
    table = (out / "results.md").read_text()
    assert "| paired by seed | seeds better |" in table
    assert all(f"| {name} |" in table for name in SUBSETS) and (out / "results.png").stat().st_size > 5000
    assert json.loads((out / "results.json").read_text())["subsets"]["difference"]["runs"] == results["subsets"]["difference"]["runs"]

    logs = {p: p.read_text() for p in out.glob("**/metrics.jsonl")}
    assert len(logs) == 2 + 2 * len(SUBSETS)  # teacher, reference, and two seeds per subset
    again = run(config)  # every stage is done: nothing is trained or scored again
    assert {p: p.read_text() for p in out.glob("**/metrics.jsonl")} == logs
    assert again["subsets"]["curriculum"]["runs"] == results["subsets"]["curriculum"]["runs"]

    # the same folder with other settings would reuse students trained on other subsets: refused
    with pytest.raises(ValueError, match="holds an experiment with other settings \\(budget: 'bytes' -> 'docs'\\)"):
        run(parse_args(["--db", db.url, "--out", str(out), *QUICK, "--set", "budget=docs"]))


def test_instances_unit_with_a_pretrained_teacher(tmp_path, tiny_models):
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    out = tmp_path / "inst"
    config = parse_args(["--db", db.url, "--out", str(out), "--teacher", str(tiny_models["gpt2"]), *QUICK,
                         "--set", "unit=instances", "--set", "seeds=0", "--set", "score_context=32", "--set", "score_stride=24"])
    results = run(config)
    reopened = corpusdb.open(db.url)
    units = {name: entry["unit"] for name, entry in reopened.snapshot.models.items()}
    assert units == {"exp_inst_teacher": "instances", "exp_inst_reference": "instances"}
    assert reopened.snapshot.models["exp_inst_teacher"]["context"] == 32  # shorter than the teacher's own 64
    train_instances = reopened.sql("select count(*), sum(n_bytes) from exp_inst_train_instances").fetchall()[0]
    assert reopened.sql("select max(n_tokens) from instances").fetchall() == [(64,)]  # seq_len tokens of the students' BPE
    largest = reopened.sql("select max(n_bytes) from exp_inst_train_instances").fetchall()[0][0]
    for name, subset in results["subsets"].items():
        assert config.alpha * train_instances[1] <= subset["bytes"] < config.alpha * train_instances[1] + largest, name
    assert "| subset | instances |" in (out / "results.md").read_text()
    assert results["models"]["teacher"]["bits_per_byte"] > 0
