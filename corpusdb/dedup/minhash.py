"""MinHash signatures of many documents at once, bit-identical to `datasketch.MinHash`.

    python -c "from corpusdb.dedup.minhash import MinHasher; print(MinHasher().signatures(['a b c d e f'])[0][:4])"

A document's shingles are its word n-grams: words are runs of Unicode word characters of the
lower-cased text, so case, punctuation and whitespace changes do not change them; a document with
fewer than n words is one shingle. Each shingle gets a 32-bit hash:

- `xxh3` (default): every word is hashed once with xxh3-64 and an n-gram's hash is a polynomial
  of its word hashes, finalised with the splitmix64 mixer: vectorised in numpy, no per-shingle
  Python call. `shingle_hash` computes the same value for one shingle, so
  `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)` fed the same shingles gives the
  same signature.
- `sha1`: datasketch's default `sha1_hash32` of the shingle's words joined by spaces, to match
  signatures made with plain `MinHash().update(shingle.encode())`; slower.

The permutation step is datasketch's default "affine32" scheme (MurmurHash3 finalizer, then
a*h + b modulo 2^32, with datasketch's own permutation parameters for the seed), applied to all
shingles of a batch of documents as one numpy array and min-reduced per document.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator, Sequence
from itertools import chain

import numpy as np
import xxhash

WORD_RE = re.compile(r"\w+")
HASHES = ("xxh3", "sha1")
EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for "no shingle"
_MULT = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFFFFFF)
_BLOCK = 1 << 13  # shingles per permutation block: 8k x num_perm uint32 values (4 MB at 128) stay in cache
SLICE_CHARS = 1 << 20  # longer documents are read in slices of about this many characters (bounds memory)
# ASCII text: lower-case letters, keep [a-z0-9_], every other byte separates words (= WORD_RE on ASCII)
_ASCII_WORDS = bytes(
    (c + 32 if 65 <= c <= 90 else c) if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95) else 32
    for c in range(256)
)


def words(text: str) -> list[str]:
    """The normalised words of a text."""
    return WORD_RE.findall(text.lower())


def word_bytes(text: str) -> list[bytes]:
    """The normalised words of a text, UTF-8 encoded: `[w.encode() for w in words(text)]`, faster on ASCII."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORDS).split()
    return [w.encode("utf-8") for w in WORD_RE.findall(text.lower())]


def text_slices(text: str, size: int = SLICE_CHARS) -> Iterator[str]:
    """`text` cut after a space or newline about every `size` characters, so no word is cut and each
    slice lower-cases as it would inside the whole text (the cut is never inside a word or its context).
    A generator: one slice at a time is a copy."""
    start = 0
    while len(text) - start > size:
        cut = max(text.rfind(" ", start, start + size), text.rfind("\n", start, start + size))
        if cut < 0:  # no break in a whole slice: take up to the next one
            cut = min(c for c in (text.find(" ", start + size), text.find("\n", start + size), len(text) - 1) if c >= 0)
        yield text[start : cut + 1]
        start = cut + 1
    if start < len(text) or not text:
        yield text[start:]


def shingles(text: str, ngram: int) -> list[tuple[str, ...]]:
    """The word n-grams of a text (one shingle of all words if it has fewer than n)."""
    w = words(text)
    if len(w) <= ngram:
        return [tuple(w)] if w else []
    return [tuple(w[i : i + ngram]) for i in range(len(w) - ngram + 1)]


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _ngram_hashes64(word_hashes: np.ndarray, ngram: int) -> np.ndarray:
    """64-bit hashes of every run of `ngram` consecutive word hashes (one run of all if there are fewer)."""
    n = len(word_hashes)
    span = min(ngram, n)
    count = n - span + 1
    acc = word_hashes[:count].copy()
    with np.errstate(over="ignore"):
        for j in range(1, span):
            acc *= _MULT
            acc += word_hashes[j : j + count]
        acc += np.uint64(span)
        return _mix64(acc)


def _ngram_hashes(word_hashes: np.ndarray, ngram: int) -> np.ndarray:
    return (_ngram_hashes64(word_hashes, ngram) & _LOW32).astype(np.uint32)


def _hash_words(chunks: list[list[bytes]]) -> np.ndarray:
    return np.fromiter(map(xxhash.xxh3_64_intdigest, chain.from_iterable(chunks)), dtype=np.uint64)


def _batch_ngram_hashes64(word_hashes: np.ndarray, counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes of all documents in order, shingles per document) from the documents' word
    hashes laid end to end: one vectorised pass instead of one per document."""
    sizes = np.where(counts >= ngram, counts - ngram + 1, (counts > 0).astype(np.int64))
    total = len(word_hashes)
    if total >= ngram:
        full = _ngram_hashes64(word_hashes, ngram)  # windows starting at every position; keep those inside a document
        starts = np.cumsum(counts) - counts
        relative = np.arange(len(full), dtype=np.int64) - np.repeat(starts, counts)[: len(full)]
        inside = relative <= np.repeat(counts - ngram, counts)[: len(full)]
        long_hashes = full[inside]
    else:
        long_hashes = np.empty(0, dtype=np.uint64)
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    if not len(short):
        return long_hashes, sizes
    out = np.empty(int(sizes.sum()), dtype=np.uint64)
    is_long = np.repeat(counts >= ngram, sizes)
    out[is_long] = long_hashes
    starts = np.cumsum(counts) - counts
    out[~is_long] = [_ngram_hashes64(word_hashes[starts[d] : starts[d] + counts[d]], ngram)[0] for d in short]
    return out, sizes


def shingle_hash(shingle: Sequence[str]) -> int:
    """The 32-bit `xxh3` hash of one shingle (a tuple of words): datasketch's `hashfunc` for it."""
    word_hashes = np.array([xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in shingle], dtype=np.uint64)
    return int(_ngram_hashes(word_hashes, len(shingle))[0])


def _sha1_32(data: bytes) -> int:
    """datasketch's `sha1_hash32`: the first 4 bytes of the SHA-1, little-endian."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def sha1_shingle_hash(shingle: Sequence[str]) -> int:
    """datasketch's default `sha1_hash32` of the shingle's words joined by spaces."""
    return _sha1_32(" ".join(shingle).encode("utf-8"))


def _sha1_hashes(word_list: list[bytes], ngram: int) -> np.ndarray:
    if len(word_list) < ngram:
        grams = [b" ".join(word_list)] if word_list else []
    else:
        grams = [b" ".join(word_list[i : i + ngram]) for i in range(len(word_list) - ngram + 1)]
    return np.array([_sha1_32(g) for g in grams], dtype=np.uint32)


class MinHasher:
    """Computes datasketch-compatible MinHash signatures for batches of documents.

    Memory does not grow with the longest document: texts longer than `slice_chars` are read in
    slices (the last n-1 words carried over, so the shingles are the same) and their signature is
    the minimum of the slices' signatures, which is what MinHash of the whole text is.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5, hash: str = "xxh3",  # noqa: A002
                 slice_chars: int = SLICE_CHARS):
        from datasketch import MinHash

        if num_perm < 1 or ngram < 1:
            raise ValueError(f"num_perm ({num_perm}) and ngram ({ngram}) must be positive")
        if hash not in HASHES:
            raise ValueError(f"hash {hash!r} is not one of {', '.join(HASHES)}")
        if slice_chars < 1:
            raise ValueError(f"slice_chars ({slice_chars}) must be positive")
        self.num_perm, self.seed, self.ngram, self.hash, self.slice_chars = num_perm, seed, ngram, hash, slice_chars
        reference = MinHash(num_perm=num_perm, seed=seed)  # datasketch's own permutations for this seed
        if reference.scheme != "affine32":
            raise ValueError(f"datasketch's default scheme is {reference.scheme!r}; corpusdb computes affine32")
        a, b = reference.permutations
        self.a = a.astype(np.uint32)[:, None]
        self.b = b.astype(np.uint32)[:, None]

    def shingle_hashes(self, text: str) -> np.ndarray:
        """32-bit hashes of the shingles of one document (repeats included: they cannot change a minimum)."""
        return np.concatenate(list(self._slice_hashes(text)) or [np.empty(0, dtype=np.uint32)])

    def shingle_set(self, text: str) -> np.ndarray:
        """The distinct 64-bit hashes of a document's shingles, sorted: its exact shingle set (for Jaccard)."""
        parts = [np.unique(h) for h in self._slice_hashes(text, bits=64)]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)

    def shingle_sets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`shingle_set` of every text: texts up to `slice_chars` in vectorised passes of about
        `slice_chars` characters in all (so memory stays that of one slice), longer ones sliced."""
        out: list[np.ndarray] = [np.empty(0, dtype=np.uint64)] * len(texts)
        batch: list[int] = []
        size = 0
        for i, text in enumerate(texts):
            if len(text) > self.slice_chars:
                out[i] = self.shingle_set(text)
                continue
            if batch and size + len(text) > self.slice_chars:
                self._shingle_batch(texts, batch, out)
                batch, size = [], 0
            batch.append(i)
            size += len(text)
        if batch:
            self._shingle_batch(texts, batch, out)
        return out

    def _shingle_batch(self, texts: Sequence[str], short: list[int], out: list[np.ndarray]) -> None:
        chunks = [word_bytes(texts[i]) for i in short]
        counts = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
        flat, sizes = _batch_ngram_hashes64(_hash_words(chunks), counts, self.ngram)
        doc = np.repeat(np.arange(len(short)), sizes)
        order = np.lexsort((flat, doc))
        flat, doc = flat[order], doc[order]
        first = np.ones(len(flat), dtype=bool)
        first[1:] = (flat[1:] != flat[:-1]) | (doc[1:] != doc[:-1])
        flat, doc = flat[first], doc[first]
        bounds = np.searchsorted(doc, np.arange(len(short) + 1))
        for k, i in enumerate(short):
            out[i] = flat[bounds[k] : bounds[k + 1]]

    def _slice_hashes(self, text: str, bits: int = 32):
        """Shingle hashes of `text`, one array per slice; shingles spanning a cut come with the later slice."""
        carry: list[bytes] = []
        carried_hashes = np.empty(0, dtype=np.uint64)
        emitted = False
        keep = self.ngram - 1
        for piece in text_slices(text, self.slice_chars):
            new = word_bytes(piece)
            if not new:
                continue
            if self.hash == "sha1" and bits == 32:
                window = carry + new
                if len(window) >= self.ngram:
                    yield _sha1_hashes(window, self.ngram)
                    emitted = True
                carry = window[-keep:] if keep else []
                continue
            window_hashes = np.concatenate([carried_hashes, _hash_words([new])])
            if len(window_hashes) >= self.ngram:
                full = _ngram_hashes64(window_hashes, self.ngram)
                yield full if bits == 64 else (full & _LOW32).astype(np.uint32)
                emitted = True
            carried_hashes = window_hashes[max(len(window_hashes) - keep, 0) :] if keep else carried_hashes[:0]
            carry = (carry + new)[-keep:] if keep else []
        if not emitted and (len(carry) if self.hash == "sha1" and bits == 32 else len(carried_hashes)):
            # fewer than n words in all: one shingle of all of them
            if self.hash == "sha1" and bits == 32:
                yield _sha1_hashes(carry, self.ngram)
            else:
                full = _ngram_hashes64(carried_hashes, self.ngram)
                yield full if bits == 64 else (full & _LOW32).astype(np.uint32)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures; a text without words gets all EMPTY."""
        out = np.full((self.num_perm, len(texts)), EMPTY, dtype=np.uint32)
        long = [i for i, t in enumerate(texts) if len(t) > self.slice_chars]
        for i in long:
            for hashes in self._slice_hashes(texts[i]):
                np.minimum(out[:, i], self._permuted_min(hashes), out=out[:, i])
        rest = np.setdiff1d(np.arange(len(texts)), long) if long else np.arange(len(texts))
        if len(rest):
            batch = [texts[i] for i in rest] if long else texts
            if self.hash == "sha1":
                per_doc = [self.shingle_hashes(t) for t in batch]
                flat = np.concatenate(per_doc) if per_doc else np.empty(0, dtype=np.uint32)
                sizes = np.array([len(h) for h in per_doc], dtype=np.int64)
            else:
                chunks = [word_bytes(t) for t in batch]
                counts = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
                flat64, sizes = _batch_ngram_hashes64(_hash_words(chunks), counts, self.ngram)
                flat = (flat64 & _LOW32).astype(np.uint32)
            out[:, rest] = self._signatures(flat, sizes)
        return np.ascontiguousarray(out.T)

    def signatures_of_hashes(self, hashes: list[np.ndarray]) -> np.ndarray:
        """Signatures from each document's 32-bit shingle hashes."""
        sizes = np.array([len(h) for h in hashes], dtype=np.int64)
        flat = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint32)
        return np.ascontiguousarray(self._signatures(flat, sizes).T)

    def _permuted_min(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm,) minimum of every permutation over the shingle hashes, in blocks of _BLOCK."""
        return self._min_mixed(_fmix32(hashes))

    def _min_mixed(self, mixed: np.ndarray) -> np.ndarray:
        best = np.full(self.num_perm, EMPTY, dtype=np.uint32)
        for lo in range(0, len(mixed), _BLOCK):
            with np.errstate(over="ignore"):
                values = self.a * mixed[None, lo : lo + _BLOCK]
                values += self.b
            np.minimum(best, values.min(axis=1), out=best)
        return best

    def _signatures(self, flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """(num_perm, documents) signatures from the documents' shingle hashes laid end to end."""
        out = np.full((self.num_perm, len(sizes)), EMPTY, dtype=np.uint32)
        flat = _fmix32(flat)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        doc = 0
        while doc < len(sizes):
            if sizes[doc] > _BLOCK:  # one document of many shingles: its own blocks
                out[:, doc] = self._min_mixed(flat[starts[doc] : ends[doc]])
                doc += 1
                continue
            # a block of whole documents of about _BLOCK shingles; (num_perm, shingles) keeps the
            # min-reduction over contiguous memory
            last = min(max(doc + 1, int(np.searchsorted(ends, starts[doc] + _BLOCK, side="right"))), len(sizes))
            lo, hi = starts[doc], ends[last - 1]
            if hi > lo:
                with np.errstate(over="ignore"):
                    values = self.a * flat[None, lo:hi]
                    values += self.b
                nonempty = np.flatnonzero(sizes[doc:last] > 0)
                out[:, doc + nonempty] = np.minimum.reduceat(values, (starts[doc:last] - lo)[nonempty], axis=1)
            doc = last
        return out


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before the permutations."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))
