"""Web-like pages with shared templates, and the exact Jaccard of every pair of them.

Used by tests/test_dedup_quality.py and benchmarks/dedup_quality.py (`--web`): the set on which
near-duplicate detection must stay precise when pages share most of their words with pages that
are not copies of them.

- 30 sites, each with its own navigation, cookie banner (one shared wording, varied per site) and
  footer; an article page is its site's boilerplate around an article of real text, sized so the
  boilerplate is 30-80% of the page's words, plus a per-page "related articles" block.
- Copies of articles: syndicated (the article on another site), truncated, edited (word
  substitutions, insertions, deletions) and updated (a paragraph added), each one family.
- Product pages on 5 shop templates where the template outweighs the product text (a name, a few
  lines of description and specifications), and re-listings of a product with another price.
- `pair_jaccard`: the exact shingle Jaccard of every pair (a sparse product, so 2,000 pages take
  well under a second), as corpusdb's own shingles (`MinHasher.shingle_set`) define it.
"""

from __future__ import annotations

import random

import numpy as np

from corpusdb.dedup.minhash import MinHasher, words
from tests.near_duplicates import word_edits

COOKIE = ("we use cookies and similar technologies to improve your experience on our website to personalise content "
          "and ads to provide social media features and to analyse our traffic by clicking accept you agree to the use "
          "of cookies you can change your preferences at any time in the settings read our privacy policy").split()


def _phrase(rng: random.Random, vocabulary: list[str], n: int) -> list[str]:
    return [rng.choice(vocabulary) for _ in range(n)]


def _site(rng: random.Random, vocabulary: list[str], name: str) -> dict:
    cookie = [w if rng.random() > 0.2 else rng.choice(vocabulary) for w in COOKIE]
    return {
        "name": name,
        "nav": [name, "home"] + _phrase(rng, vocabulary, rng.randint(15, 40)),
        "cookie": [name] + cookie[: rng.randint(25, len(cookie))],
        "footer": _phrase(rng, vocabulary, rng.randint(30, 120)) + ["copyright", name],
    }


def _page(site: dict, body: list[str], related: list[str]) -> str:
    return "\n\n".join(" ".join(block) for block in (site["nav"], site["cookie"], body, ["related"] + related, site["footer"]))


def _edit(tokens: list[str], rng: random.Random, vocabulary: list[str]) -> list[str]:
    return word_edits(list(tokens), max(1, int(len(tokens) * rng.uniform(0.005, 0.06))), rng, vocabulary, 20)


def web_set(texts: list[str], n_articles: int = 600, n_products: int = 500, seed: int = 0) -> list[dict]:
    """Pages as records {text, family, kind}: articles on 30 sites with copies, product pages on 5 shops."""
    rng = random.Random(seed)
    articles = [w for w in (words(t) for t in texts) if len(w) >= 60]
    vocabulary = sorted({w for a in articles[:400] for w in a})
    rng.shuffle(articles)
    sites = [_site(rng, vocabulary, f"site{i}") for i in range(30)]
    titles = [_phrase(rng, vocabulary, rng.randint(3, 6)) for _ in range(200)]
    records: list[dict] = []

    def related() -> list[str]:
        return [w for title in rng.sample(titles, rng.randint(2, 4)) for w in title]

    for family in range(n_articles):
        site = rng.choice(sites)
        boilerplate = len(site["nav"]) + len(site["cookie"]) + len(site["footer"])
        share = rng.uniform(0.3, 0.85)  # of the page's words that are the site's
        length = max(30, int(boilerplate * (1 - share) / share))
        source = articles[family % len(articles)]
        start = rng.randrange(max(1, len(source) - length))
        body = source[start : start + length]
        records.append({"text": _page(site, body, related()), "family": family, "kind": "article"})
        if rng.random() < 0.45:
            kind = rng.choice(("syndicated", "truncated", "edited", "updated"))
            if kind == "syndicated":
                copy_site, copy_body = rng.choice([s for s in sites if s is not site]), body
            elif kind == "truncated":
                copy_site, copy_body = site, body[: max(20, int(len(body) * rng.uniform(0.7, 0.99)))]
            elif kind == "edited":
                copy_site, copy_body = site, _edit(body, rng, vocabulary)
            else:
                other = rng.choice(articles)
                copy_site, copy_body = site, body + other[: rng.randint(5, max(6, len(body) // 8))]
            records.append({"text": _page(copy_site, copy_body, related()), "family": family, "kind": kind})
    shops = [{"header": _phrase(rng, vocabulary, rng.randint(120, 260)), "footer": _phrase(rng, vocabulary, rng.randint(40, 90)),
              "name": f"shop{i}"} for i in range(5)]
    for product in range(n_products):
        family = n_articles + product
        shop = rng.choice(shops)
        name = _phrase(rng, vocabulary, rng.randint(2, 5))
        template = len(shop["header"]) + len(shop["footer"]) + 6
        share = rng.uniform(0.55, 0.88)  # the template outweighs the product text
        description = _phrase(rng, vocabulary, max(10, int(template * (1 - share) / share) - len(name)))
        price = str(rng.randint(5, 500))

        def listing(price: str) -> str:
            return "\n\n".join(" ".join(block) for block in (
                [shop["name"]] + shop["header"], name, description, ["price", price, "eur", "in", "stock"], shop["footer"]))

        records.append({"text": listing(price), "family": family, "kind": "product"})
        if rng.random() < 0.25:
            records.append({"text": listing(str(int(price) + rng.randint(1, 50))), "family": family, "kind": "relisted"})
    seen, unique = set(), []
    for record in records:  # pages with the same words are one document in a database
        key = " ".join(words(record["text"]))
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


def pair_jaccard(texts: list[str], floor: float = 0.5, ngram: int = 5) -> dict[tuple[int, int], float]:
    """{(i, j): exact shingle Jaccard} for every pair i < j at or above `floor`."""
    from scipy import sparse

    hasher = MinHasher(ngram=ngram)
    sets = [hasher.shingle_set(t) for t in texts]
    vocabulary, column = np.unique(np.concatenate(sets), return_inverse=True)
    row = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    incidence = sparse.csr_matrix((np.ones(len(row), np.float32), (row, column)), shape=(len(sets), len(vocabulary)))
    shared = (incidence @ incidence.T).tocoo()
    sizes = np.array([len(s) for s in sets], dtype=np.float64)
    upper = shared.row < shared.col
    i, j, inter = shared.row[upper], shared.col[upper], shared.data[upper].astype(np.float64)
    jaccard = inter / (sizes[i] + sizes[j] - inter)
    keep = jaccard >= floor
    return {(int(a), int(b)): float(s) for a, b, s in zip(i[keep], j[keep], jaccard[keep])}
