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
from collections.abc import Sequence

import numpy as np
import xxhash

WORD_RE = re.compile(r"\w+")
HASHES = ("xxh3", "sha1")
EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for "no shingle"
_MULT = np.uint64(0x9E3779B97F4A7C15)
_BLOCK = 1 << 14  # shingles per permutation block: 16k x num_perm uint32 values stay in cache


def words(text: str) -> list[str]:
    """The normalised words of a text."""
    return WORD_RE.findall(text.lower())


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


def _ngram_hashes(word_hashes: np.ndarray, ngram: int) -> np.ndarray:
    n = len(word_hashes)
    span = min(ngram, n)
    count = n - span + 1
    acc = word_hashes[:count].copy()
    with np.errstate(over="ignore"):
        for j in range(1, span):
            acc = acc * _MULT + word_hashes[j : j + count]
        acc = acc + np.uint64(span)
        return (_mix64(acc) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def shingle_hash(shingle: Sequence[str]) -> int:
    """The 32-bit `xxh3` hash of one shingle (a tuple of words): datasketch's `hashfunc` for it."""
    word_hashes = np.array([xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in shingle], dtype=np.uint64)
    return int(_ngram_hashes(word_hashes, len(shingle))[0])


def sha1_shingle_hash(shingle: Sequence[str]) -> int:
    """datasketch's default `sha1_hash32` of the shingle's words joined by spaces."""
    return struct.unpack("<I", hashlib.sha1(" ".join(shingle).encode("utf-8")).digest()[:4])[0]


class MinHasher:
    """Computes datasketch-compatible MinHash signatures for batches of documents."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5, hash: str = "xxh3"):  # noqa: A002
        from datasketch import MinHash

        if num_perm < 1 or ngram < 1:
            raise ValueError(f"num_perm ({num_perm}) and ngram ({ngram}) must be positive")
        if hash not in HASHES:
            raise ValueError(f"hash {hash!r} is not one of {', '.join(HASHES)}")
        self.num_perm, self.seed, self.ngram, self.hash = num_perm, seed, ngram, hash
        reference = MinHash(num_perm=num_perm, seed=seed)  # datasketch's own permutations for this seed
        if reference.scheme != "affine32":
            raise ValueError(f"datasketch's default scheme is {reference.scheme!r}; corpusdb computes affine32")
        a, b = reference.permutations
        self.a = a.astype(np.uint32)
        self.b = b.astype(np.uint32)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """32-bit hashes of the shingles of one document (repeats included: they cannot change a minimum)."""
        if self.hash == "sha1":
            return np.array([sha1_shingle_hash(s) for s in shingles(text, self.ngram)], dtype=np.uint32)
        w = words(text)
        if not w:
            return np.empty(0, dtype=np.uint32)
        word_hashes = np.fromiter((xxhash.xxh3_64_intdigest(x.encode("utf-8")) for x in w), dtype=np.uint64, count=len(w))
        return _ngram_hashes(word_hashes, self.ngram)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures; a text without words gets all EMPTY."""
        hashes = [self.shingle_hashes(t) for t in texts]
        return self.signatures_of_hashes(hashes)

    def signatures_of_hashes(self, hashes: list[np.ndarray]) -> np.ndarray:
        """Signatures from each document's 32-bit shingle hashes."""
        out = np.full((self.num_perm, len(hashes)), EMPTY, dtype=np.uint32)
        sizes = np.array([len(h) for h in hashes], dtype=np.int64)
        flat = _fmix32(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.uint32)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        a, b = self.a[:, None], self.b[:, None]
        doc = 0
        while doc < len(hashes):
            # a block of whole documents (or one big document) of about _BLOCK shingles;
            # (num_perm, shingles) keeps the min-reduction over contiguous memory
            last = min(max(doc + 1, int(np.searchsorted(ends, starts[doc] + _BLOCK, side="right"))), len(hashes))
            lo, hi = starts[doc], ends[last - 1]
            if hi > lo:
                with np.errstate(over="ignore"):
                    values = a * flat[None, lo:hi]
                    values += b
                nonempty = np.flatnonzero(sizes[doc:last] > 0)
                out[:, doc + nonempty] = np.minimum.reduceat(values, (starts[doc:last] - lo)[nonempty], axis=1)
            doc = last
        return np.ascontiguousarray(out.T)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before the permutations."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))
