"""The quality and language annotators: datatrove's numbers and verdicts on every test document, hand-checked values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest

import corpusdb
from corpusdb.annotations.quality import COLUMNS
from corpusdb.text import doc_id, normalize
from tests.conftest import CORPUS, ingest_per_source

QUALITY = Path(__file__).resolve().parent / "data" / "quality"
REFERENCE = QUALITY / "datatrove_reference.jsonl"  # made by tests/data/quality/make_reference.py with datatrove 0.10.1


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").split("\n") if line.strip()]


@pytest.fixture(scope="module")
def quality_db(tmp_path_factory) -> corpusdb.Database:
    """The test corpus plus the hand-made edge cases, annotated with quality and language."""
    folder = tmp_path_factory.mktemp("quality")
    db = corpusdb.init(str(folder / "db"))
    ingest_per_source(db, CORPUS)
    db.ingest([str(QUALITY / "cases.jsonl")], source="cases", progress=False)
    db.annotate("quality", progress=False, workers=2)
    db.annotate("language", progress=False, workers=1)
    return db


def _reference() -> dict[int, dict]:
    """datatrove's values and verdicts by doc_id (of the text as ingest stores it)."""
    out = {}
    for record in _records(REFERENCE):
        text = _records(QUALITY.parent / record["file"])[record["line"]]["text"]
        out[doc_id(normalize(text))] = record
    return out


def test_quality_numbers_equal_datatrove_on_every_test_document(quality_db):
    reference = _reference()
    names = list(COLUMNS)
    rows = {r[0]: dict(zip(names, r[1:])) for r in quality_db.sql(f"select doc_id, {', '.join(names)} from annotations_quality").fetchall()}
    assert len(rows) == quality_db.sql("select count(*) from documents").fetchall()[0][0]
    assert set(rows) <= set(reference) and len(rows) >= 370
    mismatches = []
    for key, ours in rows.items():
        theirs = reference[key]["values"]
        for column in names:
            if column.startswith("fineweb_chain_") and reference[key]["verdicts"]["c4_fineweb"] is not True:
                continue  # the chain's FineWeb step only sees documents its C4 step keeps
            want, got = theirs.get(column), ours[column]
            if want != got and not (isinstance(want, float) and got is not None and math.isclose(want, got, rel_tol=1e-12)):
                mismatches.append((key, column, want, got))
    assert mismatches == []


@pytest.mark.parametrize("rules, verdict", [
    ("rules := ['gopher_quality']", "gopher_quality"),
    ("rules := ['gopher_repetition']", "gopher_repetition"),
    ("rules := ['c4'], c4_terminal_punct := true", "c4"),
    ("rules := ['c4']", "c4_fineweb"),
    ("rules := ['fineweb']", "fineweb"),
])
def test_filter_quality_keeps_exactly_what_datatrove_keeps(quality_db, rules, verdict):
    reference = _reference()
    kept = {k for (k,) in quality_db.sql(f"select doc_id from filter_quality({rules})").fetchall()}
    present = {k for (k,) in quality_db.sql("select doc_id from documents").fetchall()}
    expected = {k for k in present if reference[k]["verdicts"][verdict] is True}
    assert kept == expected
    assert 0 < len(kept) < len(present)  # the rule does something on this corpus


def test_filter_quality_defaults_are_fineweb_pipeline_and_thresholds_are_parameters(quality_db):
    reference = _reference()
    present = {k for (k,) in quality_db.sql("select doc_id from documents").fetchall()}
    everything = {k for k in present if all(reference[k]["verdicts"][v] is True
                                            for v in ("gopher_quality", "gopher_repetition", "c4_fineweb", "fineweb"))}
    assert {k for (k,) in quality_db.sql("select doc_id from filter_quality()").fetchall()} == everything
    loose = quality_db.sql("select count(*) from filter_quality(rules := ['gopher_quality'], min_doc_words := 10)").fetchall()[0][0]
    strict = quality_db.sql("select count(*) from filter_quality(rules := ['gopher_quality'])").fetchall()[0][0]
    off = quality_db.sql("select count(*) from filter_quality(rules := ['gopher_quality'], min_doc_words := null, "
                         "min_stop_words := null, min_alpha_words_ratio := null)").fetchall()[0][0]
    assert strict < loose < off
    with pytest.raises(duckdb.Error, match="rules must be a non-empty list of gopher_quality, gopher_repetition, c4, fineweb"):
        quality_db.sql("select * from filter_quality(rules := ['gopher'])").fetchall()
    with pytest.raises(duckdb.Error, match="c4_terminal_punct must be true .* or false .*, not NULL"):
        quality_db.sql("select * from filter_quality(c4_terminal_punct := null)").fetchall()


def test_filter_quality_chain_keeps_what_fineweb_pipeline_keeps(quality_db, tmp_path):
    reference = _reference()
    present = {k for (k,) in quality_db.sql("select doc_id from documents").fetchall()}
    chained = {k for k in present if reference[k]["verdicts"]["fineweb_chain"] is True}
    assert {k for (k,) in quality_db.sql("select doc_id from filter_quality(chain := true)").fetchall()} == chained
    # on this corpus the chain and the rules on the stored text disagree (the C4 step drops lines FineWeb would count)
    separate = {k for (k,) in quality_db.sql("select doc_id from filter_quality()").fetchall()}
    assert separate != chained and 0 < len(chained)
    # an annotation made before the chain's columns existed: the default still runs, chain := true names the fix
    old_columns = [c for c in COLUMNS if not c.startswith("fineweb_chain_")]
    import pyarrow.parquet as pq

    pq.write_table(quality_db.sql(f"select doc_id, {', '.join(old_columns)} from annotations_quality").to_arrow_table(),
                   tmp_path / "old.parquet")
    old = corpusdb.init(str(tmp_path / "old"))
    ingest_per_source(old, CORPUS)
    old.ingest([str(QUALITY / "cases.jsonl")], source="cases", progress=False)
    old.import_annotation("quality", [str(tmp_path / "old.parquet")], key="doc_id", progress=False)
    assert {k for (k,) in old.sql("select doc_id from filter_quality()").fetchall()} == separate
    with pytest.raises(duckdb.Error, match=r"chain := true reads the fineweb_chain_\* columns.*annotate DB quality --replace"):
        old.sql("select * from filter_quality(chain := true)").fetchall()


def _values(db: corpusdb.Database, text: str) -> dict:
    names = list(COLUMNS)
    (row,) = db.sql(f"select {', '.join(names)} from annotations_quality where doc_id = ?", params=[doc_id(normalize(text))]).fetchall()
    return dict(zip(names, row))


def test_quality_hand_checked_values(quality_db):
    cases = {r["case"]: r["text"] for r in _records(QUALITY / "cases.jsonl")}
    short = _values(quality_db, cases["short"])  # "The cat sat on the mat."
    assert short["n_words"] == 7 and short["gopher_words"] == 6  # the full stop is a symbol word
    assert short["gopher_mean_word_length"] == pytest.approx(17 / 6)
    assert short["gopher_stop_words"] == 1  # "the" (stop words are case-sensitive: "The" is not one)
    assert short["gopher_alpha_words_ratio"] == pytest.approx(6 / 7)
    assert short["fineweb_line_punct_ratio"] == 1.0 and short["fineweb_short_line_ratio"] == 1.0
    assert short["c4_sentences"] == 1 and short["c4_any_end_sentences"] == 1
    text = cases["repeated ngrams"]  # "the quick brown fox jumps over the lazy dog" 20 times: 180 words, 879 characters
    repeated = _values(quality_db, text)
    assert len(text) == 879 and repeated["n_words"] == 180
    assert repeated["gopher_top_2gram_frac"] == pytest.approx(len("the quick") * 20 / 879)  # the first of the 2-grams seen 20 times
    # from word 9 on, every 5-gram repeats one seen in the first period; the scan jumps 5 words past each:
    # the 5-grams at 9, 14, ..., 174 count, their characters without the spaces between words
    words = text.split()
    assert repeated["gopher_dup_5gram_frac"] == pytest.approx(sum(len("".join(words[p:p + 5])) for p in range(9, 176, 5)) / 879)
    lines = _values(quality_db, cases["repeated lines"])  # 7 lines (split on runs of newlines), 5 repeat "same line"
    assert lines["gopher_dup_line_frac"] == pytest.approx(5 / 7)
    assert _values(quality_db, cases["lorem"])["c4_lorem_ipsum"] is True
    curly = _values(quality_db, cases["curly code"])  # "int main(void) {" ends in no punctuation: C4 drops the line first
    assert curly["c4_curly_bracket"] is False and curly["c4_any_end_curly_bracket"] is True
    bullets = _values(quality_db, cases["bullets"])
    assert bullets["gopher_bullet_lines_ratio"] == 1.0
    empty = _values(quality_db, "")  # "   " is stored as an empty document: nothing to divide by
    assert empty["n_words"] == 0 and empty["gopher_words"] == 0 and empty["c4_sentences"] == 0
    assert all(empty[c] is None for c in COLUMNS if c.endswith(("_ratio", "_frac", "_length")))
    assert quality_db.sql("select count(*) from filter_quality(rules := ['fineweb']) where n_bytes = 0").fetchall()[0][0] == 0


def test_language_hand_checked(quality_db):
    cases = {r["case"]: r["text"] for r in _records(QUALITY / "cases.jsonl")}
    rows = dict(quality_db.sql("select doc_id, language from annotations_language").fetchall())
    assert rows[doc_id(normalize(cases["short"]))] == "en"
    bible = quality_db.sql("select l.language, l.language_score, l.language_scores['en'] from annotations_language l "
                           "join documents d using (doc_id) where d.source = 'bible'").fetchall()
    assert all(lang == "en" and score > 0.8 and score == en for lang, score, en in bible)
    languages = dict(quality_db.sql("select language, count(*) from annotations_language group by 1").fetchall())
    assert languages["en"] > 300
    english = quality_db.sql("select count(*) from filter_language(['en'])").fetchall()[0][0]
    assert english == quality_db.sql("select count(*) from annotations_language where language = 'en' and language_score >= 0.65"
                                     ).fetchall()[0][0]
    assert quality_db.sql("select count(*) from filter_language(['en', 'de'], 0.01)").fetchall()[0][0] > english
    with pytest.raises(duckdb.Error, match="min_score must be in"):
        quality_db.sql("select * from filter_language(['en'], 1.5)").fetchall()
    with pytest.raises(duckdb.Error, match=r"min_score must be in \[0.01, 1\] \(probabilities under 0.01 are not stored"):
        quality_db.sql("select * from filter_language(['en'], 0.001)").fetchall()


def test_language_of_known_sentences(tmp_path):
    lines = ["The weather is lovely today and we are going to the beach.",
             "Das Wetter ist heute schön und wir gehen an den Strand.",
             "Il fait beau aujourd'hui et nous allons à la plage."]
    path = tmp_path / "langs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(path)], source="langs", progress=False)
    with pytest.raises(corpusdb.QueryError, match="no annotation named 'language'.*corpusdb annotate DB language"):
        db.sql("select * from filter_language(['en'])").fetchall()
    db.annotate("language", progress=False, workers=1)
    found = dict(db.sql("select doc_id, language from annotations_language").fetchall())
    assert [found[doc_id(t)] for t in lines] == ["en", "de", "fr"]
    assert {t for (t,) in db.sql("select text from filter_language(['de', 'fr'], 0.5)").fetchall()} == set(lines[1:])
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"text": "Ingested after the language annotator ran."}) + "\n")
    db.ingest([str(more)], source="langs", progress=False)
    with pytest.raises(duckdb.Error, match="1 of 4 units of 'documents' have no language annotation.*corpusdb annotate DB language"):
        db.sql("select * from filter_language(['en'])").fetchall()


def test_quality_and_language_filters_compose_with_other_policies(quality_db):
    """filter_quality over filter_language, dedup and quota over filter_quality, through docs := (saved views)."""
    quality_db.create_view("english", "select * from filter_language(['en'], 0.65)")
    quality_db.create_view("clean", "select * from filter_quality(docs := 'english', rules := ['fineweb'])")
    english = {k for (k,) in quality_db.sql("select doc_id from english").fetchall()}
    fineweb = {k for (k,) in quality_db.sql("select doc_id from filter_quality(rules := ['fineweb'])").fetchall()}
    clean = {k for (k,) in quality_db.sql("select doc_id from clean").fetchall()}
    assert clean == english & fineweb and 0 < len(clean) < len(english)
    assert {k for (k,) in quality_db.sql("select doc_id from dedup(docs := 'clean', missing := 'keep')").fetchall()} == clean  # no clusters
    budget = quality_db.sql("select doc_id, n_bytes, source from quota(map {'bible': 20000, 'fortunes': 3000}, docs := 'clean')"
                            ).fetchall()
    assert {k for k, _, _ in budget} <= clean and {s for _, _, s in budget} <= {"bible", "fortunes"}
    assert sum(b for _, b, s in budget if s == "bible") <= 20000 and sum(b for _, b, s in budget if s == "fortunes") <= 3000


def test_the_report_draws_each_quality_and_language_threshold_where_the_filter_cuts():
    """Every column the report marks is a column of its annotator, and every mark is a parameter of the
    built-in filter with that filter's default (read from its SQL, so the two cannot drift apart)."""
    from corpusdb.annotations.language import COLUMNS as LANGUAGE
    from corpusdb.annotations.quality import COLUMNS as QUALITY
    from corpusdb.report import CUTS, _cuts

    for kind, columns in (("quality", QUALITY), ("language", LANGUAGE)):
        assert CUTS[kind] and set(CUTS[kind]) <= set(columns)
        for column, (_, *params) in CUTS[kind].items():
            assert len(_cuts(kind, column)) == len(params)
    assert _cuts("quality", "gopher_words") == [(50.0, "filter_quality min_doc_words"), (100000.0, "filter_quality max_doc_words")]
    assert _cuts("quality", "fineweb_line_punct_ratio") == [(0.12, "filter_quality line_punct_thr")]
    assert _cuts("language", "language_score") == [(0.65, "filter_language min_score")]
    assert _cuts("python", "anything") == [] and _cuts("quality", "n_words") == []
