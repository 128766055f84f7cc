"""The annotation filters as distributed selections: the single-process rows, refusals word for word, annotation parts
read by the tasks of their own documents parts only.

Real annotation jobs over ten documents parts of real text (datatrove's quality rules, fastText language id, 13-gram
decontamination against passages of the corpus itself), documents and instances (a tiny GPT-2 tokenizer), real
Parquet and DuckDB; `filter_classifier` over an imported annotation of few values (many ties, some documents without
a value or without a row).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import corpusdb
from corpusdb.distributed.select import select
from corpusdb.errors import QueryError
from tests.test_covers import ten_parts

CALLS = (
    "filter_quality()",
    "filter_quality(rules := ['c4', 'gopher_repetition'], min_sentences := 2)",
    "filter_language(['en'], 0.5)",
    "filter_language(['en', 'fr'], 0.9)",
    "filter_decontaminated()",
    "filter_decontaminated(max_fraction := 0.02)",
)
REFUSED = (
    "filter_language([])",
    "filter_language(['en'], 0.001)",
    "filter_quality(rules := ['gopher', 'c4'])",
    "filter_quality(c4_terminal_punct := null)",
    "filter_decontaminated(max_fraction := 2)",
    "filter_decontaminated(missing := 'drop')",
)


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, tiny_models) -> corpusdb.Database:
    """Ten documents parts with the quality, language and decontamination annotations, cut into instances."""
    from corpusdb.instances import run_instances

    root = tmp_path_factory.mktemp("annotated")
    db = ten_parts(root)
    texts = [t for (t,) in db.sql("select text from documents where n_bytes > 600 order by doc_id").fetchall()]
    rng = random.Random(5)
    records = []
    for text in rng.sample(texts, 6):  # passages of six documents: their documents (and instances) are contaminated
        words = text.split()
        start = rng.randrange(max(1, len(words) - 30))
        records.append({"question": " ".join(words[start:start + 20]), "answer": " ".join(words[start + 20:start + 26])})
    (root / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    db.annotate("quality", progress=False, workers=1)
    db.annotate("language", progress=False, workers=1)
    db.decontaminate([str(root / "evals.jsonl")], ngram=13, fields=("question", "answer"), progress=False, workers=1)
    run_instances(db, str(tiny_models["gpt2"]), 48, part_docs=60, progress=False)
    # a classifier's scores, imported: nine values (most units tie), 5% without a value, eight documents without a row;
    # three files, each of the documents of a run of documents parts (as another pipeline's shards would be)
    parts = db.snapshot.parts("documents")
    for i, run in enumerate((parts[:3], parts[3:7], parts[7:])):
        files = [db.location.join(p) for p in run]
        ids = [d for (d,) in db.sql(f"select doc_id from read_parquet({files}) order by doc_id").fetchall()]
        rows = [d for d in ids if rng.random() > 8 / 297]
        values = [None if rng.random() < 0.05 else rng.randrange(9) / 2 for _ in rows]
        (root / "edu").mkdir(exist_ok=True)
        pq.write_table(pa.table({"doc_id": pa.array(rows, pa.int64()), "score": pa.array(values, pa.float64()),
                                 "int_score": pa.array([None if v is None else round(v) for v in values], pa.int64())}),
                       root / "edu" / f"shard-{i}.parquet")
    db.import_annotation("edu", str(root / "edu"), progress=False)
    return corpusdb.open(db.url)


def rows_of(db: corpusdb.Database, call: str, out: Path, shards: int) -> tuple[list, list]:
    """The call's rows in one process and as tasks, each sorted by unit."""
    key = "doc_id, byte_start" if "instances" in call else "doc_id"
    single = db.sql(f"select * from {call} order by {key}").to_arrow_table()
    selection = select(db, call, str(out), shards=shards, executor="inline", overwrite=True)
    got = duckdb.sql(f"select * from read_parquet({selection.files}) order by {key}").to_arrow_table() if selection.files \
        else single.slice(0, 0)
    assert got.schema == single.schema
    return single.to_pylist(), got.to_pylist()


@pytest.mark.parametrize("docs", ["documents", "instances"])
def test_annotation_filters_as_tasks_equal_one_process(annotated, tmp_path, docs):
    kept = []
    for i, call in enumerate(CALLS):
        if docs == "instances":
            call = call[:-1] + (", " if call[-2] != "(" else "") + "docs := 'instances')"
        single, got = rows_of(annotated, call, tmp_path / "out", shards=2 + i % 3)
        assert got == single, call
        kept.append(len(single))
    total = annotated.sql(f"select count(*) from {docs}").fetchall()[0][0]
    assert all(0 < n < total for n in kept), kept  # every filter keeps some units and drops some


def test_annotation_filters_refuse_as_one_process_does(annotated, tmp_path):
    """Bad arguments, and documents ingested after the annotations: the single-process error, word for word; with
    missing := 'exclude' or 'keep' the rows are the single-process ones."""
    for call in REFUSED:
        with pytest.raises(QueryError) as single, annotated.query_errors():
            annotated.sql(f"select * from {call}").fetchall()
        with pytest.raises(QueryError) as distributed:
            select(annotated, call, str(tmp_path / "out"), shards=3, executor="inline")
        assert str(distributed.value) == str(single.value), call
    copy = tmp_path / "db"
    shutil.copytree(annotated.url, copy)
    db = corpusdb.open(str(copy))
    (tmp_path / "late.jsonl").write_text("".join(json.dumps({"text": f"A document ingested after the annotators ran, "
                                                                     f"number {i}, in plain English words."}) + "\n"
                                                 for i in range(5)))
    db.ingest([str(tmp_path / "late.jsonl")], source="late", progress=False)
    db = corpusdb.open(str(copy))
    for call in ("filter_quality()", "filter_language(['en'])", "filter_decontaminated()"):
        with pytest.raises(QueryError, match=r"5 of \d+ units of 'documents' have no") as single, db.query_errors():
            db.sql(f"select * from {call}").fetchall()
        with pytest.raises(QueryError) as distributed:
            select(db, call, str(tmp_path / "refused"), shards=3, executor="inline")
        assert str(distributed.value) == str(single.value), call
        for missing in ("exclude", "keep"):
            single, got = rows_of(db, f"{call[:-1]}{', ' if call[-2] != '(' else ''}missing := '{missing}')",
                                  tmp_path / "out", shards=4)
            assert got == single and sum(r["source"] == "late" for r in single) == (5 if missing == "keep" else 0)


def test_a_task_opens_only_the_annotation_parts_of_its_documents(annotated, tmp_path):
    """Each annotation part records the documents part it annotates: a task reads those of its own parts (every other
    annotation file is deleted before its query, which still returns the single-process units of its documents)."""
    copy = tmp_path / "db"
    shutil.copytree(annotated.url, copy)
    db = corpusdb.open(str(copy))
    mine = db.snapshot.parts("documents")[2:4]
    files = [db.location.join(p) for p in mine]
    call = "filter_quality(missing := 'exclude')"
    wanted = db.sql(f"select doc_id from {call} where doc_id in (select doc_id from read_parquet({files})) order by doc_id"
                    ).fetchall()
    records = db.snapshot.tables["annotations"]
    others = [path for path, info in records.items() if info.get("of") and info["of"] not in mine]  # imports: no `of`
    assert len(others) >= 3 * 8  # three annotations, eight other parts each
    for path in others:
        (copy / path).unlink()
    db.restrict(files)
    assert db.sql(f"select doc_id from {call} order by doc_id").fetchall() == wanted and wanted


CLASSIFIER = (
    "filter_classifier('edu', alpha := 0.3, missing := 'exclude')",
    "filter_classifier('edu', min_score := 1, max_score := 3, alpha := 0.6, missing := 'keep')",
    "filter_classifier('edu', min_score := 2.5, missing := 'keep')",
    "filter_classifier('edu', alpha := 0.45, key := 'int_score', missing := 'exclude')",
    "filter_classifier('edu', max_score := 1, alpha := 1, missing := 'exclude')",
)


@pytest.mark.parametrize("docs", ["documents", "instances"])
def test_filter_classifier_s_top_alpha_as_tasks_equals_one_process(annotated, tmp_path, docs):
    """The top alpha of an annotation's values is a cut (ties by unit id, as one process breaks them) with the bounds
    applied after it; unjudged units kept or dropped as `missing` says; refusals word for word; a sharded export is
    the single-process export's bytes."""
    from tests.test_distributed import same_files

    counts = []
    for i, call in enumerate(CLASSIFIER):
        if docs == "instances":
            call = call[:-1] + ", docs := 'instances')"
        single, got = rows_of(annotated, call, tmp_path / "out", shards=2 + i % 3)
        assert got == single, call
        counts.append(len(single))
    total = annotated.sql(f"select count(*) from {docs}").fetchall()[0][0]
    assert all(0 < n < total for n in counts) and len(set(counts)) == len(counts), counts
    for call in ("filter_classifier('edu')", "filter_classifier('edu', alpha := 0, missing := 'keep')",
                 "filter_classifier('edu', min_score := 3, max_score := 2, missing := 'keep')",
                 "filter_classifier('edu', alpha := 0.5, missing := 'drop')", "filter_classifier('nope', alpha := 0.5)",
                 "filter_classifier('edu', key := 'nope', missing := 'keep')"):
        if docs == "instances":
            call = call[:-1] + ", docs := 'instances')"
        with pytest.raises(Exception) as single, annotated.query_errors():
            annotated.sql(f"select * from {call}").fetchall()
        with pytest.raises(Exception) as distributed:
            select(annotated, call, str(tmp_path / "refused"), shards=3, executor="inline")
        assert (type(distributed.value), str(distributed.value)) == (type(single.value), str(single.value)), call
    # sharded exports (cut by tasks: both macros hand out their docs' rows unchanged), the single-process bytes
    for i, call in enumerate((CLASSIFIER[1], "filter_decontaminated()") if docs == "documents" else
                             (CLASSIFIER[3][:-1] + ", docs := 'instances')", "filter_decontaminated(docs := 'instances')")):
        one = annotated.view(call).export(str(tmp_path / f"one{i}"), format="jsonl", part_size_mb=0.002)
        many = annotated.view(call).export(str(tmp_path / f"many{i}"), format="jsonl", part_size_mb=0.002, shards=3,
                                           executor="inline")
        assert many["parts"] == one["parts"] and len(one["parts"]) > 1, call
        same_files(tmp_path / f"one{i}", tmp_path / f"many{i}")


def test_imported_annotation_parts_record_their_covers_and_a_task_reads_its_own(annotated, tmp_path):
    """An imported annotation's parts hold the rows of an input file, of any documents: every task reads them, until
    `corpusdb models DB --covers` records which documents parts hold their doc_ids; then a task over two documents
    parts reads the files covering them (every other deleted) and selects its documents' single-process rows."""
    from click.testing import CliRunner

    from corpusdb.cli import cli
    from corpusdb.covers import task_parts

    copy = tmp_path / "db"
    shutil.copytree(annotated.url, copy)
    db = corpusdb.open(str(copy))
    parts = db.snapshot.parts("documents")
    records = db.snapshot.tables["annotations"]
    imported = sorted(db.snapshot.parts("annotations", "annotations/edu/"), key=lambda p: records[p]["source"])  # by shard
    assert len(imported) == 3 and task_parts(db.snapshot, {parts[4]}, "annotations", "annotations/edu/") == sorted(imported)
    result = CliRunner().invoke(cli, ["models", str(copy), "--covers"])
    assert result.exit_code == 0 and "covers recorded for 3 part(s)" in result.output, result.output
    db = corpusdb.open(str(copy))
    records = db.snapshot.tables["annotations"]
    assert [len(records[p]["covers"]) for p in imported] == [3, 4, 3]  # the documents parts of each file's shard
    assert all("covers" not in info for path, info in records.items() if path not in imported)  # they name their `of`
    mine = parts[2:4]  # the last of the first shard, the first of the second
    read = task_parts(db.snapshot, set(mine), "annotations", "annotations/edu/")
    assert sorted(read) == sorted(imported[:2])
    call = "filter_classifier('edu', min_score := 1, missing := 'exclude')"
    files = [db.location.join(p) for p in mine]
    wanted = db.sql(f"select doc_id from {call} where doc_id in (select doc_id from read_parquet({files})) order by doc_id"
                    ).fetchall()
    (copy / imported[2]).unlink()
    db.restrict(files)
    assert db.sql(f"select doc_id from {call} order by doc_id").fetchall() == wanted and wanted


def test_dedup_as_tasks_equals_one_process(annotated, tmp_path):
    """`dedup` keeps each MinHash cluster's representative, a row filter on the clusters: as tasks (a call, and the
    built-in view `dedup`) the single-process rows over documents and instances, and a sharded export the
    single-process bytes; documents ingested after `corpusdb minhash` refuse with the single-process words unless
    missing says otherwise."""
    from tests.test_distributed import same_files

    copy = tmp_path / "db"
    shutil.copytree(annotated.url, copy)
    db = corpusdb.open(str(copy))
    texts = [t for (t,) in db.sql("select text from documents where n_bytes > 600 order by doc_id limit 15").fetchall()]
    (tmp_path / "near.jsonl").write_text("".join(json.dumps({"text": f"{t} (a near copy)"}) + "\n" for t in texts))
    db.ingest([str(tmp_path / "near.jsonl")], source="copies", progress=False)
    db.minhash(progress=False, workers=1)
    db = corpusdb.open(str(copy))
    n_docs = db.sql("select count(*) from documents").fetchall()[0][0]
    for i, call in enumerate(("dedup()", "dedup", "dedup(docs := 'instances')")):
        single, got = rows_of(db, call, tmp_path / "out", shards=2 + i)
        assert got == single, call
        if call != "dedup(docs := 'instances')":
            assert len(single) <= n_docs - 10, (len(single), n_docs)  # most copies or their originals go
    one = db.view("dedup").export(str(tmp_path / "one"), format="jsonl", part_size_mb=0.002)
    many = db.view("dedup").export(str(tmp_path / "many"), format="jsonl", part_size_mb=0.002, shards=3, executor="inline")
    assert many["parts"] == one["parts"] and len(one["parts"]) > 1
    same_files(tmp_path / "one", tmp_path / "many")
    (tmp_path / "late.jsonl").write_text("".join(json.dumps({"text": f"Written after minhash ran, number {i}."}) + "\n"
                                                 for i in range(4)))
    db.ingest([str(tmp_path / "late.jsonl")], source="late", progress=False)
    db = corpusdb.open(str(copy))
    for call, words in (("dedup()", r"dedup: 4 of \d+ units of 'documents' have no minhash row \(ingested after"),
                        ("dedup(missing := 'drop')", "dedup: missing must be one of 'error', 'keep', 'exclude', not 'drop'")):
        with pytest.raises(QueryError, match=words) as single, db.query_errors():
            db.sql(f"select * from {call}").fetchall()
        with pytest.raises(QueryError) as distributed:
            select(db, call, str(tmp_path / "refused"), shards=3, executor="inline")
        assert str(distributed.value) == str(single.value), call
    for missing in ("exclude", "keep"):
        single, got = rows_of(db, f"dedup(missing := '{missing}')", tmp_path / "out", shards=4)
        assert got == single and sum(r["source"] == "late" for r in single) == (4 if missing == "keep" else 0)
