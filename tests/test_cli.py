"""The CLI: help everywhere, exact output of sql/stats/shell in every format."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli


def commands() -> list[str]:
    return sorted(cli.commands)


def command_paths() -> list[tuple[str, ...]]:
    """Every command, with the subcommands of groups (`view create`, ...)."""
    paths = []
    for name, command in sorted(cli.commands.items()):
        paths.append((name,))
        for sub in sorted(getattr(command, "commands", {})):
            paths.append((name, sub))
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    command = cli
    for name in path:
        command = command.commands[name]
    assert command.help.strip()


def test_every_sql_file_has_its_header_and_is_named_after_what_it_creates():
    from corpusdb.policies import builtin_dir, parse

    files = sorted(builtin_dir().glob("*.sql"))
    assert len(files) >= 12
    for path in files:
        view = parse(path)  # raises on a missing header line
        assert view.purpose and view.params, path
        text = path.read_text()
        assert f"create or replace view {path.stem} as" in text or f"create or replace macro {path.stem}(" in text, path
        if view.kind != "scalar macro":
            assert "select * from final" in text, path
        assert text == text.replace("SELECT ", "select ").replace(" FROM ", " from "), f"{path}: keywords are lowercase"


def test_top_level_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    for name in commands():
        assert name in result.output


@pytest.fixture
def small_db(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        '{"text": "alpha beta", "lang": "en"}\n{"text": "gamma, \\"delta\\"", "lang": "en"}\n{"text": "épsilon"}\n'
    )
    result = CliRunner().invoke(
        cli, ["ingest", str(tmp_path / "db"), str(folder / "a.jsonl"), "--source", "greek", "--meta", "lang=lang", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    return str(tmp_path / "db")


QUERY = "select text, n_bytes, lang from documents order by text"


def test_sql_table_csv_json(small_db):
    runner = CliRunner()
    table = runner.invoke(cli, ["sql", small_db, QUERY])
    assert table.output == (
        'text            n_bytes  lang\n'
        '--------------  -------  ----\n'
        'alpha beta           10  en\n'
        'gamma, "delta"       14  en\n'
        'épsilon               8  NULL\n'
        '(3 rows)\n'
    )
    csv = runner.invoke(cli, ["sql", small_db, QUERY, "--format", "csv"])
    assert csv.output == 'text,n_bytes,lang\nalpha beta,10,en\n"gamma, ""delta""",14,en\népsilon,8,\n'
    out = runner.invoke(cli, ["sql", small_db, QUERY, "--format", "json"])
    assert json.loads(out.output) == [
        {"text": "alpha beta", "n_bytes": 10, "lang": "en"},
        {"text": 'gamma, "delta"', "n_bytes": 14, "lang": "en"},
        {"text": "épsilon", "n_bytes": 8, "lang": None},
    ]


def test_stats(small_db):
    result = CliRunner().invoke(cli, ["stats", small_db])
    assert result.output == (
        f"{small_db} at version 1: 3 documents, 0.0 MB of text, 1 parts\n"
        "scored by: none\n"
        "no near-duplicate clusters (corpusdb minhash)\n"
        "annotations: none (corpusdb annotate)\n"
        "views: none\n"
        "source  n_documents  n_bytes  pct_bytes\n"
        "------  -----------  -------  ---------\n"
        "greek             3       32        100\n"
        "(all)             3       32        100\n"
        "(2 rows)\n"
    )
    data = json.loads(CliRunner().invoke(cli, ["stats", small_db, "--format", "json"]).output)
    assert data == {
        "url": small_db,
        "version": 1,
        "n_documents": 3,
        "n_bytes": 32,
        "n_parts": 1,
        "sources": [{"source": "greek", "n_documents": 3, "n_bytes": 32}],
        "models": [],
        "scored": {},
        "n_clustered": 0,
        "units": {},
        "instances": None,
        "annotations": {},
        "views": [],
    }


def test_shell_runs_statements_and_dot_commands(small_db):
    script = ".tables\nselect count(*) as n\n  from documents;\n.format csv\nselect lang from documents where lang is not null limit 1;\nselect * from nope;\n.quit\n"
    result = CliRunner().invoke(cli, ["shell", small_db], input=script)
    assert result.exit_code == 0
    assert result.stdout == "dedup\ndocuments\ninstance_spans\ninstances\nlosses\nminhash\nmodels\nscores\nsignatures\nn\n-\n3\n(1 row)\nlang\nen\n"
    assert "Error: Catalog Error: Table with name nope does not exist!" in result.stderr


def test_python_api_returns_relations(small_db):
    db = corpusdb.open(small_db)
    relation = db.sql("select source, count(*) as n from documents group by 1")
    assert relation.pl().to_dicts() == [{"source": "greek", "n": 3}]
    assert relation.to_arrow_table().to_pylist() == [{"source": "greek", "n": 3}]
    assert db.sql("select * from scores").fetchall() == []
