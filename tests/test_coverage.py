"""No silent selections: a policy judges every unit it is given, or refuses naming what is missing.

The hand-checked fixture (`tests/views_fixture.py`) has a teacher scored on all seven documents and
a reference scored on six (F is not): every policy that reads the reference refuses by default and,
with the explicit `missing := ...`, returns what a hand-written query over the covered units
returns. The property at the end does the same over random coverage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.cli import cli
from tests.policy_tables import connect as connect_tables
from tests.policy_tables import doc_ids
from tests.views_fixture import ID, NAME, build, names


@pytest.fixture
def db(tmp_path) -> corpusdb.Database:
    return build(tmp_path / "db")


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


GAP = "1 of 7 units of 'documents' have no score of 'reference'"
SCORE_FIX = "score them with `corpusdb score DB --model fixture/reference --as reference --view documents`"


@pytest.mark.parametrize("sql, message", [
    ("difference('teacher', 'reference')",
     f"difference: {GAP}; {SCORE_FIX} (a re-run scores only the units without a score), or pass missing := 'exclude' to "
     "rank only the 6 units with both scores (alpha is then of those)"),
    ("difference_bytes('teacher', 'reference', alpha := 0.3)", f"difference_bytes: {GAP}; {SCORE_FIX}"),
    ("difference_sampled('teacher', 'reference')", f"difference_sampled: {GAP}; {SCORE_FIX}"),
    ("difference_by_source('teacher', 'reference')", f"difference_by_source: {GAP}; {SCORE_FIX}"),
    ("difference_scores('teacher', 'reference')", f"difference_keys: {GAP}; {SCORE_FIX}"),
    ("curriculum('reference')",
     f"curriculum: {GAP}; {SCORE_FIX} (a re-run scores only the units without a score), or pass missing := 'last' to put "
     "them after the 6 scored units, or missing := 'exclude' to rank only those"),
    ("filter_loss('reference', max_loss := 2.0)",
     f"filter_loss: {GAP}; {SCORE_FIX} (a re-run scores only the units without a score), or pass missing := 'exclude' to "
     "drop them or missing := 'keep' to keep them unjudged"),
    ("quota(map {'books': 100}, unit := 'tokens', model := 'reference')",
     "quota: 1 of 4 units of 'documents' have no score of 'reference' (unit 'tokens' counts its tokens)"),
    ("mixture(map {'books': 1}, 100, unit := 'tokens', model := 'reference')",
     "mixture: 1 of 4 units of 'documents' have no score of 'reference'"),
    ("quota(map {'web': 40, 'bokos': 10})", "quota: no units of source(s) [bokos] in 'documents'; sources: [books, web]"),
    ("mixture(map {'web': 1, 'bokos': 3}, 80)", "mixture: no units of source(s) [bokos] in 'documents'; sources: [books, web]"),
    ("difference_by_source('teacher', 'reference', alphas := map {'wbe': 0.5}, missing := 'exclude')",
     "difference_by_source: no units of source(s) [wbe] in 'documents'; sources: [books, web]"),
    ("difference('teacher', 'reference', missing := 'keep')", "difference: missing must be one of 'error', 'exclude', not 'keep'"),
    ("curriculum('reference', missing := null)", "curriculum: missing must be one of 'error', 'last', 'exclude', not NULL"),
])
def test_a_policy_refuses_what_it_cannot_judge_with_one_line_and_writes_nothing(db, sql, message):
    folder = Path(db.url.removeprefix("file://"))
    before = files_of(folder)
    result = CliRunner().invoke(cli, ["sql", db.url, f"select count(*) from {sql}"])
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert files_of(folder) == before


def test_the_refusal_stops_an_export_and_a_saved_view_before_anything_is_written(db, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", db.url, "difference('teacher', 'reference')", str(out)])
    assert result.exit_code == 1 and GAP in result.output and not out.exists()
    folder = Path(db.url.removeprefix("file://"))
    before = files_of(folder)
    result = CliRunner().invoke(cli, ["view", "create", db.url, "refined", "--sql", "select * from difference('teacher', 'reference')"])
    assert result.exit_code == 1 and GAP in result.output
    assert files_of(folder) == before
    # with the opt-in, the export records it in its manifest (the SQL it ran)
    result = CliRunner().invoke(cli, ["export", db.url, "difference('teacher', 'reference', missing := 'exclude')", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "missing := 'exclude'" in manifest["sql"] and manifest["missing"] == [{"policy": "difference", "missing": "exclude"}]
    db.create_view("refined", "select * from difference('teacher', 'reference', missing := 'exclude')")
    manifest = db.view("select * from curriculum('reference', docs := 'refined', missing := 'last') -- missing := 'keep'").export(
        str(tmp_path / "lessons"))
    assert manifest["missing"] == [{"policy": "curriculum", "missing": "last"},
                                   {"policy": "difference", "missing": "exclude", "view": "refined"}]
    assert db.view("filter_source(['web'])").export(str(tmp_path / "web"))["missing"] == []  # every unit judged


def hand_scores(db: corpusdb.Database) -> dict[str, tuple[float | None, int]]:
    """name -> (teacher minus reference per byte, n_bytes) for the documents both models scored (by hand, in SQL)."""
    rows = db.sql("""
        select d.doc_id, (t.sum_logprob - r.sum_logprob) / nullif(d.n_bytes, 0), d.n_bytes
        from documents d join scores t on t.doc_id = d.doc_id and t.model = 'teacher'
        join scores r on r.doc_id = d.doc_id and r.model = 'reference'
    """).fetchall()
    return {NAME[i]: (s, n) for i, s, n in rows}


def test_the_opt_ins_equal_the_hand_written_query_over_the_covered_units(db):
    scored = {n: v for n, v in hand_scores(db).items() if v[0] is not None}
    assert sorted(scored) == ["A", "B", "C", "D", "E"]  # F: no reference score; G: empty
    ranked = sorted(scored, key=lambda n: (-scored[n][0], ID[n]))
    for alpha in (0.2, 0.5, 0.8, 1.0):
        got = names(db, f"select doc_id from difference('teacher', 'reference', alpha := {alpha}, missing := 'exclude')")
        assert sorted(got) == sorted(ranked[: math.ceil(alpha * len(ranked))])
    # curriculum: the reference's loss per byte, easy first; 'last' puts the unscored F after everything scored
    losses = dict(db.sql("select doc_id, -sum_logprob / nullif(n_bytes, 0) from scores where model = 'reference'").fetchall())
    judged = sorted((i for i in losses), key=lambda i: (losses[i] is None, losses[i] or 0, i))
    assert names(db, "select doc_id from curriculum('reference', missing := 'exclude')") == [NAME[i] for i in judged]
    assert names(db, "select doc_id from curriculum('reference', missing := 'last')") == [NAME[i] for i in judged] + ["F"]
    stages = db.sql("select stage, count(*) from curriculum('reference', stages := 2, missing := 'exclude') group by 1 order by 1")
    assert stages.fetchall() == [(1, 3), (2, 3)]  # ntile over the 6 judged units, not 7
    low = {NAME[i] for i, loss in losses.items() if loss is not None and loss <= 2.0}
    assert set(names(db, "select doc_id from filter_loss('reference', max_loss := 2.0, missing := 'exclude')")) == low
    assert set(names(db, "select doc_id from filter_loss('reference', max_loss := 2.0, missing := 'keep')")) == low | {"F"}
    tokens = sorted(names(db, "select doc_id from quota(map {'books': 100}, unit := 'tokens', model := 'reference', "
                              "missing := 'exclude')"))
    assert tokens == ["D", "E", "G"]  # 30 + 10 + 0 reference tokens; F never counted


def test_a_gap_in_a_pool_view_is_named_with_the_view(db):
    db.create_view("pool", "select * from documents where n_bytes >= 10")
    with pytest.raises(duckdb.Error, match="difference: 1 of 6 units of 'pool' have no score of 'reference'; "
                                                  r"score them with `corpusdb score DB --model fixture/reference --as "
                                                  "reference --view pool`"):
        db.sql("select * from difference('teacher', 'reference', docs := 'pool')").fetchall()
    db.create_view("scored_pool", "select * from pool where source = 'web'")  # every web document has both scores
    assert len(names(db, "select doc_id from difference('teacher', 'reference', docs := 'scored_pool')")) == 2


def test_dedup_refuses_documents_ingested_after_the_clusters(tmp_path):
    texts = [f"document number {i} about {w} and more words to shingle here" for i, w in enumerate(["cats", "dogs", "owls"] * 10)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:20]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[20:]))
    url = str(tmp_path / "db")
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", url, str(tmp_path / "a.jsonl"), "--no-progress"]).exit_code == 0
    result = runner.invoke(cli, ["sql", url, "select count(*) from dedup"])
    assert result.exit_code == 1 and "dedup: 20 of 20 units of 'documents' have no minhash row (`corpusdb minhash` has not " \
                                      "run at this version)" in result.output
    assert runner.invoke(cli, ["minhash", url, "--no-progress"]).exit_code == 0
    clustered = corpusdb.open(url).sql("select count(*) from dedup").fetchall()[0][0]
    assert runner.invoke(cli, ["ingest", url, str(tmp_path / "b.jsonl"), "--no-progress"]).exit_code == 0
    result = runner.invoke(cli, ["sql", url, "select count(*) from dedup"])
    assert result.exit_code == 1 and "dedup: 10 of 30 units of 'documents' have no minhash row (ingested after " \
                                      "`corpusdb minhash` ran, so never compared with anything); compare them with " \
                                      "`corpusdb minhash DB`" in result.output
    db = corpusdb.open(url)
    kept = db.sql("select count(*) from dedup(missing := 'keep')").fetchall()[0][0]
    assert kept == clustered + 10
    assert db.sql("select count(*) from dedup(missing := 'exclude')").fetchall()[0][0] == clustered
    assert runner.invoke(cli, ["minhash", url, "--no-progress"]).exit_code == 0
    assert corpusdb.open(url).sql("select count(*) from dedup").fetchall()[0][0] == \
        corpusdb.open(url).sql("select count(distinct cluster_id) from minhash").fetchall()[0][0]


def test_a_filter_refuses_an_annotation_registered_without_rows_yet(tmp_path, monkeypatch):
    """What a reader sees while `corpusdb annotate` runs (here: killed after writing its first part, before any commit)."""
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"The {i} cats sat on the mat. They were happy."}) + "\n"
                                              for i in range(12)))
    url = str(tmp_path / "db")
    assert CliRunner().invoke(cli, ["ingest", url, str(tmp_path / "a.jsonl"), "--no-progress"]).exit_code == 0
    import subprocess
    import sys

    env = {**__import__("os").environ, "CORPUSDB_FAILPOINT": "annotate.after_part=1"}
    killed = subprocess.run([sys.executable, "-m", "corpusdb.cli", "annotate", url, "quality", "--no-progress"], env=env,
                            capture_output=True, text=True)
    assert killed.returncode != 0
    db = corpusdb.open(url)
    assert "quality" in db.snapshot.annotations and db.sql("select count(*) from annotations_quality").fetchall() == [(0,)]
    with pytest.raises(duckdb.Error, match="filter_quality: 12 of 12 units of 'documents' have no quality annotation"):
        db.sql("select * from filter_quality()").fetchall()
    assert db.sql("select count(*) from filter_quality(missing := 'exclude')").fetchall() == [(0,)]
    assert db.sql("select count(*) from filter_quality(missing := 'keep')").fetchall() == [(12,)]


def test_a_misspelt_meta_field_is_named_on_stderr(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one", "url": "u1"}\n{"text": "two", "url": "u2"}\n')
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(tmp_path / "a.jsonl"), "--no-progress",
                                                      "--meta", "url=nosuch", "--meta", "link=url"])
    assert result.exit_code == 0
    assert result.stderr == ("warning: --meta url=nosuch: none of the 2 records read has the field 'nosuch', so column 'url' is "
                             "NULL for all of them; check the field name (a dotted path such as metadata.url reaches into "
                             "objects)\n")


def test_an_export_that_loses_the_curriculum_order_says_so(db, tmp_path):
    db.create_view("lessons", "select c.*, d.source as origin from curriculum('reference', missing := 'last') c "
                              "join documents d using (doc_id)")
    runner = CliRunner()
    result = runner.invoke(cli, ["export", db.url, "lessons", str(tmp_path / "lost")])
    assert result.exit_code == 0 and "'lessons' selects from curriculum(...) but its rows have no order of their own" in result.stderr
    manifest = json.loads((tmp_path / "lost" / "manifest.json").read_text())
    assert manifest["order"] != "view" and "order by curriculum_rank" in manifest["warnings"][0]
    db.create_view("ordered_lessons", "select * from lessons order by curriculum_rank")
    result = runner.invoke(cli, ["export", db.url, "ordered_lessons", str(tmp_path / "kept")])
    assert result.exit_code == 0 and result.stderr == ""
    manifest = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert manifest["order"] == "view" and "warnings" not in manifest


# --- the property: random coverage -------------------------------------------------------------

coverage = st.lists(
    st.tuples(
        st.sampled_from(["web", "books"]),
        st.integers(0, 120),  # n_bytes
        st.floats(-400, -1),  # teacher sum_logprob
        st.one_of(st.none(), st.floats(-400, -1)),  # reference sum_logprob (None: not scored)
        st.one_of(st.none(), st.integers(0, 3)),  # near-duplicate group (None: no minhash row)
        st.one_of(st.none(), st.floats(0, 1)),  # probability of English (None: no language row)
    ),
    min_size=1,
    max_size=30,
)


def connect(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    """The teacher scores every document, the reference those with a value, minhash clusters those with a group."""
    ids = doc_ids(len(rows))
    scores = []
    for doc, row in zip(ids, rows):
        empty = row[1] == 0
        scores.append((doc, None if empty else row[2], 0 if empty else 5, row[1], "teacher"))
        if row[3] is not None:
            scores.append((doc, None if empty else row[3], 0 if empty else 4, row[1], "reference"))
    groups: dict[int, list[int]] = {}
    for doc, row in zip(ids, rows):
        if row[4] is not None:
            groups.setdefault(row[4] or -doc, []).append(doc)
    con = connect_tables([(doc, row[0], row[1]) for doc, row in zip(ids, rows)], scores, groups)
    con.execute("create table annotations_language (doc_id bigint, language varchar, language_score double, "
                "language_scores map(varchar, double))")
    for doc, row in zip(ids, rows):
        if row[5] is not None:
            con.execute("insert into annotations_language values (?, 'en', ?, map {'en': ?})", [doc, row[5], row[5]])
    return con


def refused(con: duckdb.DuckDBPyConnection, sql: str, message: str) -> bool:
    try:
        con.execute(sql).fetchall()
    except duckdb.Error as exc:
        assert message in str(exc), str(exc)
        return True
    return False


@settings(max_examples=30, deadline=None)
@given(coverage.filter(lambda rows: any(r[3] is not None for r in rows)), st.floats(0.05, 1))
def test_every_policy_refuses_a_gap_or_with_the_opt_in_returns_the_covered_units_answer(rows, alpha):
    con = connect(rows)
    ids = doc_ids(len(rows))
    unscored = sum(r[3] is None for r in rows)
    unclustered = sum(r[4] is None for r in rows)
    gap = f"{unscored} of {len(rows)} units of 'documents' have no score of 'reference'"
    checks = {
        "difference": (f"select doc_id from difference('teacher', 'reference', alpha := {alpha})", unscored),
        "difference_bytes": (f"select doc_id from difference_bytes('teacher', 'reference', alpha := {alpha})", unscored),
        "curriculum": ("select doc_id from curriculum('reference')", unscored),
        "filter_loss": ("select doc_id from filter_loss('reference', max_loss := 10)", unscored),
    }
    for policy, (sql, gaps) in checks.items():
        assert refused(con, sql, f"{policy}: {gap}") == (gaps > 0)
    assert refused(con, "select * from dedup", f"dedup: {unclustered} of {len(rows)} units") == (unclustered > 0)
    unannotated = sum(r[5] is None for r in rows)
    assert refused(con, "select * from filter_language(['en'], 0.5)",
                   f"filter_language: {unannotated} of {len(rows)} units of 'documents' have no language annotation") == (unannotated > 0)
    web_gaps = sum(r[3] is None for r in rows if r[0] == "web")
    quota = "select doc_id from quota(map {'web': 60}, unit := 'tokens', model := 'reference'%s)"
    if any(r[0] == "web" for r in rows):
        assert refused(con, quota % "", f"quota: {web_gaps} of {sum(r[0] == 'web' for r in rows)} units") == (web_gaps > 0)

    # by hand, over the covered units (Python, not the macros)
    covered = [(doc, r) for doc, r in zip(ids, rows) if r[3] is not None]
    diff = {doc: (r[2] - r[3]) / r[1] for doc, r in covered if r[1] > 0}
    ranked = sorted(diff, key=lambda d: (-diff[d], d))
    top = ranked[: math.ceil(alpha * len(ranked))]
    got = [d for (d,) in con.execute(f"select doc_id from difference('teacher', 'reference', alpha := {alpha}, missing := 'exclude')").fetchall()]
    assert sorted(got) == sorted(top)
    size = dict((doc, r[1]) for doc, r in covered)
    budget, kept, before = alpha * sum(size[d] for d in ranked), [], 0
    for d in ranked:
        if before < budget:
            kept.append(d)
        before += size[d]
    got = con.execute(f"select doc_id from difference_bytes('teacher', 'reference', alpha := {alpha}, missing := 'exclude')").fetchall()
    assert sorted(d for (d,) in got) == sorted(kept)
    loss = {doc: (-r[3] / r[1] if r[1] > 0 else None) for doc, r in covered}
    easy = sorted(loss, key=lambda d: (loss[d] is None, loss[d] or 0, d))
    assert [d for (d,) in con.execute("select doc_id from curriculum('reference', missing := 'exclude')").fetchall()] == easy
    last = easy + sorted(doc for doc, r in zip(ids, rows) if r[3] is None)
    assert [d for (d,) in con.execute("select doc_id from curriculum('reference', missing := 'last')").fetchall()] == last
    low = {d for d, v in loss.items() if v is not None and v <= 10}
    assert {d for (d,) in con.execute("select doc_id from filter_loss('reference', max_loss := 10, missing := 'exclude')").fetchall()} == low
    keep = low | {doc for doc, r in zip(ids, rows) if r[3] is None}
    assert {d for (d,) in con.execute("select doc_id from filter_loss('reference', max_loss := 10, missing := 'keep')").fetchall()} == keep
    english = {doc for doc, r in zip(ids, rows) if r[5] is not None and r[5] >= 0.5}
    got = {d for (d,) in con.execute("select doc_id from filter_language(['en'], 0.5, missing := 'exclude')").fetchall()}
    assert got == english
    got = {d for (d,) in con.execute("select doc_id from filter_language(['en'], 0.5, missing := 'keep')").fetchall()}
    assert got == english | {doc for doc, r in zip(ids, rows) if r[5] is None}
    if any(r[0] == "web" for r in rows):  # the web documents the reference scored, in the seeded order, while within 60 tokens
        tokens = {doc: 0 if r[1] == 0 else 4 for doc, r in covered if r[0] == "web"}
        order = sorted(tokens, key=lambda d: (con.execute("select uniform(?, 0)", [d]).fetchall()[0][0], d))
        running = [sum(tokens[d] for d in order[: i + 1]) for i in range(len(order))]
        expected = {d for d, total in zip(order, running) if total <= 60}
        assert {d for (d,) in con.execute(quota % ", missing := 'exclude'").fetchall()} == expected
    clusters = dict(con.execute("select doc_id, cluster_id from minhash").fetchall())
    representatives = {d for d, c in clusters.items() if d == c}
    assert {d for (d,) in con.execute("select doc_id from dedup(missing := 'exclude')").fetchall()} == representatives
    assert {d for (d,) in con.execute("select doc_id from dedup(missing := 'keep')").fetchall()} == \
        representatives | {doc for doc in ids if doc not in clusters}


def test_view_show_states_the_coverage_rule_and_view_list_puts_user_views_first(db):
    runner = CliRunner()
    result = runner.invoke(cli, ["view", "show", db.url, "difference"])
    assert result.exit_code == 0 and result.output.startswith("difference  (built-in macro)\n")
    flat = " ".join(result.output.split())
    assert "missing := 'error' | 'exclude'" in flat and "Every unit of docs needs a score of both models" in flat
    assert "create or replace macro" not in result.output
    assert "create or replace macro difference(" in runner.invoke(cli, ["view", "show", db.url, "difference", "--sql"]).output
    flat = " ".join(runner.invoke(cli, ["view", "show", db.url, "dedup"]).output.split())
    assert "missing := 'error' | 'keep' | 'exclude'" in flat and "never compared with anything" in flat
    db.create_view("mine", "select * from documents where n_bytes > 10")
    result = runner.invoke(cli, ["view", "show", db.url, "mine"])
    assert result.output == "mine  (user view)\nselect * from documents where n_bytes > 10\n"
    result = runner.invoke(cli, ["view", "show", db.url, "nope"])
    assert result.exit_code == 1 and result.output.startswith("Error: no view named 'nope'; views: contamination, covered_bytes, curriculum, curriculum_checks, "
                                                   "curriculum_coverage, dedup")
    listed = json.loads(runner.invoke(cli, ["view", "list", db.url, "--format", "json"]).output)
    assert listed[0]["name"] == "mine" and listed[1]["kind"].startswith("built-in")


def test_the_report_ranks_the_covered_units_and_says_how_many(db, tmp_path):
    result = CliRunner().invoke(cli, ["report", db.url, "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert ("Coverage: 6 of 7 documents of documents have a score of both teacher and reference; the difference selection "
            "below ranks those only (missing := &#x27;exclude&#x27;)") in page
    assert "difference(&#x27;teacher&#x27;, &#x27;reference&#x27;, alpha := 0.5, missing := &#x27;exclude&#x27;)" in page


def test_ingesting_an_export_folder_takes_its_parts_not_its_manifest(db, tmp_path):
    db.view("filter_source(['web'])").export(str(tmp_path / "web"), format="jsonl")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(tmp_path / "again"), str(tmp_path / "web"), "--no-progress", "--meta", "origin=source"])
    assert result.exit_code == 0, result.output
    again = corpusdb.open(str(tmp_path / "again"))
    assert sorted(again.sql("select doc_id, text, origin from documents").fetchall()) == sorted(
        db.sql("select doc_id, text, source from documents where source = 'web'").fetchall())
    result = runner.invoke(cli, ["ingest", str(tmp_path / "again"), str(tmp_path / "web" / "manifest.json"), "--no-progress"])
    assert result.exit_code == 1 and result.output == (
        f"Error: {tmp_path / 'web' / 'manifest.json'} is the manifest of a corpusdb export, not records; ingest the export's "
        f"folder ({tmp_path / 'web'}) to read its parts\n")
    part = json.loads((tmp_path / "web" / "manifest.json").read_text())["parts"][0]["file"]
    (tmp_path / "web" / part).unlink()
    result = runner.invoke(cli, ["ingest", str(tmp_path / "third"), str(tmp_path / "web"), "--no-progress"])
    assert result.exit_code == 1 and result.output == (
        f"Error: {tmp_path / 'web'} is a corpusdb export whose manifest names 1 part(s) that are not there (e.g. {part}); "
        "export the view again\n")


def test_dropping_or_renaming_a_score_name_names_the_views_that_read_it(db):
    db.create_view("refined", "select * from difference('teacher', 'reference', missing := 'exclude')")
    db.create_view("lessons", "select * from curriculum(null, key := 'score', docs := 'refined')")
    db.create_view("web", "select * from documents where source = 'web'")
    runner = CliRunner()
    result = runner.invoke(cli, ["models", db.url, "--rename", "reference", "ref"])
    assert result.exit_code == 0 and result.stderr == (
        "warning: 2 view(s) read scores 'reference' and now fail: lessons, refined; redefine them with 'ref' "
        "(`corpusdb view create DB NAME --replace --sql ...`)\n")
    result = runner.invoke(cli, ["models", db.url, "--drop", "teacher"])
    assert result.exit_code == 0 and result.stderr.startswith("warning: 2 view(s) read scores 'teacher' and now fail: lessons, refined;")
    assert runner.invoke(cli, ["models", db.url, "--drop", "ref"]).stderr == ""


def test_a_commit_summary_gives_the_total_not_only_what_the_commit_added(db, tmp_path):
    db.annotate("quality", progress=False, workers=1)
    (tmp_path / "late.jsonl").write_text(json.dumps({"text": "A late document."}) + "\n")
    db.ingest([str(tmp_path / "late.jsonl")], source="late", progress=False)
    db.annotate("quality", progress=False, workers=1)
    summaries = [v["summary"] for v in json.loads(CliRunner().invoke(cli, ["versions", db.url, "--format", "json"]).output)]
    assert "annotation quality: +7 documents (7 in all)" in summaries
    assert summaries[0] == "annotation quality: +1 documents (8 in all)"  # newest first
