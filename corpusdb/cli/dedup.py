"""`corpusdb minhash` and `corpusdb dedup-report`: near-duplicate clusters and their statistics.

    corpusdb minhash demo/db && corpusdb dedup-report demo/db
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import as_of_option, cli, commit_option, executor_options, format_option, open_db, storage_option
from corpusdb.dedup.minhash import HASHES
from corpusdb.dedup.report import dedup_report
from corpusdb.output import render
from corpusdb.storage import parse_storage_options


@cli.command()
@click.argument("db")
@click.option("--ngram", type=int, default=5, show_default=True, help="words per shingle")
@click.option("--num-perm", type=int, default=128, show_default=True, help="MinHash permutations (signature length)")
@click.option("--seed", type=int, default=1, show_default=True, help="datasketch seed of the permutations")
@click.option("--hash", "hash_name", type=click.Choice(HASHES), default="xxh3", show_default=True,
              help="shingle hash: xxh3 (fast, vectorised) or sha1 (datasketch's default hashfunc)")
@click.option("--threshold", type=float, default=0.8, show_default=True, help="Jaccard similarity of near-duplicates")
@click.option("--bands", type=int, help="LSH bands [default: datasketch's optimum for --threshold, recall-weighted]")
@click.option("--rows", type=int, help="signature values per band [default: as --bands]")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="check candidate pairs' estimated Jaccard (threshold less two standard errors)")
@click.option("--max-bucket", type=int, default=256, show_default=True,
              help="LSH buckets larger than this link to their smallest member instead of all pairs")
@click.option("--shard", default="0/1", show_default=True, help="i/n: sign every n-th documents part starting at i")
@click.option("--workers", type=int, help="processes computing signatures [default: CPU count]")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@executor_options
@storage_option
def minhash(db, ngram, num_perm, seed, hash_name, threshold, bands, rows, verify, max_bucket, shard, workers, as_json,
            progress, commit_seconds, shards, executor, address, storage_options):
    """Find near-duplicate documents: MinHash signatures, LSH banding, connected components.

    Signatures (datasketch-compatible) are computed for documents parts that have none, in
    parallel processes; a re-run computes only new or unfinished parts. When every part has its
    signatures, clusters are rebuilt in DuckDB and written to the `minhash` table: doc_id,
    cluster_id (the smallest doc_id in the cluster) and cluster_size. With --shard, the shard that
    finishes last builds the clusters.

    \b
    Examples:
      corpusdb minhash demo/db
      corpusdb minhash demo/db --threshold 0.7 --num-perm 256
      corpusdb minhash s3://bkt/db --shards 64 --executor ray --address auto   # clusters as Ray tasks too
      corpusdb sql demo/db "select cluster_size, count(*) from minhash group by 1 order by 1"
    """
    settings = dict(ngram=ngram, num_perm=num_perm, seed=seed, hash=hash_name, threshold=threshold, bands=bands, rows=rows,
                    verify=verify, max_bucket=max_bucket)
    if shards:
        from corpusdb.execute import run_sharded

        reports = run_sharded("minhash", db, shards=shards, executor=executor, address=address, workers=workers,
                              storage_options=parse_storage_options(storage_options), **settings)
        click.echo(json.dumps(reports, indent=2, default=str) if as_json else
                   f"signed {sum(r.get('n_documents_signed', 0) for r in reports):,} documents in {shards} shards ({executor}); "
                   f"clusters rebuilt")
        return
    with open_db(db, storage_options) as database:
        report = database.minhash(
            ngram=ngram, num_perm=num_perm, seed=seed, hash=hash_name, threshold=threshold, bands=bands, rows=rows,
            verify=verify, max_bucket=max_bucket, shard=shard, workers=workers, progress=progress,
            commit_seconds=commit_seconds,
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


@cli.command("dedup-report")
@click.argument("db")
@format_option
@as_of_option
@storage_option
def dedup_report_command(db, fmt, as_of, storage_options):
    """Near-duplicates per source: documents by the size of their cluster, and what dedup removes.

    \b
    Example:
      corpusdb dedup-report demo/db --format csv
    """
    with open_db(db, storage_options, as_of) as database:
        columns, rows = dedup_report(database)
    click.echo(render(columns, rows, fmt))
