"""The scoring job: per-document log-likelihoods of every document under one model.

    corpusdb score demo/db --model out/teacher --as teacher

Writes `scores/model=NAME/part-<hash>.parquet` with `doc_id, sum_logprob, n_tokens, n_bytes`:
`sum_logprob` is the natural-log probability of the document's tokens (each predicted from its
prefix, the first from BOS; see `windows`), `n_tokens` how many tokens that sum covers and
`n_bytes` the document's UTF-8 size. A document with nothing to score (empty text) gets
`n_tokens = 0` and a NULL `sum_logprob`.

How it stays fast: documents are read from DuckDB in chunks, tokenized in a background thread
while the model runs, cut into context windows, and packed several to a row with position ids
that restart per window (transformers turns those into a block-diagonal causal mask, so packed
documents never see each other); rows are batched up to a token budget under bf16 autocast on GPU.

How it stays exact: each chunk becomes one part, written atomically under a name no other
write uses, and parts are committed (`corpusdb.versions`) every `commit_seconds` and at the end.
A re-run scores only the documents that have no committed score, so a killed job resumes and new
documents are scored incrementally. `shard=(i, n)` and torchrun ranks take disjoint doc_id
residues. A score name is bound to its model's content and settings (`scoring.commit`): other
content or settings under the same name are refused, before the model is loaded where the files
already differ.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash
from tqdm.auto import tqdm

from corpusdb import failpoint
from corpusdb.db import Database
from corpusdb.scoring.commit import ScoreCommitter, check_identity
from corpusdb.scoring.identity import content_identity, hub_identity, tokenizer_hash
from corpusdb.scoring.model import LoadedModel, load_model
from corpusdb.scoring.windows import Batch, make_batches
from corpusdb.storage import WriteQueue
from corpusdb.world import launched, parse_shard

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCORES_SCHEMA = pa.schema([
    ("doc_id", pa.int64()), ("sum_logprob", pa.float64()), ("n_tokens", pa.int64()), ("n_bytes", pa.int64()),
])


@dataclass
class ScoreReport:
    """What a scoring job did."""

    name: str
    n_documents: int = 0
    n_documents_before: int = 0
    n_tokens: int = 0  # scored tokens (the n_tokens column)
    n_computed: int = 0  # tokens run through the model: windows' context overlap and BOS included
    n_padding: int = 0
    n_parts_written: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    device: str = ""
    precision: str = ""
    version: int = 0  # the version the job's last commit made

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return {**self.__dict__, "tokens_per_second": self.tokens_per_second}

    def summary(self) -> str:
        padding = self.n_padding / max(self.n_computed + self.n_padding, 1)
        return (
            f"scored {self.n_documents:,} documents ({self.n_tokens:,} tokens) as {self.name!r} on {self.device} "
            f"({self.precision}) in {self.seconds:.1f} s: {self.tokens_per_second:,.0f} tokens/s, "
            f"{padding:.1%} padding; {self.n_documents_before:,} documents were scored before; version {self.version}"
        )


def _device_and_precision(device: str, precision: str, local_rank: int) -> tuple[str, str]:
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but no CUDA GPU is visible; use --device cpu")
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"
    return device, precision


class _Producer(threading.Thread):
    """Reads chunks of unscored documents, tokenizes them and builds packed batches, ahead of the model."""

    def __init__(self, db: Database, query: str, params: list, loaded: LoadedModel, chunk_docs: int,
                 context: int, stride: int, batch_tokens: int):
        super().__init__(daemon=True, name="score-producer")
        self.cursor = db.con.cursor()
        self.query, self.params = query, params
        self.loaded = loaded
        self.chunk_docs, self.context, self.stride, self.batch_tokens = chunk_docs, context, stride, batch_tokens
        self.out: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            tokenizer = self.loaded.tokenizer
            bos = self.loaded.bos_id
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (bos or 0)
            reader = self.cursor.sql(self.query, params=self.params).to_arrow_reader(self.chunk_docs)
            for batch in _rechunk(reader, self.chunk_docs):
                if self.stop.is_set():
                    return
                texts = batch.column("text").to_pylist()
                encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
                prefix = [bos] if bos is not None else []
                sequences = [np.array(prefix + ids, dtype=np.int64) for ids in encoded]
                batches = make_batches(sequences, self.context, self.stride, self.context, self.batch_tokens, pad)
                n_tokens = np.array([max(len(s) - 1, 0) for s in sequences], dtype=np.int64)
                self._put(("chunk", batch.column("doc_id").to_numpy(), batch.column("n_bytes").to_numpy(), n_tokens, batches))
            self._put(("done",))
        except BaseException as exc:  # handed to the main thread, which raises it
            self._put(("error", exc))
        finally:
            self.cursor.close()

    def _put(self, item: tuple) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


def _rechunk(reader: pa.RecordBatchReader, size: int):
    """Record batches of exactly `size` rows (the last one shorter): DuckDB's vary in size."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        held.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(held)
            yield table.slice(0, size).combine_chunks().to_batches()[0]
            rest = table.slice(size)
            held, count = rest.combine_chunks().to_batches() if rest.num_rows else [], rest.num_rows
    if count:
        yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]


def forward_logprobs(model, batch: Batch, device: str, precision: str, block: int = 4096):
    """Sum of log-probabilities of the scored predictions in `batch`, per document of its chunk.

    Returns (doc indices, sums) as numpy arrays (float64 sums of float32 log-probabilities).
    """
    import torch
    import torch.nn.functional as F

    input_ids = torch.from_numpy(batch.input_ids).to(device, non_blocking=True)
    position_ids = torch.from_numpy(batch.position_ids).to(device, non_blocking=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        where = torch.from_numpy(batch.doc_index >= 0).to(device)
        targets = torch.from_numpy(batch.target_ids).to(device)[where]
        docs = torch.from_numpy(batch.doc_index).to(device)[where]
        flat = logits[where]
        del logits
        parts = [
            -F.cross_entropy(flat[i : i + block].float(), targets[i : i + block], reduction="none")
            for i in range(0, len(targets), block)
        ]
        logprobs = torch.cat(parts) if parts else torch.zeros(0, device=device)
    return docs.cpu().numpy(), logprobs.double().cpu().numpy()


def _write_part(db: Database, name: str, table: pa.Table):
    key = xxhash.xxh3_64_hexdigest(table.column("doc_id").to_numpy().tobytes())
    return db.location.write_parquet(table, "scores", f"model={name}", f"part-{key}-{uuid.uuid4().hex[:8]}.parquet")


def run_score(
    db: Database,
    model: str,
    name: str,
    *,
    context: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    chunk_docs: int = 8192,
    device: str = "auto",
    precision: str = "auto",
    shard: str | tuple[int, int] | None = None,
    view: str | None = None,
    replace: bool = False,
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    progress: bool | None = None,
    loaded: LoadedModel | None = None,
    commit_seconds: float = 60.0,
) -> ScoreReport:
    """Score every document of `db` not yet scored under `name` with the causal LM `model`.

    Args:
        model: a local folder, a .gguf file or a hub id.
        name: the partition `scores/model=NAME` (letters, digits, `_.-`).
        context: tokens per window (default: the model's context length).
        stride: new tokens per window after the first (default: context // 2).
        batch_tokens: tokens per forward pass (default: 65536 on GPU, 2048 on CPU).
        chunk_docs: documents per part (and per packing pass).
        device: auto, cpu, cuda or cuda:N; under torchrun auto is cuda:LOCAL_RANK.
        precision: auto (bf16 autocast on a GPU that has it, else fp32), fp32, bf16 or fp16.
        shard: (i, n) or "i/n": score only documents whose doc_id is i modulo n.
        view: score only the documents of this view (name, macro call or select) [default: all].
        replace: drop this name's existing scores first and rescore everything.
        loaded: an already loaded model (the Python API; `model` then only names it, and its
            identity is the hash of its weights).
        commit_seconds: commit finished parts at least this often (a killed job loses at most this
            much work), and at the end.

    Raises:
        ModelError: the model cannot be loaded or is not a causal LM.
        CatalogError: NAME holds scores made by another model (other content) or with other settings.
    """
    import transformers

    from corpusdb.views import relation_sql

    started = time.perf_counter()
    if not NAME_RE.match(name):
        raise ValueError(f"score name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if chunk_docs < 1:
        raise ValueError(f"chunk_docs {chunk_docs} must be positive")
    shard_index, num_shards = parse_shard(shard)
    rank, world_size, local_rank = launched()
    residue, modulus = shard_index * world_size + rank, num_shards * world_size
    device, precision = _device_and_precision(device, precision, local_rank)
    if replace and modulus > 1:
        # other shards or ranks may already be writing new parts that a removal here would lose
        raise ValueError("--replace deletes every score of NAME, so it cannot run sharded or under torchrun; "
                         "run it once without --shard and torchrun, or pick another --as name")
    db.writable()
    db.refresh()
    old = None if replace else db.snapshot.models.get(name)
    found = content_identity(model) if loaded is None else None
    if found:  # refuse other content, or settings asked for explicitly, before spending time on loading
        explicit = {"model": model, "precision": precision, **found}
        explicit.update({k: v for k, v in (("context", context), ("stride", stride)) if v})
        check_identity(name, old, explicit)
    if loaded is None:
        loaded = load_model(model, device=device, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    else:
        loaded.model.to(device)
        found = {"content_hash": _weights_hash(loaded.model), "files": 0, "bytes": 0}
    found = found or hub_identity(model, loaded.identity.get("revision"))
    context = context or loaded.context
    if context > loaded.context:
        raise ValueError(f"context {context} exceeds the model's {loaded.context} positions")
    stride = stride or max(context // 2, 1)
    if context < 2 or not 1 <= stride <= context - 1:
        raise ValueError(f"stride {stride} must be between 1 and context - 1 = {context - 1}")
    batch_tokens = batch_tokens or (65536 if device.startswith("cuda") else 2048)
    if batch_tokens < context:
        raise ValueError(f"batch_tokens {batch_tokens} must be at least the context ({context})")
    entry = {
        **loaded.identity, "model": model, "context": context, "stride": stride, "bos_id": loaded.bos_id,
        "precision": precision, "first_token": "scored given BOS" if loaded.bos_id is not None else "not scored (no BOS/EOS token)",
        "content_hash": found["content_hash"], "tokenizer_hash": tokenizer_hash(loaded.tokenizer),
    }
    check_identity(name, old, entry)
    committer = ScoreCommitter(db, name, entry)
    committer.register(replace)

    source = "documents" if view is None else f"(select doc_id, text, n_bytes from ({relation_sql(db, view)}))"
    shard_sql = f"((doc_id % {modulus}) + {modulus}) % {modulus} = {residue}"
    pending_sql = f"from {source} where {shard_sql} and doc_id not in (select doc_id from scores where model = ?)"
    n_todo, n_all = db.con.execute(
        f"select (select count(*) {pending_sql}), (select count(*) from {source} where {shard_sql})", [name]
    ).fetchall()[0]
    report = ScoreReport(name=name, n_documents_before=n_all - n_todo, device=device, precision=precision, version=db.version)
    producer = _Producer(db, f"select doc_id, text, n_bytes {pending_sql}", [name], loaded, chunk_docs, context, stride, batch_tokens)
    writes = WriteQueue(depth=1)  # the next chunk is scored while this one is written

    last_commit = time.monotonic()

    def written(result) -> None:
        nonlocal last_commit
        committer.add(*result)
        report.n_parts_written += 1
        if time.monotonic() - last_commit >= commit_seconds:
            committer.commit()
            last_commit = time.monotonic()
        failpoint.after_part("score", report.n_parts_written)

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # e.g. "pass an attention_mask": packing needs none
    producer.start()
    try:
        with tqdm(total=n_todo, unit="doc", desc=f"score {name}", disable=(not progress) if progress is not None else None,
                  dynamic_ncols=True) as bar:
            while True:
                item = producer.out.get()
                if item[0] == "error":
                    raise item[1]
                if item[0] == "done":
                    break
                _, doc_ids, n_bytes, n_tokens, batches = item
                sums = np.zeros(len(doc_ids), dtype=np.float64)
                for batch in batches:
                    t0 = time.perf_counter()
                    docs, logprobs = forward_logprobs(loaded.model, batch, device, precision)
                    report.forward_seconds += time.perf_counter() - t0
                    np.add.at(sums, docs, logprobs)
                    report.n_computed += batch.n_tokens
                    report.n_padding += batch.input_ids.size - batch.n_tokens
                report.n_tokens += int(n_tokens.sum())
                rate = report.n_tokens / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(tokens_per_s=f"{rate:,.0f}", refresh=False)
                table = pa.table(
                    [pa.array(doc_ids, pa.int64()), pa.array(sums, mask=n_tokens == 0), pa.array(n_tokens), pa.array(n_bytes, pa.int64())],
                    schema=SCORES_SCHEMA,
                )
                writes.submit(lambda t=table: (_write_part(db, name, t), t), on_done=written)
                report.n_documents += len(doc_ids)
                bar.update(len(doc_ids))
            writes.drain()
        committer.commit()
    except BaseException:
        writes.abort()
        try:  # parts finished before the failure are kept; the re-run scores only what is missing
            committer.commit()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            committer.discard()
        raise
    finally:
        producer.stop.set()
        writes.close()
        transformers.logging.set_verbosity(verbosity)
    report.version = db.version
    report.seconds = time.perf_counter() - started
    return report


def _weights_hash(model) -> str:
    """Content hash of an in-memory model's weights (models handed in through the Python API)."""
    digest = xxhash.xxh3_128()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
