"""Commands over the documents table: init, ingest, sql, stats, shell.

    corpusdb ingest demo/db demo/raw/bible.jsonl.gz --source bible
    corpusdb sql demo/db "select source, count(*) from documents group by 1"
"""

from __future__ import annotations

import contextlib
import json
import sys

import click

import corpusdb
from corpusdb.cli.base import (
    access_options,
    as_of_option,
    cli,
    commit_option,
    executor_options,
    format_option,
    open_db,
    print_relation,
    storage_option,
)
from corpusdb.errors import CorpusDBError
from corpusdb.output import FORMATS, render
from corpusdb.catalog import CATALOG_FILE
from corpusdb.storage import Location, parse_storage_options


@cli.command()
@click.argument("db")
@storage_option
def init(db: str, storage_options: tuple[str, ...]) -> None:
    """Create an empty database at DB (does nothing if one is there).

    \b
    Example:
      corpusdb init s3://my-bucket/corpus -o endpoint_url=http://127.0.0.1:8333
    """
    database = corpusdb.init(db, storage_options=parse_storage_options(storage_options))
    click.echo(f"database ready at {database.url}")


@cli.command()
@click.argument("db")
@click.argument("sources", nargs=-1, required=True)
@click.option("--source", "source_name", help="name for the `source` column [default: first SOURCE's file name]")
@click.option("--text-field", default="text", show_default=True, help="JSON field (dotted path) or Parquet column of the text")
@click.option(
    "--meta",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="copy FIELD (dotted path, or @file / @line) into a meta column (repeatable)",
)
@click.option(
    "--format", "fmt", type=click.Choice(["auto", "jsonl", "parquet", "arrow", "text"]), default="auto", show_default=True,
    help="input format; auto reads it from the extension (.jsonl/.json[.gz|.zst|...], .parquet, .arrow, .txt/.md/.rst)",
)
@click.option(
    "--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
    help="stop at the first bad record, or skip bad records and count them",
)
@click.option("--shard", default="0/1", show_default=True, help="i/n: process every n-th input file starting at i")
@click.option("--part-size-mb", type=float, default=128.0, show_default=True, help="text bytes per Parquet part (consecutive small inputs share parts)")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@executor_options
@storage_option
def ingest(db, sources, source_name, text_field, meta, fmt, on_error, shard, part_size_mb, as_json, progress, commit_seconds,
           shards, executor, address, storage_options):
    """Ingest SOURCES (files, folders, globs; any fsspec URL) into DB's documents table.

    Creates DB if needed. Each document gets a doc_id (hash of its normalised text); a document
    already in DB is not written again. Finished input files are committed as a new version of DB
    (every --commit-every seconds and at the end); readers only see committed documents. Re-running
    a killed job skips committed input files and redoes the rest, so the table ends up exactly as
    one clean run leaves it; jobs running at once both land, with no document twice.

    Folders of Hugging Face `datasets` are read as datasets does: a `save_to_disk` folder's .arrow
    files (as its state.json lists them; not its metadata), a dataset repository's data files
    without its card (a README.md whose front matter has a card's keys); a DatasetDict is refused with
    its splits named (ingest one split's folder). A corpusdb export folder gives its parts.

    \b
    Examples:
      corpusdb ingest demo/db crawl/*.jsonl.zst --source web --meta url=url --on-error skip
      corpusdb ingest s3://bkt/db s3://bkt/raw/ --source raw -o endpoint_url=http://127.0.0.1:8333
      corpusdb ingest demo/db docs/ --format text --source docs --meta path=@file
      corpusdb ingest demo/db saved/ --source hf      # a datasets.save_to_disk folder (or one split's)
      corpusdb ingest demo/db repo/data/              # a dataset repository's Parquet files
      corpusdb ingest s3://bkt/db s3://bkt/raw/ --source raw --shards 64 --executor ray --address auto
    """
    options = parse_storage_options(storage_options)
    pairs = []
    for item in meta:
        column, sep, field_path = item.partition("=")
        if not sep or not column or not field_path:
            raise ValueError(f"--meta {item!r} is not COLUMN=FIELD, e.g. --meta url=metadata.url")
        pairs.append((column, field_path))
    if shards:
        from corpusdb.execute import run_sharded
        from corpusdb.ingest.job import default_source

        reports = run_sharded(
            "ingest", db, shards=shards, executor=executor, address=address, storage_options=options,
            sources=list(sources), source=source_name or default_source(sources[0]), text_field=text_field,
            meta=tuple(pairs), format=fmt, on_error=on_error, part_size_mb=part_size_mb, commit_seconds=commit_seconds,
        )
        written = sum(r["n_docs_written"] for r in reports) - sum(r["n_cross_shard_duplicates_removed"] for r in reports)
        click.echo(json.dumps(reports, indent=2, default=str) if as_json else
                   f"ingested {written:,} new documents in {shards} shards ({executor})")
        return
    location = Location(db, options)
    fresh = not location.exists(CATALOG_FILE)  # this command creates the database
    existed = _existing_ancestor(location)
    database = corpusdb.init(db, storage_options=options)
    try:
        report = database.ingest(
            list(sources), source=source_name, text_field=text_field, meta=tuple(pairs), format=fmt,
            on_error=on_error, shard=shard, part_size_mb=part_size_mb, progress=progress, storage_options=options,
            commit_seconds=commit_seconds,
        )
    except BaseException:
        database.refresh()
        if fresh and database.version == 0:  # nothing committed: leave no empty database behind
            _remove_new_database(location, existed)
        raise
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(report.summary())
        for example in report.bad_examples:
            click.echo(f"  skipped: {example}", err=True)
    for warning in report.meta_warnings():
        click.echo(f"warning: {warning}", err=True)


def _existing_ancestor(location: Location) -> str | None:
    """The database folder itself, or its nearest ancestor, that exists now (local paths; None elsewhere)."""
    if not location.is_local:
        return None
    import os

    path = os.path.abspath(location.path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _remove_new_database(location: Location, existed: str | None) -> None:
    """Remove the catalog a failed first ingest created, and locally the folders it made (those below
    `existed`, the nearest one that existed before; a folder that is not empty stays)."""
    location.remove(location.join(CATALOG_FILE))
    if existed is None:
        return
    import os

    made = [root for root, _, _ in os.walk(os.path.abspath(location.path))]
    path = os.path.dirname(os.path.abspath(location.path))
    while len(path) > len(existed) and path.startswith(existed):
        made.append(path)
        path = os.path.dirname(path)
    for folder in sorted(made, key=len, reverse=True):  # deepest first
        if len(folder) > len(existed):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


@cli.command()
@click.argument("db")
@click.argument("query")
@format_option
@as_of_option
@access_options
@storage_option
def sql(db: str, query: str, fmt: str, as_of: int | None, allow: tuple[str, ...], unsafe: bool,
        storage_options: tuple[str, ...]) -> None:
    """Run QUERY (DuckDB SQL) over DB's tables and views and print the result.

    Queries read the latest committed version (or --as-of VERSION). DuckDB may read only DB's own
    files: pass --allow PATH to join other files, or --unsafe for full access.

    \b
    Examples:
      corpusdb sql demo/db "select source, count(*) as docs, sum(n_bytes) as bytes from documents group by 1"
      corpusdb sql demo/db "select doc_id, left(text, 80) from documents using sample 5" --format json
      corpusdb sql demo/db "select count(*) from refined" --as-of 12
      corpusdb sql demo/db "select d.* from documents d join 'labels.csv' l using (doc_id)" --allow labels.csv
    """
    with open_db(db, storage_options, as_of, allow, unsafe) as database:
        print_relation(database.sql(query), fmt)


@cli.command()
@click.argument("db")
@format_option
@as_of_option
@storage_option
def stats(db: str, fmt: str, as_of: int | None, storage_options: tuple[str, ...]) -> None:
    """Summarise DB: documents, bytes and parts, in all and per source; its version, the scored models (and how
    many documents each has scored), near-duplicate clusters, instances, annotations and views.

    \b
    Example:
      corpusdb stats demo/db --format json
    """
    with open_db(db, storage_options, as_of) as database:
        summary = database.stats()
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
        return
    total_bytes = max(summary["n_bytes"], 1)
    rows = [
        (s["source"], s["n_documents"], s["n_bytes"], round(100.0 * s["n_bytes"] / total_bytes, 2))
        for s in summary["sources"]
    ]
    rows.append(("(all)", summary["n_documents"], summary["n_bytes"], 100.0 if summary["n_bytes"] else 0.0))
    if fmt == "table":
        total = summary["n_documents"]
        instances = summary["instances"]
        of = {"documents": total, "instances": instances["n_instances"] if instances else 0}
        scored = ", ".join(f"{name} ({n:,} of {of[summary['units'].get(name, 'documents')]:,} "
                           f"{summary['units'].get(name, 'documents')})"
                           for name, n in summary["scored"].items()) or "none"
        if instances:
            instances_line = (f"\ninstances: {instances['n_instances']:,} of at most {instances['tokens']:,} tokens "
                              f"({instances['tokenizer']})")
        else:
            instances_line = ""
        clustered = (f"near-duplicate clusters for {summary['n_clustered']:,} documents" if summary["n_clustered"]
                     else "no near-duplicate clusters (corpusdb minhash)")
        annotated = ", ".join(f"{name} ({a['kind']}, {a['n_rows']:,} rows)" for name, a in summary["annotations"].items())
        click.echo(f"{summary['url']} at version {summary['version']}: {total:,} documents, "
                   f"{summary['n_bytes'] / 1e6:,.1f} MB of text, {summary['n_parts']} parts\n"
                   f"scored by: {scored}\n{clustered}{instances_line}\n"
                   f"annotations: {annotated or 'none (corpusdb annotate)'}\nviews: {', '.join(summary['views']) or 'none'}")
    click.echo(render(["source", "n_documents", "n_bytes", "pct_bytes"], rows, fmt))


SHELL_HELP = """Enter SQL ending in ';'. Commands: .tables  .schema NAME  .format table|csv|json  .help  .quit"""


@cli.command()
@click.argument("db")
@as_of_option
@access_options
@storage_option
def shell(db: str, as_of: int | None, allow: tuple[str, ...], unsafe: bool, storage_options: tuple[str, ...]) -> None:
    """Open an interactive SQL prompt on DB (statements end with ';').

    \b
    Example:
      corpusdb shell demo/db
      corpusdb> select source, count(*) from documents group by 1;
    """
    try:
        import readline  # noqa: F401 - line editing and history where available
    except ImportError:
        pass
    interactive = sys.stdin.isatty()
    fmt = "table"
    with open_db(db, storage_options, as_of, allow, unsafe) as database:
        if interactive:
            click.echo(f"corpusdb {corpusdb.__version__} on {database.url}. {SHELL_HELP}")
        buffer: list[str] = []
        while True:
            prompt = ("corpusdb> " if not buffer else "     ...> ") if interactive else ""
            try:
                line = input(prompt)
            except EOFError:
                break
            stripped = line.strip()
            if not buffer and stripped.startswith("."):
                command, _, arg = stripped.partition(" ")
                if command in (".quit", ".exit"):
                    break
                if command == ".help":
                    click.echo(SHELL_HELP)
                elif command == ".tables":
                    click.echo("\n".join(database.relations()))
                elif command == ".schema" and arg:
                    statement = f"describe {arg.strip()}"
                    _run_shell_statement(database, statement, "table")
                elif command == ".format" and arg.strip() in FORMATS:
                    fmt = arg.strip()
                else:
                    click.echo(f"Error: unknown command {stripped!r}. {SHELL_HELP}", err=True)
                continue
            if not stripped and not buffer:
                continue
            buffer.append(line)
            if stripped.endswith(";"):
                _run_shell_statement(database, "\n".join(buffer), fmt)
                buffer = []
        if buffer:
            _run_shell_statement(database, "\n".join(buffer), fmt)


def _run_shell_statement(database: corpusdb.Database, statement: str, fmt: str) -> None:
    try:
        with database.query_errors():  # also errors raised while the statement runs, e.g. a policy's error()
            print_relation(database.sql(statement), fmt)
    except CorpusDBError as exc:
        click.echo(f"Error: {exc}", err=True)
