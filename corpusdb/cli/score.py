"""`corpusdb score`: per-document log-likelihoods under a teacher or reference LM.

    corpusdb score demo/db --model out/teacher --as teacher
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import cli, commit_option, open_db, storage_option
from corpusdb.scoring.job import PRECISIONS


@cli.command()
@click.argument("db")
@click.option("--model", required=True, help="causal LM: a save_pretrained folder, a .gguf file or a hub id")
@click.option("--as", "name", required=True, help="name of its scores: the partition scores/model=NAME")
@click.option("--context", type=int, help="tokens per window [default: the model's context length]")
@click.option("--stride", type=int, help="new tokens per window after the first [default: context/2]")
@click.option("--batch-tokens", type=int, help="tokens per forward pass [default: 65536 on GPU, 2048 on CPU]")
@click.option("--part-docs", type=int, default=8192, show_default=True, help="documents per part (the unit of resumption)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK)")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 autocast on a GPU that has it, else fp32")
@click.option("--attn", "attn_implementation", default="sdpa", show_default=True,
              help="transformers attention: sdpa, eager or flash_attention_2")
@click.option("--shard", default="0/1", show_default=True, help="i/n: score only doc_ids equal to i modulo n")
@click.option("--view", help="score only this view's documents (a name, macro call or select) [default: all documents]")
@click.option("--replace", is_flag=True, help="delete NAME's scores first and rescore every document")
@click.option("--trust-remote-code", is_flag=True, help="allow the model's own Python code (hub models that need it)")
@click.option("--nproc-per-node", type=int, default=0,
              help="launch this command under torchrun with this many processes (one per GPU) and wait for it")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@storage_option
def score(db, model, name, context, stride, batch_tokens, part_docs, device, precision, attn_implementation, shard,
          view, replace, trust_remote_code, nproc_per_node, as_json, progress, commit_seconds, storage_options):
    """Score DB's documents with a causal LM and store their log-likelihoods as scores/model=NAME.

    Each document gets sum_logprob (natural log, every token predicted from its prefix, the first
    from BOS), n_tokens and n_bytes; per-token and per-byte losses follow in SQL. Documents longer
    than the context are scored in windows (--context, --stride), each token exactly once.
    Short documents are packed several to a row, so no compute goes to padding.

    NAME is bound to the model's content (a hash of its weight, config and tokenizer files) and the
    scoring settings: the same files under another path are the same model; other content (a
    checkpoint retrained in place) or other settings under NAME are refused before loading.

    Parts are committed every --commit-every seconds and at the end. A re-run scores only
    documents without a committed score: a killed job resumes, and documents ingested later are
    scored incrementally. Shards (--shard i/n, and torchrun ranks) score disjoint doc_ids and may
    run at once. `corpusdb models DB` lists score names; --drop and --rename manage them.

    \b
    Examples:
      corpusdb score demo/db --model out/teacher --as teacher
      corpusdb score demo/db --model HuggingFaceTB/SmolLM2-135M --as smollm2 --context 2048
      corpusdb score s3://bkt/db --model m --as teacher --nproc-per-node 8    # runs torchrun for you
      torchrun --nproc_per_node 8 -m corpusdb.cli score s3://bkt/db --model m --as teacher
      corpusdb sql demo/db "select model, sum(-sum_logprob)/sum(n_bytes)/ln(2) as bits_per_byte from scores group by 1"
    """
    if nproc_per_node:
        _launch_torchrun(nproc_per_node)
        return
    with open_db(db, storage_options) as database:
        report = database.score(
            model, name, context=context, stride=stride, batch_tokens=batch_tokens, chunk_docs=part_docs,
            device=device, precision=precision, shard=shard, view=view, replace=replace,
            attn_implementation=attn_implementation, trust_remote_code=trust_remote_code, progress=progress,
            commit_seconds=commit_seconds,
        )
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.summary())


def _launch_torchrun(nproc_per_node: int) -> None:
    """Run this same command under torchrun (without --nproc-per-node), one rank per GPU."""
    import sys

    from corpusdb.execute import launch_torchrun

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--nproc-per-node":
            skip = True
            continue
        if arg.startswith("--nproc-per-node="):
            continue
        argv.append(arg)
    status = launch_torchrun(argv, nproc_per_node)
    if status:
        raise click.ClickException(f"torchrun exited with status {status}")
