"""`corpusdb train`: pre-train a student (or a reference or teacher) on a view.

    corpusdb train demo/db --view refined --out out/student --max-steps 500
"""

from __future__ import annotations

import json

import click

from corpusdb.cli.base import cli


class TrainCommand(click.Command):
    """`corpusdb train`: its help also lists the training settings it passes through."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from corpusdb.train.pretrain import config_help

        passed = {"--db", "--view", "--out"}  # given as DB, --view and --out above
        rows = [(f"{flag} / --no-{flag[2:]}" if isinstance(default, bool) else flag, f"{text} [default: {default}]")
                for flag, text, default in config_help() if flag not in passed]
        with formatter.section("Training settings (OPTIONS)"):
            formatter.write_dl(rows)
        super().format_epilog(ctx, formatter)


@cli.command(cls=TrainCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("db")
@click.option("--view", help="training data: a view name, macro call or select (or --export URL: an export or a "
                             "`corpusdb select` folder, each rank reading its own parts)")
@click.option("--out", required=True, help="folder for the checkpoint, metrics.jsonl and the final model/")
@click.option("--nproc-per-node", type=int, default=0, help="run under torchrun with this many processes (one per GPU)")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def train(db, view, out, nproc_per_node, options):
    """Pre-train a causal LM on VIEW of DB, from scratch, with a compact AdamW loop.

    OPTIONS are the flags of `python -m corpusdb.train.pretrain --help` (every TrainConfig setting):
    --size, --arch, --seq-len, --batch-size, --grad-accum, --max-steps, --lr, --eval-view,
    --tokenizer (default: train a byte-level BPE on the view), --num-workers, --device, ...
    A re-run with the same --out continues from the last checkpoint; the final model is saved
    to OUT/model for `corpusdb score`. For several GPUs: `torchrun -m corpusdb.train.pretrain ...`.

    \b
    Examples:
      corpusdb train demo/db --view refined --out out/student --size small --max-steps 500 --eval-view heldout
      corpusdb train demo/db --view refined --out out/student --size 20m --nproc-per-node 8
      corpusdb train s3://bkt/db --export s3://bkt/refined --out out/student --nproc-per-node 8
      corpusdb score demo/db --model out/student/model --as student
    """
    from corpusdb.train.pretrain import parse_args
    from corpusdb.train.pretrain import train as run

    if view is None and not any(o == "--export" or o.startswith("--export=") for o in options):
        raise click.UsageError("name the training data: --view VIEW, or --export URL (an export or a `corpusdb select` folder)")
    argv = ["--db", db, *(["--view", view] if view is not None else []), "--out", out, *options]
    config = parse_args(argv)  # check the flags before launching anything
    if nproc_per_node:
        from corpusdb.execute import launch_torchrun

        if launch_torchrun(argv, nproc_per_node, module="corpusdb.train.pretrain"):
            raise click.ClickException("torchrun failed; see its output above")
        return
    click.echo(json.dumps(run(config), indent=1, default=str))
