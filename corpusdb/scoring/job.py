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
Instances are cut from their documents by a join that hashes the spans and streams the documents'
text past them, a run of documents parts at a time where every part of spans and of the name's
scores records its covers (`instance_runs`): memory follows a run's spans, not the database's.

How it stays exact: each chunk becomes one part, written atomically under a name no other
write uses, and parts are committed (`corpusdb.versions`) every `commit_seconds` and at the end.
A re-run scores only the documents that have no committed score, so a killed job resumes and new
documents are scored incrementally. Chunks are cut from every document in the source's order (by
bytes of text and documents, never by what is already scored; read with one DuckDB thread, so the
order is the same every run), so a resumed job packs each remaining chunk exactly as an
uninterrupted one did and writes the same bits. `shard=(i, n)` and torchrun ranks take disjoint
doc_id residues. A score name is bound to its model's content and settings (`scoring.commit`): other
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

from corpusdb import covers, failpoint
from corpusdb.db import Database
from corpusdb.scoring.commit import ScoreCommitter, check_identity
from corpusdb.scoring.identity import content_identity, hub_identity, tokenizer_hash
from corpusdb.scoring.model import LoadedModel, load_model
from corpusdb.scoring.windows import Batch, make_batches
from corpusdb.statements import quote
from corpusdb.storage import WriteQueue
from corpusdb.world import launched, parse_shard

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
UNITS = ("documents", "instances")
READ_DOCS = 256  # documents per read and tokenizer call
FILE = "__corpusdb_part"  # the stream's column naming each document's part
PLACED = "corpusdb_placed_documents"  # the documents with their parts (FILE), which a stream of instances cuts
# every instance to score: doc_id (its instance_id), n_bytes, text and FILE (its document's part), cut from PLACED,
# a temp view of the producer's cursor (a cursor sees only its own temp views)
RUN_SPANS = "corpusdb_run_spans"  # a temp view of the producer's cursor: the spans of one run of documents parts
RUN_ROWS = 1 << 18  # documents a run holds (about): a stream of instances reads and hashes its spans a run at a time


def instance_rows(spans: str = "instance_spans") -> str:
    """Every instance of `spans` to score: doc_id (its instance_id), n_bytes, text and FILE (its document's part),
    cut from PLACED, a temp view of the producer's cursor (a cursor sees only its own temp views)."""
    return f"select instance_id as doc_id, n_bytes, text, {FILE} from instances_of('{spans}', docs := '{PLACED}')"


INSTANCE_ROWS = instance_rows()


VIEW_UNITS = "corpusdb_view_units"  # a temp table of the producer's cursor: the units of the job's --view (doc_id)


def placed_sql(db: Database, where: str = "true", parts: list[str] | None = None) -> str:
    """The statement that makes PLACED, which INSTANCE_ROWS reads, on a cursor (a temp view: a cursor sees only its
    own): the documents of `where` (SQL over their columns), of some documents parts only where `parts` (paths
    relative to the database) are given."""
    documents = db.parts_sql("documents", db.snapshot.parts("documents") if parts is None else parts, FILE)
    return f"create or replace temp view {PLACED} as select * from ({documents}) where {where}"


def place_view(db: Database, cursor, unit: str, view: str) -> tuple[str, str]:
    """A job over `view`, placed in the documents parts as the whole source is: its units (doc_ids, or instance_ids
    where the view has them) in the temp table VIEW_UNITS of `cursor`, computed once as DuckDB plans the view; returns
    the filter of the stream's rows and that of the documents PLACED holds (SQL over their columns). So the stream is
    every document (or instance) of the view once, in place order, each with its documents part, and each part of
    scores records its covers, as over the whole source."""
    from corpusdb.views import relation_sql

    sql = relation_sql(db, view)
    of_instances = unit == "instances" and "instance_id" in db.con.sql(f"select * from ({sql}) limit 0").columns
    cursor.execute(f"create or replace temp table {VIEW_UNITS} as select distinct "
                   f"{'instance_id' if of_instances else 'doc_id'} as doc_id from ({sql})")
    units = f"doc_id in (select doc_id from {VIEW_UNITS})"
    return (units, "true") if unit == "documents" or of_instances else ("true", units)


def instance_runs(db: Database, name: str, rows: int | None = None) -> list[tuple[list[str], list[str], list[str]]] | None:
    """The documents parts in place order as runs of about `rows` (RUN_ROWS) documents, each with the parts of spans
    and of `name`'s scores that cover it (`corpusdb.covers`; paths relative to the database): a stream of instances
    a run at a time hashes that run's spans and scored ids alone, not every span of the database. None where a part
    of spans or of those scores records no covers (every run would read it: one stream then)."""
    snapshot, rows = db.snapshot, rows or RUN_ROWS
    prefix = f"scores/model={name}/"
    if not (covers.all_known(snapshot, "instance_spans") and covers.all_known(snapshot, "scores", prefix)):
        return None
    runs, run, count = [], [], 0
    for path, info in sorted(snapshot.tables.get("documents", {}).items()):  # place order
        run.append(path)
        count += int(info.get("rows") or 0)
        if count >= rows:
            runs.append(run)
            run, count = [], 0
    if run:
        runs.append(run)
    wanted = [set(run) for run in runs]
    return list(zip(runs, covers.runs_parts(snapshot, wanted, "instance_spans"),
                    covers.runs_parts(snapshot, wanted, "scores", prefix)))


def stream_segments(db: Database, name: str, unit: str, shard_sql: str, row_where: str = "true",
                    placed_where: str = "true") -> list[tuple[list[str], str, list]]:
    """The job's stream as segments run one after another on the producer's cursor, each (statements to run first,
    query, its parameters): one over documents; over instances, a run of documents parts at a time where every part
    of spans and of the name's scores records its covers (`instance_runs`), else one over them all."""
    if unit == "documents":
        return [([], stream_sql(f"select * from ({db.documents_with_files(FILE)}) where {row_where}", shard_sql), [name])]
    runs = instance_runs(db, name)
    if runs is None:
        return [([placed_sql(db, placed_where)],
                 stream_sql(f"select * from ({INSTANCE_ROWS}) where {row_where}", shard_sql), [name])]
    rows = f"select * from ({instance_rows(RUN_SPANS)}) where {row_where}"
    return [([placed_sql(db, placed_where, run), f"create or replace temp view {RUN_SPANS} as "
              f"{db.parts_sql('instance_spans', spans)}"],
             stream_sql(rows, shard_sql, f"select doc_id from ({db.parts_sql('scores', scored)})"), [])
            for run, spans, scored in runs]


def stream_sql(rows: str, shard_sql: str = "true", done: str = "select doc_id from scores where model = ?") -> str:
    """The job's stream: every row of `rows` (doc_id, n_bytes, text, FILE) in its order, those of `done` (by default
    what the score name, the query's one parameter, has scored) flagged `done` and sent without their text; only the
    rows of `shard_sql`."""
    return ("select doc_id, n_bytes, case when done then null else text end as text, done, file from ("
            f"select doc_id, n_bytes, text, doc_id in ({done}) as done, {FILE} as file "
            f"from ({rows}) where {shard_sql})")
# DuckDB's optimizers that choose a join's order and the side it hashes, from estimated row counts: the documents
# (fewer rows than their instances, each a kilobyte of text or more) would be hashed, every pending document's text
# held before the first instance. Planned without them, a join hashes its right side as written: `instances_of`
# writes the spans there, and the documents' text streams past them in place order.
AS_WRITTEN = ("join_order", "build_side_probe_side")
_PLANNING = threading.Lock()


def reader_as_written(db: Database, cursor, query: str, params: list, batch_rows: int) -> pa.RecordBatchReader:
    """Start `query` on `cursor`, its joins planned as written (AS_WRITTEN disabled while DuckDB plans it).

    DuckDB's setting is global to the database: a query another thread plans in that instant plans without those
    optimizers too (slower at worst, never other rows); two producers of one process take `_PLANNING` in turn, so
    neither restores the setting while the other plans.
    """
    with _PLANNING:
        setter = db.con.cursor()  # `cursor` holds the open result once it starts
        (before,) = setter.execute("select current_setting('disabled_optimizers')").fetchall()[0]
        names = sorted({*filter(None, (x.strip() for x in (before or "").split(","))), *AS_WRITTEN})
        setter.execute(f"set disabled_optimizers = {quote(','.join(names))}")
        try:
            return cursor.sql(query, params=params).to_arrow_reader(batch_rows)
        finally:
            setter.execute(f"set disabled_optimizers = {quote(before or '')}")
            setter.close()


SCORES_SCHEMA = pa.schema([
    ("doc_id", pa.int64()), ("sum_logprob", pa.float64()), ("n_tokens", pa.int64()), ("n_bytes", pa.int64()),
])


@dataclass
class ScoreReport:
    """What a scoring job did."""

    name: str
    unit: str = "documents"  # or "instances"
    n_documents: int = 0  # documents (or instances) scored
    n_documents_before: int = 0
    n_uncut_documents: int = 0  # with unit "instances": documents with text but no instances (not scored)
    n_tokens: int = 0  # scored tokens (the n_tokens column)
    n_computed: int = 0  # tokens run through the model: windows' context overlap and BOS included
    n_padding: int = 0
    n_parts_written: int = 0
    seconds: float = 0.0  # the whole job
    load_seconds: float = 0.0  # loading the model (not counted in tokens_per_second)
    forward_seconds: float = 0.0
    threads: int = 0  # torch CPU threads
    device: str = ""
    precision: str = ""
    version: int = 0  # the version the job's last commit made

    @property
    def tokens_per_second(self) -> float:
        """Scored tokens per second of scoring (model loading excluded)."""
        return self.n_tokens / max(self.seconds - self.load_seconds, 1e-9)

    def to_dict(self) -> dict:
        return {**self.__dict__, "tokens_per_second": self.tokens_per_second}

    def summary(self) -> str:
        padding = self.n_padding / max(self.n_computed + self.n_padding, 1)
        threads = f", {self.threads} thread{'s' if self.threads > 1 else ''}" if self.device == "cpu" and self.threads else ""
        return (
            f"scored {self.n_documents:,} {self.unit} ({self.n_tokens:,} tokens) as {self.name!r} on {self.device} "
            f"({self.precision}{threads}) in {self.seconds:.1f} s ({self.load_seconds:.1f} s loading the model): "
            f"{self.tokens_per_second:,.0f} tokens/s, {padding:.1%} padding; "
            f"{self.n_documents_before:,} {self.unit} were scored before; version {self.version}"
            + (f"\nnote: {self.n_uncut_documents:,} documents have no instances, so nothing of them was scored "
               "(ingested after `corpusdb instances`, or outside its --view); run `corpusdb instances` again to include them"
               if self.n_uncut_documents else "")
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
    """Reads documents, tokenizes the unscored ones and builds packed batches of one part, ahead of the model.

    Parts are cut from the stream of *every* document of the job's source (scored or not, in the
    source's order): a part ends once its documents hold `part_bytes` bytes of text or number
    `chunk_docs`, whichever comes first. So where parts end does not depend on what an earlier run
    committed: a killed and resumed job (each part is committed whole) scores every remaining part
    with the same documents, packed into the same batches, as an uninterrupted run, and writes the
    same bits. Parts whose documents are all scored are skipped without tokenizing them.
    """

    def __init__(self, db: Database, loaded: LoadedModel, chunk_docs: int, part_bytes: int, context: int, stride: int,
                 batch_tokens: int, as_written: bool = False):
        super().__init__(daemon=True, name="score-producer")
        self.db, self.as_written = db, as_written  # as_written: its joins planned as written (`reader_as_written`)
        self.cursor = db.con.cursor()
        self.segments: list[tuple[list[str], str, list]] = []  # `stream_segments`, set before the thread starts
        self.loaded = loaded
        self.chunk_docs, self.part_bytes = chunk_docs, part_bytes
        self.context, self.stride, self.batch_tokens = context, stride, batch_tokens
        self.out: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            tokenizer = self.loaded.tokenizer
            bos = self.loaded.bos_id
            prefix = [bos] if bos is not None else []
            held_ids, held_bytes, held_seqs, held_files, part_docs, part_bytes = [], [], [], set(), 0, 0
            for batch in _rechunk(self._batches(), READ_DOCS):
                if self.stop.is_set():
                    return
                done = batch.column("done").to_numpy(zero_copy_only=False)
                todo = np.flatnonzero(~done)
                texts = batch.column("text").take(pa.array(todo)).to_pylist()
                encoded = iter(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else [])
                files = batch.column("file").to_pylist()
                for doc_id, n_bytes, scored, file in zip(batch.column("doc_id").to_numpy(), batch.column("n_bytes").to_numpy(),
                                                         done, files):
                    if not scored:
                        held_ids.append(doc_id)
                        held_bytes.append(n_bytes)
                        held_seqs.append(np.array(prefix + next(encoded), dtype=np.int64))
                        held_files.add(file)
                    part_docs += 1
                    part_bytes += int(n_bytes)
                    if part_bytes >= self.part_bytes or part_docs >= self.chunk_docs:
                        if held_ids:
                            self._put(self._chunk(held_ids, held_bytes, held_seqs, held_files))
                        held_ids, held_bytes, held_seqs, held_files, part_docs, part_bytes = [], [], [], set(), 0, 0
            if held_ids:
                self._put(self._chunk(held_ids, held_bytes, held_seqs, held_files))
            self._put(("done",))
        except BaseException as exc:  # handed to the main thread, which raises it
            self._put(("error", exc))
        finally:
            self.cursor.close()

    def _batches(self):
        """The stream's record batches, segment after segment (each read whole before the next one's statements)."""
        for statements, query, params in self.segments:
            for statement in statements:
                self.cursor.execute(statement)
            yield from (reader_as_written(self.db, self.cursor, query, params, READ_DOCS) if self.as_written
                        else self.cursor.sql(query, params=params).to_arrow_reader(READ_DOCS))

    def _chunk(self, doc_ids: list, n_bytes: list, sequences: list[np.ndarray], files: set) -> tuple:
        tokenizer = self.loaded.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.loaded.bos_id or 0)
        longest = min(max((len(s) for s in sequences), default=0), self.context)
        row_tokens = min(self.context, max(self.batch_tokens, longest))  # a long window may get a batch to itself
        batches = make_batches(sequences, self.context, self.stride, row_tokens, self.batch_tokens, pad)
        n_tokens = np.array([max(len(s) - 1, 0) for s in sequences], dtype=np.int64)
        return "chunk", np.array(doc_ids, dtype=np.int64), np.array(n_bytes, dtype=np.int64), n_tokens, batches, files

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
    part_bytes: int | None = None,
    unit: str = "documents",
    threads: int | None = None,
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
        batch_tokens: tokens per forward pass (default: 65536 on GPU, 2048 on CPU); a window longer
            than this (up to the context) is a batch of its own.
        chunk_docs: at most this many documents per part (and per packing pass).
        part_bytes: a part ends once its documents hold this many bytes of text (default: 16 MiB on
            GPU, 32 KiB on CPU: about 4M and 8k tokens, a minute of work), so progress is committed at
            a steady pace. Parts are cut from every document of the source, scored or not, so a
            resumed job scores the same parts with the same bits as an uninterrupted one (given the
            same settings, threads included).
        unit: "documents", or "instances" (the `instances` view, cut by `corpusdb instances`): each
            instance's text is scored on its own, its scores keyed by instance_id.
        threads: torch CPU threads (default: the available cores other work is not using, at least 1).
        device: auto, cpu, cuda or cuda:N; under torchrun auto is cuda:LOCAL_RANK.
        precision: auto (bf16 autocast on a GPU that has it, else fp32), fp32, bf16 or fp16.
        shard: (i, n) or "i/n": score only documents whose doc_id is i modulo n.
        view: score only the documents of this view (name, macro call or select) [default: all];
            with unit="instances", the instances it holds, or the instances of the documents it holds. Each is scored
            once, its text as the documents (or instances) table holds it, in place order.
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

    started = time.perf_counter()
    if not NAME_RE.match(name):
        raise ValueError(f"score name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if chunk_docs < 1:
        raise ValueError(f"chunk_docs {chunk_docs} must be positive")
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    if part_bytes is not None and part_bytes < 1:
        raise ValueError(f"part_bytes {part_bytes} must be positive")
    if threads is not None and threads < 1:
        raise ValueError(f"threads {threads} must be positive")
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
    instances = db.snapshot.settings.get("instances") if unit == "instances" else None
    if unit == "instances" and not db.snapshot.tables.get("instance_spans"):
        raise ValueError("no instances to score: cut the documents first (`corpusdb instances DB --tokenizer T --tokens N`)")
    found = content_identity(model) if loaded is None else None
    if found:  # refuse other content, or settings asked for explicitly, before spending time on loading
        explicit = {"model": model, "precision": precision, "unit": unit, "instances": instances, **found}
        explicit.update({k: v for k, v in (("context", context), ("stride", stride)) if v})
        check_identity(name, old, explicit)
    check_identity(name, old, {"unit": unit, "instances": instances})
    source, uncut = _source_sql(db, unit, view)
    n_uncut = db.con.execute(uncut).fetchall()[0][0] if uncut else 0
    shard_sql = f"((doc_id % {modulus}) + {modulus}) % {modulus} = {residue}"
    pending_sql = f"from {source} where {shard_sql} and doc_id not in (select doc_id from scores where model = ?)"
    counts = f"select (select count(*) {pending_sql}), (select count(*) from {source} where {shard_sql})"
    n_todo, n_all = db.con.execute(counts, [name]).fetchall()[0]
    if n_todo == 0 and found and old and old.get("content_hash") == found["content_hash"] and old.get("context"):
        # nothing to score under a name this model's files made: done, without loading the model, once the
        # settings it would use (the same files: the same default context) are those of the name
        default_context = context or old["context"]
        check_identity(name, old, {"context": default_context, "stride": stride or max(default_context // 2, 1)})
        return ScoreReport(name=name, unit=unit, n_documents_before=n_all, device=device, precision=precision,
                           version=db.version, seconds=time.perf_counter() - started, n_uncut_documents=n_uncut)
    load_started = time.perf_counter()
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
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens {batch_tokens} must be positive")
    part_bytes = part_bytes or (16 << 20 if device.startswith("cuda") else 32 << 10)
    load_seconds = time.perf_counter() - load_started
    entry = {
        **loaded.identity, "model": model, "context": context, "stride": stride, "bos_id": loaded.bos_id,
        "precision": precision, "first_token": "scored given BOS" if loaded.bos_id is not None else "not scored (no BOS/EOS token)",
        "content_hash": found["content_hash"], "tokenizer_hash": tokenizer_hash(loaded.tokenizer), "unit": unit,
        **({"instances": instances} if instances else {}),
    }
    check_identity(name, old, entry)
    committer = ScoreCommitter(db, name, entry, (residue, modulus))
    committer.register(replace)

    n_todo, n_all = db.con.execute(counts, [name]).fetchall()[0]  # after --replace dropped the old scores
    report = ScoreReport(name=name, unit=unit, n_documents_before=n_all - n_todo, device=device, precision=precision,
                         version=db.version, load_seconds=load_seconds, n_uncut_documents=n_uncut)
    (n_bytes_todo,) = db.con.execute(f"select coalesce(sum(n_bytes), 0) {pending_sql}", [name]).fetchall()[0]
    # every document of the source (a view's: each once) in place order, those with a score flagged (and without their
    # text), and the documents part of each, recorded with each part of scores (`corpusdb.covers`); over instances:
    # their documents' parts, as each instance is cut from its document. PLACED, VIEW_UNITS: of the producer's cursor
    files = {db.location.url_of(path): db.location.relpath(path) for path in db.parts("documents")}
    # planned as written where it joins (instances to their documents; a view's units): the right side is hashed,
    # the documents stream past it in place order, text and all
    producer = _Producer(db, loaded, chunk_docs, part_bytes, context, stride, batch_tokens,
                         as_written=unit == "instances" or view is not None)
    row_where, placed_where = ("true", "true") if view is None else place_view(db, producer.cursor, unit, view)
    producer.segments = stream_segments(db, name, unit, shard_sql, row_where, placed_where)
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
    threads_before = _set_threads(device, threads)
    if threads_before is not None:
        import torch

        report.threads = torch.get_num_threads()  # what was set: the default samples the machine once
    scoring_started = time.perf_counter()
    # one DuckDB thread while the producer reads: a parallel scan (or join) interleaves row groups in an
    # order that varies run to run, and parts are cut from the stream's order (one thread reads about
    # 300 MB/s of text, 0.77x two: benchmarks/score_reader.py; the model reads far less)
    duckdb_threads = db.con.execute("select current_setting('threads')").fetchall()[0][0]
    db.con.execute("set threads = 1")
    producer.start()
    try:
        # the bar counts the text's bytes and moves after every forward pass (a CPU part is a minute of work)
        with tqdm(total=int(n_bytes_todo), unit="B", unit_scale=True, desc=f"score {name}", dynamic_ncols=True,
                  disable=(not progress) if progress is not None else None) as bar:
            while True:
                item = producer.out.get()
                if item[0] == "error":
                    raise item[1]
                if item[0] == "done":
                    break
                _, doc_ids, n_bytes, n_tokens, batches, parts = item
                sums = np.zeros(len(doc_ids), dtype=np.float64)
                chunk_bytes, chunk_computed, computed, moved = int(n_bytes.sum()), sum(b.n_tokens for b in batches), 0, 0
                for batch in batches:
                    t0 = time.perf_counter()
                    docs, logprobs = forward_logprobs(loaded.model, batch, device, precision)
                    report.forward_seconds += time.perf_counter() - t0
                    np.add.at(sums, docs, logprobs)
                    report.n_computed += batch.n_tokens
                    report.n_padding += batch.input_ids.size - batch.n_tokens
                    computed += batch.n_tokens
                    rate = report.n_computed / max(time.perf_counter() - scoring_started, 1e-9)
                    bar.set_postfix({unit: f"{report.n_documents:,}", "tokens/s": f"{rate:,.0f}"}, refresh=False)
                    step = chunk_bytes * computed // max(chunk_computed, 1) - moved  # this chunk's bytes, pro rata
                    bar.update(step)
                    moved += step
                report.n_tokens += int(n_tokens.sum())
                table = pa.table(
                    [pa.array(doc_ids, pa.int64()), pa.array(sums, mask=n_tokens == 0), pa.array(n_tokens), pa.array(n_bytes, pa.int64())],
                    schema=SCORES_SCHEMA,
                )
                covered = sorted({files[p] for p in parts}) if parts <= files.keys() else None  # else unknown
                writes.submit(lambda t=table, c=covered: (_write_part(db, name, t), t, c), on_done=written)
                report.n_documents += len(doc_ids)
                bar.update(chunk_bytes - moved)
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
        producer.join(timeout=10)  # its query ends before DuckDB's threads come back
        db.con.execute("set threads = ?", [duckdb_threads])
        transformers.logging.set_verbosity(verbosity)
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)
    report.version = db.version
    report.seconds = time.perf_counter() - started
    return report


def default_threads() -> int:
    """CPU threads for the model: the cores this process may use that other work is not using now,
    at least 1. On 2 idle cores two threads scored 1.8x faster than one; on 2 busy ones one thread
    was faster (benchmarks/score_threads.py)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, round(cores - _busy_cores(cores))))


def _busy_cores(cores: int, seconds: float = 0.25) -> float:
    """Cores busy with other work: from /proc/stat over a quarter second (the load average, a minute
    behind, where there is none): a job that just ended no longer counts."""
    import os

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values) - idle, sum(values)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
        return (os.cpu_count() or cores) * (busy1 - busy0) / max(total1 - total0, 1)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0


def _set_threads(device: str, threads: int | None) -> int | None:
    """Set torch's CPU threads for a CPU job; returns the number before (None: nothing changed)."""
    if device != "cpu":
        return None
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    return before


def _source_sql(db: Database, unit: str, view: str | None) -> tuple[str, str | None]:
    """The relation (doc_id, text, n_bytes) of what a job scores: documents, or instances keyed by
    instance_id; and, for instances of documents, the documents with text that have no instances."""
    from corpusdb.views import relation_sql

    if unit == "documents":
        return "documents" if view is None else f"(select doc_id, text, n_bytes from ({relation_sql(db, view)}))", None
    if view is None:
        docs = "documents"
    else:
        sql = relation_sql(db, view)
        if "instance_id" in db.con.sql(f"select * from ({sql}) limit 0").columns:
            return f"(select instance_id as doc_id, text, n_bytes from ({sql}))", None
        docs = f"({sql})"
    uncut = f"select count(*) from {docs} as d where d.n_bytes > 0 and d.doc_id not in (select doc_id from instance_spans)"
    return (f"(select i.instance_id as doc_id, i.text, i.n_bytes from instances as i "
            f"semi join {docs} as v on i.doc_id = v.doc_id)"), uncut


def _weights_hash(model) -> str:
    """Content hash of an in-memory model's weights (models handed in through the Python API)."""
    digest = xxhash.xxh3_128()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
