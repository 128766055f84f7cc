"""The MiniPLM recipe end to end on a corpusdb database: teacher, reference, scores, subsets, students, held-out loss.

    python -m corpusdb.train.experiment --db demo/db --preset cpu --out results/cpu      # about 20 minutes on 2 cores
    python -m corpusdb.train.experiment --db demo/db --preset gpu --out results/gpu      # about 20 minutes on one H100

1. Splits (`corpusdb.train.splits`): whole near-duplicate clusters in one seeded order make the
   scored pool (the training split), then the reference set, then a held-out set drawn per source
   from outside both and checked against them by word 13-grams.
2. Models: a teacher trained on the training split (or a pretrained one, --teacher PATH), and a
   much smaller reference trained on the reference set, both with `corpusdb.train.pretrain`.
3. Scores: `corpusdb score` of every training unit under both.
4. Subsets (`corpusdb.train.subsets`): seven rankings of the training units (uniform drawn per
   seed, uniform with the difference subset's lengths, MiniPLM's difference, the same over the
   deduplicated split, teacher likelihood, reference loss, and the difference subset as a
   curriculum), each cut at alpha of the training split's student tokens.
5. Students: identical models trained on each subset for the same tokens (`student_epochs` of the
   budget), per seed: seed k is initialisation k, data order 1000 + k and the k-th uniform draw.
6. Report (`corpusdb.train.report`): held-out bits per byte per document, the gaps to uniform
   paired by seed with bootstrap intervals over documents and seeds, per source and with equal
   source weights, as `results.md`, `results.json` (no local paths) and `results.png` under --out.

Every stage is skipped when its output exists, so a re-run continues an interrupted experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpusdb.train.subsets import ARMS

SUBSETS = ARMS
BUDGETS = ("tokens", "bytes", "docs")
UNCHECKED = ("out", "num_workers", "device", "seeds")  # settings that do not change results (each seed has its own students)


@dataclass
class ExperimentConfig:
    db: str = "demo/db"  # the database (its documents are the corpus)
    out: str = "results/cpu"  # models, metrics and the results table
    preset: str = "cpu"  # cpu or gpu: the sizes below
    teacher: str | None = None  # a pretrained teacher (folder, .gguf or hub id); None: train one
    pool_mb: float = 3.0  # the scored pool (the training split), in MB of text: whole clusters in a seeded order
    reference_mb: float = 2.0  # the reference's training text, from the clusters after the pool
    heldout_mb: float = 0.5  # the held-out set, from the clusters after both, per source
    heldout_max_doc: float = 0.05  # no held-out document larger than this share of the held-out set
    heldout_max_overlap: float = 0.0  # held-out candidates sharing more of their word 13-grams with pool or reference are passed over
    alpha: float = 0.5  # kept fraction of every subset
    per: str = "byte"  # difference normalised per byte (any two tokenizers) or per token (the teacher's and reference's own)
    budget: str = "tokens"  # alpha of the training split's student tokens, or of its "bytes", or of its units ("docs")
    unit: str = "documents"  # select documents, or instances (MiniPLM's unit: spans of instance_tokens student tokens)
    instance_tokens: int = 0  # tokens per instance, of the students' tokenizer (0: seq_len)
    score_context: int = 0  # scoring context for models whose own is longer (0: each model's own)
    score_stride: int = 0  # new tokens per window after the first with score_context (0: half the context)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # student seeds
    subsets: str = ",".join(ARMS)  # the subsets students are trained on (uniform and difference always)
    vocab_size: int = 2048  # the shared BPE tokenizer (trained on the training split)
    seq_len: int = 128
    batch_size: int = 16
    teacher_size: str = "small"
    teacher_steps: int = 400
    reference_size: str = "tiny"
    reference_steps: int = 300
    student_size: str = "tiny"
    student_epochs: float = 1.0  # student tokens = this many times the budget (same for every subset)
    student_steps: int = 0  # instead of student_epochs, a fixed number of steps (0: from student_epochs)
    lr: float = 2e-3
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
        if len(self.seeds) < 2:
            raise ValueError("at least 2 seeds: the gaps' intervals resample them")
        chosen = self.subsets.split(",")
        if set(chosen) - set(ARMS) or not {"uniform", "difference"} <= set(chosen):
            raise ValueError(f"subsets {self.subsets!r}: name uniform, difference and any of {', '.join(ARMS)}, by commas")


PRESETS: dict[str, dict] = {
    "cpu": {},
    "gpu": dict(pool_mb=32, reference_mb=8, heldout_mb=2, vocab_size=16384, seq_len=512, batch_size=64, teacher_size="100m",
                teacher_steps=3000, reference_size="5m", reference_steps=600, student_size="20m", student_epochs=1.0,
                lr=1e-3, num_workers=4, seeds=[0, 1, 2, 3, 4]),
}


def _prefix(config: ExperimentConfig) -> str:
    """Views and score names of this experiment: exp_ + the name of its output folder (results/cpu: exp_cpu)."""
    return "exp_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(config.out).resolve().name)


def _check_settings(out: Path, config: ExperimentConfig, save: bool = False) -> None:
    """Refuse to continue, in OUT, an experiment made with other settings: its finished stages would be reused.
    With `save`, record the settings (once the database and the splits have taken them)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in UNCHECKED}
    path = out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        defaults = dataclasses.asdict(ExperimentConfig())  # a setting added since: its default then and now
        changed = [f"{k}: {old.get(k, defaults[k])!r} -> {v!r}" for k, v in settings.items() if old.get(k, defaults[k]) != v]
        if changed:
            raise ValueError(f"{out} holds an experiment with other settings ({'; '.join(changed)}); "
                             "pass another --out or delete that folder")
    elif save:
        path.write_text(json.dumps(settings, indent=1))


def _train(db_url: str, view: str, out: Path, config: ExperimentConfig, *, size: str, steps: int, seed: int, shuffle: bool = True,
           tokenizer: str | None = None, data_seed: int | None = None) -> Path:
    from corpusdb.train.pretrain import TrainConfig, train

    if not (out / "model" / "config.json").exists():
        train(TrainConfig(
            db=db_url, view=view, out=str(out), tokenizer=tokenizer, vocab_size=config.vocab_size, size=size,
            seq_len=config.seq_len, batch_size=config.batch_size, max_steps=steps, lr=config.lr, min_lr=config.lr / 10,
            warmup_steps=max(1, steps // 20), seed=seed, data_seed=data_seed, shuffle=shuffle, num_workers=config.num_workers,
            device=config.device, eval_every=10**9, checkpoint_every=max(steps // 4, 1), progress=True, block_mb=0.5,
        ))
    return out / "model"


def _context_of(model: Path) -> int:
    """A model's context length, without loading its weights (a .gguf file: read from its header)."""
    from transformers import AutoConfig

    from corpusdb.train.evaluation import model_source

    source, extra = model_source(model)
    config = AutoConfig.from_pretrained(source, **extra)
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions"))


@functools.lru_cache(maxsize=None)
def _file_hash(path: Path) -> str:
    """sha256 of a model: of its file, or of a folder's weight files (once a run: a pretrained teacher is ~100 MB)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _heldout(db, p: str) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    rows = db.sql(f"select doc_id, source, text, n_bytes from {p}_heldout order by source, doc_id").fetchall()
    return (np.array([r[0] for r in rows], dtype=np.int64), [r[2] for r in rows], np.array([r[1] for r in rows]),
            np.array([r[3] for r in rows], dtype=np.float64))


def _evaluate(model_dir: Path, texts: list[str], sources: np.ndarray, n_bytes: np.ndarray, config: ExperimentConfig,
              cache: Path, doc_ids: np.ndarray) -> dict:
    """Held-out nats of every document, bits per byte over all and per source, and the model's size; kept in `cache`
    for the same model weights, held-out documents and window, so a re-run evaluates nothing again."""
    import torch

    from corpusdb.train.evaluation import bits_per_byte, document_nats, load_model

    key = hashlib.sha256(json.dumps([doc_ids.tolist(), config.seq_len,
                                    _file_hash(Path(model_dir)) if Path(model_dir).exists() else str(model_dir)]).encode()).hexdigest()
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    if saved.get("key") == key:
        nats, n_parameters = np.array(saved["nats"]), saved["n_parameters"]
    else:
        device = "cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu"
        model, tokenizer = load_model(model_dir, device)
        nats = document_nats(model, tokenizer, texts, config.seq_len, device, torch.bfloat16 if device == "cuda" else None)
        n_parameters = sum(p.numel() for p in model.parameters())
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".tmp-{cache.name}")
        tmp.write_text(json.dumps({"key": key, "nats": nats.tolist(), "n_parameters": n_parameters}))
        tmp.replace(cache)
    per_source = {s: bits_per_byte(nats[sources == s], n_bytes[sources == s]) for s in sorted(set(sources.tolist()))}
    return {"bits_per_byte": bits_per_byte(nats, n_bytes), "per_source_bits_per_byte": per_source, "nats": nats,
            "n_parameters": n_parameters}


def _describe(model: Path) -> dict:
    """A model named without local paths: its file name and content hash."""
    path = Path(model)
    if not path.exists():  # a hub id
        return {"name": str(model)}
    name = path.name if path.suffix == ".gguf" else path.parent.name
    return {"name": name, "sha256": _file_hash(path)}


def run(config: ExperimentConfig) -> dict:
    """Run (or continue) the experiment; returns the results written to OUT/results.json."""
    import corpusdb
    from corpusdb.train.report import gaps, write_markdown, write_plot
    from corpusdb.train.splits import make_splits
    from corpusdb.train.subsets import make_subsets

    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    db = corpusdb.open(config.db)
    if not db.parts("minhash"):
        db.minhash(progress=True)
    p = _prefix(config)
    heldout_draw = make_splits(db, config, p)
    _check_settings(out, config, save=True)
    sizes = {v: db.sql(f"select count(*), coalesce(sum(n_bytes), 0) from {p}_{v}").fetchall()[0]
             for v in ("pool", "reference_slice", "heldout")}

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
    arms, budget = make_subsets(db, config, p, config.seeds)
    arms = {arm: by_seed for arm, by_seed in arms.items() if arm in config.subsets.split(",")}
    tokens_per_step = config.batch_size * config.seq_len
    budget_tokens = budget["budget"] if config.budget == "tokens" else \
        db.sql(f"select sum(student_tokens) from {p}_difference").fetchall()[0][0]
    steps = config.student_steps or max(1, math.ceil(config.student_epochs * budget_tokens / tokens_per_step))

    doc_ids, texts, sources, n_bytes = _heldout(db, p)
    results: dict = {"config": _public_config(config), "splits": {k: {"documents": n, "bytes": int(b)} for k, (n, b) in sizes.items()},
                     "heldout": heldout_draw.to_dict(), "budget": budget, "subsets": {}, "models": {}}
    steps_of = {"teacher": config.teacher_steps, "reference": config.reference_steps}
    for name, model in (("teacher", teacher_dir), ("reference", reference_dir)):
        evaluated = _evaluate(model, texts, sources, n_bytes, config, out / "evaluations" / f"{name}.json", doc_ids)
        if name == "teacher" and config.teacher:
            what, trained = _describe_pretrained(model), "pretrained"
        else:
            what = f"`{config.teacher_size if name == 'teacher' else config.reference_size}` GPT-2"
            trained = (f"the training split, {steps_of[name]} steps" if name == "teacher" else
                       f"the reference set ({sizes['reference_slice'][1] / 1e6:.2f} MB), {steps_of[name]} steps")
        results["models"][name] = {"what": what, "trained_on": trained, **_describe(model),
                                   **{k: v for k, v in evaluated.items() if k != "nats"}}
    nats: dict[str, np.ndarray] = {}
    for arm, by_seed in arms.items():
        runs = []
        for seed in config.seeds:
            view, shuffle = by_seed[seed]
            model = _train(db.url, view, out / "students" / f"{arm}-seed{seed}", config, size=config.student_size, steps=steps,
                           seed=seed, data_seed=1000 + seed, shuffle=shuffle, tokenizer=str(out / "reference" / "model"))
            runs.append(_evaluate(model, texts, sources, n_bytes, config, out / "evaluations" / f"{arm}-seed{seed}.json", doc_ids))
        nats[arm] = np.stack([r.pop("nats") for r in runs])
        n_params = runs[0].pop("n_parameters")
        for r in runs[1:]:
            r.pop("n_parameters")
        views = sorted({view for view, _ in by_seed.values()})
        size = np.mean([db.sql(f"select count(*), sum(n_bytes), sum(student_tokens) from {v}").fetchall()[0] for v in views], axis=0)
        bpb = [r["bits_per_byte"] for r in runs]
        results["subsets"][arm] = {
            "views": views, "units": float(size[0]), "bytes": float(size[1]), "student_tokens": float(size[2]),
            "epochs": steps * tokens_per_step / float(size[2] + size[0]),
            "bits_per_byte_mean": statistics.mean(bpb), "bits_per_byte_std": statistics.stdev(bpb), "runs": runs,
        }
        results["student"] = {"size": config.student_size, "n_parameters": n_params}
    for arm in arms:
        if arm != "uniform":
            results["subsets"][arm]["gap"] = gaps(nats[arm], nats["uniform"], n_bytes, sources)
    # difference against each control directly, paired by seed as above
    results["difference_vs"] = {arm: gaps(nats["difference"], nats[arm], n_bytes, sources) for arm in arms
                                if arm not in ("difference", "uniform")}
    results["compute"] = _compute(out, steps, tokens_per_step)
    results["seconds"] = round(time.perf_counter() - started, 1)  # this invocation; and with every earlier one
    earlier = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    results["seconds_total"] = round(earlier.get("seconds_total", earlier.get("seconds", 0.0)) + results["seconds"], 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "heldout_nats.json").write_text(json.dumps({
        "doc_ids": doc_ids.tolist(), "sources": sources.tolist(), "n_bytes": n_bytes.astype(int).tolist(), "seeds": config.seeds,
        "nats": {arm: [[round(float(x), 4) for x in row] for row in values] for arm, values in nats.items()}}))
    write_markdown(out, results)
    write_plot(out, results)
    return results


def _describe_pretrained(model: Path) -> str:
    name = Path(model).name
    quant = re.search(r"\.(Q\d\w*|F16|F32|BF16)\.gguf$", name, flags=re.IGNORECASE)
    return f"{name}" + (f" ({quant.group(1)} weights, run in fp32)" if quant else "")


def _public_config(config: ExperimentConfig) -> dict:
    """The settings, with local paths reduced to names (a model is named by file name and hash in `models`)."""
    settings = dataclasses.asdict(config)
    for key in ("db", "out", "teacher"):
        if settings[key] and Path(settings[key]).is_absolute():
            settings[key] = Path(settings[key]).name
    return settings


def _compute(out: Path, student_steps: int, tokens_per_step: int) -> dict:
    """Training FLOPs (6 N D) from each run's parameter count, and the students' token budget."""
    total = 0.0
    for metrics in out.glob("**/metrics.jsonl"):
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        start = next((m for m in lines if m.get("event") == "start"), None)
        last = [m for m in lines if "tokens" in m]
        if start and last:
            total += 6 * start["n_parameters"] * last[-1]["tokens"]
    return {"student_steps": student_steps, "student_tokens": student_steps * tokens_per_step, "training_flops": total}


def settings_help() -> str:
    """Every ExperimentConfig setting with its default and the comment beside it (read from this file)."""
    body = Path(__file__).read_text(encoding="utf-8")
    body = body[body.index("class ExperimentConfig:"):body.index("    def __post_init__")]
    comments = dict(re.findall(r"^    (\w+): [^=]+=[^#\n]*#\s*(.+)$", body, flags=re.MULTILINE))
    defaults = dataclasses.asdict(ExperimentConfig())
    return "settings (--set KEY=VALUE; the cpu preset's defaults, the gpu preset's in PRESETS):\n" + "\n".join(
        f"  {name} = {value!r}" + (f": {comments[name]}" if name in comments else "") for name, value in defaults.items())


def parse_args(argv: list[str] | None = None) -> ExperimentConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=settings_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    from corpusdb.errors import CorpusDBError

    try:
        settings = parse_args()
        run(settings)
    except (ValueError, CorpusDBError) as exc:  # bad settings, a missing database or model, too little text
        raise SystemExit(f"error: {exc}") from None
    print((Path(settings.out) / "results.md").read_text())
