"""Score parts that record the documents parts they cover, so that a task of a distributed selection reads only its own.

Real scoring jobs (tiny transformers models through `from_pretrained`) over a database of ten documents parts,
real Parquet, real DuckDB: the covers a job records are the parts its documents came from, a task never opens a
score part that covers none of its documents, and selections over covered, uncovered and stale covers equal the
single-process query.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import corpusdb
from corpusdb.covers import task_parts
from corpusdb.distributed.select import select
from tests.conftest import CORPUS

CALL = "difference('gpt2', 'llama', alpha := 0.5)"


def ten_parts(root: Path) -> corpusdb.Database:
    """297 real documents ingested in ten jobs: ten documents parts."""
    lines = [line for s in ("fortunes", "bible", "git-docs") for line in (CORPUS / f"{s}.jsonl").read_text().splitlines()]
    db = corpusdb.init(str(root / "db"))
    for i in range(10):
        path = root / f"docs-{i}.jsonl"
        path.write_text("\n".join(lines[i::10]) + "\n")
        db.ingest([str(path)], source="web" if i % 2 else "books", progress=False)
    return db


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_models) -> corpusdb.Database:
    root = tmp_path_factory.mktemp("covers")
    db = ten_parts(root)
    for name in ("gpt2", "llama"):  # parts of 16 kB of text: several documents parts each, and a part in several
        db.score(str(tiny_models[name]), name, part_bytes=16000, threads=1, progress=False)
    return corpusdb.open(db.url)


def holders(db: corpusdb.Database) -> dict[int, str]:
    """doc_id -> the documents part (relative path) holding it, from the files themselves."""
    found = {}
    for path in db.snapshot.parts("documents"):
        full = db.location.join(path)
        for doc_id in duckdb.sql(f"select doc_id from read_parquet('{full}')").fetchall():
            found[doc_id[0]] = path
    return found


def test_a_scoring_job_records_the_documents_parts_each_score_part_covers(scored):
    where = holders(scored)
    records = scored.snapshot.tables["scores"]
    assert len(records) >= 12
    spans = []
    for path, info in records.items():
        ids = duckdb.sql(f"select doc_id from read_parquet('{scored.location.join(path)}')").fetchall()
        assert info["covers"] == sorted({where[i] for (i,) in ids})  # exactly the parts its documents came from
        spans.append(len(info["covers"]))
    assert max(spans) > 1 and min(spans) < len(scored.snapshot.parts("documents"))  # neither one part each nor all


def test_a_task_opens_only_the_score_parts_covering_its_documents(scored, tmp_path):
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(scored.url, copy)
    db = corpusdb.open(str(copy))
    documents = db.snapshot.parts("documents")
    mine = documents[:2]
    wanted = db.sql(f"select * from difference_units('gpt2', 'llama') where unit_id in (select doc_id from "
                    f"read_parquet({[db.location.join(p) for p in mine]})) order by unit_id").fetchall()
    needed = set(task_parts(db.snapshot, set(mine)))
    others = [p for p in db.snapshot.parts("scores") if p not in needed]
    assert needed and others
    for path in others:  # a task that opened any of these would fail
        (copy / path).unlink()
    db.restrict([db.location.join(p) for p in mine])
    assert db.sql("select * from difference_units('gpt2', 'llama') order by unit_id").fetchall() == wanted
    assert len(wanted) == db.sql("select count(*) from documents").fetchall()[0][0] > 0


def test_a_selection_over_covered_scores_equals_the_single_process_query(scored, tmp_path, shards=4):
    single = scored.sql(f"select * from {CALL}").to_arrow_table().sort_by("doc_id")
    selection = select(scored, CALL, str(tmp_path / "out"), shards=shards, executor="inline")
    got = duckdb.sql(f"select * from read_parquet({selection.files})").to_arrow_table().sort_by("doc_id")
    assert got.num_rows == single.num_rows > 100 and got.to_pylist() == single.to_pylist()
    # each part of scores is read by the tasks whose documents it covers: a few, not all
    assert selection.score_parts <= selection.score_parts_read < shards * selection.score_parts / 2


def test_a_stale_or_missing_cover_is_read_by_every_task(scored, tmp_path):
    """A documents part rewritten under another path (its doc_ids now lie there) voids the covers naming the old one;
    a part registered without covers is read by every task: the selection still equals the single-process query."""
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(scored.url, copy)
    db = corpusdb.open(str(copy))
    old = db.snapshot.parts("documents")[3]
    table = duckdb.sql(f"select * from read_parquet('{db.location.join(old)}')").to_arrow_table()
    moved = db.location.write_parquet(table, "documents", "moved.parquet")

    def move(snapshot):
        del snapshot.tables["documents"][old]
        snapshot.add_part("documents", db.location, moved, table.num_rows)
        return "documents part rewritten"

    db.commit("rewrite", move)
    stale = [p for p, info in db.snapshot.tables["scores"].items() if old in info["covers"]]
    assert stale and set(stale) <= set(task_parts(db.snapshot, {"documents/moved.parquet"}))
    assert set(stale) <= set(task_parts(db.snapshot, {db.snapshot.parts("documents")[0]}))  # read by every task
    single = db.sql(f"select * from {CALL}").to_arrow_table().sort_by("doc_id")
    selection = select(db, CALL, str(tmp_path / "out"), shards=4, executor="inline")
    got = duckdb.sql(f"select * from read_parquet({selection.files})").to_arrow_table().sort_by("doc_id")
    assert got.num_rows == single.num_rows and got.to_pylist() == single.to_pylist()


def test_register_parts_checks_the_covers_it_is_given(tmp_path):
    db = ten_parts(tmp_path)
    documents = db.snapshot.parts("documents")
    ids = duckdb.sql(f"select doc_id from read_parquet({[db.location.join(p) for p in documents[:2]]}) order by doc_id"
                     ).fetchall()
    table = pa.table({"doc_id": pa.array([i for (i,) in ids], pa.int64()), "sum_logprob": [-1.0] * len(ids),
                      "n_tokens": pa.array([2] * len(ids), pa.int64()), "n_bytes": pa.array([3] * len(ids), pa.int64())})
    part = db.location.write_parquet(table, "scores", "model=m", "part-0.parquet").path
    models = {"m": {"model": "test/m", "content_hash": "m", "tokenizer_hash": "t", "unit": "documents"}}
    with pytest.raises(ValueError, match=r"doc_id\(s\) of scores/model=m/part-0.parquet are in none of the documents "
                                         r"parts its covers names .*leave the part out of covers"):
        db.register_parts("scores", [part], models=models, covers={part: [documents[0]]})
    with pytest.raises(ValueError, match="names documents/nowhere.parquet, which is not a documents part of this version"):
        db.register_parts("scores", [part], models=models, covers={part: [documents[0], "documents/nowhere.parquet"]})
    with pytest.raises(ValueError, match="covers is for parts of scores or instance_spans, not documents"):
        db.register_parts("documents", documents[:1], covers={documents[0]: documents[:1]})
    with pytest.raises(ValueError, match="covers names scores/model=m/other.parquet, which is not among the parts"):
        db.register_parts("scores", [part], models=models, covers={"scores/model=m/other.parquet": documents[:2]})
    assert "scores/model=m/part-0.parquet" not in corpusdb.open(db.url).snapshot.tables["scores"]  # nothing committed
    db.register_parts("scores", [part], models=models, covers={part: [db.location.join(p) for p in documents[:2]]})
    assert corpusdb.open(db.url).snapshot.tables["scores"]["scores/model=m/part-0.parquet"]["covers"] == documents[:2]
    assert task_parts(corpusdb.open(db.url).snapshot, set(documents[2:])) == []


def test_models_covers_records_the_covers_of_scores_registered_without(scored, tmp_path):
    """Scores from before covers existed (or registered without): `corpusdb models DB --covers` finds the documents
    parts holding each part's doc_ids, a stale cover included; selections then read only their own and still equal
    the single-process query; a second run has nothing to do."""
    import shutil

    from click.testing import CliRunner

    from corpusdb.cli import cli

    copy = tmp_path / "db"
    shutil.copytree(scored.url, copy)
    db = corpusdb.open(str(copy))
    truth = {path: info["covers"] for path, info in db.snapshot.tables["scores"].items()}
    stale = sorted(truth)[0]

    def forget(snapshot):  # as a database scored before covers: none recorded, and one naming a dropped part
        for path, info in snapshot.tables["scores"].items():
            info.pop("covers")
        snapshot.tables["scores"][stale]["covers"] = ["documents/gone.parquet"]
        return "covers forgotten"

    db.commit("forget", forget)
    assert task_parts(corpusdb.open(str(copy)).snapshot, set(db.snapshot.parts("documents")[:1])) == sorted(truth)
    before = CliRunner().invoke(cli, ["select", str(copy), CALL, str(tmp_path / "before"), "--shards", "3", "--workers", "1"])
    assert before.exit_code == 0, before.output
    assert f"the tasks read {3 * len(truth)} parts of scores of {len(truth)}" in before.output
    assert f"note: {len(truth) - 1} parts of scores record no covers, so every task read them; `corpusdb models " \
           f"{copy} --covers` records them" in before.output
    result = CliRunner().invoke(cli, ["models", str(copy), "--covers"])
    assert result.exit_code == 0 and f"covers recorded for {len(truth)} part(s) of scores, instances and annotations" in result.output, result.output
    db = corpusdb.open(str(copy))
    assert {path: info["covers"] for path, info in db.snapshot.tables["scores"].items()} == truth
    again = CliRunner().invoke(cli, ["models", str(copy), "--covers"])
    assert again.exit_code == 0 and "no part of scores, instances or annotations lacks covers" in again.output
    assert CliRunner().invoke(cli, ["models", str(copy), "--covers", "--drop", "gpt2"]).exit_code == 2
    single = db.sql(f"select * from {CALL}").to_arrow_table().sort_by("doc_id")
    selection = select(db, CALL, str(tmp_path / "out"), shards=5, executor="inline")
    got = duckdb.sql(f"select * from read_parquet({selection.files})").to_arrow_table().sort_by("doc_id")
    assert got.num_rows == single.num_rows and got.to_pylist() == single.to_pylist()
    assert selection.score_parts == len(truth) and selection.score_parts_read < 3 * len(truth)


def test_two_racing_scoring_jobs_keep_each_document_once_and_true_covers(tiny_models, tmp_path, scored):
    """Two processes score the same name at once, committing after every part: a part holding documents the other
    job committed first is rewritten without them, keeping its covers (the same parts still hold what is left).
    Each document ends up scored once, with the single run's score, and every part's covers hold its doc_ids."""
    import subprocess
    import sys

    db = ten_parts(tmp_path)
    command = [sys.executable, "-m", "corpusdb.cli", "score", db.url, "--model", str(tiny_models["gpt2"]), "--as", "gpt2",
               "--part-bytes", "4000", "--threads", "1", "--commit-every", "0", "--no-progress"]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-2000:]
    db = corpusdb.open(db.url)
    where = holders(db)
    for path, info in db.snapshot.tables["scores"].items():
        ids = duckdb.sql(f"select doc_id from read_parquet('{db.location.join(path)}')").fetchall()
        assert {where[i] for (i,) in ids} <= set(info["covers"]), path
    got = db.sql("select doc_id, sum_logprob, n_tokens from scores order by doc_id").fetchall()
    want = scored.sql("select doc_id, sum_logprob, n_tokens from scores where model = 'gpt2' order by doc_id").fetchall()
    assert len(got) == len(want) == len(where) and [r[0] for r in got] == [r[0] for r in want]
    assert all(abs(a[1] - b[1]) < 1e-4 * max(1.0, abs(b[1])) for a, b in zip(got, want) if a[1] is not None)


INSTANCES = "difference('gpt2', 'llama', alpha := 0.5, docs := 'instances')"


@pytest.fixture(scope="module")
def instances_scored(tmp_path_factory, tiny_models) -> corpusdb.Database:
    """The ten documents parts cut into instances (parts of 40 documents) and the instances scored by both models."""
    from corpusdb.instances import run_instances

    db = ten_parts(tmp_path_factory.mktemp("instance-covers"))
    run_instances(db, str(tiny_models["gpt2"]), 32, part_docs=40, progress=False)
    for name in ("gpt2", "llama"):
        db.score(str(tiny_models[name]), name, unit="instances", part_bytes=16000, threads=1, progress=False)
    return corpusdb.open(db.url)


def instance_holders(db: corpusdb.Database) -> dict[int, str]:
    """instance_id -> the documents part holding its document, from the files themselves."""
    where = holders(db)
    return {i: where[d] for i, d in db.sql("select instance_id, doc_id from instance_spans").fetchall()}


def true_covers(db: corpusdb.Database) -> dict[str, list[str]]:
    """Every part of instance spans and of instance scores with the documents parts its keys lie in (from the files)."""
    where, through = holders(db), instance_holders(db)
    truth = {}
    for table, column, lookup in (("instance_spans", "doc_id", where), ("scores", "doc_id", through)):
        for path in db.snapshot.tables[table]:
            ids = duckdb.sql(f"select {column} from read_parquet('{db.location.join(path)}')").fetchall()
            truth[path] = sorted({lookup[i] for (i,) in ids})
    return truth


def test_instances_and_their_scores_record_the_documents_parts_they_cover(instances_scored):
    """`corpusdb instances` reads the documents in place order and records each part's documents parts; scoring
    instances records the parts of their documents."""
    db = instances_scored
    truth = true_covers(db)
    recorded = {path: info["covers"] for table in ("instance_spans", "scores") for path, info in db.snapshot.tables[table].items()}
    assert recorded == truth
    spans = [len(c) for p, c in truth.items() if p.startswith("instances/")]
    scores = [len(c) for p, c in truth.items() if p.startswith("scores/")]
    assert len(spans) >= 7 and len(scores) >= 8
    assert max(scores) > 1 and max(spans + scores) < len(db.snapshot.parts("documents"))  # neither one each nor all


def test_a_task_over_instances_opens_only_the_parts_covering_its_documents(instances_scored, tmp_path):
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(instances_scored.url, copy)
    db = corpusdb.open(str(copy))
    mine = db.snapshot.parts("documents")[4:6]
    query = "select * from difference_units('gpt2', 'llama', docs := 'instances') order by unit_id"
    wanted = db.sql(f"select * from ({query}) where unit_id in (select instance_id from instances where doc_id in (select "
                    f"doc_id from read_parquet({[db.location.join(p) for p in mine]})))").fetchall()
    others = [p for table in ("instance_spans", "scores") for p in db.snapshot.parts(table)
              if p not in set(task_parts(db.snapshot, set(mine), table))]
    assert len(others) > len(db.snapshot.parts("scores")) // 2
    for path in others:  # a task that opened any of these would fail
        (copy / path).unlink()
    db.restrict([db.location.join(p) for p in mine])
    assert db.sql(query).fetchall() == wanted and len(wanted) > 10


def test_a_selection_over_instances_reads_each_part_in_a_few_tasks(instances_scored, tmp_path, shards=4):
    single = instances_scored.sql(f"select * from {INSTANCES}").to_arrow_table().sort_by([("doc_id", "ascending"),
                                                                                          ("byte_start", "ascending")])
    selection = select(instances_scored, INSTANCES, str(tmp_path / "out"), shards=shards, executor="inline")
    got = duckdb.sql(f"select * from read_parquet({selection.files})").to_arrow_table().sort_by([("doc_id", "ascending"),
                                                                                                 ("byte_start", "ascending")])
    assert got.num_rows == single.num_rows > 100 and got.to_pylist() == single.to_pylist()
    # each part of scores is read by the tasks whose documents it covers (here about two of four), not by all
    assert selection.score_parts <= selection.score_parts_read < 0.6 * shards * selection.score_parts


def test_models_covers_records_instance_covers_through_the_spans(instances_scored, tmp_path):
    """Spans and instance scores registered without covers: `models --covers` finds them (instance scores through
    the spans); register_parts refuses covers for instance scores, naming `models --covers`."""
    import shutil

    from click.testing import CliRunner

    from corpusdb.cli import cli

    copy = tmp_path / "db"
    shutil.copytree(instances_scored.url, copy)
    db = corpusdb.open(str(copy))
    truth = true_covers(db)
    score = sorted(db.snapshot.tables["scores"])[0]
    with pytest.raises(ValueError, match="holds scores of instances, whose covers go through the instances' spans; "
                                         r"register it without covers and run `corpusdb models DB --covers`"):
        db.register_parts("scores", [score], covers={score: db.snapshot.parts("documents")})

    def forget(snapshot):
        for table in ("instance_spans", "scores"):
            for info in snapshot.tables[table].values():
                info.pop("covers")
        return "covers forgotten"

    db.commit("forget", forget)
    result = CliRunner().invoke(cli, ["models", str(copy), "--covers"])
    assert result.exit_code == 0 and f"covers recorded for {len(truth)} part(s) of scores, instances and annotations" in result.output
    db = corpusdb.open(str(copy))
    assert {p: i["covers"] for t in ("instance_spans", "scores") for p, i in db.snapshot.tables[t].items()} == truth


def test_a_scoring_job_over_a_view_records_its_covers_too(scored, instances_scored, tiny_models, tmp_path):
    """Over a --view the job reads the view's documents (or their instances, or the view's instances) in place order,
    each once: every part of scores records the documents parts it covers, and the scores are the view's units', as
    the whole run scored them."""
    import math
    import shutil

    for i, (base, unit, view, units) in enumerate((
        (scored, "documents", "filter_source(['web'])", "select doc_id from filter_source(['web'])"),
        (instances_scored, "instances", "filter_length(min_bytes := 500)",  # a view of documents: their instances
         "select instance_id from instances where doc_id in (select doc_id from filter_length(min_bytes := 500))"),
        (instances_scored, "instances", "select * from instances where byte_start = 0",
         "select instance_id from instances where byte_start = 0"),
    )):
        copy = tmp_path / f"db{i}"
        shutil.copytree(base.url, copy)
        db = corpusdb.open(str(copy))
        db.score(str(tiny_models["gpt2"]), "viewed", unit=unit, view=view, part_bytes=16000, threads=1, progress=False)
        db = corpusdb.open(str(copy))
        wanted = sorted(u for (u,) in db.sql(units).fetchall())
        total = db.sql(f"select count(*) from {unit}").fetchall()[0][0]
        got = dict(db.sql("select doc_id, sum_logprob from scores where model = 'viewed'").fetchall())
        assert sorted(got) == wanted and 0 < len(wanted) < total, view
        whole = dict(db.sql("select doc_id, sum_logprob from scores where model = 'gpt2'").fetchall())
        assert all(math.isclose(got[u], whole[u], rel_tol=1e-5, abs_tol=1e-3) for u in got if got[u] is not None), view
        truth = holders(db) if unit == "documents" else instance_holders(db)
        records = {p: info for p, info in db.snapshot.tables["scores"].items() if p.startswith("scores/model=viewed/")}
        for path, info in records.items():
            ids = duckdb.sql(f"select doc_id from read_parquet('{db.location.join(path)}')").fetchall()
            assert info["covers"] == sorted({truth[u] for (u,) in ids}), view
        assert len(records) > 1, view


def test_a_stream_of_instances_reads_a_run_of_documents_parts_at_a_time(instances_scored, tmp_path, monkeypatch):
    """Where spans and scores record covers, the scoring job streams instances a run of documents parts at a time,
    each run reading the parts of spans and of the name's scores that cover it (every other one hidden while it
    streams): together the runs give the single stream's instances, in documents' place order, with the same flags;
    a part of spans without covers makes it one stream again."""
    import shutil

    from corpusdb.scoring import job

    copy = tmp_path / "db"
    shutil.copytree(instances_scored.url, copy)
    db = corpusdb.open(str(copy))
    db.con.execute("set threads = 1")  # as the job streams
    monkeypatch.setattr(job, "RUN_ROWS", 60)
    cursor = db.con.cursor()

    def streamed(segments) -> list:
        rows = []
        for statements, query, params in segments:
            for statement in statements:
                cursor.execute(statement)
            got = job.reader_as_written(db, cursor, query, params, 1000).read_all()
            rows += zip(got.column("doc_id").to_pylist(), got.column("done").to_pylist(), got.column("file").to_pylist())
        return rows

    single = streamed([([job.placed_sql(db)], job.stream_sql(job.INSTANCE_ROWS), ["gpt2"])])
    runs = job.instance_runs(db, "gpt2")
    spans, scored = db.snapshot.parts("instance_spans"), db.snapshot.parts("scores", "scores/model=gpt2/")
    assert len(runs) >= 4 and all(len(s) < len(spans) and len(c) < len(scored) for _, s, c in runs)
    segments = job.stream_segments(db, "gpt2", "instances", "true")
    assert len(segments) == len(runs)
    got = []
    for (_, own_spans, own_scores), segment in zip(runs, segments):
        hidden = [p for p in spans + scored if p not in own_spans + own_scores]
        for path in hidden:
            (copy / path).rename(copy / f"{path}.hidden")
        got += streamed([segment])
        for path in hidden:
            (copy / f"{path}.hidden").rename(copy / path)
    place = {db.location.url_of(p): i for i, p in enumerate(db.parts("documents"))}
    for rows in (single, got):
        assert [place[f] for _, _, f in rows] == sorted(place[f] for _, _, f in rows)  # documents' place order
    assert sorted(got) == sorted(single) and len(single) == db.sql("select count(*) from instances").fetchall()[0][0]
    assert all(done for _, done, _ in got)  # gpt2 scored every instance: each run found its scores
    # a part of spans registered without covers: every run would read it, so one stream

    def uncover(latest) -> str:
        records = latest.tables["instance_spans"]
        records[spans[0]] = {k: v for k, v in records[spans[0]].items() if k != "covers"}
        return "a part of spans without covers"

    db.commit("uncover", uncover)
    assert job.instance_runs(corpusdb.open(str(copy)), "gpt2") is None
