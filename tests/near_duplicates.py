"""Near-duplicate test sets with known true Jaccard, and pairwise precision and recall of a clustering.

Used by tests/test_dedup_quality.py (on the fixture corpus) and benchmarks/dedup_quality.py (on
man pages, /usr/share/doc files and Python sources, against datasketch, rensa and datatrove).

- `hard_set`: real documents plus edited copies: word edits, truncation, a boilerplate header or
  footer shared by many documents, a paragraph inserted or removed, whitespace and case changes
  (alone or two at once). Every document carries its family (the original it came from).
- `template_set`: documents that share a template (the same words) plus unique words, pairwise far
  below the threshold: what used to chain through one large LSH bucket.
- `evaluate`: true shingle Jaccard of every pair that matters (pairs within a family and pairs a
  clustering merged) and, per clustering, precision, recall per Jaccard range and merges far below.
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations

import numpy as np

from corpusdb.dedup.minhash import MinHasher, words

BOILERPLATE = [
    "This page is part of the documentation project. Copyright the authors and contributors. Permission is granted "
    "to copy, distribute and modify this document under the terms of the license, version two or any later version.",
    "Home | Products | Downloads | Documentation | Community | Blog | About us | Contact | Privacy policy | Terms of use "
    "| Sign in | Register | Search this site",
    "Report bugs to the issue tracker of the project. Please include the version you are using, the steps to reproduce "
    "the problem and what you expected to happen instead of what happened.",
    "Generated automatically from the source files; do not edit by hand. Changes will be overwritten the next time the "
    "build runs. See the contributing guide for how to change this file.",
]
KINDS = ("words", "truncate", "boilerplate", "paragraph", "format")
RANGES = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.01)]


def word_edits(tokens: list[str], n_edits: int, rng: random.Random, vocabulary: list[str], min_words: int) -> list[str]:
    """`n_edits` random substitutions, insertions and deletions (no deletion below `min_words`), in place."""
    for _ in range(n_edits):
        position = rng.randrange(len(tokens))
        operation = rng.choice(("substitute", "insert", "delete"))
        if operation == "substitute":
            tokens[position] = rng.choice(vocabulary)
        elif operation == "insert":
            tokens.insert(position, rng.choice(vocabulary))
        elif len(tokens) > min_words:
            del tokens[position]
    return tokens


def _edit(text: str, kind: str, rng: random.Random, vocabulary: list[str], others: list[str]) -> str:
    tokens = text.split()
    if kind == "words":  # substitutions, insertions and deletions: about 1-J of the shingles change
        target = rng.uniform(0.55, 0.98)
        n_edits = max(1, int(len(tokens) * (1 - target) / (5 * (1 + target))))
        return " ".join(word_edits(tokens, n_edits, rng, vocabulary, 10))
    if kind == "truncate":
        return " ".join(tokens[: max(10, int(len(tokens) * rng.uniform(0.55, 0.98)))])
    if kind == "boilerplate":
        block = rng.choice(BOILERPLATE)
        return f"{block}\n\n{text}" if rng.random() < 0.5 else f"{text}\n\n{block}"
    if kind == "paragraph":
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        if len(paragraphs) > 2 and rng.random() < 0.5:
            del paragraphs[rng.randrange(len(paragraphs))]
        else:
            donor = rng.choice(others).split()
            start = rng.randrange(max(1, len(donor) - 60))
            paragraphs.insert(rng.randrange(len(paragraphs) + 1), " ".join(donor[start : start + rng.randint(15, 60)]))
        return "\n\n".join(paragraphs)
    # format: case and whitespace only (the shingles do not change)
    return ("\n  " if rng.random() < 0.5 else "  ").join(w.upper() if rng.random() < 0.2 else w for w in tokens)


def pieces(texts: list[str], min_words: int = 80) -> list[str]:
    """Texts cut into runs of whole paragraphs of at least `min_words` words (more originals from a
    small corpus)."""
    out = []
    for text in texts:
        current, count = [], 0
        for paragraph in text.split("\n\n"):
            current.append(paragraph)
            count += len(words(paragraph))
            if count >= min_words:
                out.append("\n\n".join(current))
                current, count = [], 0
    return out


def hard_set(texts: list[str], n_originals: int, seed: int = 0, min_words: int = 80,
             max_words: int = 5000) -> list[dict]:
    """Originals (of min..max words) and edited copies: one copy each, a second for a third of them."""
    rng = random.Random(seed)
    candidates = [t for t in texts if min_words <= len(words(t)) <= max_words]
    originals = rng.sample(candidates, min(n_originals, len(candidates)))
    vocabulary = sorted({w for t in originals[:300] for w in t.split()})
    records = []
    for family, text in enumerate(originals):
        records.append({"text": text, "family": family, "kind": "original"})
        for _ in range(2 if rng.random() < 1 / 3 else 1):
            kinds = [rng.choice(KINDS) for _ in range(1 if rng.random() < 0.7 else 2)]
            copy = text
            for kind in kinds:
                copy = _edit(copy, kind, rng, vocabulary, originals)
            records.append({"text": copy, "family": family, "kind": "+".join(kinds)})
    seen, unique = set(), []
    for record in records:  # exact copies (a format edit) are one document in a database
        key = " ".join(words(record["text"]))
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


def template_set(n: int, shared: int = 66, unique: int = 34, seed: int = 0) -> list[str]:
    """`n` documents: the same `shared` words of a licence text, then `unique` words of their own."""
    rng = random.Random(seed)
    template = (
        "This program is free software: you can redistribute it and/or modify it under the terms of the GNU General "
        "Public License as published by the Free Software Foundation, either version 3 of the License, or (at your "
        "option) any later version. This program is distributed in the hope that it will be useful, but WITHOUT ANY "
        "WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE. See the "
        "GNU General Public License for more details."
    ).split()
    template = (template * (shared // len(template) + 1))[:shared]
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "gu", "ba", "xe", "zo", "fi", "wu", "ye"]
    docs = []
    for _ in range(n):
        own = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(unique)]
        docs.append(" ".join(template + own))
    return docs


class TrueJaccard:
    """Exact 5-gram shingle Jaccard of documents, cached per text."""

    def __init__(self, texts: list[str], ngram: int = 5):
        hasher = MinHasher(ngram=ngram)
        self.sets = [hasher.shingle_set(t) for t in texts]

    def __call__(self, i: int, j: int) -> float:
        a, b = self.sets[i], self.sets[j]
        if not len(a) and not len(b):
            return 1.0
        shared = len(np.intersect1d(a, b, assume_unique=True))
        return shared / (len(a) + len(b) - shared)


def co_clustered(labels: list) -> set[tuple[int, int]]:
    """Pairs (i < j) of positions with the same cluster label."""
    groups = defaultdict(list)
    for position, label in enumerate(labels):
        groups[label].append(position)
    return {pair for members in groups.values() for pair in combinations(members, 2)}


def evaluate(records: list[dict], clusterings: dict[str, list], threshold: float = 0.8,
             jaccard: TrueJaccard | None = None) -> dict[str, dict]:
    """Per clustering (name -> a cluster label per record): pairwise precision (merged pairs with true
    Jaccard >= threshold), recall per Jaccard range over the reference pairs (pairs within a family
    and every pair any clustering merged), merged pairs below 0.5 and the largest cluster."""
    jaccard = jaccard or TrueJaccard([r["text"] for r in records])
    merged = {name: co_clustered(labels) for name, labels in clusterings.items()}
    families = defaultdict(list)
    for position, record in enumerate(records):
        families[record["family"]].append(position)
    reference = {pair for members in families.values() for pair in combinations(members, 2)}
    for pairs in merged.values():
        reference |= pairs
    similarity = {pair: jaccard(*pair) for pair in reference}
    results = {}
    for name, pairs in merged.items():
        good = sum(similarity[p] >= threshold for p in pairs)
        recall = {}
        for lo, hi in RANGES:
            inside = [p for p, s in similarity.items() if lo <= s < hi]
            recall[(lo, hi)] = (sum(p in pairs for p in inside), len(inside))
        true_pairs = [p for p, s in similarity.items() if s >= threshold]
        sizes = defaultdict(int)
        for label in clusterings[name]:
            sizes[label] += 1
        results[name] = {
            "precision": good / len(pairs) if pairs else 1.0,
            "recall": sum(p in pairs for p in true_pairs) / max(len(true_pairs), 1),
            "recall_085": _fraction(pairs, [p for p, s in similarity.items() if s >= 0.85]),
            "recall_by_range": recall,
            "merged_below_05": sum(similarity[p] < 0.5 for p in pairs),
            "merged_pairs": len(pairs),
            "largest_cluster": max(sizes.values()) if sizes else 0,
        }
    return results


def _fraction(found: set, wanted: list) -> float:
    return sum(p in found for p in wanted) / max(len(wanted), 1)
