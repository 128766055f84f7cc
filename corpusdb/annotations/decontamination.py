"""The `decontamination` annotator: which word n-grams of each document occur in evaluation sets.

    corpusdb decontaminate demo/db --against evals/*.jsonl --ngram 13
    corpusdb sql demo/db "select count(*) from filter_decontaminated(docs := 'dedup')"

GPT-3's 13-gram overlap, as OLMo's, Dolma's and datatrove's decontamination run it: the texts of the
evaluation sets (JSON lines or Parquet with a text field, or plain text files) are cut into words,
every run of `n` consecutive words is an n-gram, and a document is contaminated where one of its
n-grams is one of theirs.

Words are the maximal runs of letters and digits (`[^\\W_]+`, Unicode), lower-cased, with
diacritics removed and every run of digits read as `0` (datatrove's normalisation: punctuation and
spacing never hide a match). An n-gram is keyed by 128 bits: two 64-bit polynomial hashes over the
words' xxh3-128 halves. The index is a sorted array of those keys, 16 bytes an n-gram (10M
evaluation n-grams: 160 MB, memory-mapped by every worker); a lookup is exact up to a 128-bit
collision (about 10M / 2**128 = 3e-32 per training n-gram). An evaluation text of fewer than `n`
words has no n-gram and cannot match: the report counts them (lower `--ngram` for short items).

Columns, per document: `n_ngrams` (its n-grams), `n_matched` (those in the index),
`ngram_fraction` (their share), `covered_bytes` (bytes of the text inside a matched n-gram),
`match_starts` (the byte offset where each matched n-gram begins), and `covered_starts` /
`covered_ends` (the covered bytes as merged ranges [start, end)). Instances (byte spans of a
document) take their share from these: `contamination(docs := 'instances')` (sql/).
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

NORMALISER = "words-v1"  # the identity of the word rules above: change it when they change
WORD = re.compile(r"[^\W_]+")
DIGITS = re.compile(r"\d+")
MULTIPLIERS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))  # odd: no word's hash is lost
CACHE_WORDS = 1 << 20  # words whose hashes a process keeps (Zipf: most words of a batch are among them)
BUILD_CHUNK = 1 << 22  # evaluation n-grams gathered before they are sorted and deduplicated into a run
COLUMNS = {"n_ngrams": "BIGINT", "n_matched": "BIGINT", "ngram_fraction": "DOUBLE", "covered_bytes": "BIGINT",
           "match_starts": "BIGINT[]", "covered_starts": "BIGINT[]", "covered_ends": "BIGINT[]"}
SCHEMA = pa.schema([("n_ngrams", pa.int64()), ("n_matched", pa.int64()), ("ngram_fraction", pa.float64()),
                    ("covered_bytes", pa.int64()), ("match_starts", pa.list_(pa.int64())),
                    ("covered_starts", pa.list_(pa.int64())), ("covered_ends", pa.list_(pa.int64()))])


def normalise(word: str) -> str:
    """A word as n-grams compare it: lower case, no diacritics, every run of digits `0`."""
    word = word.lower()
    if not word.isascii():
        word = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return DIGITS.sub("0", word) if any(c.isdigit() for c in word) else word


class WordHasher:
    """xxh3-128 of normalised words as two uint64 halves, with a cache of the words seen most recently."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int]] = {}

    def __call__(self, raw: list[str]) -> tuple[np.ndarray, np.ndarray]:
        cache = self._cache
        if len(cache) > CACHE_WORDS:
            cache.clear()
        pairs = []
        for word in raw:
            pair = cache.get(word)
            if pair is None:
                value = xxhash.xxh3_128_intdigest(normalise(word).encode())
                pair = cache[word] = (value & 0xFFFFFFFFFFFFFFFF, value >> 64)
            pairs.append(pair)
        if not pairs:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        both = np.array(pairs, dtype=np.uint64)
        return both[:, 0], both[:, 1]


def ngram_keys(texts: Iterable[str | None], n: int, hasher: WordHasher) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
    """The n-grams of a batch of texts: (key halves h1, h2, the text each n-gram is of, the texts' raw words).

    The n-gram starting at word i of a text is keyed by the polynomial hashes of its n words' halves.
    """
    raw = [WORD.findall(text) if text else [] for text in texts]
    counts = np.array([len(r) for r in raw], dtype=np.int64)
    flat = [w for r in raw for w in r]
    lo, hi = hasher(flat)
    total = len(flat)
    if total < n:
        empty = np.zeros(0, np.uint64)
        return empty, empty, np.zeros(0, np.int64), raw
    width = total - n + 1
    h1 = np.zeros(width, np.uint64)
    h2 = np.zeros(width, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # Horner: h = h * M + word, over every window of the batch at once
            h1 = h1 * MULTIPLIERS[0] + lo[k:k + width]
            h2 = h2 * MULTIPLIERS[1] + hi[k:k + width]
    text_of_word = np.repeat(np.arange(len(raw), dtype=np.int64), counts)
    inside = text_of_word[:width] == text_of_word[n - 1:]  # windows that do not run into the next text
    return h1[inside], h2[inside], text_of_word[:width][inside], raw


@dataclass
class IndexReport:
    """What building an index read."""

    n_texts: int = 0
    n_short: int = 0  # texts of fewer than n words: no n-gram
    n_ngrams: int = 0  # distinct n-grams in the index
    n_bytes: int = 0  # of text read


class NgramIndex:
    """The sorted, distinct n-gram keys of the evaluation sets: a (2, N) uint64 array, rows h1 and h2, ascending by (h1, h2)."""

    def __init__(self, keys: np.ndarray, n: int):
        self.keys = keys
        self.n = n
        self.h1, self.h2 = keys[0], keys[1]  # rows: contiguous, also when memory-mapped

    @classmethod
    def build(cls, texts: Iterable[str], n: int, report: IndexReport | None = None, batch: int = 1024) -> NgramIndex:
        """The index of every n-gram of `texts`. Every BUILD_CHUNK n-grams become a sorted, distinct run; runs
        are merged like a binary counter (a run is merged into the one before it once it is at least half its
        size), so each key is sorted O(log N) times, not once per chunk. The last merge holds the two runs,
        their concatenation and its sort order: about 6 times the index's 16 bytes a key at the peak."""
        report = report if report is not None else IndexReport()
        hasher = WordHasher()
        runs: list[np.ndarray] = []
        gathered: list[np.ndarray] = []
        n_gathered = 0

        def add_run() -> None:
            nonlocal gathered, n_gathered
            runs.append(_distinct(np.concatenate(gathered, axis=1)))
            gathered, n_gathered = [], 0
            while len(runs) > 1 and 2 * runs[-1].shape[1] >= runs[-2].shape[1]:
                last = runs.pop()
                runs[-1] = _distinct(np.concatenate([runs[-1], last], axis=1))

        for chunk in _chunks(texts, batch):
            report.n_texts += len(chunk)
            report.n_bytes += sum(len(t.encode()) for t in chunk)
            h1, h2, _, raw = ngram_keys(chunk, n, hasher)
            report.n_short += sum(1 for r in raw if len(r) < n)
            gathered.append(np.stack([h1, h2]))
            n_gathered += len(h1)
            if n_gathered >= BUILD_CHUNK:
                add_run()
        merged = _distinct(np.concatenate([*runs, *gathered], axis=1)) if runs or gathered else np.zeros((2, 0), np.uint64)
        report.n_ngrams = merged.shape[1]
        return cls(merged, n)

    def save(self, path: str | os.PathLike) -> None:
        np.save(path, self.keys, allow_pickle=False)

    @classmethod
    def load(cls, path: str | os.PathLike, n: int) -> NgramIndex:
        return cls(np.load(path, mmap_mode="r", allow_pickle=False), n)

    def content_hash(self) -> str:
        return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(self.keys).tobytes() + str(self.n).encode())

    def __len__(self) -> int:
        return self.keys.shape[1]

    def contains(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Whether each key (h1[i], h2[i]) is in the index (exactly: keys sharing an h1 are all compared)."""
        if not len(self) or not len(h1):
            return np.zeros(len(h1), bool)
        left = np.searchsorted(self.h1, h1, side="left")
        right = np.searchsorted(self.h1, h1, side="right")
        found = np.zeros(len(h1), bool)
        one = right - left == 1
        found[one] = self.h2[left[one]] == h2[one]
        for i in np.flatnonzero(right - left > 1):  # an h1 shared by several keys (about N**2 / 2**65 of them)
            found[i] = bool(np.any(self.h2[left[i]:right[i]] == h2[i]))
        return found


def _distinct(pairs: np.ndarray) -> np.ndarray:
    """The distinct columns of a (2, N) key array, sorted by (h1, h2)."""
    if not pairs.shape[1]:
        return pairs
    pairs = pairs[:, np.lexsort((pairs[1], pairs[0]))]
    keep = np.ones(pairs.shape[1], bool)
    keep[1:] = (pairs[0, 1:] != pairs[0, :-1]) | (pairs[1, 1:] != pairs[1, :-1])
    return np.ascontiguousarray(pairs[:, keep])


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_LOADED: dict[str, NgramIndex] = {}  # per process: the index file each worker maps once


class DecontaminationAnnotator:
    """Per document: its n-grams found in the evaluation sets' index (see the module's text)."""

    kind = "decontamination"
    columns = COLUMNS
    reads = ("text",)

    def __init__(self, index_path: str, n: int, index_hash: str, n_index_ngrams: int):
        self.index_path = str(index_path)
        self.n = n
        self.index_hash = index_hash
        self.n_index_ngrams = n_index_ngrams
        self._hasher = WordHasher()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hasher"}  # the index file is mapped again in each worker

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._hasher = WordHasher()

    def identity(self) -> dict:
        return {"ngram": self.n, "words": NORMALISER, "index_hash": self.index_hash, "index_ngrams": self.n_index_ngrams}

    @property
    def index(self) -> NgramIndex:
        if self.index_path not in _LOADED:
            _LOADED[self.index_path] = NgramIndex.load(self.index_path, self.n)
        return _LOADED[self.index_path]

    def annotate(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        h1, h2, text_of, raw = ngram_keys(texts, self.n, self._hasher)
        found = self.index.contains(h1, h2)
        n_ngrams = np.array([max(len(r) - self.n + 1, 0) for r in raw], dtype=np.int64)
        n_matched = np.bincount(text_of[found], minlength=len(texts)).astype(np.int64)
        # the matched n-grams' word positions within their text
        first_window = np.concatenate([[0], np.cumsum(n_ngrams)[:-1]]) if len(texts) else np.zeros(0, np.int64)
        matched_at = np.flatnonzero(found)
        starts: list[list[int]] = [[] for _ in texts]
        cov_starts: list[list[int]] = [[] for _ in texts]
        cov_ends: list[list[int]] = [[] for _ in texts]
        covered = np.zeros(len(texts), np.int64)
        texts_matched, first = np.unique(text_of[matched_at], return_index=True)  # sorted: windows come in text order
        for t, lo, hi in zip(texts_matched, first, [*first[1:], len(matched_at)]):
            positions = matched_at[lo:hi] - first_window[t]
            spans = [m.span() for m in WORD.finditer(texts[t])]
            byte_of = _byte_offsets(texts[t])
            begin = [int(byte_of[spans[p][0]]) for p in positions]
            end = [int(byte_of[spans[p + self.n - 1][1]]) for p in positions]
            starts[t] = begin
            for b, e in zip(begin, end):  # merge: the n-grams come in text order
                if cov_ends[t] and b <= cov_ends[t][-1]:
                    cov_ends[t][-1] = max(cov_ends[t][-1], e)
                else:
                    cov_starts[t].append(b)
                    cov_ends[t].append(e)
            covered[t] = sum(e - b for b, e in zip(cov_starts[t], cov_ends[t]))
        fraction = np.divide(n_matched, n_ngrams, out=np.zeros(len(texts)), where=n_ngrams > 0)
        return pa.table([pa.array(n_ngrams), pa.array(n_matched), pa.array(fraction), pa.array(covered),
                         pa.array(starts, pa.list_(pa.int64())), pa.array(cov_starts, pa.list_(pa.int64())),
                         pa.array(cov_ends, pa.list_(pa.int64()))], schema=SCHEMA)


def _byte_offsets(text: str) -> np.ndarray:
    """offsets[i] = the UTF-8 byte offset of character i of `text` (and of its end, at len(text))."""
    if text.isascii():
        return np.arange(len(text) + 1, dtype=np.int64)
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    sizes = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def eval_texts(sources: list[str], fields: tuple[str, ...], storage_options: dict) -> Iterator[str]:
    """The texts of evaluation sets: JSON lines or Parquet records (the `fields` joined by a space), or whole text files.

    Raises:
        InputError: a source matches nothing, a record lacks the first field.
    """
    from corpusdb.ingest.readers import ReadOptions, Reader
    from corpusdb.ingest.sources import list_inputs

    inputs, skipped = list_inputs(sources, "auto", storage_options)
    if not inputs:
        from corpusdb.errors import InputError

        raise InputError(f"--against {' '.join(sources)}: no JSON-lines, Parquet or text files among "
                         f"{', '.join(skipped[:3]) or 'them'}; name the evaluation files")
    options = ReadOptions(text_field=fields[0], meta=tuple((f"f{i}", f) for i, f in enumerate(fields[1:])))
    for item in inputs:
        for text, meta in Reader(item, options, storage_options, lambda n: None):
            extra = [meta[f"f{i}"] for i in range(len(fields) - 1) if meta.get(f"f{i}")]
            yield " ".join([text, *extra]) if extra else text


def build_index(sources: list[str], n: int, fields: tuple[str, ...] = ("text",), storage_options: dict | None = None,
                folder: str | None = None, progress: bool | None = None) -> tuple[DecontaminationAnnotator, IndexReport]:
    """Index the evaluation sets' n-grams into a file under `folder` (a new temporary folder by default);
    returns the annotator that reads it and what was read. The caller removes the file's folder."""
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"--ngram must be at least 1, not {n}")
    report = IndexReport()
    texts = tqdm(eval_texts(sources, fields, storage_options or {}), unit="text", desc="index evaluation sets",
                 disable=(not progress) if progress is not None else None, dynamic_ncols=True)
    index = NgramIndex.build(texts, n, report)
    folder = folder or tempfile.mkdtemp(prefix="corpusdb-decontaminate-")
    path = Path(folder) / "ngrams.npy"
    index.save(path)
    return DecontaminationAnnotator(str(path), n, index.content_hash(), len(index)), report


NAME = "decontamination"  # the annotation `filter_decontaminated` and `contamination` read


def run_decontaminate(db, against: list[str], *, ngram: int = 13, fields: tuple[str, ...] = ("text",), replace: bool = False,
                      workers: int | None = None, progress: bool | None = None, commit_seconds: float = 60.0,
                      storage_options: dict | None = None):
    """Annotate `db`'s documents with their n-grams found in the evaluation sets `against` (annotation `decontamination`).

    The index is built from `against` first, in memory and then in a temporary file the workers
    map; its content hash is the annotation's identity, so other evaluation sets or another
    `ngram` under the same name are refused (`replace` recomputes every document). A re-run with
    the same sets annotates only the documents without a row.

    Returns:
        (AnnotateReport, IndexReport)

    Raises:
        InputError: an evaluation source cannot be read, or holds no n-gram at all.
        CatalogError: the annotation holds rows of other evaluation sets (without `replace`).
    """
    import shutil

    from corpusdb.annotations.job import run_annotate
    from corpusdb.errors import InputError

    if not against:
        raise InputError("decontaminate: name the evaluation sets with --against FILE... (JSON lines, Parquet or text)")
    folder = tempfile.mkdtemp(prefix="corpusdb-decontaminate-")
    try:
        annotator, index_report = build_index(list(against), ngram, tuple(fields), storage_options, folder, progress)
        if not annotator.n_index_ngrams:
            raise InputError(f"decontaminate: the {index_report.n_texts:,} evaluation texts hold no {ngram}-gram (each has "
                             f"fewer than {ngram} words); pass a smaller --ngram, or check --field")
        report = run_annotate(db, NAME, annotator, replace=replace, workers=workers, progress=progress,
                              commit_seconds=commit_seconds)
    finally:
        _LOADED.pop(str(Path(folder) / "ngrams.npy"), None)
        shutil.rmtree(folder, ignore_errors=True)
    return report, index_report
