"""Student pre-training on any view of a corpusdb database: a compact loop in the spirit of nanoGPT.

    python -m corpusdb.train.pretrain --db demo/db --view dedup --out out/student --max-steps 200
    torchrun --nproc_per_node 8 -m corpusdb.train.pretrain --db s3://bkt/db --view refined --out out/student --size 20m

Every setting is in `TrainConfig` below, one line each. The model is a transformers GPT-2 or
Llama built from `corpusdb.train.models` (random init), the data a `ViewDataset`; AdamW with a cosine
schedule and warmup, gradient accumulation, bf16 autocast on GPU, DDP under torchrun (gloo on
CPU). Checkpoints (`OUT/checkpoint.pt`, written atomically) hold the model, optimizer, step,
RNG state, the dataset position and the database version trained on, so a killed run re-run
with the same settings continues exactly where the last checkpoint left it, on the same data even
if the database changed meanwhile. A resume with other settings is refused, including another
`max_steps` (the cosine schedule's length: a longer run would restart the learning-rate
schedule; train into another `out` instead). Held-out loss (per token and per byte) is measured
on `eval_view`; metrics go to `OUT/metrics.jsonl`, one line per logged step (a resume drops the
lines the killed run wrote after its last checkpoint); the final model is saved with
`save_pretrained` to `OUT/model`, ready for `corpusdb score --model OUT/model`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from corpusdb.world import launched


@dataclass
class TrainConfig:
    db: str = "demo/db"  # database URL (local path or fsspec URL)
    as_of: int | None = None  # database version to train on; None: the latest (a resume keeps the checkpoint's)
    view: str = "documents"  # training data: a view name, macro call or select
    export: str | None = None  # train on an export or `corpusdb select` folder instead (each rank reads its own parts)
    eval_view: str | None = None  # held-out documents (same forms as view); None: no evaluation
    eval_docs: int = 200  # held-out documents scored at each evaluation (the first ones by doc_id)
    out: str = "out/student"  # checkpoint, metrics.jsonl, model/ and tokenizer/
    tokenizer: str | None = None  # tokenizer folder or hub id; None: train a byte-level BPE on the view
    vocab_size: int = 4096  # vocabulary of a tokenizer trained here
    tokenizer_docs: int = 20000  # documents the tokenizer is trained on
    arch: str = "gpt2"  # gpt2 or llama
    size: str = "tiny"  # a corpusdb.train.models.SIZES preset: tiny, small, 5m, 20m, 100m
    seq_len: int = 256  # tokens per training sequence
    batch_size: int = 16  # sequences per micro-batch on each rank
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 200  # optimizer steps
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 20  # linear warmup steps
    weight_decay: float = 0.1  # AdamW weight decay on matrices (not on biases, norms)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max gradient norm (0: off)
    log_every: int = 10  # steps between metric lines
    eval_every: int = 100  # steps between held-out evaluations (and one at the end)
    checkpoint_every: int = 100  # steps between checkpoints (and one at the end)
    seed: int = 0  # model init (and data order, unless data_seed is set)
    data_seed: int | None = None  # data order (the block and document shuffle); None: seed
    shuffle: bool = True  # False: stream the view in its own order (curricula)
    num_workers: int = 1  # DataLoader workers per rank
    block_mb: float = 4.0  # ViewDataset block size
    device: str = "auto"  # auto, cpu, cuda
    precision: str = "auto"  # auto (bf16 on GPU), fp32, bf16
    progress: bool = True  # progress bar on rank 0


def _lr(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def _setup_distributed(config: TrainConfig) -> tuple[int, int, str]:
    _, world_size, local_rank = launched()
    device = config.device
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    return rank, world_size, device


def _shut_down_distributed() -> None:
    """Destroy the process group without the exit deadlock gloo can hit.

    A gloo worker thread destroys each finished collective's work object, which needs the GIL;
    a process group destroyed meanwhile joins that thread while holding the GIL (seen here as a
    hang at exit, when the DDP reducer freed the last reference to the group). So the caller
    frees the DDP wrapper while the group is still referenced; then the worker finishes its last
    barrier with the GIL released, and only then is the group destroyed.
    """
    import gc

    gc.collect()
    torch.distributed.barrier()
    time.sleep(0.2)  # releases the GIL: the worker thread destroys the barrier's work object
    torch.distributed.destroy_process_group()


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def _tokenizer(config: TrainConfig, db, rank: int, world_size: int):
    """The given tokenizer, or one trained on the view (by rank 0, saved under OUT/tokenizer)."""
    from transformers import AutoTokenizer

    from corpusdb.views import relation_sql
    from corpusdb.train.models import train_tokenizer

    if config.tokenizer:
        return AutoTokenizer.from_pretrained(config.tokenizer)
    folder = Path(config.out) / "tokenizer"
    if rank == 0 and not (folder / "tokenizer.json").exists():
        if config.export:  # the first parts of the export, in its order
            from corpusdb.train.dataset import Blocks

            blocks, texts = Blocks(config.export), []
            for block in range(len(blocks)):
                if len(texts) >= config.tokenizer_docs:
                    break
                texts += blocks.read(block)[1][:config.tokenizer_docs - len(texts)]
        else:
            sql = f"select text from ({relation_sql(db, config.view)}) order by doc_id limit {config.tokenizer_docs}"
            texts = [t for (t,) in db.sql(sql).fetchall()]
        train_tokenizer(texts, config.vocab_size).save_pretrained(folder)
    _barrier(world_size)
    return AutoTokenizer.from_pretrained(folder)


def evaluate(model, tokenizer, texts: list[str], seq_len: int, device: str, dtype) -> dict:
    """Held-out loss of whole documents: every token of every document, packed with EOS, predicted in order.

    Returns nats per token, nats per byte and bits per byte over all the documents.
    """
    eos = tokenizer.eos_token_id
    stream = [t for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] for t in (eos, *ids)]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        for start in range(0, max(len(stream) - 1, 0), seq_len):
            chunk = torch.tensor(stream[start : start + seq_len + 1], device=device)[None]
            if chunk.size(1) < 2:
                break
            logits = model(input_ids=chunk[:, :-1]).logits.float()
            total += F.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
            count += chunk.size(1) - 1
    model.train()
    return {"eval_loss_per_token": total / max(count, 1), "eval_loss_per_byte": total / max(n_bytes, 1),
            "eval_bits_per_byte": total / max(n_bytes, 1) / math.log(2), "eval_tokens": count, "eval_bytes": n_bytes}


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the metric lines up to `step` (what the checkpoint saw); a killed run may have logged more."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if step == 0 or row.get("step", 0) > step:
            break
        kept.append(line)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)


def _check_resume(checkpoint_path: Path, state: dict, config: TrainConfig) -> None:
    """Refuse to resume a checkpoint under settings that would make its position mean something else."""
    ignored = ("eval_every", "checkpoint_every", "progress", "log_every", "as_of")
    saved = {k: v for k, v in state["config"].items() if k not in ignored}
    mine = {k: v for k, v in dataclasses.asdict(config).items() if k in saved}
    if saved == mine:
        return
    differ = next(k for k in saved if saved[k] != mine.get(k))
    if differ in ("max_steps", "warmup_steps", "lr", "min_lr"):
        raise ValueError(f"{checkpoint_path} was trained with a learning-rate schedule of {differ}={saved[differ]!r}; "
                         f"resuming with {mine.get(differ)!r} would restart it: use --{differ.replace('_', '-')} "
                         f"{saved[differ]}, or train into another --out")
    raise ValueError(f"{checkpoint_path} was made with {differ}={saved[differ]!r}, not {mine.get(differ)!r}; "
                     f"use another --out or the same settings")


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig) -> dict:
    """Run (or resume) pre-training; returns the last metrics."""
    import corpusdb
    from corpusdb import failpoint
    from corpusdb.train import ViewDataset
    from corpusdb.train.models import make_model

    rank, world_size, device = _setup_distributed(config)
    if config.warmup_steps >= config.max_steps and rank == 0:
        warnings.warn(f"--warmup-steps {config.warmup_steps} is not shorter than --max-steps {config.max_steps}: the "
                      f"learning rate only warms up (peak {config.lr} never reached or never decayed); pass fewer "
                      "warmup steps", stacklevel=2)
    if not config.progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # "Writing model shards" and the like
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = {"bf16": torch.bfloat16, "fp32": None}.get(config.precision)
    if config.precision == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else None
    checkpoint_path = out / "checkpoint.pt"
    state = torch.load(checkpoint_path, map_location=device, weights_only=False) if checkpoint_path.exists() else None
    as_of = config.as_of
    if state is not None:
        _check_resume(checkpoint_path, state, config)
        trained_on = state.get("db_version")
        if as_of is not None and trained_on is not None and as_of != trained_on:
            raise ValueError(f"{checkpoint_path} was trained on version {trained_on} of {config.db}, not {as_of}; "
                             f"resume without --as-of (or with --as-of {trained_on}), or train into another --out")
        as_of = trained_on  # the same data as before the interruption, whatever was committed since
    db = corpusdb.open(config.db, as_of=as_of)
    tokenizer = _tokenizer(config, db, rank, world_size)
    model = make_model(tokenizer, size=config.size, arch=config.arch, context=config.seq_len, seed=config.seed).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(config.beta1, config.beta2), fused=device.startswith("cuda"),
    )
    data_seed = config.seed if config.data_seed is None else config.data_seed
    if config.export:
        dataset = ViewDataset.from_export(config.export, tokenizer, config.seq_len, batch_size=config.batch_size,
                                          shuffle=config.shuffle, seed=data_seed)
    else:
        dataset = ViewDataset(db, config.view, tokenizer, config.seq_len, batch_size=config.batch_size, shuffle=config.shuffle,
                              seed=data_seed, block_mb=config.block_mb, cache_dir=str(out / "cache"))
    step, consumed = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, consumed = state["step"], state["consumed"]
        dataset.load_state_dict(state["dataset"])
        torch.set_rng_state(state["rng"])
    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, num_workers=config.num_workers,
                                         pin_memory=device.startswith("cuda"), persistent_workers=False)
    eval_texts = []
    if config.eval_view:
        from corpusdb.views import relation_sql

        sql = f"select text from ({relation_sql(db, config.eval_view)}) order by doc_id limit {config.eval_docs}"
        eval_texts = [t for (t,) in db.sql(sql).fetchall()]
    if rank == 0:
        _trim_metrics(out / "metrics.jsonl", step)
    metrics_file = (out / "metrics.jsonl").open("a") if rank == 0 else None
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum * world_size
    last: dict = {}

    def log(row: dict) -> None:
        nonlocal last
        if "step" in row:
            last = {**last, **row}
        if metrics_file is not None:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()

    checkpoints_written = 0

    def checkpoint() -> None:
        nonlocal checkpoints_written
        if rank == 0:
            _save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "consumed": consumed,
                "dataset": dataset.state_dict(consumed, config.num_workers), "rng": torch.get_rng_state(),
                "config": dataclasses.asdict(config), "db_version": db.version,
            })
            checkpoints_written += 1
            failpoint.after_part("train", checkpoints_written)  # crash tests: CORPUSDB_FAILPOINT=train.after_part=N
        _barrier(world_size)

    if rank == 0 and step == 0:
        log({"event": "start", "n_parameters": n_params, "tokens_per_step": tokens_per_step, "device": device,
             "world_size": world_size, "db_version": db.version, "config": dataclasses.asdict(config)})
    elif rank == 0:
        log({"event": "resume", "from_step": step, "db_version": db.version})
    batches = iter(loader)
    started, window_loss, window_steps = time.perf_counter(), 0.0, 0
    bar = tqdm(total=config.max_steps, initial=step, desc="train", disable=rank != 0 or not config.progress, dynamic_ncols=True)
    model.train()
    while step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        step_loss = 0.0
        for micro in range(config.grad_accum):
            batch = next(batches).to(device, non_blocking=True)
            consumed += config.batch_size
            sync = micro == config.grad_accum - 1 or world_size == 1
            # DDP averages gradients only on the last micro-batch of a step
            with train_model.no_sync() if not sync else contextlib.nullcontext(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                logits = train_model(input_ids=batch[:, :-1]).logits
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
                (loss / config.grad_accum).backward()
            step_loss += loss.item() / config.grad_accum
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_loss, window_steps = window_loss + step_loss, window_steps + 1
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)
        row: dict = {}  # one metrics line per step, evaluation included
        if step % config.log_every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - started
            row.update({"loss": step_loss, "mean_loss": window_loss / window_steps, "lr": _lr(config, step - 1),
                        "tokens": step * tokens_per_step, "tokens_per_s": window_steps * tokens_per_step / max(elapsed, 1e-9)})
            started, window_loss, window_steps = time.perf_counter(), 0.0, 0
        if eval_texts and (step % config.eval_every == 0 or step == config.max_steps) and rank == 0:
            row.update(evaluate(model, tokenizer, eval_texts, config.seq_len, device, dtype))
        if row:
            log({"step": step, **row})
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoint()
    bar.close()
    if rank == 0:
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        metrics_file.close()
    if world_size > 1:
        del train_model  # the DDP reducer goes while the process group is still referenced
        _shut_down_distributed()
    return last


def config_help() -> list[tuple[str, str, object]]:
    """(flag, description, default) of every TrainConfig setting; the descriptions are the comments
    beside the fields, read from this file's source, so they are written once."""
    source = Path(__file__).read_text(encoding="utf-8")
    body = source[source.index("class TrainConfig:"):source.index("def _lr(")]
    comments = dict(re.findall(r"^    (\w+): [^=]+=[^#\n]*#\s*(.+)$", body, flags=re.MULTILINE))
    return [("--" + f.name.replace("_", "-"), comments.get(f.name, ""), f.default) for f in dataclasses.fields(TrainConfig)]


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command-line flags for every TrainConfig field (--max-steps 100, --no-shuffle, ...)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    described = {flag: text for flag, text, _ in config_help()}
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        text = described.get(flag) or " "  # a help text makes argparse show the default
        if field.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=text)
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=field.default, help=text)
    return TrainConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    print(json.dumps(train(parse_args()), indent=1, default=str))
