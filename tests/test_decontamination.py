"""Decontamination: evaluation sets' word n-grams found in documents and instances, checked against a brute force."""

from __future__ import annotations

import json
import random
import sys
import subprocess

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.annotations.decontamination import WORD, DecontaminationAnnotator, NgramIndex, normalise
from corpusdb.errors import CatalogError, InputError
from corpusdb.instances import run_instances
from tests.conftest import ROOT, fixture_texts

CLI = [sys.executable, "-m", "corpusdb.cli"]


def words(text: str | None) -> list[str]:
    """The normalised words of `text`, in order: what the brute force compares n-grams of."""
    return [normalise(w) for w in WORD.findall(text or "")]


def brute_force(text: str | None, evaluation: list[str], n: int) -> dict:
    """Every n-gram of `text` compared as a tuple of words with every n-gram of the evaluation texts,
    with byte ranges found by re-encoding the text up to each word."""
    grams = set()
    for e in evaluation:
        w = words(e)
        grams |= {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    text = text or ""
    spans = [(len(text[:m.start()].encode()), len(text[:m.end()].encode())) for m in WORD.finditer(text)]
    w = [normalise(m.group()) for m in WORD.finditer(text)]
    hits = [i for i in range(len(w) - n + 1) if tuple(w[i:i + n]) in grams]
    covered = set()
    for i in hits:
        covered |= set(range(spans[i][0], spans[i + n - 1][1]))
    return {"n_ngrams": max(len(w) - n + 1, 0), "n_matched": len(hits), "match_starts": [spans[i][0] for i in hits],
            "covered": covered}


def annotator_over(evaluation: list[str], n: int, tmp_path) -> DecontaminationAnnotator:
    index = NgramIndex.build(evaluation, n)
    path = tmp_path / f"index-{n}-{index.content_hash()}.npy"
    index.save(path)
    return DecontaminationAnnotator(str(path), n, index.content_hash(), len(index))


def check(row: dict, expected: dict) -> None:
    covered = {b for s, e in zip(row["covered_starts"], row["covered_ends"]) for b in range(s, e)}
    assert (row["n_ngrams"], row["n_matched"], row["match_starts"]) == (
        expected["n_ngrams"], expected["n_matched"], expected["match_starts"])
    assert covered == expected["covered"] and row["covered_bytes"] == len(covered)
    assert all(e < s2 for e, s2 in zip(row["covered_ends"], row["covered_starts"][1:]))  # merged: apart, in order


VOCAB = ["the", "The", "THE", "café", "Cafe\u0301", "naïve", "naive", "1999", "2024", "x", "fox", "über", "ß", "ǅ", "İstanbul",
         "a_b", "日本", "—", "...", "’s", "42nd", "\U0001F600"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(VOCAB), max_size=30), min_size=1, max_size=6),
       st.lists(st.tuples(st.integers(0, 5), st.integers(0, 12), st.integers(1, 12)), max_size=4),
       st.lists(st.lists(st.sampled_from(VOCAB), max_size=12), max_size=3),
       st.integers(1, 5), st.sampled_from([" ", "\n", ", ", "-", ""]))
def test_matches_equal_a_brute_force_on_any_text(tmp_path_factory, docs, slices, others, n, sep):
    texts = [sep.join(d) for d in docs]
    evaluation = [sep.join(docs[i % len(docs)][a:a + b]) for i, a, b in slices] + [" ".join(o) for o in others]
    annotator = annotator_over(evaluation, n, tmp_path_factory.mktemp("index"))
    batch = texts + [None]
    out = annotator.annotate(pa.table({"doc_id": list(range(len(batch))), "text": pa.array(batch, pa.string())}))
    for text, row in zip(batch, out.to_pylist()):
        check(row, brute_force(text, evaluation, n))


def test_normalisation_reads_through_case_punctuation_diacritics_and_numbers(tmp_path):
    annotator = annotator_over(["The Café served 12 naïve customers, on 3 June."], 4, tmp_path)
    texts = ["THE cafe -- served 99 NAIVE customers!!! On 7 june", "the café served twelve naïve customers"]
    rows = annotator.annotate(pa.table({"doc_id": [1, 2], "text": texts})).to_pylist()
    assert [r["n_matched"] for r in rows] == [6, 0]
    assert texts[0].encode()[rows[0]["covered_starts"][0]:rows[0]["covered_ends"][0]].decode() == texts[0]


@pytest.fixture
def evaluation(tmp_path) -> tuple[list[str], list]:
    """An evaluation set: passages of three fixture documents (case and punctuation changed), a question/answer
    record whose answer holds the overlap, and texts from nowhere; as JSON lines (fields question, answer)."""
    texts = fixture_texts("bible", "kernel-docs", "fortunes")
    rng = random.Random(3)
    long = [t for t in texts if len(t.split()) > 80]
    records = []
    for text in rng.sample(long, 3):
        w = text.split()
        i = rng.randrange(len(w) - 40)
        records.append({"question": " ".join(w[i:i + 25]).upper(), "answer": " ".join(w[i + 25:i + 35]) + "?!"})
    records.append({"question": "Which of these sentences never appears anywhere in the fixture corpus at all, "
                                "not even once?", "answer": "this one"})
    records.append({"question": "Too short.", "answer": "yes"})
    path = tmp_path / "evals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [f"{r['question']} {r['answer']}" for r in records], path


def test_every_document_matches_the_brute_force_and_the_filter_drops_exactly_those(fixture_db, evaluation):
    joined, path = evaluation
    report, index = fixture_db.decontaminate([str(path)], ngram=13, fields=("question", "answer"), progress=False, workers=2)
    assert (index.n_texts, index.n_short) == (5, 1) and report.n_parts == report.n_parts_annotated == 9
    rows = fixture_db.sql("select d.text, a.* exclude (doc_id) from documents d join annotations_decontamination a "
                          "using (doc_id)").to_arrow_table().to_pylist()
    assert len(rows) == fixture_db.sql("select count(*) from documents").fetchall()[0][0]
    contaminated = 0
    for row in rows:
        expected = brute_force(row["text"], joined, 13)
        check(row, expected)
        contaminated += expected["n_matched"] > 0
    assert contaminated >= 3  # each passage is in its document (and in copies of it)
    kept = fixture_db.sql("select count(*) from filter_decontaminated()").fetchall()[0][0]
    assert kept == len(rows) - contaminated
    clean_ids = {r[0] for r in fixture_db.sql("select doc_id from filter_decontaminated()").fetchall()}
    assert clean_ids == {r[0] for r in fixture_db.sql("select doc_id from annotations_decontamination where n_matched = 0").fetchall()}
    # a threshold on the share of bytes covered: every contaminated document covers less than all of itself
    assert fixture_db.sql("select count(*) from filter_decontaminated(max_fraction := 1)").fetchall()[0][0] == len(rows)
    shares = fixture_db.sql("select covered_bytes / n_bytes from documents join annotations_decontamination using (doc_id) "
                            "where n_matched > 0 order by 1").fetchall()
    middle = shares[len(shares) // 2][0]
    at_most = fixture_db.sql("select count(*) from filter_decontaminated(max_fraction := ?)", params=[middle]).fetchall()[0][0]
    assert at_most == len(rows) - contaminated + sum(1 for (s,) in shares if s <= middle)
    # the same sets again: nothing to do; other sets: refused until --replace
    again, _ = fixture_db.decontaminate([str(path)], ngram=13, fields=("question", "answer"), progress=False)
    assert again.n_parts_annotated == 0
    with pytest.raises(CatalogError, match="--replace"):
        fixture_db.decontaminate([str(path)], ngram=8, fields=("question", "answer"), progress=False)


def test_documents_ingested_later_are_an_error_naming_the_job(fixture_db, evaluation, tmp_path):
    _, path = evaluation
    fixture_db.decontaminate([str(path)], fields=("question", "answer"), progress=False, workers=1)
    extra = tmp_path / "late.jsonl"
    extra.write_text(json.dumps({"text": "a document that came after the check"}) + "\n")
    fixture_db.ingest([str(extra)], source="late", progress=False)
    with pytest.raises(Exception, match=r"1 of \d+ units .*corpusdb decontaminate DB --against"):
        fixture_db.sql("select count(*) from filter_decontaminated()").fetchall()
    n = fixture_db.sql("select count(*) from documents").fetchall()[0][0]
    exclude = fixture_db.sql("select count(*) from filter_decontaminated(missing := 'exclude')").fetchall()[0][0]
    keep = fixture_db.sql("select count(*) from filter_decontaminated(missing := 'keep')").fetchall()[0][0]
    assert keep == exclude + 1 and keep < n
    report, _ = fixture_db.decontaminate([str(path)], fields=("question", "answer"), progress=False)
    assert report.n_parts_annotated == 1
    assert fixture_db.sql("select count(*) from filter_decontaminated()").fetchall()[0][0] == keep


def test_instances_are_judged_by_their_own_span(tmp_path, tiny_models, evaluation):
    joined, path = evaluation
    db = corpusdb.init(str(tmp_path / "db"))
    for source in ("bible", "kernel-docs", "fortunes"):
        db.ingest([str(ROOT / "tests" / "data" / "corpus" / f"{source}.jsonl")], source=source, progress=False)
    run_instances(db, str(tiny_models["gpt2"]), 64, progress=False)
    db.decontaminate([str(path)], fields=("question", "answer"), progress=False, workers=1)
    units = db.sql("select c.doc_id, c.byte_start, c.byte_end, c.decontam_matched, c.decontam_covered_bytes, d.text "
                   "from contamination(docs := 'instances') c join documents d using (doc_id)").fetchall()
    per_document: dict[int, list] = {}
    for doc, start, end, matched, covered, text in units:
        expected = brute_force(text, joined, 13)
        assert matched == sum(1 for b in expected["match_starts"] if start <= b < end)
        assert covered == sum(1 for b in expected["covered"] if start <= b < end)
        per_document.setdefault(doc, []).append((matched, covered, expected))
    touched = [doc for doc, spans in per_document.items() if spans[0][2]["n_matched"]]
    assert touched
    for doc in touched:  # a document's instances add up to it; some of its instances are clean
        spans = per_document[doc]
        assert sum(m for m, _, _ in spans) == spans[0][2]["n_matched"]
        assert sum(c for _, c, _ in spans) == len(spans[0][2]["covered"])
    kept = {r[0] for r in db.sql("select instance_id from filter_decontaminated(docs := 'instances')").fetchall()}
    clean = {r[0] for r in db.sql("select instance_id from contamination(docs := 'instances') "
                                  "where decontam_covered_bytes = 0").fetchall()}
    assert kept == clean
    assert any(doc in touched for (doc,) in db.sql("select distinct doc_id from filter_decontaminated(docs := 'instances')")
               .fetchall())  # the clean instances of a contaminated document stay
    n_docs = db.sql("select count(*) from filter_decontaminated()").fetchall()[0][0]
    assert n_docs == db.sql("select count(*) from documents").fetchall()[0][0] - len(touched)


def test_cli_reports_and_bad_input_is_one_line(fixture_db, evaluation, tmp_path):
    _, path = evaluation
    url = fixture_db.url
    out = subprocess.run([*CLI, "decontaminate", url, "--against", str(path), "--field", "question", "--field", "answer",
                          "--no-progress", "--workers", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "distinct 13-grams of 5 evaluation texts" in out.stdout and "1 texts have fewer than 13 words" in out.stdout
    assert "documents hold at least one evaluation 13-gram" in out.stdout
    missing = subprocess.run([*CLI, "decontaminate", url, "--against", str(tmp_path / "nope.jsonl")], capture_output=True,
                             text=True)
    assert missing.returncode != 0 and "nope.jsonl" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "only five words right here"}) + "\n")
    with pytest.raises(InputError, match="--ngram"):
        fixture_db.decontaminate([str(short)], progress=False, replace=True)
    unknown = subprocess.run([*CLI, "decontaminate", url, "--against", str(path)], capture_output=True, text=True)
    assert unknown.returncode != 0 and "text" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    bad = subprocess.run([*CLI, "sql", url, "select * from filter_decontaminated(max_fraction := 2)"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "max_fraction must be in [0, 1]" in bad.stderr


def test_an_index_built_in_many_runs_equals_one_built_at_once(monkeypatch):
    from corpusdb.annotations import decontamination

    texts = fixture_texts()
    whole = NgramIndex.build(texts, 5)
    monkeypatch.setattr(decontamination, "BUILD_CHUNK", 97)  # hundreds of runs, merged like a binary counter
    assert np.array_equal(NgramIndex.build(texts, 5, batch=3).keys, whole.keys)
    assert len(whole) > 10_000 and bool(np.all(whole.h1[1:] >= whole.h1[:-1]))
