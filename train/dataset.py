"""The training adapter: any view of a corpusdb database as a PyTorch IterableDataset of packed token sequences.

    python -c "from corpusdb.train import ViewDataset; import corpusdb; \
      ds = ViewDataset(corpusdb.open('demo/db'), 'dedup', tokenizer='out/student', seq_len=256); print(next(iter(ds)).shape)"

A view that hands out documents' (or instances') text unchanged, as every built-in policy does,
is streamed straight from the committed documents parts: the view runs for its keys alone, each
kept row is placed in its part (`corpusdb.cut`), and a block's text is read from its row groups when
a stream reaches it, so the first batch waits for the policy's cut and one block, never for the
selection's text. The cut is kept in a local cache folder named for the selection's provenance
(`corpusdb.provenance`: its SQL with every view and policy it reads, the content of the data and
the models' identities) and the block size, so the same view at the same version starts at once.
Any other view (one that rewrites text, joins, groups; or `shuffle=False`, which keeps the
view's own order) is first exported (`corpusdb.export`) to such a folder, ordered by doc_id (or in
the view's order), and `why_exported` says why. A pre-tokenized export (`format tokens`) or any
export folder can be streamed directly with `ViewDataset.from_export`.

Each block of the cut (or part of the export) is a *block*. An epoch's block order is a seeded permutation (or the view's order), and
block b goes to stream b % num_streams of the (rank, worker) streams (`corpusdb.world.World`), so
streams never overlap and together read every document. Within a block documents are shuffled
with a seed of (seed, epoch, block). Each stream tokenizes its documents, appends EOS, and cuts the
concatenation into sequences of seq_len + 1 tokens (inputs and next-token targets), carrying the
remainder over to the next document and epoch. With `epochs=None` streams never end; each
epoch reshuffles.

Resumption is arithmetic: `state_dict(consumed)` records how many samples this rank's DataLoader
handed out; after `load_state_dict`, each worker regenerates its stream and skips the samples it
had produced (`World.worker_samples`), so the batches after a resume equal those of an
uninterrupted run, for any number of workers and ranks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset

from corpusdb.storage import Location
from corpusdb.world import World


def _load_tokenizer(tokenizer):
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from corpusdb.part_sink import load_tokenizer

    return load_tokenizer(str(tokenizer))


def _on_rank_zero_first(make):
    """`make()` on rank 0 first, then on the other ranks, which find its finished result (under DDP), so
    every rank streams the same blocks even where the view's row order is not deterministic."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return make()
    made = make() if dist.get_rank() == 0 else None
    dist.barrier()
    return made if dist.get_rank() == 0 else make()


class Blocks:
    """The parts of an export folder (Parquet, JSONL or tokens) as numbered blocks of documents."""

    def __init__(self, url: str, storage_options: dict | None = None):
        from corpusdb.export import check_file_name

        self.location = Location(url, storage_options or {})
        if not self.location.exists("manifest.json"):
            raise FileNotFoundError(f"{url} has no manifest.json: not a (finished) corpusdb export; run `corpusdb export` first")
        self.manifest = json.loads(self.location.read_bytes("manifest.json"))
        self.format = self.manifest["format"]
        if self.format in ("megatron", "datatrove", "mds", "litdata"):
            reader = {"megatron": "a Megatron-LM export (for Megatron-LM, NeMo)", "datatrove": "a datatrove export (for nanotron)",
                      "mds": "an MDS export (for MosaicML streaming, LLM Foundry)", "litdata": "a LitData export (for litdata)"}
            raise ValueError(f"{url} is {reader[self.format]}; stream the view itself, or an export made with "
                             "--format tokens, parquet or jsonl")
        self.parts = self.manifest["parts"]
        for part in self.parts:  # a manifest may only name files next to it
            for name in (part.get("file"), *([part["index"]] if "index" in part else [])):
                check_file_name(url, name)

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def pretokenized(self) -> bool:
        return self.format == "tokens"

    def read(self, index: int) -> tuple[np.ndarray, list]:
        """(doc_ids, texts) of a block, or (doc_ids, token arrays without EOS) for a tokens export."""
        part = self.parts[index]
        fs, join = self.location.fs, self.location.join
        if self.format == "parquet":
            table = pq.read_table(join(part["file"]), columns=["doc_id", "text"], filesystem=fs)
            return table.column("doc_id").to_numpy(), table.column("text").to_pylist()
        if self.format == "jsonl":
            rows = [json.loads(line) for line in fs.cat_file(join(part["file"])).splitlines() if line.strip()]
            return np.array([r["doc_id"] for r in rows], dtype=np.int64), [r["text"] for r in rows]
        index_table = pq.read_table(join(part["index"]), filesystem=fs)
        tokens = np.frombuffer(fs.cat_file(join(part["file"])), dtype=np.dtype(self.manifest["dtype"]).newbyteorder("<"))
        offsets, lengths = index_table.column("offset").to_numpy(), index_table.column("n_tokens").to_numpy()
        docs = [tokens[o : o + n - 1].astype(np.int64) for o, n in zip(offsets, lengths)]  # EOS is added back when packing
        return index_table.column("doc_id").to_numpy(), docs


class ViewDataset(IterableDataset):
    """Packed next-token-prediction sequences (LongTensor of seq_len + 1 tokens) from a view.

    Args:
        db: an open corpusdb Database.
        view: a view name, macro call or select returning doc_id and text.
        tokenizer: a tokenizer object, or a folder or hub id (needs an EOS token).
        seq_len: tokens per training sequence (each sample has seq_len + 1: inputs and targets).
        batch_size: the DataLoader's batch size on each rank (resumption counts whole batches).
        shuffle: seeded shuffling of blocks and of documents within blocks; False streams the
            view's own row order (make it deterministic, e.g. curriculum's, or order by a column).
        seed: the shuffle seed; epoch e uses a permutation of (seed, e).
        epochs: None to cycle forever (training), or a number of passes.
        block_mb: text megabytes per block (the unit of shuffling and of sharding).
        cache_dir: where the view is exported [default: the system temp folder; for training on
            several nodes, a folder they share].
    """

    def __init__(self, db, view: str, tokenizer, seq_len: int, *, batch_size: int = 1, shuffle: bool = True,
                 seed: int = 0, epochs: int | None = None, block_mb: float = 4.0, cache_dir: str | None = None):
        from corpusdb.cut import make_cut, text_kind
        from corpusdb.export import export_view, unit_order
        from corpusdb.provenance import provenance
        from corpusdb.views import relation_sql

        sql = relation_sql(db, view)
        self.text_kind, self.why_exported = text_kind(db, sql) if shuffle else (None, "shuffle=False keeps the view's order")
        if self.text_kind:  # stream the kept rows' text straight from the parts: no export first
            record = provenance(db, sql)
            block_bytes = int(block_mb * 1024 * 1024)
            key = hashlib.sha256(json.dumps([db.url, record["inputs_hash"], block_bytes, "cut"]).encode()).hexdigest()[:16]
            folder = Path(cache_dir or Path(tempfile.gettempdir()) / "corpusdb-cache") / key
            blocks = _on_rank_zero_first(lambda: make_cut(db, sql, self.text_kind, folder, block_bytes, record))
        else:
            order = f"order by {unit_order(db.sql(f'select * from ({sql}) limit 0').columns)}" if shuffle else ""
            select = f"select doc_id, source, text, n_bytes from ({sql}) {order}"
            record = provenance(db, select)
            key = hashlib.sha256(json.dumps([db.url, record["inputs_hash"], block_mb]).encode()).hexdigest()[:16]
            cache = Path(cache_dir or Path(tempfile.gettempdir()) / "corpusdb-cache") / key
            _on_rank_zero_first(lambda: export_view(db, select, str(cache), part_size_mb=block_mb, storage_options={}))
            blocks = Blocks(str(cache))
        self._setup(blocks, tokenizer, seq_len, batch_size, shuffle, seed, epochs, what=f"view {view!r}")
        self.view = view
        self.version = db.version

    @classmethod
    def from_export(cls, url: str, tokenizer=None, seq_len: int = 1024, *, storage_options: dict | None = None,
                    batch_size: int = 1, shuffle: bool = True, seed: int = 0, epochs: int | None = None) -> ViewDataset:
        """Stream an export folder; a `tokens` export needs no tokenizer (its EOS id is in the manifest)."""
        self = cls.__new__(cls)
        self._setup(Blocks(url, storage_options), tokenizer, seq_len, batch_size, shuffle, seed, epochs, what=f"export {url}")
        self.view = self.blocks.manifest.get("view")
        self.version = self.blocks.manifest.get("version")
        return self

    def _setup(self, blocks: Blocks, tokenizer, seq_len: int, batch_size: int, shuffle: bool, seed: int, epochs: int | None,
               what: str = "the export") -> None:
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be positive")
        self.blocks = blocks
        if not blocks.manifest.get("n_rows"):  # would stream nothing, for ever
            raise ValueError(f"{what} has no documents at version {blocks.manifest.get('version')}: nothing to stream; "
                             "check the view (corpusdb view stats DB VIEW) and the version it reads")
        self.tokenizer = _load_tokenizer(tokenizer)
        if blocks.pretokenized:
            self.eos_id = blocks.manifest["eos_token_id"]
        elif self.tokenizer is None:
            raise ValueError("a tokenizer is needed to stream text; pass tokenizer= (or stream a tokens export)")
        else:
            self.eos_id = self.tokenizer.eos_token_id
        self.seq_len, self.batch_size, self.shuffle, self.seed, self.epochs = seq_len, batch_size, shuffle, seed, epochs
        self.consumed = 0
        self.resume_workers: int | None = None

    # -- resumption ---------------------------------------------------------------------------
    def state_dict(self, consumed: int, num_workers: int = 0) -> dict:
        """The state after this rank's DataLoader (with `num_workers`) handed out `consumed` samples."""
        return {"consumed": int(consumed), "num_workers": max(num_workers, 1), "seed": self.seed, "seq_len": self.seq_len,
                "batch_size": self.batch_size, "n_blocks": len(self.blocks), "inputs_hash": self.blocks.manifest.get("inputs_hash")}

    def load_state_dict(self, state: dict) -> None:
        """Resume after `state_dict`: the next samples are those an uninterrupted run would give next.

        Raises:
            ValueError: the state comes from a dataset with another seed, sequence length, batch
                size, number of blocks or other data, so its position means something else here.
        """
        mine = self.state_dict(0)
        if state.get("inputs_hash") and mine["inputs_hash"] and state["inputs_hash"] != mine["inputs_hash"]:
            raise ValueError(f"cannot resume: the saved state streamed other data (inputs {state['inputs_hash'][:12]}, this "
                             f"dataset {mine['inputs_hash'][:12]}); open the database as of the version it trained on")
        for key in ("seed", "seq_len", "batch_size", "n_blocks"):
            if state.get(key) != mine[key]:
                raise ValueError(f"cannot resume: the saved state has {key}={state.get(key)!r}, this dataset {mine[key]!r}")
        self.consumed = int(state["consumed"])
        self.resume_workers = int(state.get("num_workers", 1))

    # -- iteration ----------------------------------------------------------------------------
    def block_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.blocks)))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        return order

    def documents(self, world: World) -> Iterator[tuple[int, np.ndarray]]:
        """(doc_id, token ids) of this stream's documents in stream order, epoch after epoch (EOS not appended)."""
        epochs = itertools.count() if self.epochs is None else range(self.epochs)
        for epoch in epochs:
            for block in world.blocks(self.block_order(epoch)):
                doc_ids, docs = self.blocks.read(block)
                order = np.arange(len(doc_ids))
                if self.shuffle:
                    np.random.default_rng([self.seed, epoch, block]).shuffle(order)
                if not self.blocks.pretokenized:
                    texts = [docs[i] for i in order]
                    encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
                    for i, ids in zip(order, encoded):
                        yield int(doc_ids[i]), np.asarray(ids, dtype=np.int64)
                else:
                    for i in order:
                        yield int(doc_ids[i]), docs[i]

    def samples(self, world: World) -> Iterator[np.ndarray]:
        """This stream's packed sequences of seq_len + 1 tokens (documents joined by EOS).

        With fewer blocks than streams (a small view, many ranks or workers) every stream packs the
        whole view as one stream would and takes every num_streams-th sequence of it: streams still
        never overlap and together hand out every sequence.
        """
        if len(self.blocks) < world.num_streams:
            return itertools.islice(self._packed(World(0, 1, 0, 1)), world.stream, None, world.num_streams)
        return self._packed(world)

    def _packed(self, world: World) -> Iterator[np.ndarray]:
        size = self.seq_len + 1
        eos = np.array([self.eos_id], dtype=np.int64)
        held: list[np.ndarray] = []
        n_held = 0
        for _, ids in self.documents(world):
            held += [ids, eos]
            n_held += len(ids) + 1
            if n_held >= size:
                flat = np.concatenate(held)
                whole = len(flat) // size
                for k in range(whole):
                    yield flat[k * size : (k + 1) * size]
                rest = flat[whole * size :]
                held, n_held = [rest], len(rest)

    def __iter__(self) -> Iterator[torch.Tensor]:
        world = World.current()
        if self.consumed and self.resume_workers not in (None, world.num_workers):
            raise ValueError(
                f"cannot resume with {world.num_workers} DataLoader workers: the state was saved with {self.resume_workers}"
            )
        # A fresh DataLoader asks worker 0 first, but the interrupted one would have asked worker
        # k mod W next (k batches handed out): worker w takes over the stream of worker w + k mod W.
        shift = (self.consumed // self.batch_size) % world.num_workers
        world = World(world.rank, world.world_size, (world.worker + shift) % world.num_workers, world.num_workers)
        skip = world.worker_samples(self.consumed, self.batch_size)
        for sample in itertools.islice(self.samples(world), skip, None):
            yield torch.from_numpy(sample.copy())
