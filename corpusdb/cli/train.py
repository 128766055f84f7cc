"""`corpusdb train`: pre-train a student (or a reference or teacher) on a view.

    corpusdb train demo/db --view refined --out out/student --max-steps 500
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import cli


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("db")
@click.option("--view", required=True, help="training data: a view name, macro call or select")
@click.option("--out", required=True, help="folder for the checkpoint, metrics.jsonl and the final model/")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def train(db, view, out, options):
    """Pre-train a causal LM on VIEW of DB, from scratch, with a compact AdamW loop.

    OPTIONS are the flags of `python -m train.pretrain --help` (every TrainConfig setting):
    --size, --arch, --seq-len, --batch-size, --grad-accum, --max-steps, --lr, --eval-view,
    --tokenizer (default: train a byte-level BPE on the view), --num-workers, --device, ...
    A re-run with the same --out continues from the last checkpoint; the final model is saved
    to OUT/model for `corpusdb score`. For several GPUs: `torchrun -m train.pretrain ...`.

    \b
    Examples:
      corpusdb train demo/db --view refined --out out/student --size small --max-steps 500 --eval-view heldout
      corpusdb score demo/db --model out/student/model --as student
    """
    from train.pretrain import parse_args
    from train.pretrain import train as run

    config = parse_args(["--db", db, "--view", view, "--out", out, *options])
    click.echo(json.dumps(run(config), indent=1, default=str))
