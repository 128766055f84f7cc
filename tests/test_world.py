"""Shards and launcher placement: the arithmetic every job shares."""

from __future__ import annotations

import pytest

from corpusdb.world import World, launched, parse_shard


def test_parse_shard_takes_text_tuples_and_none():
    assert parse_shard(None) == (0, 1)
    assert parse_shard(" 2 / 5 ") == (2, 5)
    assert parse_shard((0, 3)) == (0, 3)


@pytest.mark.parametrize("shard, message", [
    ("2/2", "shard 2/2 is out of range"), ("0/0", "shard 0/0 is out of range"), ("-1/2", "is not i/n"), ("1", "is not i/n"),
])
def test_parse_shard_names_the_bad_value(shard, message):
    with pytest.raises(ValueError, match=message):
        parse_shard(shard)


def test_launched_reads_torchruns_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched() == (3, 4, 1)
    assert World.current() == World(3, 4, 0, 1)  # no process group, no DataLoader worker


@pytest.mark.parametrize("env, message", [
    ({"RANK": "x"}, "RANK='x' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2, WORLD_SIZE=2, LOCAL_RANK=0 is not a valid placement"),
])
def test_launched_refuses_a_placement_that_cannot_be(monkeypatch, env, message):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        launched()
