"""Instances, MiniPLM's unit: exact spans, per-instance scores, policies, export and streaming over them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

import corpusdb
from tests.views_fixture import build
from corpusdb.cli import cli
from corpusdb.errors import CatalogError
from corpusdb.instances import run_instances, spans
from corpusdb.train import ViewDataset
from tests.conftest import CORPUS, ingest_per_source

CLI = [sys.executable, "-m", "corpusdb.cli"]


@pytest.fixture(scope="module")
def tokenizers(tiny_models):
    return {name: AutoTokenizer.from_pretrained(path) for name, path in tiny_models.items()}


@pytest.fixture(scope="module")
def inst_db(tmp_path_factory, tiny_models):
    """The fixture corpus cut into instances of 24 gpt2 tokens, scored per instance by both tiny models."""
    folder = tmp_path_factory.mktemp("inst")
    db = corpusdb.init(str(folder / "db"))
    _ingest_with_copies(db, folder)
    db.minhash(workers=1, progress=False)
    run_instances(db, str(tiny_models["gpt2"]), 24, progress=False)
    db.score(str(tiny_models["gpt2"]), "teacher", unit="instances", progress=False)
    db.score(str(tiny_models["llama"]), "reference", unit="instances", progress=False)
    return db


def _ingest_with_copies(db, folder) -> None:
    """The fixture corpus plus near-copies of eight documents (one word added), so dedup removes something."""
    import json

    ingest_per_source(db, CORPUS)
    texts = [t for (t,) in db.sql("select text from documents where source = 'git-docs' order by doc_id limit 8").fetchall()]
    copies = folder / "copies.jsonl"
    copies.write_text("".join(json.dumps({"text": t + " Revised."}) + "\n" for t in texts))
    db.ingest([str(copies)], source="copies", progress=False)


def _check_spans(text: str, tokenizer, max_tokens: int) -> list[tuple[int, int, int]]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    bounds = spans(text, encoded["offset_mapping"], max_tokens)
    data = text.encode("utf-8", "surrogatepass")
    pieces = [data[a:b] for a, b, _ in bounds]
    assert b"".join(pieces) == data  # the spans cover the text exactly, in order
    assert all(a < b for a, b, _ in bounds) and all(b1 == a2 for (_, b1, _), (a2, _, _) in zip(bounds, bounds[1:]))
    assert "".join(p.decode("utf-8", "surrogatepass") for p in pieces) == text  # every cut on a character boundary
    assert sum(n for *_, n in bounds) == len(encoded["input_ids"])
    return bounds


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=0, max_size=400), max_tokens=st.integers(1, 40))
def test_spans_concatenate_to_the_text_on_token_boundaries(tokenizers, text, max_tokens):
    for tokenizer in tokenizers.values():
        bounds = _check_spans(text, tokenizer, max_tokens)
        # at most max_tokens tokens each, unless one token spans the whole rest (a character split throughout)
        assert all(n <= max_tokens for *_, n in bounds[:-1]) or len(bounds) == 1


def test_spans_of_real_text_hold_max_tokens_and_retokenize_alike(inst_db, tokenizers):
    rows = inst_db.sql("select text, n_tokens, position from instances").fetchall()
    assert max(n for _, n, _ in rows) == 24
    retokenized = [len(tokenizers["gpt2"](t, add_special_tokens=False)["input_ids"]) for t, _, _ in rows]
    same = sum(r == n for r, (_, n, _) in zip(retokenized, rows))
    assert all(r <= 24 for r in retokenized) and same / len(rows) > 0.95  # merges across a cut are rare
    # each document's instances, in position order, are its text
    mismatched = inst_db.sql(
        "select count(*) from documents d join (select doc_id, string_agg(text, '' order by position) as t "
        "from instances group by doc_id) i using (doc_id) where i.t <> d.text"
    ).fetchall()
    assert mismatched == [(0,)]
    assert inst_db.sql("select count(distinct doc_id) from instances").fetchall() == inst_db.sql(
        "select count(*) from documents where n_bytes > 0").fetchall()


def test_instance_scores_name_their_key_instance_id(inst_db, tmp_path):
    """The stored key of an instance score is an instance_id: the scores view names it so (and unit_id for any
    score); doc_id keeps the stored value for queries written before."""
    n_instances = inst_db.sql("select count(*) from instances").fetchall()[0][0]
    joined = inst_db.sql("select count(*), bool_and(s.unit_id = i.instance_id and s.doc_id = i.instance_id) "
                         "from scores s join instances i using (instance_id) where s.model = 'teacher'").fetchall()
    assert joined == [(n_instances, True)]
    assert inst_db.sql("select count(*) from scores where instance_id is null or unit_id <> doc_id").fetchall() == [(0,)]
    assert inst_db.sql("select count(*) = count(unit_id) from losses").fetchall() == [(True,)]
    documents = build(tmp_path / "docs")  # scores of documents: no instance_id
    assert documents.sql("select count(*), count(instance_id), bool_and(unit_id = doc_id) from scores").fetchall() == [(13, 0, True)]


def test_instance_scores_equal_a_plain_forward_pass(inst_db, tiny_models):
    for name, arch in (("teacher", "gpt2"), ("reference", "llama")):
        model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
        tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
        rows = inst_db.sql(
            "select i.text, s.sum_logprob, s.n_tokens from instances i join scores s on s.doc_id = i.instance_id "
            f"where s.model = '{name}' order by i.instance_id limit 40"
        ).fetchall()
        assert len(rows) == 40
        for text, sum_logprob, n_tokens in rows:
            ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
            assert n_tokens == len(ids) - 1
            if len(ids) > model.config.max_position_embeddings:
                continue  # scored in windows: the document-level tests cover those
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, :-1].double()
            expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
            assert sum_logprob == pytest.approx(expected, abs=1e-4, rel=1e-5)


def test_one_instance_per_document_selects_as_documents(tmp_path, tiny_models):
    db = corpusdb.init(str(tmp_path / "db"))
    _ingest_with_copies(db, tmp_path)
    db.minhash(workers=1, progress=False)
    longest = db.sql("select max(n_bytes) from documents").fetchall()[0][0]
    run_instances(db, str(tiny_models["gpt2"]), longest + 10, progress=False)  # no document has more tokens than bytes
    assert db.sql("select count(*) = (select count(*) from documents where n_bytes > 0), bool_and(instance_id = doc_id) "
                  "from instances").fetchall() == [(True, True)]
    for name, arch in (("t", "gpt2"), ("r", "llama")):
        db.score(str(tiny_models[arch]), name, progress=False)
        db.score(str(tiny_models[arch]), f"{name}_i", unit="instances", progress=False)
    median = db.sql("select median(loss_per_byte) from losses where model = 'r'").fetchall()[0][0]
    calls = {
        "difference('{t}', '{r}', alpha := 0.3{docs})": "doc_id",
        "difference_bytes('{t}', '{r}', alpha := 0.4{docs})": "doc_id",
        "difference_sampled('{t}', '{r}', alpha := 0.3, seed := 4{docs})": "doc_id",
        "difference_by_source('{t}', '{r}', alpha := 0.5{docs})": "doc_id",
        "curriculum('{r}', stages := 3{docs})": "doc_id, stage",
        "filter_loss('{r}', max_loss := %r{docs})" % median: "doc_id",
        "quota(map {{'bible': 20000, 'fortunes': 3000}}, unit := 'tokens', model := '{t}', seed := 2{docs})": "doc_id",
        "dedup({dd})": "doc_id",
    }
    for call, columns in calls.items():
        documents = call.format(t="t", r="r", docs="", dd="")
        instances = call.format(t="t_i", r="r_i", docs=", docs := 'instances'", dd="docs := 'instances'")
        got = db.sql(f"select {columns} from {instances} order by all").fetchall()
        want = db.sql(f"select {columns} from {documents} where n_bytes > 0 order by all").fetchall()
        assert got == want and len(want) > 3, call
    assert db.sql("select count(*) from dedup").fetchall()[0][0] < db.sql("select count(*) from documents").fetchall()[0][0]


def test_policies_refuse_mixed_units(inst_db, tiny_models):
    inst_db.score(str(tiny_models["gpt2"]), "teacher_docs", progress=False)
    with pytest.raises(corpusdb.QueryError, match="scored different units"), inst_db.query_errors():
        inst_db.sql("select * from difference('teacher_docs', 'reference', docs := 'instances')").fetchall()
    with pytest.raises(corpusdb.QueryError, match="'teacher' scored instances but docs holds documents; pass docs := 'instances'"), \
            inst_db.query_errors():
        inst_db.sql("select * from difference('teacher', 'reference')").fetchall()
    assert inst_db.sql("select model, unit from models order by 1").fetchall() == [
        ("reference", "instances"), ("teacher", "instances"), ("teacher_docs", "documents")]


def test_difference_over_deduplicated_instances(inst_db):
    kept = inst_db.sql("select instance_id, doc_id from difference('teacher', 'reference', docs := 'instances')").fetchall()
    total = inst_db.sql("select count(*) from instances").fetchall()[0][0]
    assert len(kept) == -(-total // 2)
    inst_db.create_view("inst_dedup", "select * from dedup(docs := 'instances')", replace=True)
    deduped = inst_db.sql("select d.* from difference('teacher', 'reference', docs := 'inst_dedup') d "
                          "join minhash m using (doc_id) where m.doc_id <> m.cluster_id").fetchall()
    assert deduped == []  # no instance of a non-representative document
    duplicates = inst_db.sql("select count(*) from instances join minhash m using (doc_id) where m.doc_id <> m.cluster_id")
    assert duplicates.fetchall()[0][0] > 0  # the fixture has near-duplicates, so the check above means something


def test_tokens_export_of_instances_is_miniplms_instances(inst_db, tiny_models, tmp_path):
    view = "difference('teacher', 'reference', docs := 'instances')"
    manifest = inst_db.view(view).export(str(tmp_path / "out"), format="tokens", tokenizer=str(tiny_models["gpt2"]))
    part = manifest["parts"][0]
    index = pq.read_table(tmp_path / "out" / part["index"]).to_pylist()
    # instances in the order of their documents in the parts, each document's in text order
    place = {d: i for i, d in enumerate(d for part in inst_db.parts("documents")
                                        for d in pq.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist())}
    rows = sorted(inst_db.sql(f"select doc_id, byte_start, n_tokens from {view}").fetchall(), key=lambda r: (place[r[0]], r[1]))
    rows = [(d, n) for d, _, n in rows]
    assert [r["doc_id"] for r in index] == [d for d, _ in rows]
    assert len({r["instance_id"] for r in index}) == len(index)
    lengths = np.array([r["n_tokens"] - 1 for r in index])  # each instance's tokens, then EOS
    assert lengths.max() <= 24 and np.mean(lengths == np.array([n for _, n in rows])) > 0.95


def test_instance_stream_resumes_exactly(inst_db, tiny_models, tmp_path):
    view = "difference('teacher', 'reference', docs := 'instances')"
    kwargs = dict(seq_len=16, batch_size=2, block_mb=0.005, seed=3, cache_dir=str(tmp_path / "cache"))
    ds = ViewDataset(inst_db, view, str(tiny_models["gpt2"]), **kwargs)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    uninterrupted = [b for b, _ in zip(loader, range(10))]
    state = ds.state_dict(consumed=4 * 2, num_workers=0)
    resumed = ViewDataset(inst_db, view, str(tiny_models["gpt2"]), **kwargs)
    resumed.load_state_dict(state)
    again = [b for b, _ in zip(torch.utils.data.DataLoader(resumed, batch_size=2, num_workers=0), range(6))]
    assert all(torch.equal(a, b) for a, b in zip(again, uninterrupted[4:], strict=True))


def test_cut_is_resumable_and_settings_are_bound(tmp_path, tiny_models):
    url = str(tmp_path / "db")
    db = corpusdb.init(url)
    ingest_per_source(db, CORPUS)
    whole = corpusdb.init(str(tmp_path / "whole"))
    ingest_per_source(whole, CORPUS)
    run_instances(whole, str(tiny_models["gpt2"]), 16, progress=False)
    result = subprocess.run([*CLI, "instances", url, "--tokenizer", str(tiny_models["gpt2"]), "--tokens", "16", "--part-docs",
                             "50", "--commit-every", "0", "--no-progress"], capture_output=True, text=True,
                            env={**os.environ, "CORPUSDB_FAILPOINT": "instances.after_part=2"})
    assert result.returncode == 75, result.stderr
    assert corpusdb.open(url).sql("select count(distinct doc_id) from instance_spans").fetchall() == [(100,)]
    report = run_instances(corpusdb.open(url), str(tiny_models["gpt2"]), 16, progress=False)
    assert report.n_documents_before == 100 and report.n_documents == 257
    spans_of = "select instance_id, doc_id, position, byte_start, byte_end, n_tokens from instance_spans order by all"
    assert corpusdb.open(url).sql(spans_of).fetchall() == whole.sql(spans_of).fetchall()
    with pytest.raises(CatalogError, match="instances were cut with another tokens per instance .* or --replace"):
        run_instances(corpusdb.open(url), str(tiny_models["gpt2"]), 32, progress=False)
    db = corpusdb.open(url)
    db.score(str(tiny_models["gpt2"]), "t", unit="instances", progress=False)
    with pytest.raises(CatalogError, match=r"scores of the current instances exist \(t\).*--drop"):
        run_instances(db, str(tiny_models["gpt2"]), 32, replace=True, progress=False)


def test_instance_score_names_are_bound_to_their_unit(inst_db, tiny_models):
    with pytest.raises(CatalogError, match="scores 'teacher' were made with unit='instances', not 'documents'"):
        inst_db.score(str(tiny_models["gpt2"]), "teacher", progress=False)


def test_cli_errors_name_the_fix(tmp_path, tiny_models):
    runner = CliRunner()
    url = str(tmp_path / "db")
    corpusdb.init(url).ingest([str(CORPUS / "bible.jsonl")], source="bible", progress=False)
    result = runner.invoke(cli, ["score", url, "--model", str(tiny_models["gpt2"]), "--as", "t", "--unit", "instances"])
    assert result.exit_code == 1 and "no instances to score: cut the documents first (`corpusdb instances" in result.output
    result = runner.invoke(cli, ["instances", url, "--tokenizer", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "not found" in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(cli, ["instances", "--help"])
    assert result.exit_code == 0 and "docs := 'instances'" in result.output


def test_stats_compare_and_report_count_instances(inst_db):
    from corpusdb.analysis import compare_views, view_stats
    from corpusdb.report import build_report

    view = "difference('teacher', 'reference', docs := 'instances')"
    total = inst_db.sql("select count(*) from instances").fetchall()[0][0]
    stats = view_stats(inst_db, view)
    assert stats["unit"] == "instances" and stats["n_documents"] == -(-total // 2)
    assert stats["share_of_corpus_documents"] == pytest.approx(stats["n_documents"] / total)
    assert set(stats["n_tokens"]) == {"teacher", "reference"}  # instance scores joined on instance_id
    compared = compare_views(inst_db, "instances", view)
    assert (compared["n_a"], compared["n_b"], compared["n_both"]) == (total, -(-total // 2), -(-total // 2))
    with pytest.raises(ValueError, match="holds documents and .* instances; compare views of one unit"):
        compare_views(inst_db, "documents", view)
    page = build_report(inst_db, teacher="teacher", reference="reference")
    assert "docs := &#x27;instances&#x27;" in page and page.count("<img") == 5  # histograms, scatter, scores, kept, shares
    assert "<h2>Bits per byte by source, over instances</h2>" in page
    assert inst_db.stats()["instances"] == {"n_instances": total, "tokens": 24, "tokenizer": inst_db.snapshot.settings[
        "instances"]["tokenizer"], "tokenizer_hash": inst_db.snapshot.settings["instances"]["tokenizer_hash"]}


def test_killed_instance_export_resumes_to_the_clean_export(inst_db, tiny_models, tmp_path):
    view = "difference('teacher', 'reference', docs := 'instances')"
    options = dict(format="tokens", tokenizer=str(tiny_models["gpt2"]), part_size_mb=0.02)
    clean = inst_db.view(view).export(str(tmp_path / "clean"), **options)
    assert len(clean["parts"]) >= 4
    out = tmp_path / "killed"
    script = (f"import corpusdb; corpusdb.open({inst_db.url!r}).view({view!r}).export({str(out)!r}, format='tokens', "
              f"tokenizer={str(tiny_models['gpt2'])!r}, part_size_mb=0.02)")
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "CORPUSDB_FAILPOINT": "export.after_part=2"},
                            capture_output=True, text=True)
    assert result.returncode == 75, result.stderr
    assert not (out / "manifest.json").exists()
    resumed = inst_db.view(view).export(str(out), **options)
    for a, b in zip(clean["parts"], resumed["parts"], strict=True):
        assert (tmp_path / "clean" / a["file"]).read_bytes() == (out / b["file"]).read_bytes()
        assert pq.read_table(tmp_path / "clean" / a["index"]).equals(pq.read_table(out / b["index"]))


class _RacingTokenizer:
    """A real tokenizer that lets another instances job run just before its first use (two jobs at once)."""

    def __init__(self, real, race):
        self.real, self.race = real, race

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __len__(self) -> int:
        return len(self.real)

    def __call__(self, *args, **kwargs):
        race, self.race = self.race, None
        if race:
            race()
        return self.real(*args, **kwargs)


def test_two_jobs_cutting_the_same_documents_never_commit_them_twice(tmp_path, tiny_models, tokenizers):
    url = str(tmp_path / "db")
    ingest_per_source(corpusdb.init(url), CORPUS)
    path = str(tiny_models["gpt2"])
    other = lambda: run_instances(corpusdb.open(url), path, 16, progress=False)  # noqa: E731
    with pytest.raises(corpusdb.ConflictError, match="another `corpusdb instances` job cut some of the same documents"):
        run_instances(corpusdb.open(url), path, 16, progress=False, loaded_tokenizer=_RacingTokenizer(tokenizers["gpt2"], other))
    db = corpusdb.open(url)
    assert db.sql("select count(*) = count(distinct instance_id) from instance_spans").fetchall() == [(True,)]
    assert db.sql("select count(distinct doc_id) from instance_spans").fetchall() == db.sql(
        "select count(*) from documents where n_bytes > 0").fetchall()
    on_disk = {p.name for p in (tmp_path / "db" / "instances").glob("*.parquet")}
    assert on_disk == {p.rsplit("/", 1)[-1] for p in db.snapshot.tables["instance_spans"]}  # the loser's parts removed
    assert run_instances(db, path, 16, progress=False).n_documents == 0


class _LaterRacingTokenizer(_RacingTokenizer):
    """The same, letting the other job run just before its `when`-th call (after this job committed a part)."""

    def __init__(self, real, race, when: int):
        super().__init__(real, race)
        self.calls, self.when = 0, when

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.when and self.race:
            race, self.race = self.race, None
            race()
        return self.real(*args, **kwargs)


def test_a_job_checks_every_later_commit_against_what_another_job_committed(tmp_path, tiny_models, tokenizers):
    """Another job cuts the last documents (a view) after this one committed its first part: this job's next part
    does not overlap them, its later ones do, and are refused, never committed twice."""
    url = str(tmp_path / "db")
    ingest_per_source(corpusdb.init(url), CORPUS)
    path = str(tiny_models["gpt2"])
    db = corpusdb.open(url)
    last = db.sql("select doc_id from documents where n_bytes > 0 order by doc_id").fetchall()[-60][0]
    db.create_view("late", f"select * from documents where doc_id >= {last}")
    other = lambda: run_instances(corpusdb.open(url), path, 16, view="late", progress=False)  # noqa: E731
    racing = _LaterRacingTokenizer(tokenizers["gpt2"], other, when=3)
    with pytest.raises(corpusdb.ConflictError, match="another `corpusdb instances` job cut some of the same documents"):
        run_instances(corpusdb.open(url), path, 16, part_docs=40, commit_seconds=0, progress=False, loaded_tokenizer=racing)
    db = corpusdb.open(url)
    assert racing.race is None  # the other job ran
    assert db.sql("select count(*) from (select doc_id, position from instance_spans group by all having count(*) > 1)"
                  ).fetchall() == [(0,)]
    assert run_instances(db, path, 16, progress=False).n_documents > 0  # the rest, cut once
    assert db.sql("select count(distinct doc_id) from instance_spans").fetchall() == db.sql(
        "select count(*) from documents where n_bytes > 0").fetchall()
    assert db.sql("select count(*) = count(distinct (doc_id, position)) from instance_spans").fetchall() == [(True,)]


def test_scoring_instances_names_documents_left_uncut(tmp_path, tiny_models):
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(CORPUS / "bible.jsonl")], source="bible", progress=False)
    run_instances(db, str(tiny_models["gpt2"]), 32, progress=False)
    db.ingest([str(CORPUS / "fortunes.jsonl")], source="fortunes", progress=False)  # after the cut
    fortunes = db.sql("select count(*) from documents where source = 'fortunes' and n_bytes > 0").fetchall()[0][0]
    report = db.score(str(tiny_models["gpt2"]), "t", unit="instances", progress=False)
    assert report.n_uncut_documents == fortunes > 0
    assert f"note: {fortunes:,} documents have no instances" in report.summary() and "run `corpusdb instances`" in report.summary()
    run_instances(db, str(tiny_models["gpt2"]), 32, progress=False)
    again = db.score(str(tiny_models["gpt2"]), "t", unit="instances", progress=False)
    assert again.n_uncut_documents == 0 and again.n_documents > 0 and "note:" not in again.summary()


def test_scoring_instances_hashes_the_spans_and_streams_the_documents_text(inst_db, tmp_path):
    """The scoring job's join hashes the spans and streams the documents' text past them, in place order (DuckDB's
    plan as it runs it; with DuckDB's own choice the documents, fewer rows, are hashed: every pending document's text
    held before the first instance). Every span registered is a byte range of its document."""
    import json

    import pyarrow as pa

    from corpusdb.scoring.job import FILE, INSTANCE_ROWS, placed_sql, reader_as_written

    db = corpusdb.open(inst_db.url)
    cursor = db.con.cursor()
    cursor.execute(placed_sql(db))

    def reads(node: dict) -> set[str]:
        found = set(node.get("extra_info", {}).get("Projections", [])) if node.get("name") == "READ_PARQUET" else set()
        return found.union(*(reads(child) for child in node.get("children", [])))

    def hashed(explained: pa.RecordBatchReader) -> set[str]:
        plan = json.loads(explained.read_all().column(1)[0].as_py())[0]
        joins = [plan]
        while joins[-1].get("name") != "HASH_JOIN":
            (child,) = joins[-1]["children"]
            joins.append(child)
        probe, build = joins[-1]["children"]
        assert "text" in reads(probe) or "text" in reads(build)
        return reads(build)

    assert "text" in hashed(cursor.sql(f"explain (format json) {INSTANCE_ROWS}").to_arrow_reader(10))  # DuckDB's choice
    built = hashed(reader_as_written(db, cursor, f"explain (format json) {INSTANCE_ROWS}", [], 10))
    assert "text" not in built and "byte_start" in built
    assert db.con.execute("select current_setting('disabled_optimizers')").fetchall()[0][0] == ""  # restored
    db.con.execute("set threads = 1")  # as the job reads, in one thread
    got = reader_as_written(db, cursor, INSTANCE_ROWS, [], 1000).read_all()
    assert sorted(got.column("doc_id").to_pylist()) == sorted(i for (i,) in db.sql("select instance_id from instances").fetchall())
    parts = {db.location.url_of(p): i for i, p in enumerate(db.parts("documents"))}
    order = [parts[f] for f in got.column(FILE).to_pylist()]
    assert order == sorted(order) and len(set(order)) > 1  # the documents stream in place order

    spans = pq.read_table(db.location.join(db.snapshot.parts("instance_spans")[0]))
    bad = spans.set_column(spans.schema.get_field_index("byte_end"), "byte_end",
                           pa.array([-1] + spans.column("byte_end").to_pylist()[1:], pa.int64()))
    written = db.location.write_parquet(bad.slice(0, 3), "instances", "bad.parquet")
    version = db.version
    with pytest.raises(ValueError, match=r"instances/bad.parquet holds 1 span\(s\) that are not 0 <= byte_start <= "
                                         r"byte_end with n_tokens >= 0"):
        db.register_parts("instance_spans", [written.path])
    twice = [db.location.write_parquet(spans.slice(i, 2), "instances", f"twice-{i}.parquet").path for i in (0, 1)]
    with pytest.raises(ValueError, match=rf"1 instance_id\(s\) repeat in the parts \(e.g. {spans.column('instance_id')[1]}\)"):
        db.register_parts("instance_spans", twice)
    assert corpusdb.open(db.url).version == version
