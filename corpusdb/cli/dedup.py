"""`corpusdb minhash` and `corpusdb dedup-report`: near-duplicate clusters and their statistics.

    corpusdb minhash demo/db && corpusdb dedup-report demo/db
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import as_of_option, cli, commit_option, executor_options, format_option, open_db, storage_option
from corpusdb.dedup.cluster import CLUSTER_METHODS, VERIFY_MODES
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
@click.option("--bands", type=int, help="LSH bands [default: datasketch's optimum for --threshold, recall-weighted: "
                                        "17 bands x 7 rows at 0.8 with exact verification, 14 x 9 without]")
@click.option("--rows", type=int, help="signature values per band [default: as --bands]")
@click.option("--verify", type=click.Choice(VERIFY_MODES), default="exact", show_default=True,
              help="which candidate pairs become edges: exact (true shingle Jaccard at least the threshold, computed "
                   "from the texts where the MinHash estimate is between three standard errors below and four above it), estimate "
                   "(estimated Jaccard at least the threshold plus half a standard error: no texts read, but on pages "
                   "sharing a template it merges pages that are not near-duplicates) or off (every LSH candidate of a "
                   "small bucket)")
@click.option("--verify-memory", help="exact verification holds at most this much of shingle sets at once, e.g. 512MB; "
                                      "beyond it the texts are read again per group of pairs (same clusters) [default: 1GB]")
@click.option("--no-verify", "no_verify", is_flag=True, hidden=True, help="the same as --verify off (older option)")
@click.option("--cluster", "method", type=click.Choice(CLUSTER_METHODS), default="components", show_default=True,
              help="components: near-duplicates of near-duplicates join (high recall); star: each cluster is a kept "
                   "document and documents verified against it (no chains, higher precision)")
@click.option("--max-bucket", type=int, default=256, show_default=True,
              help="LSH buckets larger than this pair each member with its 32 neighbours in signature order instead of "
                   "all members (bounds the join; pages sharing a template)")
@click.option("--memory-limit", help="DuckDB's memory limit while clustering, e.g. 4GB; the working tables spill to disk "
                                     "beyond it (same clusters) [default: DuckDB's, 80% of RAM]")
@click.option("--shard", default="0/1", show_default=True, help="i/n: sign every n-th documents part starting at i")
@click.option("--workers", type=int, help="processes computing signatures [default: CPU count]")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@executor_options
@storage_option
def minhash(db, ngram, num_perm, seed, hash_name, threshold, bands, rows, verify, verify_memory, no_verify, method, max_bucket, memory_limit,
            shard, workers, as_json, progress, commit_seconds, shards, executor, address, storage_options):
    """Find near-duplicate documents: MinHash signatures, LSH banding, verified pairs, clusters.

    Signatures (datasketch-compatible) are computed for documents parts that have none, in
    parallel processes; a re-run computes only new or unfinished parts. When every part has its
    signatures, clusters are rebuilt in DuckDB and written to the `minhash` table: doc_id,
    cluster_id (the smallest doc_id in the cluster) and cluster_size. With --shard, the shard that
    finishes last builds the clusters.

    \b
    Examples:
      corpusdb minhash demo/db
      corpusdb minhash demo/db --threshold 0.7 --num-perm 256
      corpusdb minhash demo/db --cluster star   # no chains: each removed document is near its kept one
      corpusdb minhash demo/db --verify estimate   # no texts read: faster, less precise on templated pages
      corpusdb minhash big/db --memory-limit 4GB   # heavy duplication: bounded memory, spills
      corpusdb minhash s3://bkt/db --shards 64 --executor ray --address auto   # clusters as Ray tasks too
      corpusdb sql demo/db "select cluster_size, count(*) from minhash group by 1 order by 1"
    """
    verify = "off" if no_verify else verify
    settings = dict(ngram=ngram, num_perm=num_perm, seed=seed, hash=hash_name, threshold=threshold, bands=bands, rows=rows,
                    verify=verify, method=method, max_bucket=max_bucket)
    if shards:
        from corpusdb.execute import run_sharded

        reports = run_sharded("minhash", db, shards=shards, executor=executor, address=address, workers=workers,
                              storage_options=parse_storage_options(storage_options), memory_limit=memory_limit, verify_memory=verify_memory,
                              **settings)
        click.echo(json.dumps(reports, indent=2, default=str) if as_json else
                   f"signed {sum(r.get('n_documents_signed', 0) for r in reports):,} documents in {shards} shards ({executor}); "
                   f"clusters rebuilt")
        return
    with open_db(db, storage_options) as database:
        report = database.minhash(
            ngram=ngram, num_perm=num_perm, seed=seed, hash=hash_name, threshold=threshold, bands=bands, rows=rows,
            verify=verify, method=method, max_bucket=max_bucket, shard=shard, workers=workers, progress=progress,
            commit_seconds=commit_seconds, memory_limit=memory_limit, verify_memory=verify_memory,
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


@cli.command("dedup-report")
@click.argument("db")
@click.option("--by", type=click.Choice(["source", "size"]), default="source", show_default=True,
              help="source: documents by the size of their cluster and what dedup removes; size: per cluster size, "
                   "the estimated Jaccard of each duplicate with the kept document (mean, minimum) and, on a sample "
                   "of clusters, how many hold members whose true Jaccard is below the threshold (chains)")
@format_option
@as_of_option
@storage_option
def dedup_report_command(db, by, fmt, as_of, storage_options):
    """Near-duplicates per source (what dedup removes) or per cluster size (how similar the members are).

    A low minimum similarity in large clusters means near-duplicates of near-duplicates were
    chained far apart; `--by size` counts them exactly on a sample (n_chained of n_sampled
    clusters hold two members below the threshold, reading those members' texts).
    `corpusdb minhash DB --cluster star` keeps only documents verified against the kept one.

    \b
    Examples:
      corpusdb dedup-report demo/db --format csv
      corpusdb dedup-report demo/db --by size
    """
    with open_db(db, storage_options, as_of) as database:
        columns, rows = dedup_report(database, by)
    click.echo(render(columns, rows, fmt))
