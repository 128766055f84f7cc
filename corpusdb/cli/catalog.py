"""Commands over a database's history and registry: versions, models, vacuum, verify.

    corpusdb versions demo/db
    corpusdb models demo/db
    corpusdb vacuum demo/db --dry-run
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import as_of_option, cli, format_option, open_db, storage_option
from corpusdb.catalog import load_catalog
from corpusdb.output import render
from corpusdb.storage import Location, parse_storage_options
from corpusdb.versions import history


@cli.command()
@click.argument("db")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="newest versions to list")
@format_option
@storage_option
def versions(db, limit, fmt, storage_options):
    """List DB's committed versions, newest first: what each job changed and what it left.

    Every job that changes DB (ingest, score, minhash, view create/drop, models --drop/--rename)
    commits one version; parts are never changed, so any read can name a version with --as-of and
    see exactly that state: a subset exported today re-materialises byte-identically later.

    \b
    Examples:
      corpusdb versions demo/db
      corpusdb export demo/db refined out/refined --as-of 12
    """
    # the history alone: no DuckDB views, so it lists versions even where the latest names a missing part
    location = Location(db, parse_storage_options(storage_options))
    load_catalog(location)
    snapshots = history(location, limit)
    rows = [
        (s.version, s.created_at, s.operation, s.summary, s.n_rows("documents"), len(s.tables["documents"]),
         ", ".join(sorted(s.models)), ", ".join(sorted(s.views)))
        for s in snapshots
    ]
    if fmt == "table" and not rows:
        click.echo(f"{db}: no versions yet (an empty database); ingest something first")
        return
    click.echo(render(["version", "created_at", "operation", "summary", "n_documents", "n_parts", "models", "views"], rows, fmt))


@cli.command()
@click.argument("db")
@click.option("--drop", "drop", metavar="NAME", help="remove score name NAME (its scores and identity) from the next version")
@click.option("--rename", nargs=2, metavar="OLD NEW", help="move score name OLD to NEW")
@click.option("--covers", "record_covers", is_flag=True,
              help="record in every part of scores (and of instance spans and imported annotations) without one which "
                   "documents parts hold its doc_ids, so that a task of `corpusdb select` reads only its own (parts "
                   "from before covers, registered without, or imported)")
@format_option
@as_of_option
@storage_option
def models(db, drop, rename, record_covers, fmt, as_of, storage_options):
    """List DB's score names with their model's identity and what they scored; drop or rename one.

    A score name is bound to its model's content (a hash of its weight, config and tokenizer
    files) and scoring settings: scoring other content under it is refused. Earlier versions keep
    dropped scores (--as-of).

    \b
    Examples:
      corpusdb models demo/db
      corpusdb models demo/db --rename ref reference
      corpusdb models demo/db --drop student
      corpusdb models demo/db --covers
    """
    from corpusdb.models import drop_model, rename_model

    with open_db(db, storage_options, as_of) as database:
        if sum(map(bool, (drop, rename, record_covers))) > 1:
            raise click.UsageError("pass one of --drop, --rename and --covers")
        if record_covers:
            from corpusdb.covers import record

            given = record(database)
            click.echo(f"covers recorded for {given} part(s) of scores, instances and annotations in version "
                       f"{database.version}" if given else "no part of scores, instances or annotations lacks covers")
            return
        if drop:
            rows = drop_model(database, drop)
            click.echo(f"scores {drop!r} dropped ({rows:,} rows) in version {database.version}")
            _warn_views(database, drop, "score it again under that name, or redefine or drop them")
            return
        if rename:
            rename_model(database, *rename)
            click.echo(f"scores {rename[0]!r} renamed to {rename[1]!r} in version {database.version}")
            _warn_views(database, rename[0], f"redefine them with {rename[1]!r} (`corpusdb view create DB NAME --replace --sql ...`)")
            return
        entries = database.models()
    if fmt == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    columns = ["name", "model", "content_hash", "tokenizer_hash", "n_documents", "n_tokens", "bits_per_byte", "context", "precision", "unit"]
    click.echo(render(columns, [tuple(e[c] for c in columns) for e in entries], fmt))


def _warn_views(database, name: str, fix: str) -> None:
    """Name the user views that read score name NAME, which no longer exists: they fail until fixed."""
    from corpusdb.models import views_reading

    affected = views_reading(database, name)
    if affected:
        click.echo(f"warning: {len(affected)} view(s) read scores {name!r} and now fail: {', '.join(affected)}; {fix}", err=True)


@cli.command()
@click.argument("db")
@click.option("--keep-versions", type=click.IntRange(min=1), help="also delete versions before the newest N (and the files only they used)")
@click.option("--grace", type=click.FloatRange(min=0), default=86400, show_default=True, metavar="SECONDS",
              help="leave unreferenced files younger than this (a running job may not have committed them yet)")
@click.option("--dry-run", is_flag=True, help="only list what would be removed")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@storage_option
def vacuum(db, keep_versions, grace, dry_run, as_json, storage_options):
    """Delete files no version references: parts a killed or failed job left uncommitted.

    Committed parts are never deleted by jobs, so every version stays readable with --as-of.
    With --keep-versions N, versions before the newest N are forgotten first, then the files only
    they used. Only files named as corpusdb names its parts are deleted (others are listed), and a
    table folder that is a link out of the database's folder is not entered.

    \b
    Examples:
      corpusdb vacuum demo/db --dry-run
      corpusdb vacuum demo/db --keep-versions 20
    """
    from corpusdb.vacuum import vacuum as run

    with open_db(db, storage_options) as database:
        result = run(database, keep_versions=keep_versions, grace_seconds=grace, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(result['files_removed'])} files ({result['bytes_freed'] / 1e6:,.1f} MB) and "
               f"{len(result['versions_removed'])} versions; {result['files_kept_as_recent']} unreferenced files "
               f"younger than {grace:g} s left")
    if result["foreign_files_kept"]:
        shown = ", ".join(result["foreign_files_kept"][:5])
        click.echo(f"kept {len(result['foreign_files_kept'])} files corpusdb did not name ({shown}); "
                   "move them out of the database's folders")
    if result["links_not_followed"]:
        click.echo(f"did not enter {', '.join(result['links_not_followed'])}: a link out of the database's folder; "
                   "vacuum the folder it leads to by hand, or copy it back into the database")


@cli.command()
@click.argument("db")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@as_of_option
@storage_option
def verify(db, progress, as_of, storage_options):
    """Check that every part of DB's version (latest, or --as-of N) is the one committed: its size and
    its full content hash (xxh3-128) against the version's record. One line per damaged part; exit 1 if any.

    Opening a database already compares every part's size with the record (one listing per table
    folder); verify reads every byte, so it also catches a same-size change (a flipped byte), at the
    speed the storage reads (about 1 GB/s from a local disk).

    \b
    Examples:
      corpusdb verify demo/db
      corpusdb verify s3://bkt/db --as-of 12 --no-progress
    """
    import time

    from corpusdb import versions
    from corpusdb.integrity import verify as verify_parts

    started = time.perf_counter()
    location = Location(db, parse_storage_options(storage_options))
    load_catalog(location)  # not a database: the usual one-line error
    snapshot = versions.load(location, as_of)  # not opened: a version with a damaged part cannot be
    damaged = verify_parts(location, snapshot, progress=progress)
    n_parts = sum(len(parts) for parts in snapshot.tables.values())
    n_bytes = sum(int(info.get("size") or 0) for parts in snapshot.tables.values() for info in parts.values())
    version = snapshot.version
    for entry in damaged:
        click.echo(f"damaged: {entry['path']} ({entry['table']}): {entry['problem']}", err=True)
    if damaged:
        raise click.ClickException(f"{len(damaged)} of {n_parts} parts of version {version} are not the ones committed; "
                                   "restore them from a copy, or read an earlier version with --as-of")
    click.echo(f"verified {n_parts:,} parts ({n_bytes / 1e6:,.1f} MB) of version {version}: every size and content hash "
               f"is the committed one ({time.perf_counter() - started:.1f} s)")
