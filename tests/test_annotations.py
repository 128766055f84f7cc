"""Annotations: user functions, imports, resumption after a kill, versions and provenance, policies composed with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli
from corpusdb.errors import CatalogError, InputError
from corpusdb.failpoint import EXIT_STATUS
from corpusdb.text import doc_id
from tests.conftest import CORPUS, ROOT, ingest_per_source
from tests.views_fixture import ID, NAME, TEXTS, build

CLI = [sys.executable, "-m", "corpusdb.cli"]


def _shouting(text: str) -> tuple[float | None, bool]:
    letters = sum(c.isalpha() for c in text)
    return (sum(c.isupper() for c in text) / letters if letters else None), "!" in text


def test_python_function_annotates_every_document_and_reruns_only_new_parts(fixture_db, tmp_path):
    report = fixture_db.annotate("shout", "tests.annotators:shouting", progress=False, workers=2)
    assert report.kind == "python" and report.n_parts == 9 and report.n_parts_annotated == 9
    assert report.columns == {"upper_share": "DOUBLE", "exclaims": "BOOLEAN"}
    rows = fixture_db.sql("select d.text, a.upper_share, a.exclaims from documents d join annotations_shout a using (doc_id)").fetchall()
    assert len(rows) == fixture_db.sql("select count(*) from documents").fetchall()[0][0] == report.n_documents
    assert all((share, exclaims) == _shouting(text) for text, share, exclaims in rows)
    again = fixture_db.annotate("shout", "tests.annotators:shouting", progress=False)
    assert (again.n_parts_annotated, again.n_parts_done_before, again.version) == (0, 9, report.version)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"text": "NEW DOCUMENT, LOUD!"}) + "\n")
    fixture_db.ingest([str(extra)], source="extra", progress=False)
    more = fixture_db.annotate("shout", "tests.annotators:shouting", progress=False)
    assert (more.n_parts_annotated, more.n_documents) == (1, 1)
    assert fixture_db.sql("select upper_share, exclaims from annotations_shout where doc_id = ?",
                          params=[doc_id("NEW DOCUMENT, LOUD!")]).fetchall() == [(1.0, True)]
    listed = {a["name"]: a for a in fixture_db.annotations()}
    assert listed["shout"]["n_documents"] == listed["shout"]["n_rows"] == report.n_documents + 1
    assert "function=tests.annotators:shouting" in listed["shout"]["producer"]
    # a function reading other columns; the same documents under a second name
    fixture_db.annotate("source_len", "tests.annotators:source_length", progress=False, workers=1)
    assert fixture_db.sql("select bool_and(a.source_length = length(d.source)) from documents d join annotations_source_len a "
                          "using (doc_id)").fetchall() == [(True,)]


def test_an_edited_function_is_refused_until_replace(tmp_path):
    module = tmp_path / "mine.py"
    module.write_text("def f(batch):\n    return {'n': [len(t) for t in batch.column('text').to_pylist()]}\n")
    first = tmp_path / "a.jsonl"
    first.write_text(json.dumps({"text": "one"}) + "\n")
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(first)], source="a", progress=False)
    db.annotate("n", f"{module}:f", progress=False)
    module.write_text("def f(batch):\n    return {'n': [2 * len(t) for t in batch.column('text').to_pylist()]}\n")
    second = tmp_path / "b.jsonl"
    second.write_text(json.dumps({"text": "two two"}) + "\n")
    db.ingest([str(second)], source="b", progress=False)
    with pytest.raises(CatalogError, match=r"annotation 'n' was made with source_hash=.*--replace to recompute every row"):
        db.annotate("n", f"{module}:f", progress=False)
    db.annotate("n", f"{module}:f", replace=True, progress=False)
    assert sorted(db.sql("select n from annotations_n").fetchall()) == [(6,), (14,)]


def test_bad_functions_fail_in_one_line_and_commit_nothing(fixture_db, tmp_path):
    with pytest.raises(InputError, match="returned 2 rows for a batch of 3 documents|returned .* rows for a batch of"):
        fixture_db.annotate("bad", "tests.annotators:too_few_rows", progress=False, workers=1)
    with pytest.raises(InputError, match=r"raised RuntimeError: the classifier is not loaded \(at annotators.py:\d+\)"):
        fixture_db.annotate("bad", "tests.annotators:raises", progress=False, workers=2)
    with pytest.raises(ValueError, match="cannot import no_such_module"):
        fixture_db.annotate("bad", "no_such_module:f", progress=False)
    with pytest.raises(ValueError, match="tests.annotators has no nothing"):
        fixture_db.annotate("bad", "tests.annotators:nothing", progress=False)
    with pytest.raises(ValueError, match="annotation name 'Bad-Name' must be"):
        fixture_db.annotate("Bad-Name", "tests.annotators:shouting", progress=False)
    with pytest.raises(ValueError, match="no built-in annotator named 'shout'"):
        fixture_db.annotate("shout", progress=False)
    with pytest.raises(InputError, match="column 'label' has only None values in the first documents part, so no type"):
        fixture_db.annotate("bad", "tests.annotators:all_none", progress=False, workers=1)
    with pytest.raises(ValueError, match="--model, --label, --max-length and --threads are options of the built-in annotators, not of --fn"):
        fixture_db.annotate("bad", "tests.annotators:shouting", model="lid.bin", progress=False)
    fixture_db.refresh()
    assert fixture_db.snapshot.parts("annotations") == []  # nothing committed
    assert not list((tmp_path / "db" / "annotations").glob("*/*.parquet"))  # and no file left behind


def test_killed_annotate_job_resumes_to_the_clean_result(tmp_path):
    killed, clean = corpusdb.init(str(tmp_path / "killed")), corpusdb.init(str(tmp_path / "clean"))
    for db in (killed, clean):
        ingest_per_source(db, CORPUS)
    command = [*CLI, "annotate", killed.url, "shout", "--fn", "tests.annotators:shouting", "--workers", "1", "--commit-every", "0",
               "--no-progress"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "CORPUSDB_FAILPOINT": "annotate.after_part=4"})
    assert result.returncode == EXIT_STATUS, result.stderr
    killed.refresh()
    assert len(killed.snapshot.parts("annotations")) == 3  # the 4th part was written, not committed
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "in 6 of 9 documents parts" in result.stdout and "3 were done before" in result.stdout
    clean.annotate("shout", "tests.annotators:shouting", progress=False, workers=1)
    query = "select doc_id, upper_share, exclaims from annotations_shout order by doc_id"
    killed.refresh()
    assert killed.sql(query).fetchall() == clean.sql(query).fetchall()
    assert killed.sql("select count(*) from documents anti join annotations_shout using (doc_id)").fetchall() == [(0,)]


def test_import_by_doc_id_or_text_counts_unmatched_rows_and_refuses_duplicates(tmp_path):
    db = build(tmp_path / "db")
    unsigned = [ID[n] & (2**64 - 1) for n in "ABC"]  # the unsigned xxh3 value is the same hash
    pq.write_table(pa.table({"doc_id": pa.array(unsigned, pa.uint64()), "edu": [3.0, 1.0, 2.5]}), tmp_path / "edu.parquet")
    report = db.import_annotation("edu", str(tmp_path / "edu.parquet"), progress=False)
    assert (report.n_documents, report.n_unmatched) == (3, 0)
    assert dict((NAME[i], v) for i, v in db.sql("select doc_id, edu from annotations_edu").fetchall()) == {"A": 3.0, "B": 1.0, "C": 2.5}
    # keyed by text, as ingest hashes it (surrounding whitespace and CRLF normalised); one row matches nothing
    lines = [{"text": TEXTS["D"] + "\r\n", "edu": 0.5}, {"text": "  " + TEXTS["E"], "edu": 4.0}, {"text": "no such document", "edu": 9.0}]
    (tmp_path / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = CliRunner().invoke(cli, ["annotate", db.url, "edu_text", "--from", str(tmp_path / "more.jsonl"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "annotated 3 documents as 'edu_text' (import)" in result.output
    assert "1 imported rows match no document of the database" in result.output
    db.refresh()  # the CLI committed a version this handle has not read
    assert db.sql("select count(*) from annotations_edu_text semi join documents using (doc_id)").fetchall() == [(2,)]
    # another file adds rows (JSON integers into the DOUBLE column); a re-run imports nothing
    (tmp_path / "edu2.jsonl").write_text(json.dumps({"doc_id": ID["F"], "edu": 2}) + "\n")
    db.import_annotation("edu", str(tmp_path / "edu2.jsonl"), progress=False)
    assert db.sql("select edu from annotations_edu where doc_id = ?", params=[ID["F"]]).fetchall() == [(2.0,)]
    assert db.import_annotation("edu", str(tmp_path / "edu.parquet"), progress=False).n_parts_done_before == 1
    # a file with a doc_id already annotated, or twice, is refused and leaves nothing
    pq.write_table(pa.table({"doc_id": pa.array([ID["A"], ID["D"]], pa.int64()), "edu": [5.0, 6.0]}), tmp_path / "overlap.parquet")
    version = db.version
    with pytest.raises(InputError, match="1 doc_ids of this import are annotated under 'edu' already.*pass --replace"):
        db.import_annotation("edu", str(tmp_path / "overlap.parquet"), progress=False)
    pq.write_table(pa.table({"doc_id": pa.array([ID["D"], ID["D"]], pa.int64()), "edu": [5.0, 6.0]}), tmp_path / "twice.parquet")
    with pytest.raises(InputError, match="1 documents have more than one row.*deduplicate the input"):
        db.import_annotation("edu", str(tmp_path / "twice.parquet"), progress=False)
    assert db.version == version and len(list((tmp_path / "db" / "annotations" / "edu").glob("*.parquet"))) == 2
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "edu": 1}\n{"text": \n')
    with pytest.raises(InputError, match="not valid JSON lines"):
        db.import_annotation("edu_bad", str(tmp_path / "bad.jsonl"), progress=False)
    with pytest.raises(InputError, match="has neither a doc_id nor a text column"):
        pq.write_table(pa.table({"id": [1]}), tmp_path / "nokey.parquet")
        db.import_annotation("edu_bad", str(tmp_path / "nokey.parquet"), progress=False)
    db.import_annotation("edu", str(tmp_path / "overlap.parquet"), replace=True, progress=False)
    assert sorted(db.sql("select edu from annotations_edu").fetchall()) == [(5.0,), (6.0,)]


def test_a_policy_over_an_annotation_composes_with_difference(tmp_path):
    """Hand-checked (tests/views_fixture.py): B is flagged; difference over the rest keeps A (2.0) and C (1.0) of A, C, D, E."""
    db = build(tmp_path / "db")
    rows = [{"text": TEXTS[n], "spam": n == "B"} for n in TEXTS if n != "G"] + [{"text": TEXTS["G"] or "", "spam": False}]
    (tmp_path / "flags.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    db.import_annotation("flags", str(tmp_path / "flags.jsonl"), progress=False)
    db.create_view("clean", "select d.* from documents d join annotations_flags f using (doc_id) where not f.spam")
    kept = db.sql("select doc_id from difference('teacher', 'reference', docs := 'clean', missing := 'exclude') "
                  "order by score desc").fetchall()
    assert [NAME[i] for (i,) in kept] == ["A", "C"]
    assert {NAME[i] for (i,) in db.sql("select doc_id from difference('teacher', 'reference', missing := 'exclude')").fetchall()} == {"A", "B", "C"}
    db.annotate("language", progress=False, workers=1)
    both = db.sql("select doc_id from filter_language(['en', 'fr', 'de', 'la', 'it', 'es', 'pt', 'nl', 'no', 'sv', 'da', 'fi', "
                  "'pl', 'hu', 'ro', 'ca', 'eo'], 0.01, docs := 'clean')").fetchall()
    assert {NAME[i] for (i,) in both} <= {"A", "C", "D", "E", "F", "G"}


def test_annotations_are_versioned_and_in_provenance(fixture_db, tmp_path):
    before = fixture_db.version
    fixture_db.annotate("shout", "tests.annotators:shouting", progress=False, workers=1)
    view = "select d.* from documents d join annotations_shout a using (doc_id) where a.upper_share > 0.1"
    manifest = fixture_db.view(view).export(str(tmp_path / "out"))
    assert "annotations_shout" in manifest["tables"]
    assert manifest["annotations"]["shout"]["kind"] == "python"
    old = corpusdb.open(fixture_db.url, as_of=before)
    with pytest.raises(corpusdb.QueryError, match="no annotation named 'shout' at version"):
        old.sql("select * from annotations_shout")
    fixture_db.annotate("shout", "tests.annotators:shouting", replace=True, progress=False, workers=1)
    again = fixture_db.view(view).export(str(tmp_path / "out2"))
    assert again["inputs_hash"] != manifest["inputs_hash"]  # other parts: a new selection
    plain = fixture_db.view("select * from documents where n_bytes > 100").export(str(tmp_path / "plain"))
    assert plain["annotations"] == {} and plain["tables"] == ["documents"]
    result = CliRunner().invoke(cli, ["annotations", fixture_db.url, "--drop", "shout"])
    assert result.exit_code == 0 and "annotation 'shout' dropped" in result.output
    fixture_db.refresh()
    with pytest.raises(corpusdb.QueryError, match="no annotation named 'shout'"):
        fixture_db.sql(view)
    assert corpusdb.open(fixture_db.url, as_of=fixture_db.version - 1).sql(f"select count(*) from ({view})").fetchall()[0][0] > 0
    with pytest.raises(ValueError, match="names starting with 'annotations_' are the annotations' views"):
        fixture_db.create_view("annotations_mine", "select 1 as x")


def test_cli_annotate_annotations_and_stats(tmp_path):
    db = build(tmp_path / "db")
    runner = CliRunner()
    result = runner.invoke(cli, ["annotations", db.url])
    assert result.exit_code == 0 and "no annotations yet" in result.output
    result = runner.invoke(cli, ["annotate", db.url, "shout", "--fn", "tests.annotators:shouting", "--no-progress", "--workers", "1"])
    assert result.exit_code == 0 and "annotated 7 documents as 'shout' (python) in 2 of 2 documents parts" in result.output
    result = runner.invoke(cli, ["annotations", db.url, "--format", "csv"])
    assert result.output.splitlines()[0] == "name,view,kind,n_rows,n_documents,columns,producer"
    assert result.output.splitlines()[1].startswith("shout,annotations_shout,python,7,7,\"upper_share, exclaims\"")
    result = runner.invoke(cli, ["stats", db.url])
    assert "annotations: shout (python, 7 rows)" in result.output
    result = runner.invoke(cli, ["annotate", db.url, "shout", "--from", "x.parquet", "--fn", "m:f"])
    assert result.exit_code == 2 and "--from imports columns" in result.output
    result = runner.invoke(cli, ["annotate", db.url, "quality", "--model", "x.bin"])
    assert result.exit_code == 1 and result.output == "Error: --model is an option of the language annotator; the quality annotator has no model\n"
    result = runner.invoke(cli, ["annotate", db.url, "language", "--model", str(tmp_path / "nope.bin")])
    assert result.exit_code == 1 and "does not exist; pass a fastText model file" in result.output
    result = runner.invoke(cli, ["sql", db.url, "select * from filter_quality()"])
    assert result.exit_code == 1 and "no annotation named 'quality'" in result.output and "corpusdb annotate DB quality" in result.output
    result = runner.invoke(cli, ["annotate", "--help"])
    assert result.exit_code == 0 and "filter_quality()" in result.output and "--fn" in result.output


def test_sharded_annotate_equals_one_process(tmp_path):
    one, sharded = corpusdb.init(str(tmp_path / "one")), corpusdb.init(str(tmp_path / "sharded"))
    for db in (one, sharded):
        ingest_per_source(db, CORPUS)
    one.annotate("language", progress=False, workers=1)
    result = CliRunner().invoke(cli, ["annotate", sharded.url, "language", "--shards", "2"])
    assert result.exit_code == 0 and "in 2 shards (local)" in result.output
    sharded.refresh()
    query = "select doc_id, language, language_score from annotations_language order by doc_id"
    assert sharded.sql(query).fetchall() == one.sql(query).fetchall()


@pytest.mark.s3
def test_annotate_and_import_on_s3(s3_options, bucket, tmp_path):
    url = f"s3://{bucket}/db"
    db = corpusdb.init(url, storage_options=s3_options)
    db.ingest([str(CORPUS / "bible.jsonl"), str(CORPUS / "fortunes.jsonl")], source="mix", progress=False, storage_options={})
    report = db.annotate("shout", "tests.annotators:shouting", progress=False, workers=2)
    texts = dict(db.sql("select doc_id, text from documents").fetchall())
    assert report.n_documents == len(texts)
    pq.write_table(pa.table({"doc_id": pa.array(list(texts)[:5], pa.int64()), "score": [1.0] * 5}), tmp_path / "s.parquet")
    db.import_annotation("scores5", str(tmp_path / "s.parquet"), progress=False, storage_options={})
    reopened = corpusdb.open(url, storage_options=s3_options)
    assert reopened.sql("select count(*) from annotations_shout").fetchall() == [(len(texts),)]
    assert reopened.sql("select count(*) from annotations_scores5").fetchall() == [(5,)]
    assert all(v == _shouting(texts[k]) for k, *v in reopened.sql("select doc_id, upper_share, exclaims from annotations_shout"
                                                                   ).fetchall() for v in [tuple(v)])


def test_policies_need_every_row_annotated(tmp_path):
    db = build(tmp_path / "db")
    db.annotate("quality", progress=False, workers=1)
    assert db.sql("select count(*) from filter_quality(rules := ['fineweb'], docs := 'dedup')").fetchall()[0][0] >= 0
    (tmp_path / "late.jsonl").write_text(json.dumps({"text": "A late document."}) + "\n")
    db.ingest([str(tmp_path / "late.jsonl")], source="late", progress=False)
    with pytest.raises(duckdb.Error, match="filter_quality: 1 of 8 units of 'documents' have no quality annotation.*annotate DB quality"):
        db.sql("select * from filter_quality()").fetchall()
    db.annotate("quality", progress=False, workers=1)
    assert db.sql("select count(*) from filter_quality(rules := ['gopher_quality'], min_doc_words := 1, min_stop_words := 0, "
                  "min_avg_word_length := 1, min_alpha_words_ratio := 0)").fetchall()[0][0] >= 1


def test_one_large_part_is_shared_by_every_worker(tmp_path):
    texts = [f"document {i}: " + "words " * (i % 50) for i in range(3000)]
    source = tmp_path / "one.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(source)], source="one", progress=False)
    assert len(db.snapshot.parts("documents")) == 1  # one input, one part: the case 2 workers did not speed up
    report = db.annotate("pids", "tests.annotators:process_id", workers=2, progress=False)
    assert report.n_parts_annotated == 1 and report.n_tasks == 8
    pids = {pid for (pid,) in db.sql("select distinct pid from annotations_pids").fetchall()}
    assert len(pids) == 2 and os.getpid() not in pids  # both workers annotated part of it
    # the one annotation part holds every document once, in the documents part's row order
    part = db.snapshot.parts("annotations", "annotations/pids/")[0]
    written = pq.read_table(db.location.join(part)).column("doc_id").to_pylist()
    documents = pq.read_table(db.location.join(db.snapshot.parts("documents")[0])).column("doc_id").to_pylist()
    assert written == documents
    lengths = db.sql("select bool_and(a.length = length(d.text)) from documents d join annotations_pids a using (doc_id)")
    assert lengths.fetchall() == [(True,)]
