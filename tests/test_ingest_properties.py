"""Invariants of ingestion over random inputs (Hypothesis), and the demo corpus builder."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corpusdb
from corpusdb.text import doc_id, normalize
from corpusdb.ingest import demo_corpus
from corpusdb.ingest.docids import DocIdSet
from tests.conftest import rows

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(st.lists(texts, max_size=12), min_size=1, max_size=4),
    num_shards=st.integers(1, 3),
    part_kb=st.sampled_from([0.05, 1.0, 64.0]),
)
def test_any_split_into_files_shards_and_parts_gives_each_distinct_text_once(files, num_shards, part_kb):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i, docs in enumerate(files):
            (folder / f"{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
        db = corpusdb.init(f"{tmp}/db")
        for shard in range(num_shards):
            db.ingest([str(folder)], source="s", shard=(shard, num_shards), part_size_mb=part_kb / 1024, progress=False)
        got = rows(db, "doc_id, text")
        want = {normalize(t) for docs in files for t in docs}
        assert sorted(text for _, text in got) == sorted(want)
        assert all(doc_id(text) == doc for doc, text in got)
        # Ingesting again is a no-op.
        before = got
        db.ingest([str(folder)], source="s", part_size_mb=part_kb / 1024, progress=False)
        assert rows(db, "doc_id, text") == before


@given(st.lists(st.integers(-(2**63), 2**63 - 1)), st.lists(st.integers(-(2**63), 2**63 - 1)))
def test_docid_set_membership_matches_a_python_set(added, queried):
    import numpy as np

    ids = DocIdSet()
    for start in range(0, len(added), 3):
        ids.add(np.array(added[start : start + 3], dtype=np.int64))
    mask = ids.contains(np.array(queried, dtype=np.int64))
    assert mask.tolist() == [q in set(added) for q in queried]


def test_demo_corpus_builds_jsonl_from_real_text(tmp_path):
    written = demo_corpus.build(str(tmp_path), ["python-code"], max_kb=30, seed=1, plain=False)
    path = tmp_path / "python-code.jsonl.gz"
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert records and all(r["title"].endswith(".py") and r["text"] for r in records)
    assert written["python-code"] == sum(len(r["text"].encode()) for r in records) <= 30 * 1024
    again = tmp_path / "again"
    demo_corpus.build(str(again), ["python-code"], max_kb=30, seed=1, plain=False)
    assert gzip.decompress((again / "python-code.jsonl.gz").read_bytes()) == gzip.decompress(path.read_bytes())


ws_texts = st.lists(st.sampled_from(["a", "\u00e9", " ", "\t", "\r", "\n", "\x1c", "\u3000", "e\u0301", "\x0b", "Z",
                                     "\u00a0", "\x85", "\u00c5", "A\u030a", "\u212b", "\u1100\u1161", "\u02ff", "\u0300"]),
                   max_size=12).map("".join)


def test_code_points_below_u0300_are_nfc_alone_and_in_pairs():
    """normalize_texts leaves a text whose UTF-8 bytes are all below 0xCC (code points below U+0300) out of NFC: no
    such code point changes under NFC, combines with a neighbour, or reorders (every pair is checked)."""
    import unicodedata

    chars = [chr(c) for c in range(0x300)]
    assert all(unicodedata.combining(c) == 0 and unicodedata.normalize("NFC", c) == c for c in chars)
    assert all(unicodedata.is_normalized("NFC", a + b) for a in chars for b in chars)
    assert max(chr(0x2FF).encode()) < 0xCC <= chr(0x300).encode()[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(texts, ws_texts), max_size=30), st.integers(0, 3))
def test_vectorised_normalize_and_doc_ids_are_the_per_text_ones(values, skip):
    import pyarrow as pa

    from corpusdb.text import doc_ids, normalize_texts

    array = pa.array(values, pa.string()).slice(min(skip, len(values)))
    normalized = normalize_texts(array)
    assert normalized.to_pylist() == [normalize(v) for v in values[min(skip, len(values)):]]
    assert doc_ids(normalized).tolist() == [doc_id(normalize(v)) for v in values[min(skip, len(values)):]]


json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | texts,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
                           max_leaves=6)
json_lines = st.one_of(
    st.builds(lambda text, title, extra: json.dumps({"text": text, "title": title, "x": extra}),
              st.one_of(texts, texts, json_values), st.one_of(texts, json_values), json_values),
    st.builds(lambda text: json.dumps({"text": text}), ws_texts),
    st.sampled_from(["", "   ", '{"text": oops}', "[1, 2]", '{"text": "a"} {"text": "b"}', '{"text": "n", "x": NaN}',
                     '{"text": "NaN, Infinity and -Infinity are words here"}', '{"text": "Infinity", "x": -Infinity}',
                     '{"title": "no text"}', '{"text": "a", "text": "dup"}', '{"text": "caf\\ud800"}', '"just a string"']),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(json_lines, max_size=25), st.booleans(), st.sampled_from(["title=title", "title=title,line=@line", ""]))
def test_jsonl_blocks_read_as_each_line_alone(lines, crlf, meta):
    """Arrow's block parse gives exactly the records, bad records and messages of reading line by line."""
    from corpusdb.ingest.jsonl import records
    from corpusdb.ingest.readers import Reader, ReadOptions
    from corpusdb.ingest.sources import list_inputs

    data = ("\r\n" if crlf else "\n").join(lines).encode()
    pairs = tuple(tuple(item.split("=")) for item in meta.split(",") if item)
    options = ReadOptions(meta=pairs, on_error="skip")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data)
        [item], _ = list_inputs([str(path)], "auto", {})
        reader = Reader(item, options, {}, lambda n: None)
        got = list(reader)
        bad = []
        paths = [p for _, p in pairs if not p.startswith("@")]
        found = list(records([line + b"\n" for line in data.split(b"\n")][:-1] + [data.split(b"\n")[-1]] * bool(
            data.split(b"\n")[-1]), 1, "text", paths, lambda *args: bad.append(args)))
        expected = [(text, {c: (str(n) if p == "@line" else reader._meta(record, n)[c]) for c, p in pairs})
                    for n, text, record in found]
        assert got == expected
        assert sum(reader.bad.counts.values()) == len(bad)


@given(st.lists(st.sampled_from([b"a", b" ", b"\n", b"\t", b"\r", b"\x0b", b'{"text": "x"}', b"\n\n"]), max_size=16).map(b"".join))
def test_a_block_has_a_blank_line_where_one_of_its_lines_is_only_whitespace(data):
    from ingest.jsonl import has_blank_line

    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()  # the newline ends the last line; nothing follows it
    assert has_blank_line(data) == any(not line.strip(b" \t\r\x0b\x0c") for line in lines)
