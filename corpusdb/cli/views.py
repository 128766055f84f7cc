"""Commands over selection policies: view create/list/drop/stats, compare, export, report.

    corpusdb view list demo/db
    corpusdb export demo/db dedup out/dedup --format parquet
"""

from __future__ import annotations

import json
import shutil
import textwrap

import click

from corpusdb.cli.base import as_of_option, cli, executor_options, format_option, open_db, storage_option
from corpusdb.export import FORMATS as EXPORT_FORMATS
from corpusdb.output import render
from corpusdb.storage import parse_storage_options


@cli.group()
def view() -> None:
    """Create, list, drop and summarise views (selection policies).

    Built-in policies live in sql/ (difference, difference_bytes, difference_sampled, difference_by_source,
    curriculum, dedup, quota, mixture, filter_*); user views are saved in the database as
    views/NAME.sql and may use the built-ins and each other.

    \b
    Examples:
      corpusdb view create demo/db refined --sql "select * from difference('teacher', 'ref', docs := 'dedup')"
      corpusdb view stats demo/db refined
      corpusdb sql demo/db "select * from curriculum('ref', docs := 'refined') limit 5"
    """


@view.command("create")
@click.argument("db")
@click.argument("name")
@click.argument("stray", nargs=-1, metavar="")
@click.option("--sql", "sql_text", help="the view's select statement (DuckDB SQL), as one quoted argument")
@click.option("--replace", is_flag=True, help="overwrite a user view of that name")
@click.option("--check-seconds", type=click.FloatRange(min=0), default=600, show_default=True,
              help="run the view for at most this long before saving it; 0: check only that it binds")
@storage_option
def view_create(db, name, stray, sql_text, replace, check_seconds, storage_options):
    """Create user view NAME in DB from one select; it is run first, then committed as a new version.

    The SQL must be exactly one select (DuckDB's parser decides). It is run in full before it is
    saved (for at most --check-seconds), so a missing column or view, or a policy refusing its
    arguments (a score name without scores, alpha outside (0, 1], units it cannot judge), is an
    error and nothing is saved. A view that runs longer (a recursive CTE that never ends?) is
    refused; --check-seconds 0 saves it after checking only that it binds. A view that selects
    no rows is saved with a warning. A copy of the SQL goes to views/NAME.sql for people and
    other engines.

    \b
    Example:
      corpusdb view create demo/db short_docs --sql "select * from documents where n_bytes < 2000"
    """
    from corpusdb.views import create_view

    example = f'corpusdb view create DB {name} --sql "select * from documents where n_bytes < 2000"'
    if stray:
        raise click.UsageError(f"the view's SQL must be one quoted argument after --sql (the shell split it, or --sql is "
                               f"missing: {' '.join(stray)!r} was left over), e.g. {example}")
    if not sql_text:
        raise click.UsageError(f"pass the view's select with --sql, as one quoted argument, e.g. {example}")
    with open_db(db, storage_options) as database:
        n_rows = create_view(database, name, sql_text, replace=replace, check_seconds=check_seconds)
        version = database.version
    if n_rows is None:
        click.echo(f"view {name!r} saved in version {version} (checked: one select that binds; not run, --check-seconds 0)")
        return
    if not n_rows:
        click.echo(f"Warning: view {name!r} selects no rows now; check its filters and score names", err=True)
    click.echo(f"view {name!r} saved ({n_rows:,} rows now) in version {version}")


@view.command("list")
@click.argument("db")
@format_option
@as_of_option
@storage_option
def view_list(db, fmt, as_of, storage_options):
    """List built-in and user views with what they do and their parameters.

    Files in views/ that are not committed views are listed as "ignored file": they never run.

    \b
    Example:
      corpusdb view list demo/db --format json
    """
    with open_db(db, storage_options, as_of) as database:
        rows = database.views()
    if fmt != "table":
        click.echo(render(["name", "kind", "description", "params"], [tuple(r.values()) for r in rows], fmt))
        return
    # a block per view: descriptions and parameter lists are long and must not be cut
    width = max(40, min(shutil.get_terminal_size((100, 20)).columns, 120) - 4)
    for row in rows:
        name, kind, description, params = row.values()
        click.echo(f"{name}  ({kind})")
        for label, text in (("", description), ("params: ", params)):
            if text:
                click.echo(textwrap.fill(f"{label}{text}", width, initial_indent="    ", subsequent_indent="      "))
    click.echo(f"({len(rows)} view{'s' if len(rows) != 1 else ''})")


@view.command("show")
@click.argument("db")
@click.argument("name")
@click.option("--sql", "show_sql", is_flag=True, help="print the full definition too")
@format_option
@as_of_option
@storage_option
def view_show(db, name, show_sql, fmt, as_of, storage_options):
    """Show view NAME: what it selects, its parameters, its rules (for a built-in policy: how it
    treats units it cannot judge, and its `missing := ...` choices) and, with --sql, its SQL.

    \b
    Examples:
      corpusdb view show demo/db difference
      corpusdb view show demo/db refined --sql
    """
    from corpusdb.views import describe_view

    with open_db(db, storage_options, as_of) as database:
        info = describe_view(database, name)
    if fmt != "table":
        click.echo(render(list(info), [tuple(info.values())], fmt))
        return
    width = max(40, min(shutil.get_terminal_size((100, 20)).columns, 120) - 4)
    click.echo(f"{info['name']}  ({info['kind']})")
    for label, text in (("", info["purpose"]), ("params: ", info["params"]), ("", info["notes"])):
        if text:
            click.echo(textwrap.fill(f"{label}{text}", width, initial_indent="    ", subsequent_indent="    "))
    if show_sql or info["kind"].startswith("user view"):
        click.echo(info["sql"].rstrip())


@view.command("drop")
@click.argument("db")
@click.argument("name")
@storage_option
def view_drop(db, name, storage_options):
    """Remove user view NAME.

    \b
    Example:
      corpusdb view drop demo/db short_docs
    """
    with open_db(db, storage_options) as database:
        database.drop_view(name)
        version = database.version
    click.echo(f"view {name!r} dropped in version {version}")


@view.command("stats")
@click.argument("db")
@click.argument("name", metavar="VIEW")
@format_option
@as_of_option
@storage_option
def view_stats(db, name, fmt, as_of, storage_options):
    """Summarise VIEW: documents, bytes, tokens per scoring model, per-source shares, score quantiles.

    VIEW is a view name, a macro call such as "difference('teacher', 'ref', alpha := 0.3)", or a select.

    \b
    Examples:
      corpusdb view stats demo/db dedup
      corpusdb view stats demo/db "difference('teacher', 'ref', alpha := 0.3)" --format json
    """
    with open_db(db, storage_options, as_of) as database:
        stats = database.view(name).stats()
    if fmt == "json":
        click.echo(json.dumps(stats, indent=2))
        return
    if fmt == "table":
        tokens = ", ".join(f"{m}: {t:,}" for m, t in stats["n_tokens"].items()) or "no scores"
        click.echo(
            f"{stats['view']}: {stats['n_documents']:,} {stats['unit']} ({stats['share_of_corpus_documents']:.1%} of all {stats['unit']}), "
            f"{stats['n_bytes']:,} bytes ({stats['share_of_corpus_bytes']:.1%} of the corpus's text); tokens: {tokens}"
        )
    rows = [(s["source"], s["n_documents"], s["n_bytes"], round(100 * s["share_documents"], 2), round(100 * s["share_bytes"], 2))
            for s in stats["sources"]]
    rows_of = "n_instances" if stats["unit"] == "instances" else "n_documents"
    click.echo(render(["source", rows_of, "n_bytes", f"pct_{rows_of[2:]}", "pct_bytes"], rows, fmt))
    quantiles = stats["quantiles"]
    if fmt == "table" and len(quantiles) > 1:
        header = ["quantile of"] + [f"p{round(100 * q)}" for q in quantiles["at"]]
        rows = [(name, *[round(v, 4) if v is not None else None for v in values])
                for name, values in quantiles.items() if name != "at"]
        click.echo(render(header, rows, fmt))


@cli.command()
@click.argument("db")
@click.argument("view_a", metavar="VIEW_A")
@click.argument("view_b", metavar="VIEW_B")
@format_option
@as_of_option
@storage_option
def compare(db, view_a, view_b, fmt, as_of, storage_options):
    """Compare two views: documents in both and in one only, Jaccard, and per-source shares.

    \b
    Example:
      corpusdb compare demo/db dedup "difference('teacher', 'ref')"
    """
    with open_db(db, storage_options, as_of) as database:
        result = database.view(view_a).compare(view_b)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    if fmt == "table":
        click.echo(
            f"A = {view_a}: {result['n_a']:,} documents; B = {view_b}: {result['n_b']:,}; in both: {result['n_both']:,}; "
            f"only A: {result['n_only_a']:,}; only B: {result['n_only_b']:,}; Jaccard {result['jaccard']:.3f}"
        )
    rows = [(s["source"], s["n_a"], s["n_b"], s["n_both"], round(100 * s["share_bytes_a"], 2), round(100 * s["share_bytes_b"], 2))
            for s in result["sources"]]
    click.echo(render(["source", "n_a", "n_b", "n_both", "pct_bytes_a", "pct_bytes_b"], rows, fmt))


@cli.command()
@click.argument("db")
@click.argument("name", metavar="VIEW")
@click.argument("url")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="parquet", show_default=True,
              help="parquet or jsonl (all columns), tokens (flat token array + index), megatron (Megatron-LM's "
                   ".bin + .idx indexed dataset), datatrove (datatrove's .ds + .ds.index, which nanotron reads), "
                   "mds (MosaicML streaming's shards + index.json, all columns) or litdata (LitData's chunks + "
                   "index.json: keys, text and n_bytes; needs the litdata package); tokens, megatron and datatrove "
                   "need --tokenizer, mds and litdata add a `tokens` column with it")
@click.option("--tokenizer", help="for tokens, megatron and datatrove (optional for mds, litdata): a folder, .gguf file "
                                  "or hub id with a tokenizer (EOS ends each row)")
@click.option("--part-size-mb", type=float, default=256.0, show_default=True,
              help="text bytes per part (mds and litdata: encoded bytes per shard or chunk, as their writers count)")
@click.option("--overwrite", is_flag=True, help="replace an export of something else at URL")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@click.option("--task-memory-limit", help="with --shards, a policy call cut by tasks: DuckDB's memory limit in each task, "
                                          "e.g. 2GB [default: --memory-limit's]")
@executor_options
@as_of_option
@storage_option
def export(db, name, url, fmt, tokenizer, part_size_mb, overwrite, progress, task_memory_limit, shards, executor, address, as_of,
           storage_options):
    """Export VIEW's rows to URL (any fsspec URL) as a training subset, with a manifest written last.

    VIEW is a view name, a macro call such as "difference('teacher', 'ref')", or a select. Rows
    come in the view's own order where it has one, else by doc_id, so exports are byte-identical
    run to run. The manifest lists the parts with row, byte and token counts and the selection's
    provenance: the version read, the SQL with every view and policy it uses, the models'
    identities and a hash of the data, so --as-of VERSION re-makes the same subset later.

    An export only ever removes files it wrote itself: URL must be a new or empty folder, or hold
    a corpusdb export. The same selection of the same data is not exported twice; another one
    there needs --overwrite. A folder without manifest.json is an unfinished export: run the
    command again.

    With --shards N the parts are written by N processes (or Ray tasks) at once, the bytes one
    process writes, in any format but litdata (and mds with --tokenizer: MDSWriter's shards are
    cut by the token ids' bytes; mds without one is cut where MDSWriter cuts it, from the rows'
    columns). A call of a policy with a distributed plan
    (difference, difference_bytes, difference_sampled, difference_by_source, quota, mixture,
    curriculum by a model's loss or a numeric column, every filter_* policy, dedup; over documents
    or instances; see `corpusdb select`)
    is cut by N tasks too, each over its own
    documents parts, so no process ranks every key; so is a view ordering the documents (or
    instances) by one numeric column ("select * from documents where ... order by n_bytes desc":
    each task sorts one range of the order; ties in unit order); any other view that hands out
    documents' or instances' text unchanged is cut by this process on its keys alone.

    A parquet or jsonl export carries a Hugging Face dataset card (README.md) naming its parts, so
    `datasets.load_dataset(URL, split="train")` reads the rows in order; other readers take the
    parts by their glob, part-*.parquet or part-*.jsonl (the manifest is not data). An mds or
    litdata export is read by its library's StreamingDataset from the folder (index.json lists the
    shards or chunks in order): streaming.StreamingDataset(local=URL) or litdata.StreamingDataset(URL).

    \b
    Examples:
      corpusdb export demo/db dedup out/dedup
      corpusdb export demo/db "difference('teacher', 'ref')" s3://bkt/refined --format tokens --tokenizer out/student
      corpusdb export demo/db refined out/refined-v12 --as-of 12
      corpusdb export demo/db refined out/refined-mds --format mds --part-size-mb 64
      corpusdb export s3://bkt/db refined s3://bkt/refined --shards 64 --executor ray --address auto
    """
    with open_db(db, storage_options, as_of) as database:
        manifest = database.view(name).export(
            url, format=fmt, tokenizer=tokenizer, part_size_mb=part_size_mb, overwrite=overwrite,
            storage_options=parse_storage_options(storage_options), progress=progress, shards=max(shards, 1),
            executor=executor, address=address, task_memory_limit=task_memory_limit,
        )
    tokens = f", {manifest['n_tokens']:,} tokens" if "n_tokens" in manifest else ""
    what = "already exported (same selection, data and settings):" if manifest.get("reused") else "exported"
    click.echo(f"{what} {manifest['n_rows']:,} rows ({manifest['n_bytes']:,} bytes{tokens}) in {len(manifest['parts'])} parts "
               f"to {url} (version {manifest['version']})")
    for warning in manifest.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


@cli.command()
@click.argument("db")
@click.option("--out", default="report.html", show_default=True, help="where to write the HTML page (path or fsspec URL)")
@click.option("--teacher", help="score name of the teacher [default: 'teacher' if scored]")
@click.option("--reference", help="score name of the reference [default: 'reference' if scored]")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="difference sampling's keep fraction, in (0, 1]")
@click.option("--view", "views", multiple=True, help="views to summarise (repeatable) [default: documents, dedup, user views, difference]")
@click.option("--docs", help="the rows the plots and the selection are drawn from, a view name (e.g. dedup) "
                             "[default: documents, or instances when the teacher scored instances]")
@as_of_option
@storage_option
def report(db, out, teacher, reference, alpha, views, docs, as_of, storage_options):
    """Write an HTML report of a selection, losses in bits per byte, over the rows it is drawn from (--docs).

    \b
    It shows:
      each model's bits per byte by source, on one shared axis
      teacher against reference, with the selection boundary (difference sampling, --alpha)
      the difference scores with the cut, and the fraction of each source kept
      the top and bottom of the ranking, with excerpts
      the distributions of the annotations' columns (corpusdb annotate)
      the per-source shares of each view

    \b
    Examples:
      corpusdb report demo/db --teacher teacher --reference reference --out demo/report.html
      corpusdb report demo/db --docs dedup --alpha 0.3 --out s3://bkt/reports/refined.html
    """
    from corpusdb.report import write_report

    with open_db(db, storage_options, as_of) as database:
        write_report(database, out, teacher=teacher, reference=reference, alpha=alpha, views=list(views) or None, docs=docs)
    click.echo(f"report written to {out}")


@cli.command("select")
@click.argument("db")
@click.argument("call")
@click.argument("url")
@click.option("--shards", type=click.IntRange(min=1), help="tasks, each over a run of contiguous documents parts "
                                                           "[default: two per CPU]")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="run the tasks as local processes or as Ray tasks")
@click.option("--address", help="Ray cluster address for --executor ray (e.g. auto) [default: start a local Ray]")
@click.option("--workers", type=click.IntRange(min=1), help="local processes at once [default: CPU count]")
@click.option("--part-size-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="text bytes per part (a part ends at the row that reaches it)")
@click.option("--overwrite", is_flag=True, help="replace a selection already at URL")
@click.option("--task-memory-limit", help="DuckDB's memory limit in each task, e.g. 2GB [default: --memory-limit's]")
@as_of_option
@storage_option
def select_command(db, call, url, shards, executor, address, workers, part_size_mb, overwrite, task_memory_limit, as_of,
                   storage_options):
    """Run a cut policy as tasks over the documents parts; write its rows as Parquet parts to URL.

    CALL is a call of difference, difference_bytes, difference_sampled, difference_by_source,
    quota, mixture, curriculum, filter_source, filter_length, filter_loss, filter_language,
    filter_quality, filter_decontaminated, filter_classifier (alpha: a cut of the annotation's top
    values) or dedup (a call, or the view `dedup`) over the documents (the default docs) or the instances
    (docs := 'instances': each task ranks the instances of its documents). The result is the rows the same call
    gives in one process (`corpusdb sql`), ties included, its columns and order too; no process
    holds every key. Each task ranks its parts' units on keys alone and writes them to URL/_work;
    the driver finds the cut from the tasks' histograms, narrowing it pass by pass (it receives a
    few hundred KB per task, never the keys); each task keeps its units at or before the cut and
    joins their text. URL/manifest.json, written last, lists the parts in order, as an export's
    does: `corpusdb train --export URL` (or `ViewDataset.from_export`) trains on them, each rank
    reading its own parts. A task reads the score parts that cover its documents parts (`corpusdb
    score` records them); parts of scores registered without covers, and imported annotations, are
    read by every task until `corpusdb models DB --covers` records theirs.

    \b
    Examples:
      corpusdb select demo/db "difference('teacher', 'reference', alpha := 0.5)" out/refined --shards 4
      corpusdb select s3://bkt/db "quota(map {'web': 1e12, 'code': 2e11})" s3://bkt/quota --shards 512 --executor ray --address auto
    """
    from corpusdb.distributed.select import select

    with open_db(db, storage_options, as_of) as database:
        selection = select(database, call, url, shards=shards, executor=executor, address=address, workers=workers,
                           storage_options=parse_storage_options(storage_options), part_size_mb=part_size_mb, overwrite=overwrite,
                           memory_limit=task_memory_limit, progress=True)
        uncovered = sum("covers" not in info for info in database.snapshot.tables.get("scores", {}).values())
    click.echo(f"selected {selection.rows:,} rows in {len(selection.files)} parts to {url} ({selection.passes} passes of the "
               f"cut, {selection.received_bytes:,} bytes received by the driver; the tasks read {selection.score_parts_read:,} "
               f"parts of scores of {selection.score_parts:,})")
    if uncovered and selection.score_parts_read > selection.score_parts:
        click.echo(f"note: {uncovered:,} parts of scores record no covers, so every task read them; "
                   f"`corpusdb models {db} --covers` records them", err=True)
