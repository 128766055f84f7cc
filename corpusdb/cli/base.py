"""The `corpusdb` command group and the options its commands share.

    corpusdb --help
"""

from __future__ import annotations

import os

import click
import duckdb

import corpusdb
from corpusdb.db import MEMORY_LIMIT_ENV, set_memory_limit
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
        except duckdb.Error as exc:  # raised while a query runs, e.g. error() in a policy's checks
            from corpusdb.db import query_error

            raise click.ClickException(query_error(exc)) from exc


def open_db(url: str, options: tuple[str, ...], as_of: int | None = None, allow: tuple[str, ...] = (),
            unsafe: bool = False) -> corpusdb.Database:
    """Open DB with `-o` storage options, at the latest version or `--as-of` one."""
    return corpusdb.open(url, storage_options=parse_storage_options(options), as_of=as_of, allow=allow, unsafe=unsafe)


def storage_option(func):
    return click.option("-o", "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE", help=STORAGE_HELP)(func)


def as_of_option(func):
    return click.option("--as-of", type=click.IntRange(min=0), metavar="VERSION",
                        help="read this committed version instead of the latest (`corpusdb versions DB` lists them)")(func)


def commit_option(func):
    return click.option("--commit-every", "commit_seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
                        metavar="SECONDS",
                        help="commit finished work at least this often (a killed job redoes at most this much)")(func)


def access_options(func):
    """--allow and --unsafe: what DuckDB may read beyond the database's own files."""
    func = click.option("--unsafe", is_flag=True,
                        help="give DuckDB full file and extension access (for SQL you typed; views of others run with it too)")(func)
    func = click.option("--allow", multiple=True, metavar="PATH",
                        help="a folder or file DuckDB may also read, e.g. a CSV to join (repeatable)")(func)
    return func


def format_option(func):
    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="output format"
    )(func)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(corpusdb.__version__, prog_name="corpusdb")
@click.option("--memory-limit", metavar="SIZE", envvar=MEMORY_LIMIT_ENV,
              help="DuckDB's memory limit for every database the command opens, e.g. 6GB; sorts, joins and aggregates "
                   f"spill to disk beyond it (also ${MEMORY_LIMIT_ENV}) [default: DuckDB's, 80% of RAM]")
def cli(memory_limit: str | None) -> None:
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
      corpusdb --memory-limit 6GB sql big/db "select count(*) from curriculum('reference')"
    """
    if memory_limit:
        set_memory_limit(duckdb.connect(), memory_limit)  # a bad size fails here, in one line
        os.environ[MEMORY_LIMIT_ENV] = memory_limit  # for this process and the workers and shards it starts


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
