"""The MiniPLM experiment end to end on the fixture corpus (the pipeline and its statistics, not the effect's sign)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import corpusdb
from tests.conftest import CORPUS, ingest_per_source
from corpusdb.train.experiment import SUBSETS, parse_args, run
from corpusdb.train.report import gaps

# the fixture corpus holds 0.37 MB: a small pool, reference set and held-out set, tiny models; students for four
# of the seven subsets (every subset is still made and checked; a student's training is the same code for each)
TRAINED = ["uniform", "difference", "uniform_length_matched", "curriculum"]
QUICK = ["--set", f"subsets={','.join(TRAINED)}","--set", "pool_mb=0.15", "--set", "reference_mb=0.08", "--set", "heldout_mb=0.04", "--set", "heldout_max_doc=0.2",
         "--set", "teacher_steps=10", "--set", "reference_steps=6", "--set", "student_steps=6", "--set", "seq_len=64",
         "--set", "vocab_size=400", "--set", "num_workers=0", "--set", "seeds=0,1"]


def words13(text: str) -> set[tuple[str, ...]]:
    """Word 13-grams, words as runs of letters and digits, lower-cased (the library's normalisation only merges more)."""
    words = [w.lower() for w in re.findall(r"[^\W_]+", text)]
    return {tuple(words[i:i + 13]) for i in range(len(words) - 12)}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    db = corpusdb.init(str(root / "db"))
    ingest_per_source(db, CORPUS)
    out = root / "results"
    config = parse_args(["--db", db.url, "--out", str(out), *QUICK])
    return db, out, config, run(config)


def test_splits_are_disjoint_clusters_and_the_heldout_shares_no_13_gram(experiment):
    db, out, config, results = experiment
    db = corpusdb.open(db.url)
    members = {split: set(db.sql(f"select cluster from exp_results_{split}").fetchall()) for split in ("pool", "reference_slice", "heldout")}
    assert all(members.values())
    assert not (members["pool"] & members["reference_slice"] or members["pool"] & members["heldout"]
                or members["reference_slice"] & members["heldout"])
    # no held-out document shares a word 13-gram with the pool or the reference set
    seen = set()
    for (text,) in db.sql("select text from exp_results_pool union all select text from exp_results_reference_slice").fetchall():
        seen |= words13(text)
    heldout = db.sql("select source, n_bytes, text from exp_results_heldout").fetchall()
    assert not any(words13(text) & seen for _, _, text in heldout)
    # every source trained on is evaluated; no held-out document is more than heldout_max_doc of the set
    assert {s for s, _, _ in heldout} == {s for (s,) in db.sql("select distinct source from exp_results_pool").fetchall()}
    assert max(n for _, n, _ in heldout) <= config.heldout_max_doc * config.heldout_mb * 1e6
    splits = results["splits"]
    assert splits["heldout"]["documents"] == len(heldout) == sum(results["heldout"]["documents"].values())
    assert splits["pool"]["bytes"] >= config.pool_mb * 1e6 and splits["reference_slice"]["bytes"] >= config.reference_mb * 1e6


def test_every_subset_is_one_ranking_cut_at_the_same_student_tokens(experiment):
    db, out, config, results = experiment
    db = corpusdb.open(db.url)
    budget = results["budget"]["budget"]
    ranked = db.sql("select doc_id, score, teacher_per_byte, reference_loss_per_byte, student_tokens from exp_results_ranked_train").fetchall()
    assert results["budget"]["total"] == sum(r[4] for r in ranked) and budget == config.alpha * results["budget"]["total"]
    largest = max(r[4] for r in ranked)
    by_id = {r[0]: r for r in ranked}
    # the ranking's score is the library policy's: difference_bytes at alpha 1 over the training split
    library = dict(db.sql("select doc_id, score from difference_bytes('exp_results_teacher', 'exp_results_reference', "
                          "alpha := 1.0, docs := 'exp_results_train')").fetchall())
    assert library == {i: r[1] for i, r in by_id.items()}
    for arm, column in (("difference", 1), ("teacher_likelihood", 2), ("reference_loss", 3)):
        kept = {i for (i,) in db.sql(f"select doc_id from exp_results_{arm}").fetchall()}
        order = sorted(by_id, key=lambda i: (-by_id[i][column], i))
        tokens = np.cumsum([by_id[i][4] for i in order])
        expected = {i for i, before in zip(order, tokens - [by_id[i][4] for i in order]) if before < budget}
        assert kept == expected, arm
        assert budget <= sum(by_id[i][4] for i in kept) < budget + largest, arm
    draws = [{i for (i,) in db.sql(f"select doc_id from exp_results_uniform_s{s}").fetchall()} for s in config.seeds]
    assert draws[0] != draws[1]  # uniform is drawn again for every seed
    for seed in config.seeds:  # length-matched: as many units of each length stratum as the difference subset
        count = "select l.length_bin, count(*) from {} v join exp_results_lengths l using (doc_id) group by 1 order by 1"
        assert db.sql(count.format(f"exp_results_uniform_length_matched_s{seed}")).fetchall() == \
            db.sql(count.format("exp_results_difference")).fetchall()
    curriculum = db.sql("select doc_id, loss_per_byte from exp_results_curriculum").fetchall()
    assert {i for i, _ in curriculum} == {i for (i,) in db.sql("select doc_id from exp_results_difference").fetchall()}
    assert [loss for _, loss in curriculum] == sorted(loss for _, loss in curriculum)


def test_results_gaps_and_rerun(experiment):
    db, out, config, results = experiment
    assert set(results["subsets"]) == set(TRAINED) and set(TRAINED) < set(SUBSETS)
    for name, subset in results["subsets"].items():
        assert len(subset["runs"]) == 2 and 0 < subset["bits_per_byte_mean"] < 12, name
    # the gaps are the summed held-out losses of the seed's two students, per byte, from the per-document file
    nats = json.loads((out / "heldout_nats.json").read_text())
    n_bytes = np.array(nats["n_bytes"], dtype=float)
    for arm in TRAINED[1:]:
        gap = results["subsets"][arm]["gap"]
        per_seed = [(np.sum(a) - np.sum(u)) / n_bytes.sum() / math.log(2) for a, u in zip(nats["nats"][arm], nats["nats"]["uniform"])]
        assert gap["all"]["per_seed"] == pytest.approx(per_seed, abs=1e-6)
        assert gap["all"]["ci95"][0] <= gap["all"]["mean"] <= gap["all"]["ci95"][1]
        assert gap["all"]["seeds_better"] == sum(g < 0 for g in per_seed)
    text = (out / "results.json").read_text()
    assert str(out.parent) not in text and '"/' not in text  # no local paths
    table = (out / "results.md").read_text()
    assert "| gap to uniform [95%] | seeds better |" in table and all(f"| {name} |" in table for name in TRAINED)
    assert (out / "results.png").stat().st_size > 5000

    logs = {p: p.read_text() for p in out.glob("**/metrics.jsonl")}
    assert len(logs) == 2 + 2 * len(TRAINED)  # teacher, reference, and two seeds per subset trained
    again = run(config)  # every stage is done: nothing is trained or scored again
    assert {p: p.read_text() for p in out.glob("**/metrics.jsonl")} == logs
    assert again["subsets"]["curriculum"]["runs"] == results["subsets"]["curriculum"]["runs"]
    # the same folder with other settings would reuse students trained on other subsets: refused
    with pytest.raises(ValueError, match="holds an experiment with other settings \\(budget: 'tokens' -> 'bytes'\\)"):
        run(parse_args(["--db", db.url, "--out", str(out), *QUICK, "--set", "budget=bytes"]))


def test_document_losses_equal_the_stream_evaluator_one_document_at_a_time(experiment):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corpusdb.train.evaluation import document_nats
    from corpusdb.train.pretrain import evaluate

    db, out, config, _ = experiment
    model_dir = out / "students" / "difference-seed0" / "model"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    texts = [t for (t,) in corpusdb.open(db.url).sql("select text from exp_results_heldout order by n_bytes desc limit 12").fetchall()]
    batched = document_nats(model, tokenizer, texts, config.seq_len, "cpu", batch_size=5)
    for text, nats in zip(texts, batched):
        alone = evaluate(model, tokenizer, [text], config.seq_len, "cpu", None)
        assert nats == pytest.approx(alone["eval_loss_per_byte"] * alone["eval_bytes"], rel=1e-5)


def test_bootstrap_interval_of_the_gaps():
    rng = np.random.default_rng(1)
    n_bytes = rng.integers(100, 1000, size=60).astype(float)
    sources = np.array(["a", "b", "c"] * 20)
    uniform = rng.normal(3.0, 0.3, size=(5, 60)) * n_bytes
    # every document exactly 0.1 bits per byte better: the gap and both ends of its interval are -0.1
    exact = gaps(uniform - 0.1 * math.log(2) * n_bytes, uniform, n_bytes, sources)
    for weighting in ("all", "equal_sources"):
        assert exact[weighting]["mean"] == pytest.approx(-0.1) and exact[weighting]["ci95"] == pytest.approx([-0.1, -0.1])
        assert exact[weighting]["seeds_better"] == 5
    # noise per document and per seed widens the interval around the mean
    noisy = gaps(uniform + rng.normal(0, 0.2, size=(5, 60)) * n_bytes, uniform, n_bytes, sources)["all"]
    assert noisy["ci95"][0] < noisy["mean"] < noisy["ci95"][1] and noisy["ci95"][1] - noisy["ci95"][0] > 0.01
    # source c 1.0 bits per byte worse, a and b unchanged: equal weights give a third of it
    worse = uniform + np.where(sources == "c", math.log(2) * n_bytes, 0.0)
    assert gaps(worse, uniform, n_bytes, sources)["equal_sources"]["mean"] == pytest.approx(1 / 3)


def test_instances_unit_with_a_pretrained_teacher(tmp_path, tiny_models):
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    out = tmp_path / "inst"
    config = parse_args(["--db", db.url, "--out", str(out), "--teacher", str(tiny_models["gpt2"]), *QUICK,
                         "--set", "unit=instances", "--set", "score_context=32", "--set", "score_stride=24",
                         "--set", "subsets=uniform,uniform_length_matched,difference"])
    results = run(config)
    reopened = corpusdb.open(db.url)
    units = {name: entry["unit"] for name, entry in reopened.snapshot.models.items()}
    assert units == {"exp_inst_teacher": "instances", "exp_inst_reference": "instances"}
    assert reopened.snapshot.models["exp_inst_teacher"]["context"] == 32  # shorter than the teacher's own 64
    assert reopened.sql("select max(n_tokens) from instances").fetchall() == [(64,)]  # seq_len tokens of the students' BPE
    budget = results["budget"]["budget"]
    assert list(results["subsets"]) == ["uniform", "uniform_length_matched", "difference"]  # only the subsets asked for
    for name, subset in results["subsets"].items():
        assert budget <= subset["student_tokens"] < budget + 64 + 1, name
    # length-matched uniform: the difference subset's instance lengths exactly, so its tokens too
    assert results["subsets"]["uniform_length_matched"]["student_tokens"] == results["subsets"]["difference"]["student_tokens"]
    assert "| subset | instances |" in (out / "results.md").read_text()
    teacher = results["models"]["teacher"]
    assert teacher["trained_on"] == "pretrained" and len(teacher["sha256"]) == 64 and teacher["bits_per_byte"] > 0
    assert str(tmp_path) not in (out / "results.json").read_text()


def test_too_little_text_is_an_error_naming_the_setting_and_records_nothing(experiment, tmp_path):
    db, _, _, _ = experiment
    out = tmp_path / "big"
    with pytest.raises(ValueError, match="holds 0.4 MB of text: not enough for a 5.0 MB pool.*lower pool_mb"):
        run(parse_args(["--db", db.url, "--out", str(out), *QUICK, "--set", "pool_mb=5"]))
    assert not (out / "settings.json").exists()  # so the corrected command is not refused as "other settings"
    with pytest.raises(ValueError, match="no held-out document of bible, .*raise heldout_max_doc"):
        run(parse_args(["--db", db.url, "--out", str(out), *QUICK, "--set", "heldout_max_doc=0.0001"]))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        parse_args(["--db", db.url, "--out", str(out), "--set", "seeds=0"])
    with pytest.raises(ValueError, match="name uniform, difference and any of"):
        parse_args(["--db", db.url, "--out", str(out), "--set", "subsets=uniform,teacher_likelihood"])
