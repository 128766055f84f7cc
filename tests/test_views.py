"""The policy views in sql/: exact rows on a hand-checked fixture, and their invariants (Hypothesis)."""

from __future__ import annotations

import math
from collections import Counter

import duckdb
import pytest

import corpusdb
from tests.views_fixture import ID, build, names


@pytest.fixture
def db(tmp_path) -> corpusdb.Database:
    return build(tmp_path / "db")


def test_difference_keeps_the_top_alpha_with_ties_broken_by_doc_id(db):
    first_tied, second_tied = sorted(["B", "C"], key=lambda n: ID[n])
    ranked = "select doc_id from difference('teacher', 'reference', missing := 'exclude'{}) order by score desc, doc_id"
    # N = 5 scored (F has no reference score, G is empty): ceil(0.5 * 5) = 3
    assert names(db, ranked.format("")) == ["A", first_tied, second_tied]
    assert names(db, ranked.format(", alpha := 0.4")) == ["A", first_tied]  # the tie goes to the smaller doc_id
    assert names(db, ranked.format(", alpha := 1")) == ["A", first_tied, second_tied, "D", "E"]
    rows = db.sql("select doc_id, score, source, text, teacher_logprob, reference_logprob from difference('teacher', 'reference', missing := 'exclude', alpha := 0.2)").fetchall()
    assert rows == [(ID["A"], 2.0, "web", "a" * 10, -10.0, -30.0)]
    # per token: teacher/token - reference/token: A -2 - -5 = 3, B -2 - -5 = 3, C -3 - -5 = 2, D -2 - -2 = 0, E -3 - -2 = -1
    per_token = db.sql(
        "select doc_id, score from difference('teacher', 'reference', missing := 'exclude', alpha := 1, per := 'token') order by score desc, doc_id"
    ).fetchall()
    assert [(names_of(i), s) for i, s in per_token] == sorted(
        [("A", 3.0), ("B", 3.0), ("C", 2.0), ("D", 0.0), ("E", -1.0)], key=lambda r: (-r[1], ID[r[0]])
    )
    with pytest.raises(duckdb.Error, match="per must be 'byte' or 'token'"):
        db.sql("select * from difference('teacher', 'reference', missing := 'exclude', per := 'word')").fetchall()


def test_difference_bytes_keeps_the_top_documents_until_alpha_of_the_text(db):
    first_tied, second_tied = sorted(["B", "C"], key=lambda n: ID[n])
    ranked = "select doc_id from difference_bytes('teacher', 'reference', missing := 'exclude'{}) order by score desc, doc_id"
    # scored bytes: A 10, B 20, C 10, D 40, E 20 = 100; a document is kept while the bytes before it are under the budget
    assert names(db, ranked.format("")) == ["A", first_tied, second_tied, "D"]  # D starts at 40 < 50; E at 80
    assert names(db, ranked.format(", alpha := 0.1")) == ["A"]  # the tie starts at 10, not under 10
    assert names(db, ranked.format(", alpha := 0.15")) == ["A", first_tied]
    assert names(db, ranked.format(", alpha := 1")) == ["A", first_tied, second_tied, "D", "E"]
    # the same order as difference, a different cut: half the documents hold 40 of the 100 bytes, this view 80
    assert db.sql("select sum(n_bytes) from difference('teacher', 'reference', missing := 'exclude')").fetchall() == [(40,)]
    assert names(db, "select doc_id from difference_bytes('teacher', 'reference', missing := 'exclude', alpha := 0.3, per := 'token') "
                     "order by score desc, doc_id") == sorted(["A", "B"], key=lambda n: ID[n])  # per token A and B tie at 3


def names_of(doc_id: int) -> str:
    from tests.views_fixture import NAME

    return NAME[doc_id]


def test_difference_by_source_and_sampled(db):
    assert sorted(names(db, "select doc_id from difference_by_source('teacher', 'reference', missing := 'exclude', alphas := map {'web': 1.0})")) == [
        "A", "B", "C", "D"]  # web: all 3; books: ceil(0.5 * 2) of D, E
    # temperature -> 0 is the deterministic top alpha
    assert names(db, "select doc_id from difference_sampled('teacher', 'reference', missing := 'exclude', alpha := 0.4, temperature := 1e-6)") == \
        names(db, "select doc_id from difference('teacher', 'reference', missing := 'exclude', alpha := 0.4) order by score desc, doc_id")
    # one draw (alpha 0.2 of 5) lands on each document with probability softmax(score / temperature)
    counts = Counter()  # 200 draws: 4 standard errors are 0.14 for A (0.49), well short of a uniform draw's 0.2
    for seed in range(200):
        counts.update(names(db, f"select doc_id from difference_sampled('teacher', 'reference', missing := 'exclude', alpha := 0.2, seed := {seed})"))
    scores = {"A": 2.0, "B": 1.0, "C": 1.0, "D": 0.5, "E": -0.5}
    total = sum(math.exp(s) for s in scores.values())
    for name, score in scores.items():
        p = math.exp(score) / total
        assert abs(counts[name] / 200 - p) < 4 * math.sqrt(p * (1 - p) / 200), (name, counts)
    same = names(db, "select doc_id from difference_sampled('teacher', 'reference', missing := 'exclude', seed := 7)")
    assert same == names(db, "select doc_id from difference_sampled('teacher', 'reference', missing := 'exclude', seed := 7)")


def test_curriculum_orders_easy_to_hard_with_unscored_last(db):
    order = names(db, "select doc_id from curriculum('reference', missing := 'last', stages := 2)")
    # reference loss per byte 1.0, 1.5, 2.0, 2.5, 3.0; then G (scored, empty: no loss), then F (not scored)
    assert order == ["E", "D", "B", "C", "A", "G", "F"]
    stages = db.sql("select stage, count(*) from curriculum('reference', missing := 'last', stages := 2) group by 1 order by 1").fetchall()
    assert stages == [(1, 4), (2, 3)]
    assert names(db, "select doc_id from curriculum('reference', missing := 'last', descending := true)")[:2] == ["A", "C"]
    db.con.execute("create or replace temp view kept as select * from difference('teacher', 'reference', missing := 'exclude', alpha := 1)")
    assert names(db, "select doc_id from curriculum(null, key := 'score', docs := 'kept')")[0] == "E"  # lowest score first


def test_curriculum_key_names_one_column_not_every_column_containing_it(db):
    """docs with a column whose name contains the key (reference_loss_per_byte beside the key loss_per_byte)."""
    db.con.execute("create or replace temp view extra as select *, n_bytes as reference_loss_per_byte, -n_bytes as "
                   "my_score_2 from documents")
    assert names(db, "select doc_id from curriculum('reference', missing := 'last', docs := 'extra')") == \
        ["E", "D", "B", "C", "A", "G", "F"]
    by_column = names(db, "select doc_id from curriculum(null, key := 'reference_loss_per_byte', docs := 'extra')")
    assert by_column == names(db, "select doc_id from documents order by n_bytes, doc_id")


def test_curriculum_ranks_a_repeated_unit_once(db):
    """A docs relation that repeats a row ranks its unit once; each copy comes back with that rank."""
    db.con.execute("create or replace temp view twice as select * from documents union all "
                   "select * from documents where doc_id in (select doc_id from documents where n_bytes = 20)")
    rows = db.sql("select doc_id, curriculum_rank, stage from curriculum('reference', missing := 'last', stages := 2, docs := 'twice')").fetchall()
    order = ["E", "D", "B", "C", "A", "G", "F"]
    repeated = {n for n in order if db.sql(f"select n_bytes from documents where doc_id = {ID[n]}").fetchall() == [(20,)]}
    assert repeated and [names_of(i) for i, _, _ in rows] == [n for n in order for _ in range(1 + (n in repeated))]
    ranks = {names_of(i): r for i, r, _ in rows}
    assert [ranks[n] for n in order] == list(range(1, 8))  # one rank a unit: ntile over the 7 units
    assert {names_of(i): s for i, _, s in rows} == dict(zip(order, [1, 1, 1, 1, 2, 2, 2]))


def test_dedup_quota_mixture_and_filters(db):
    representative = min(["A", "B", "C"], key=lambda n: ID[n])
    assert sorted(names(db, "select doc_id from dedup")) == sorted([representative, "D", "E", "F", "G"])
    assert sorted(names(db, "select doc_id from quota(map {'web': 40})")) == ["A", "B", "C"]  # books not named: dropped
    web_two = names(db, "select doc_id from quota(map {'web': 2, 'books': 10}, unit := 'documents')")
    assert len([n for n in web_two if n in "ABC"]) == 2 and sorted(n for n in web_two if n in "DEFG") == ["D", "E", "F", "G"]
    tokens = sorted(names(db, "select doc_id from quota(map {'books': 100}, unit := 'tokens', model := 'reference', missing := 'exclude')"))
    assert tokens == ["D", "E", "G"]  # F has no reference score; G has 0 tokens
    mixed = db.sql("select source, sum(n_bytes) from mixture(map {'web': 1, 'books': 3}, 80) group by 1").fetchall()
    assert all(b <= {"web": 20, "books": 60}[s] for s, b in mixed)
    assert sorted(names(db, "select doc_id from filter_length(10, 20)")) == sorted(["A", "B", "C", "E", "F"])
    assert sorted(names(db, "select doc_id from filter_loss('reference', missing := 'exclude', max_loss := 2.0)")) == ["B", "D", "E"]
    assert sorted(names(db, "select doc_id from filter_source(['books'])")) == ["D", "E", "F", "G"]
    assert sorted(names(db, "select doc_id from losses where model = 'teacher'")) == ["A", "B", "C", "D", "E", "F"]


def test_views_compose_as_ordinary_sql(db):
    db.create_view("refined", "select * from difference('teacher', 'reference', missing := 'exclude', alpha := 0.6, docs := 'dedup')")
    # dedup keeps one of A, B, C; difference keeps ceil(0.6 * 3) of the 3 scored: the representative, D, then E
    representative = min(["A", "B", "C"], key=lambda n: ID[n])
    assert sorted(names(db, "select doc_id from refined")) == sorted([representative, "D"])
    ordered = names(db, "select doc_id from curriculum('reference', missing := 'last', docs := 'refined')")
    assert ordered == ["D", representative]
    reopened = corpusdb.open(db.url)
    assert names(reopened, "select doc_id from curriculum('reference', missing := 'last', docs := 'refined')") == ordered


def test_a_view_may_not_take_the_name_of_a_policys_step(db):
    # query_table(docs) inside a table macro finds the macro's own CTE of that name before any view:
    # a user view named `kept` passed as docs would silently be the policy's kept rows
    plain = "select * from documents where source = 'web'"
    db.con.execute(f"create temp view kept as {plain}")
    with pytest.raises(Exception, match="unit_id"):  # the policy reads its own `kept`, not this view
        db.sql("select * from difference('teacher', 'reference', missing := 'exclude', alpha := 1.0, docs := 'kept')").fetchall()
    db.con.execute("drop view kept")
    for name in ("kept", "final", "keys", "units", "kept_instances"):
        with pytest.raises(ValueError, match=rf"'{name}' names a step \(CTE\) of the built-in .*difference.*; choose "
                                             "another name"):
            db.create_view(name, plain)
    assert "kept" not in db.snapshot.views and db.create_view("kept_web", plain).name == "kept_web"
    expected = names(db, "select doc_id from difference('teacher', 'reference', missing := 'exclude', alpha := 1.0) where source = 'web'")
    got = names(db, "select doc_id from difference('teacher', 'reference', missing := 'exclude', alpha := 1.0, docs := 'kept_web')")
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("sql, message", [
    ("difference('teachr', 'reference')", "difference: no scores named 'teachr'; scored models: reference, teacher"),
    ("difference('teacher', 'referense')", "difference: no scores named 'referense'; scored models: reference, teacher"),
    ("difference('teacher', 'reference', missing := 'exclude', alpha := 1.5)", "difference: alpha must be in (0, 1], not 1.5"),
    ("difference('teacher', 'reference', missing := 'exclude', alpha := 0)", "difference: alpha must be in (0, 1], not 0"),
    ("difference('teacher', 'reference', missing := 'exclude', alpha := -1)", "difference: alpha must be in (0, 1], not -1"),
    ("difference('teacher', 'reference', missing := 'exclude', alpha := null)", "difference: alpha must be in (0, 1], not NULL"),
    ("difference('teacher', 'reference', missing := 'exclude', per := 'word')", "difference: per must be 'byte' or 'token', not 'word'"),
    ("difference_bytes('teachr', 'reference')", "no scores named 'teachr'"),
    ("difference_sampled('teacher', 'refrence')", "no scores named 'refrence'"),
    ("difference_by_source('teachr', 'reference')", "no scores named 'teachr'"),
    ("difference_bytes('teacher', 'reference', missing := 'exclude', alpha := 2)", "difference_bytes: alpha must be in (0, 1], not 2"),
    ("difference_sampled('teacher', 'reference', missing := 'exclude', temperature := 0)", "difference_sampled: temperature must be positive, not 0"),
    ("difference_sampled('teacher', 'reference', missing := 'exclude', alpha := 1.01)", "difference_sampled: alpha must be in (0, 1], not 1.01"),
    ("difference_by_source('teacher', 'reference', missing := 'exclude', alphas := map {'web': 2.0})", "every value of alphas must be in (0, 1]"),
    ("curriculum('teachr')", "curriculum: no scores named 'teachr'; scored models: reference, teacher"),
    ("curriculum(null)", "curriculum: key 'loss_per_byte' is a model's loss; name the model"),
    ("curriculum('reference', missing := 'last', stages := 0)", "curriculum: stages must be at least 1, not 0"),
    ("filter_loss('teachr', max_loss := 2.0)", "filter_loss: no scores named 'teachr'; scored models: reference, teacher"),
    ("filter_loss('teacher', min_loss := 3, max_loss := 2)", "filter_loss: min_loss 3 is above max_loss 2"),
    ("filter_length(-1)", "filter_length: need 0 <= min_bytes <= max_bytes"),
    ("filter_source(['bokos'])", "filter_source: no documents of source(s) [bokos]; sources: [books, web]"),
    ("quota(map {'web': 0})", "quota: every budget must be positive"),
    ("quota(map {'web': -5, 'books': 10})", "quota: every budget must be positive"),
    ("quota(map {'web': 10}, unit := 'pages')", "quota: unit must be 'bytes', 'tokens' or 'documents', not 'pages'"),
    ("quota(map {'web': 10}, unit := 'tokens')", "quota: unit 'tokens' counts a scored model's tokens; no scores named 'NULL'"),
    ("mixture(map {'web': 1, 'books': 0}, 100)", "mixture: every weight must be positive"),
    ("mixture(map {'web': 1}, 0)", "mixture: total must be positive, not 0"),
])
def test_policies_refuse_bad_arguments_in_sql(db, sql, message):
    """The checks are DuckDB error() calls inside the macros: they hold in any DuckDB session, here a plain cursor."""
    with pytest.raises(duckdb.Error) as caught:
        db.con.cursor().sql(f"select count(*) from {sql}").fetchall()
    assert message in str(caught.value)


def test_per_token_needs_one_tokenizer(db):
    from tests.views_fixture import REFERENCE, write_scores

    write_scores(db, "other_tokenizer", REFERENCE, tokenizer="another-bpe")
    with pytest.raises(duckdb.Error, match="per := 'token' compares per-token log-likelihoods, which needs one tokenizer, but "
                                           "'teacher' and 'other_tokenizer' use different ones"):
        db.sql("select * from difference('teacher', 'other_tokenizer', missing := 'exclude', per := 'token')").fetchall()
    assert len(db.sql("select * from difference('teacher', 'other_tokenizer', missing := 'exclude')").fetchall()) == 3  # per byte is fine


def test_a_new_version_recreates_only_the_views_it_must(tmp_path):
    """A commit that adds a view creates that one view on an open connection, the others stand as created; a
    new column in a table they read re-creates them all (so `select *` shows it); a view dropped elsewhere goes."""
    import json

    db = corpusdb.init(str(tmp_path / "db"))
    first = tmp_path / "a.jsonl"
    first.write_text("".join(json.dumps({"text": f"document {i}", "url": f"u{i}"}) + "\n" for i in range(5)))
    db.ingest([str(first)], source="a", progress=False)
    db.create_view("everything", "select * from documents")
    db.create_view("short", "select doc_id from everything where n_bytes < 20")

    def oids() -> dict[str, int]:
        return dict(db.con.execute("select view_name, view_oid from duckdb_views() where not internal").fetchall())

    before = oids()
    other = corpusdb.open(db.url)  # another process's handle: its commits reach db by refresh
    other.create_view("third", "select count(*) as n from short")
    db.refresh()
    after = oids()
    assert {n: after[n] for n in ("everything", "short")} == {n: before[n] for n in ("everything", "short")}
    assert db.sql("select n from third").fetchall() == [(5,)]

    second = tmp_path / "b.jsonl"
    second.write_text(json.dumps({"text": "with a url", "url": "u9"}) + "\n")
    other.ingest([str(second)], source="b", meta={"url": "url"}, progress=False)  # documents gains a url column
    db.refresh()
    assert "url" in [c[0] for c in db.sql("select * from everything").description]
    assert oids()["everything"] != after["everything"]
    assert db.sql("select n from third").fetchall() == [(6,)]

    other.drop_view("third")
    db.refresh()
    assert "third" not in oids() and db.broken_views == []


def test_user_views_are_created_after_the_views_they_read():
    """An open creates each user view after those its SQL names (no failed bind and retry), whatever the names'
    order, for chains longer than Python's stack and with cycles or names inside strings."""
    from corpusdb.db import _dependency_order

    statements = {"a_top": "create or replace view a_top as select * from m_mid join z_base using (doc_id) where 'a_top' <> ''",
                  "m_mid": "create or replace view m_mid as select * from z_base", "z_base": "create or replace view z_base as select 1"}
    assert _dependency_order(statements) == ["z_base", "m_mid", "a_top"]
    chain = {f"v{i}": f"create or replace view v{i} as select * from v{i - 1}" for i in range(3000, 0, -1)}
    assert _dependency_order(chain) == [f"v{i}" for i in range(1, 3001)]
    cycle = {"p": "create or replace view p as select * from q", "q": "create or replace view q as select * from p"}
    assert sorted(_dependency_order(cycle)) == ["p", "q"]
