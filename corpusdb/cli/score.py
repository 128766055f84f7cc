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
@click.option("--unit", type=click.Choice(["documents", "instances"]), default="documents", show_default=True,
              help="score whole documents, or the instances `corpusdb instances` cut (each on its own, MiniPLM's unit)")
@click.option("--batch-tokens", type=int, help="tokens per forward pass [default: 65536 on GPU, 2048 on CPU]")
@click.option("--part-bytes", type=int,
              help="a part (the unit of resumption) ends once its documents hold this many bytes of text "
                   "[default: 16 MiB on GPU, 32 KiB on CPU: about a minute of work]")
@click.option("--part-tokens", type=int, hidden=True, expose_value=False, callback=lambda ctx, param, value: _renamed(value))
@click.option("--part-docs", type=int, default=8192, show_default=True, help="at most this many documents per part")
@click.option("--threads", type=int, help="torch CPU threads [default: the available cores not busy with other work when the job starts, at least 1]")
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
def score(db, model, name, context, stride, unit, batch_tokens, part_bytes, part_docs, threads, device, precision, attn_implementation, shard,
          view, replace, trust_remote_code, nproc_per_node, as_json, progress, commit_seconds, storage_options):
    """Score DB's documents (or instances) with a causal LM; store their log-likelihoods as scores/model=NAME.

    Each document gets sum_logprob (natural log, every token predicted from its prefix, the first
    from BOS), n_tokens and n_bytes; per-token and per-byte losses follow in SQL. Documents longer
    than the context are scored in windows (--context, --stride), each token exactly once.
    Short documents are packed several to a row, so no compute goes to padding.

    NAME is bound to the model's content (a hash of its weight, config and tokenizer files) and the
    scoring settings: the same files under another path are the same model; other content (a
    checkpoint retrained in place) or other settings under NAME are refused before loading.

    With --unit instances each instance of `corpusdb instances` is scored on its own (first token
    from BOS, as MiniPLM), keyed by instance_id; policies then take docs := 'instances'.

    Parts (--part-bytes) are committed every --commit-every seconds and at the end. A re-run scores only
    documents without a committed score: a killed job resumes, and documents ingested later are
    scored incrementally. Parts are cut from all documents, scored or not, so a resumed job gives
    the same bits as an uninterrupted one with the same settings (--threads included). Shards (--shard i/n, and torchrun ranks) score disjoint doc_ids and may
    run at once. `corpusdb models DB` lists score names; --drop and --rename manage them.

    \b
    Examples:
      corpusdb score demo/db --model out/teacher --as teacher
      corpusdb score demo/db --model HuggingFaceTB/SmolLM2-135M --as smollm2 --context 2048
      corpusdb score demo/db --model path/SmolLM2-135M-Instruct.Q4_1.gguf --as teacher --unit instances
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
            part_bytes=part_bytes, unit=unit, threads=threads,
            device=device, precision=precision, shard=shard, view=view, replace=replace,
            attn_implementation=attn_implementation, trust_remote_code=trust_remote_code, progress=progress,
            commit_seconds=commit_seconds,
        )
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.summary())


def _renamed(value) -> None:
    if value is not None:
        raise click.UsageError("--part-tokens is now --part-bytes (parts are cut by bytes of text, known without "
                               "tokenizing, so a resumed job cuts them where an uninterrupted one did); "
                               "pass about 4 bytes per token, e.g. --part-bytes 32768 for 8192 tokens")


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


@cli.command()
@click.argument("db")
@click.option("--tokenizer", required=True,
              help="the student's tokenizer: a tokenizer or model folder, a .gguf file or a hub id (a fast tokenizer)")
@click.option("--tokens", type=int, default=1024, show_default=True, help="tokens per instance (at most; MiniPLM: 1024)")
@click.option("--view", help="cut only this view's documents (a name, macro call or select) [default: all documents]")
@click.option("--replace", is_flag=True, help="delete the instances first and cut every document again (other settings)")
@click.option("--part-docs", type=int, default=4096, show_default=True, help="documents per part (the unit of resumption)")
@click.option("--json", "as_json", is_flag=True, help="print the job report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@commit_option
@storage_option
def instances(db, tokenizer, tokens, view, replace, part_docs, as_json, progress, commit_seconds, storage_options):
    """Cut DB's documents into instances of at most --tokens tokens: MiniPLM's unit of selection.

    Each document becomes consecutive spans of the tokenizer's tokens that end on token
    boundaries, so its instances concatenate back to its text exactly. They are rows of the
    `instances` view (instance_id, doc_id, position, byte_start, byte_end, n_tokens, the
    document's columns, the span's text and n_bytes), which every policy takes as
    `docs := 'instances'`; `corpusdb score --unit instances` scores each one on its own.

    The tokenizer and --tokens are recorded: a re-run cuts only documents without instances
    (a killed job resumes, new documents are cut incrementally); other settings need --replace.

    \b
    Examples:
      corpusdb instances demo/db --tokenizer out/student --tokens 1024
      corpusdb score demo/db --unit instances --model out/teacher --as teacher
      corpusdb score demo/db --unit instances --model out/reference --as reference
      corpusdb sql demo/db "select * from difference('teacher', 'reference', docs := 'instances') limit 5"
      corpusdb export demo/db "difference('teacher', 'reference', docs := 'instances')" out/refined \\
        --format tokens --tokenizer out/student
    """
    from corpusdb.instances import run_instances

    with open_db(db, storage_options) as database:
        report = run_instances(database, tokenizer, tokens, view=view, replace=replace, part_docs=part_docs,
                               progress=progress, commit_seconds=commit_seconds)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
