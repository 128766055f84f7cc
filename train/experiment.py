"""The MiniPLM recipe end to end on a corpusdb database: teacher, reference, scores, subsets, students, held-out loss.

    python -m corpusdb.train.experiment --db demo/db --preset cpu --out results/cpu      # a few minutes on 2 cores
    python -m corpusdb.train.experiment --db demo/db --preset gpu --out results/gpu      # about 20 minutes on one H100

1. Split: near-duplicate clusters (`corpusdb minhash`) are split whole into train and held-out by a
   seeded hash of cluster_id, so no held-out document has a near-copy in training.
2. Models: a teacher trained on the whole training split (or a pretrained one, --teacher PATH),
   and a much smaller reference trained on a small random slice of it, both with `corpusdb.train.pretrain`.
3. Scores: `corpusdb score` of every training document under both.
4. Subsets, each alpha of the training split's text bytes (budget=bytes, `difference_bytes`: the
   same token budget for all, as MiniPLM's equal-length instances give) or of its documents
   (budget=docs, `difference`): uniform random; difference; difference over the deduplicated split
   (with the same budget); and the difference subset as a curriculum (reference loss, easy first).
5. Students: identical models trained on each subset for the same number of tokens, per seed.
6. Report: held-out loss per token and per byte (all and per source), mean and spread over seeds,
   and the compute used, as `results.md`, `results.json` and `results.png` under --out.

Every stage is skipped when its output exists, so a re-run continues an interrupted experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBSETS = ("uniform", "difference", "dedup_difference", "curriculum")
BUDGETS = ("bytes", "docs")
UNCHECKED = ("out", "num_workers", "device", "seeds")  # settings that do not change results (each seed has its own students)


@dataclass
class ExperimentConfig:
    db: str = "demo/db"  # the database (its documents are the corpus)
    out: str = "results/cpu"  # models, metrics and the results table
    preset: str = "cpu"  # cpu or gpu: the sizes below
    teacher: str | None = None  # a pretrained teacher (folder, .gguf or hub id); None: train one
    pool_mb: float = 3.0  # corpus size used, in MB of text (0: all); a seeded random sample of clusters
    heldout_fraction: float = 0.05  # share of near-duplicate clusters held out
    reference_fraction: float = 0.1  # share of the training split the reference is trained on
    alpha: float = 0.5  # kept fraction of every subset
    per: str = "byte"  # difference normalised per byte (any two tokenizers) or per token (the teacher's and reference's own)
    budget: str = "bytes"  # alpha of the training split's text bytes (equal tokens, as MiniPLM's equal-length instances) or "docs"
    unit: str = "documents"  # select documents, or instances (MiniPLM's unit: spans of instance_tokens student tokens)
    instance_tokens: int = 0  # tokens per instance, of the students' tokenizer (0: seq_len)
    score_context: int = 0  # scoring context for models whose own is longer (0: each model's own)
    score_stride: int = 0  # new tokens per window after the first with score_context (0: half the context)
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # student seeds
    vocab_size: int = 2048  # the shared BPE tokenizer (trained on the training split)
    seq_len: int = 128
    batch_size: int = 16
    teacher_size: str = "small"
    teacher_steps: int = 400
    reference_size: str = "tiny"
    reference_steps: int = 100
    student_size: str = "tiny"
    student_steps: int = 200
    lr: float = 2e-3
    eval_docs_per_source: int = 40  # held-out documents per source in the evaluation
    num_workers: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget {self.budget!r} is not one of {', '.join(BUDGETS)}")
        if self.unit not in ("documents", "instances"):
            raise ValueError(f"unit {self.unit!r} is not one of documents, instances")
        if self.per not in ("byte", "token"):
            raise ValueError(f"per {self.per!r} is not one of byte, token")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha {self.alpha} must be in (0, 1]")


PRESETS: dict[str, dict] = {
    "cpu": {},
    "gpu": dict(pool_mb=0, vocab_size=16384, seq_len=512, batch_size=64, teacher_size="100m", teacher_steps=3000,
                reference_size="5m", reference_steps=600, student_size="20m", student_steps=1500, lr=1e-3,
                eval_docs_per_source=300, num_workers=4, seeds=[0, 1]),
}


def _prefix(config: ExperimentConfig) -> str:
    """Views and score names of this experiment: exp_ + the name of its output folder (results/cpu: exp_cpu)."""
    return "exp_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(config.out).resolve().name)


def _check_settings(out: Path, config: ExperimentConfig) -> None:
    """Refuse to continue, in OUT, an experiment made with other settings: its finished stages would be reused."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in UNCHECKED}
    path = out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        defaults = dataclasses.asdict(ExperimentConfig())  # a setting added since: its default then and now
        changed = [f"{k}: {old.get(k, defaults[k])!r} -> {v!r}" for k, v in settings.items() if old.get(k, defaults[k]) != v]
        if changed:
            raise ValueError(f"{out} holds an experiment with other settings ({'; '.join(changed)}); "
                             "pass another --out or delete that folder")
    else:
        path.write_text(json.dumps(settings, indent=1))


def _views(db, config: ExperimentConfig) -> None:
    """Pool, train and held-out splits, and the reference slice, as saved views."""
    p = _prefix(config)
    pool = "select d.*, coalesce(m.cluster_id, d.doc_id) as cluster from documents d left join minhash m using (doc_id)"
    if config.pool_mb:
        budget = int(config.pool_mb * 1e6)
        pool = (f"select * exclude (running) from (select *, sum(n_bytes) over (order by uniform(cluster, 3), doc_id) as running "
                f"from ({pool})) where running <= {budget}")
    db.create_view(f"{p}_pool", pool, replace=True)
    db.create_view(f"{p}_heldout", f"select * from {p}_pool where uniform(cluster, 1) < {config.heldout_fraction}", replace=True)
    db.create_view(f"{p}_train", f"select * from {p}_pool where uniform(cluster, 1) >= {config.heldout_fraction}", replace=True)
    db.create_view(f"{p}_reference_slice", f"select * from {p}_train where uniform(doc_id, 2) < {config.reference_fraction}",
                   replace=True)


def _subsets(db, config: ExperimentConfig) -> dict[str, tuple[str, bool]]:
    """Subset name -> (view, shuffle). Every subset holds the same budget: alpha of the training split's bytes or documents."""
    p = _prefix(config)
    teacher, reference = f"{p}_teacher", f"{p}_reference"
    a = config.alpha
    db.create_view(f"{p}_train_dedup", f"select t.* from {p}_train t left join minhash m using (doc_id) "
                                       "where m.doc_id is null or m.doc_id = m.cluster_id", replace=True)
    key = "doc_id"
    if config.unit == "instances":  # the same splits, as instances of their documents
        key = "instance_id"
        for split in ("train", "train_dedup"):
            db.create_view(f"{p}_{split}_instances", f"select i.* from instances i semi join {p}_{split} t on i.doc_id = t.doc_id",
                           replace=True)
    train, train_dedup = (f"{p}_train", f"{p}_train_dedup") if key == "doc_id" else (f"{p}_train_instances", f"{p}_train_dedup_instances")
    if config.budget == "bytes":
        # a seeded random order, cut where the bytes before a document reach alpha of the split's
        db.create_view(f"{p}_uniform", f"select * exclude (bytes_before) from (select *, sum(n_bytes) over (order by uniform({key}, 5), "
                                       f"{key} rows between unbounded preceding and 1 preceding) as bytes_before from {train}) "
                                       f"where coalesce(bytes_before, 0) < {a} * (select sum(n_bytes) from {train})", replace=True)
        policy, size = "difference_bytes", "sum(n_bytes)"
    else:
        db.create_view(f"{p}_uniform", f"select * from {train} where {key} in (select {key} from {train} "
                                       f"order by uniform({key}, 5) limit (select ceil({a} * count(*)) from {train}))", replace=True)
        policy, size = "difference", "count(*)"
    db.create_view(f"{p}_difference",
                   f"select * from {policy}('{teacher}', '{reference}', alpha := {a}, per := '{config.per}', docs := '{train}')",
                   replace=True)
    # the deduplicated split is smaller: a larger share of it gives the same budget as the others
    (train_size,), (dedup_size,) = (db.sql(f"select {size} from {name}").fetchall()[0] for name in (train, train_dedup))
    dedup_alpha = min(1.0, a * train_size / dedup_size) if dedup_size else a
    db.create_view(f"{p}_dedup_difference",
                   f"select * from {policy}('{teacher}', '{reference}', alpha := {dedup_alpha!r}, per := '{config.per}', "
                   f"docs := '{train_dedup}')",
                   replace=True)
    db.create_view(f"{p}_curriculum", f"select * from curriculum('{reference}', docs := '{p}_difference')", replace=True)
    return {
        "uniform": (f"{p}_uniform", True),
        "difference": (f"{p}_difference", True),
        "dedup_difference": (f"{p}_dedup_difference", True),
        "curriculum": (f"{p}_curriculum", False),
    }


def _train(db_url: str, view: str, out: Path, config: ExperimentConfig, *, size: str, steps: int, seed: int, shuffle: bool = True,
           tokenizer: str | None = None) -> Path:
    from corpusdb.train.pretrain import TrainConfig, train

    if not (out / "model" / "config.json").exists():
        train(TrainConfig(
            db=db_url, view=view, out=str(out), tokenizer=tokenizer, vocab_size=config.vocab_size, size=size,
            seq_len=config.seq_len, batch_size=config.batch_size, max_steps=steps, lr=config.lr, min_lr=config.lr / 10,
            warmup_steps=max(1, steps // 20), seed=seed, shuffle=shuffle, num_workers=config.num_workers,
            device=config.device, eval_every=10**9, checkpoint_every=max(steps // 4, 1), progress=True, block_mb=0.5,
        ))
    return out / "model"


def _pretrained(model: Path) -> tuple[str, dict]:
    """What transformers' from_pretrained takes for a model folder, hub id or .gguf file (a pretrained teacher)."""
    path = Path(model)
    return (str(path.parent), {"gguf_file": path.name}) if path.suffix == ".gguf" else (str(path), {})


def _context_of(model: Path) -> int:
    """A model's context length, without loading its weights (a .gguf file: read from its header)."""
    from transformers import AutoConfig

    source, extra = _pretrained(model)
    config = AutoConfig.from_pretrained(source, **extra)
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions"))


def _heldout(db, config: ExperimentConfig) -> dict[str, list[str]]:
    rows = db.sql(
        f"select source, text from (select source, text, row_number() over (partition by source order by doc_id) as k "
        f"from {_prefix(config)}_heldout) where k <= {config.eval_docs_per_source} order by source"
    ).fetchall()
    by_source: dict[str, list[str]] = {}
    for source, text in rows:
        by_source.setdefault(source, []).append(text)
    return by_source


def _evaluate(model_dir: Path, heldout: dict[str, list[str]], config: ExperimentConfig) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corpusdb.train.pretrain import evaluate

    device = "cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else None
    source, extra = _pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(source, **extra).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    per_source = {s: evaluate(model, tokenizer, texts, config.seq_len, device, dtype) for s, texts in heldout.items()}
    nats = sum(r["eval_loss_per_byte"] * r["eval_bytes"] for r in per_source.values())
    tokens = sum(r["eval_tokens"] for r in per_source.values())
    n_bytes = sum(r["eval_bytes"] for r in per_source.values())
    return {"loss_per_token": nats / tokens, "bits_per_byte": nats / n_bytes / math.log(2),
            "per_source_bits_per_byte": {s: r["eval_bits_per_byte"] for s, r in per_source.items()}}


def run(config: ExperimentConfig) -> dict:
    """Run (or continue) the experiment; returns the results written to OUT/results.json."""
    import corpusdb

    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    db = corpusdb.open(config.db)
    if not db.parts("minhash"):
        db.minhash(progress=True)
    _views(db, config)
    p = _prefix(config)
    sizes = {v: db.sql(f"select count(*), coalesce(sum(n_bytes), 0) from {p}_{v}").fetchall()[0]
             for v in ("pool", "train", "heldout", "reference_slice")}

    # the shared tokenizer and the two scoring models
    teacher_dir = _train(db.url, f"{p}_train", out / "teacher", config, size=config.teacher_size, steps=config.teacher_steps, seed=0) \
        if config.teacher is None else Path(config.teacher)
    tokenizer = str(out / "teacher" / "tokenizer") if config.teacher is None else None
    reference_dir = _train(db.url, f"{p}_reference_slice", out / "reference", config, size=config.reference_size,
                           steps=config.reference_steps, seed=0, tokenizer=tokenizer)
    if config.unit == "instances":  # MiniPLM's instances: spans of the students' tokenizer (cuts only what is missing)
        from corpusdb.instances import run_instances

        run_instances(db, str(reference_dir), config.instance_tokens or config.seq_len, view=f"{p}_train", progress=True)
    for name, model in (("teacher", teacher_dir), ("reference", reference_dir)):
        # a shorter context for a model whose own is longer (e.g. 8192 on CPU), with its stride; others keep their own
        context = config.score_context if config.score_context and _context_of(model) > config.score_context else None
        stride = min(config.score_stride, context - 1) if context and config.score_stride else None
        db.score(str(model), f"{p}_{name}", view=f"{p}_train", unit=config.unit, context=context, stride=stride,
                 progress=True)  # scores only what is missing
    subsets = _subsets(db, config)
    subset_sizes = {name: db.sql(f"select count(*), sum(n_bytes) from {view}").fetchall()[0] for name, (view, _) in subsets.items()}

    heldout = _heldout(db, config)
    results: dict = {"config": dataclasses.asdict(config), "splits": {k: {"documents": n, "bytes": int(b)} for k, (n, b) in sizes.items()},
                     "subsets": {}, "models": {}}
    for name, model in (("teacher", teacher_dir), ("reference", reference_dir)):
        results["models"][name] = _evaluate(model, heldout, config)
    student_tokens = config.student_steps * config.batch_size * config.seq_len
    for name, (view, shuffle) in subsets.items():
        runs = []
        for seed in config.seeds:
            model = _train(db.url, view, out / "students" / f"{name}-seed{seed}", config, size=config.student_size,
                           steps=config.student_steps, seed=seed, shuffle=shuffle, tokenizer=str(out / "reference" / "model"))
            runs.append(_evaluate(model, heldout, config))
        bpb = [r["bits_per_byte"] for r in runs]
        results["subsets"][name] = {
            "view": view, "documents": subset_sizes[name][0], "bytes": int(subset_sizes[name][1] or 0),
            "bits_per_byte_mean": statistics.mean(bpb), "bits_per_byte_std": statistics.stdev(bpb) if len(bpb) > 1 else 0.0,
            "loss_per_token_mean": statistics.mean(r["loss_per_token"] for r in runs), "runs": runs,
        }
    _paired(results)
    results["compute"] = _compute(out, config, student_tokens, results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    _write(out, results)
    return results


def _paired(results: dict) -> None:
    """Each subset against uniform seed by seed (same initialisation and data order seed): mean and spread of the gaps."""
    uniform = [r["bits_per_byte"] for r in results["subsets"]["uniform"]["runs"]]
    for subset in results["subsets"].values():
        gaps = [r["bits_per_byte"] - u for r, u in zip(subset["runs"], uniform)]
        subset["paired_gap_mean"] = statistics.mean(gaps)
        subset["paired_gap_std"] = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        subset["seeds_better"] = sum(gap < 0 for gap in gaps)


def _compute(out: Path, config: ExperimentConfig, student_tokens: int, results: dict) -> dict:
    """Training FLOPs (6 N D) from each run's parameter count, and the students' token budget."""
    total = 0.0
    for metrics in out.glob("**/metrics.jsonl"):
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        start = next((m for m in lines if m.get("event") == "start"), None)
        last = [m for m in lines if "tokens" in m]
        if start and last:
            total += 6 * start["n_parameters"] * last[-1]["tokens"]
    return {"student_tokens": student_tokens, "training_flops": total}


def _write(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    uniform = results["subsets"]["uniform"]["bits_per_byte_mean"]
    seeds = len(results["config"]["seeds"])
    lines = [
        f"# MiniPLM on corpusdb: preset {results['config']['preset']}",
        "",
        f"Held-out bits per byte of students trained on each subset for the same {results['compute']['student_tokens']:,} tokens "
        f"(mean ± standard deviation over {seeds} seeds; lower is better). Each subset holds alpha = {results['config']['alpha']} "
        f"of the training split's {'text bytes' if results['config'].get('budget', 'docs') == 'bytes' else 'documents'}, "
        f"selected as {results['config'].get('unit', 'documents')}"
        + (f" of {results['config'].get('instance_tokens') or results['config']['seq_len']} tokens"
           if results['config'].get('unit') == 'instances' else "") + ".",
        "",
        f"| subset | {results['config'].get('unit', 'documents')} | MB | bits/byte | ± | vs uniform | paired by seed | seeds better | loss/token |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in results["subsets"].items():
        paired = f"{s['paired_gap_mean']:+.4f} ± {s['paired_gap_std']:.4f}" if name != "uniform" else ""
        better = f"{s['seeds_better']}/{len(s['runs'])}" if name != "uniform" else ""
        lines.append(f"| {name} | {s['documents']:,} | {s['bytes'] / 1e6:.2f} | {s['bits_per_byte_mean']:.4f} | "
                     f"{s['bits_per_byte_std']:.4f} | {s['bits_per_byte_mean'] - uniform:+.4f} | {paired} | {better} | "
                     f"{s['loss_per_token_mean']:.4f} |")
    lines += ["", "| model | bits/byte on held-out |", "| --- | ---: |"]
    lines += [f"| {name} | {m['bits_per_byte']:.4f} |" for name, m in results["models"].items()]
    sources = sorted(next(iter(results["subsets"].values()))["runs"][0]["per_source_bits_per_byte"])
    lines += ["", "Per source (bits/byte, mean over seeds):", "", "| subset | " + " | ".join(sources) + " |",
              "| --- |" + " ---: |" * len(sources)]
    for name, s in results["subsets"].items():
        means = [statistics.mean(r["per_source_bits_per_byte"][src] for r in s["runs"]) for src in sources]
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", f"Training compute: {results['compute']['training_flops']:.3g} FLOPs (6 N D over every model trained); "
              f"wall clock {results['seconds']:.0f} s."]
    (out / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["subsets"])
    means = [results["subsets"][n]["bits_per_byte_mean"] for n in names]
    stds = [results["subsets"][n]["bits_per_byte_std"] for n in names]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(names, means, yerr=stds, capsize=4, color=["#888888", "#d62728", "#9467bd", "#1f77b4"][: len(names)])
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    axis.set_ylim(low - (high - low) * 0.5 - 1e-3, high + (high - low) * 0.5 + 1e-3)
    axis.set_ylabel("held-out bits per byte")
    axis.set_title(f"students at equal tokens ({results['config']['preset']} preset, {len(results['config']['seeds'])} seeds)")
    figure.tight_layout()
    figure.savefig(out / "results.png", dpi=120)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> ExperimentConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="demo/db")
    parser.add_argument("--out")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--teacher", help="a pretrained teacher instead of training one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any ExperimentConfig field, e.g. --set student_steps=50 --set seeds=0,1,2")
    args = parser.parse_args(argv)
    values = {**PRESETS[args.preset], "db": args.db, "preset": args.preset, "out": args.out or f"results/{args.preset}",
              "teacher": args.teacher}
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"error: --set {key}: no such setting; settings are {', '.join(fields)}")
        default = getattr(ExperimentConfig(), key)
        values[key] = [int(v) for v in value.split(",")] if isinstance(default, list) else type(default)(value) \
            if default is not None else value
    return ExperimentConfig(**values)


if __name__ == "__main__":
    results = run(parse_args())
    print((Path(results["config"]["out"]) / "results.md").read_text())
