"""The training adapter: exact sharding over ranks and workers, packing, exact resume, curriculum order."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.train import ViewDataset, World
from tests.conftest import CORPUS, ingest_per_source


@pytest.fixture(scope="module")
def stream_db(tmp_path_factory, tiny_models):
    """The fixture corpus with near-duplicate clusters and two scores, plus a tokenizer."""
    folder = tmp_path_factory.mktemp("stream")
    db = corpusdb.init(str(folder / "db"))
    ingest_per_source(db, CORPUS)
    db.minhash(workers=1, progress=False)
    db.score(str(tiny_models["llama"]), "reference", progress=False)
    return db, str(tiny_models["gpt2"]), str(folder / "cache")


@pytest.fixture(scope="module")
def dataset(stream_db):
    db, tokenizer, cache = stream_db
    return ViewDataset(db, "dedup", tokenizer, seq_len=32, block_mb=0.01, epochs=1, cache_dir=cache)


@settings(max_examples=25, deadline=None)
@given(world_size=st.integers(1, 3), num_workers=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), shuffle=st.booleans())
def test_streams_partition_the_view(dataset, stream_db, world_size, num_workers, seed, shuffle):
    db = stream_db[0]
    dataset.seed, dataset.shuffle = seed, shuffle
    expected = sorted(i for (i,) in db.sql("select doc_id from dedup").fetchall())
    seen: list[int] = []
    for rank in range(world_size):
        for worker in range(num_workers):
            seen += [doc for doc, _ in dataset.documents(World(rank, world_size, worker, num_workers))]
    assert sorted(seen) == expected  # every document once: no overlap, no gap


def test_packing_joins_documents_with_eos_into_whole_sequences(dataset):
    dataset.seed, dataset.shuffle = 3, True
    world = World(1, 2, 0, 2)
    tokens = np.concatenate([np.append(ids, dataset.eos_id) for _, ids in dataset.documents(world)])
    samples = list(dataset.samples(world))
    assert all(len(s) == 33 for s in samples) and len(samples) == len(tokens) // 33
    assert np.array_equal(np.concatenate(samples), tokens[: len(samples) * 33])


def test_shuffles_differ_by_seed_and_epoch(stream_db):
    db, tokenizer, cache = stream_db
    ds = ViewDataset(db, "dedup", tokenizer, seq_len=32, block_mb=0.01, epochs=2, seed=1, cache_dir=cache)
    docs = [d for d, _ in ds.documents(World())]
    half = len(docs) // 2
    assert sorted(docs[:half]) == sorted(docs[half:]) and docs[:half] != docs[half:]
    ds.seed = 2
    assert [d for d, _ in ds.documents(World())][:half] != docs[:half]


def test_curriculum_order_is_kept_without_shuffle(stream_db):
    db, tokenizer, cache = stream_db
    db.create_view("easy_first", "select * from curriculum('reference', stages := 3)")
    ds = ViewDataset(db, "easy_first", tokenizer, seq_len=32, shuffle=False, epochs=1, block_mb=0.01, cache_dir=cache)
    order = [i for (i,) in db.sql("select doc_id from easy_first").fetchall()]
    assert [d for d, _ in ds.documents(World())] == order
    # with two workers each stream keeps the order of its blocks
    rank_of = {d: r for r, d in enumerate(order)}
    for worker in (0, 1):
        ranks = [rank_of[d] for d, _ in ds.documents(World(0, 1, worker, 2))]
        assert ranks == sorted(ranks)


def test_pretokenized_export_streams_the_same_samples(stream_db, tmp_path):
    db, tokenizer, cache = stream_db
    text = ViewDataset(db, "dedup", tokenizer, seq_len=32, block_mb=0.01, epochs=1, seed=5, cache_dir=cache)
    # streamed from the parts, and exported in the same (place) order
    assert text.text_kind == "documents"
    db.view("select doc_id, source, text, n_bytes from (select * from dedup)").export(
        str(tmp_path / "tokens"), format="tokens", tokenizer=tokenizer, part_size_mb=0.01)
    tokens = ViewDataset.from_export(str(tmp_path / "tokens"), seq_len=32, epochs=1, seed=5)
    assert len(tokens.blocks) == len(text.blocks)
    for world in (World(), World(0, 1, 1, 2)):
        a, b = list(text.samples(world)), list(tokens.samples(world))
        assert len(a) == len(b) > 10 and all(np.array_equal(x, y) for x, y in zip(a, b))


RESUME = """
import sys, torch, corpusdb
from corpusdb.train import ViewDataset
db = corpusdb.open(sys.argv[1])
ds = ViewDataset(db, "dedup", sys.argv[2], seq_len=32, batch_size=4, block_mb=0.01, seed=11, cache_dir=sys.argv[3])
ds.load_state_dict(torch.load(sys.argv[4]))
loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=int(sys.argv[5]))
torch.save([b for b, _ in zip(loader, range(int(sys.argv[6])))], sys.argv[7])
"""


@pytest.mark.parametrize("num_workers,world_size", [(0, 1), (2, 1), (3, 2)])
def test_resume_in_a_fresh_process_gives_the_uninterrupted_batches(stream_db, tmp_path, monkeypatch, num_workers, world_size):
    db, tokenizer, cache = stream_db
    for rank in range(world_size):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        ds = ViewDataset(db, "dedup", tokenizer, seq_len=32, batch_size=4, block_mb=0.01, seed=11, cache_dir=cache)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=num_workers)
        uninterrupted = [b for b, _ in zip(loader, range(12))]  # cycles past the end of an epoch (epochs=None)
        state = ds.state_dict(consumed=5 * 4, num_workers=num_workers)
        torch.save(state, tmp_path / "state.pt")
        result = subprocess.run(
            [sys.executable, "-c", RESUME, db.url, tokenizer, cache, str(tmp_path / "state.pt"), str(num_workers), "7",
             str(tmp_path / "resumed.pt")],
            capture_output=True, text=True, env={**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size)},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        resumed = torch.load(tmp_path / "resumed.pt")
        assert len(resumed) == 7 and all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted[5:]))


def test_bad_settings(stream_db):
    db, tokenizer, cache = stream_db
    ds = ViewDataset(db, "dedup", tokenizer, seq_len=32, block_mb=0.01, cache_dir=cache)
    with pytest.raises(ValueError, match="cannot resume: the saved state has seq_len=64, this dataset 32"):
        ds.load_state_dict({**ds.state_dict(0), "seq_len": 64})
    with pytest.raises(ValueError, match="consumed samples 5 is not a multiple of the batch size 4"):
        World(0, 1, 0, 2).worker_samples(5, 4)
    with pytest.raises(ValueError, match="a tokenizer is needed to stream text"):
        ViewDataset(db, "dedup", None, seq_len=32, cache_dir=cache)


def test_a_view_with_fewer_blocks_than_workers_streams_every_sequence_once(stream_db):
    """One block, two DataLoader workers (the README's snippet on a small view): each worker takes every
    other sequence of the one stream the view makes, so nothing is lost or repeated."""
    db, tokenizer, cache = stream_db
    big = ViewDataset(db, "dedup", tokenizer, seq_len=32, block_mb=100, cache_dir=cache, epochs=1)
    assert len(big.blocks) == 1
    whole = [s.tolist() for s in big.samples(World(0, 1, 0, 1))]
    halves = [[s.tolist() for s in big.samples(World(0, 1, worker, 2))] for worker in (0, 1)]
    assert len(whole) > 4 and halves == [whole[0::2], whole[1::2]]
    loaded = [row.tolist() for batch in torch.utils.data.DataLoader(big, batch_size=4, num_workers=2) for row in batch]
    assert sorted(loaded) == sorted(whole)


def test_an_empty_view_is_an_error_not_an_endless_stream(stream_db, tmp_path):
    db, tokenizer, cache = stream_db
    empty = "select * from documents where n_bytes > 1e12"
    with pytest.raises(ValueError, match=rf"^view '{re.escape(empty)}' has no documents at version {db.version}: nothing to "
                                         "stream; check the view"):
        ViewDataset(db, empty, tokenizer, seq_len=32, cache_dir=cache)
    db.view(empty).export(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=f"^export {re.escape(str(tmp_path / 'empty'))} has no documents"):
        ViewDataset.from_export(str(tmp_path / "empty"), tokenizer, seq_len=32)
