"""The `corpusdb` command group and the options its commands share.

    corpusdb --help
"""

from __future__ import annotations

import click
import duckdb

import corpusdb
from corpusdb.errors import CorpusDBError
from corpusdb.output import FORMATS, render
from corpusdb.storage import parse_storage_options

STORAGE_HELP = "fsspec storage option KEY=VALUE for the database and inputs, e.g. -o endpoint_url=http://127.0.0.1:8333 (repeatable)"


class Group(click.Group):
    """Turns corpusdb's errors and bad arguments into one-line `Error: ...` messages, exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CorpusDBError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        except duckdb.Error as exc:  # raised while a query runs, e.g. error() in a view's SQL
            raise click.ClickException(str(exc).strip().splitlines()[0]) from exc


def open_db(url: str, options: tuple[str, ...]) -> corpusdb.Database:
    """Open DB with `-o` storage options."""
    return corpusdb.open(url, storage_options=parse_storage_options(options))


def storage_option(func):
    return click.option("-o", "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE", help=STORAGE_HELP)(func)


def format_option(func):
    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="output format"
    )(func)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(corpusdb.__version__, prog_name="corpusdb")
def cli() -> None:
    """corpusdb: a corpus refinement database for language-model pre-training.

    A database is a folder (local path or fsspec URL: s3://, gs://, memory://) of Parquet tables
    queried through DuckDB; selection policies are SQL views. The MiniPLM recipe:

    \b
      corpusdb ingest demo/db data/*.jsonl.gz --source web
      corpusdb minhash demo/db
      corpusdb score demo/db --model out/teacher --as teacher
      corpusdb score demo/db --model out/reference --as reference
      corpusdb view create demo/db refined --sql "select * from difference('teacher', 'reference', docs := 'dedup')"
      corpusdb export demo/db refined out/refined --format tokens --tokenizer out/student
      corpusdb train demo/db --view refined --out out/student
    """


def print_relation(relation, fmt: str) -> None:
    """Print a DuckDB relation (None for statements without a result) in `fmt`."""
    if relation is None:
        return
    click.echo(render(relation.columns, relation.fetchall(), fmt))


def executor_options(func):
    """--shards, --executor, --address, --workers for jobs that run as sharded tasks."""
    func = click.option("--address", help="Ray cluster address for --executor ray (e.g. auto, ray://head:10001) [default: start a local Ray]")(func)
    func = click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                        help="with --shards: run the shards as local processes or as Ray tasks")(func)
    func = click.option("--shards", type=int, default=0,
                        help="split the job into this many shards and run them all (see --executor); 0: one process")(func)
    return func
