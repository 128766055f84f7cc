"""The `quality` annotator: the Gopher, C4 and FineWeb quality rules as numeric columns, thresholds left to SQL.

    corpusdb annotate demo/db quality
    corpusdb sql demo/db "select count(*) from filter_quality()"

Each column is the number a rule of datatrove's filters compares with its threshold, computed the
way datatrove 0.10 computes it on the same text: words are spaCy's blank-English tokens
(datatrove's English word tokenizer), lines and paragraphs split as each filter splits them, the
same punctuation sets. So `filter_quality()` (sql/filter_quality.sql) keeps exactly the documents
that datatrove's `GopherQualityFilter`, `GopherRepetitionFilter`, `C4QualityFilter` and
`FineWebQualityFilter` keep (tests/test_quality.py checks every document of the test corpus against
numbers datatrove computed), and any other threshold is one SQL parameter away instead of a re-run.

Unlike datatrove's C4 filter, nothing edits the text: the C4 columns count what C4's line rules
would keep (sentences of kept lines; whether a kept line says "lorem ipsum" or has a curly
bracket), once as C4 publishes them (`c4_*`: only lines ending in terminal punctuation) and once
as FineWeb runs them (`c4_any_end_*`: lines kept whatever they end with). FineWeb's own pipeline
is a chain whose C4 step does edit the text the FineWeb rules then read: `fineweb_chain_*` are
those rules' numbers on it (the kept lines, citations cut, joined by newlines), which
`filter_quality(chain := true)` reads. A column is NULL where
datatrove's rule has nothing to divide by (an empty document, no words, no lines); the policies
count NULL as failing, as datatrove drops such documents.
"""

from __future__ import annotations

import re
from importlib import metadata

import numpy as np
import pyarrow as pa

from corpusdb.annotations.punctuation import PUNCTUATION_SET, TERMINAL_PUNCTUATION

VERSION = 2  # of these definitions: a change of any number bumps it (and so the annotator's identity); 2: fineweb_chain_*
STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])  # Gopher's
TOP_NGRAMS = (2, 3, 4)  # Gopher: the most frequent n-gram's share of the characters
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)  # Gopher: characters in repeated n-grams
C4_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
C4_MIN_WORDS_PER_LINE = 3
C4_MAX_WORD_LENGTH = 1000
FINEWEB_SHORT_LINE = 30  # characters
FINEWEB_STOP_CHARS = tuple(TERMINAL_PUNCTUATION)
PARAGRAPHS = re.compile(r"\n{2,}")
LINE_RUNS = re.compile("\n+")

COLUMNS: dict[str, str] = {
    "n_words": "BIGINT",  # spaCy words, punctuation included
    # Gopher quality (Rae et al. 2021, table A1; datatrove GopherQualityFilter)
    "gopher_words": "BIGINT",  # words with a character that is not punctuation
    "gopher_mean_word_length": "DOUBLE",  # of those words, in characters
    "gopher_hash_ratio": "DOUBLE",  # '#' per word
    "gopher_ellipsis_ratio": "DOUBLE",  # '...' and '…' per word
    "gopher_bullet_lines_ratio": "DOUBLE",  # lines starting with '•' or '-'
    "gopher_ellipsis_lines_ratio": "DOUBLE",  # lines ending with '...' or '…'
    "gopher_alpha_words_ratio": "DOUBLE",  # words with an alphabetic character
    "gopher_stop_words": "BIGINT",  # distinct stop words present (the, be, to, of, and, that, have, with)
    # Gopher repetition (datatrove GopherRepetitionFilter), fractions of the text's characters
    "gopher_dup_para_frac": "DOUBLE",  # duplicate paragraphs / paragraphs
    "gopher_dup_para_char_frac": "DOUBLE",
    "gopher_dup_line_frac": "DOUBLE",  # duplicate lines / lines
    "gopher_dup_line_char_frac": "DOUBLE",
    **{f"gopher_top_{n}gram_frac": "DOUBLE" for n in TOP_NGRAMS},
    **{f"gopher_dup_{n}gram_frac": "DOUBLE" for n in DUP_NGRAMS},
    # C4 (Raffel et al. 2020; datatrove C4QualityFilter): lines as C4 keeps them
    "c4_sentences": "BIGINT",
    "c4_lorem_ipsum": "BOOLEAN",
    "c4_curly_bracket": "BOOLEAN",
    "c4_any_end_sentences": "BIGINT",  # FineWeb's setting: lines kept whatever they end with
    "c4_any_end_lorem_ipsum": "BOOLEAN",
    "c4_any_end_curly_bracket": "BOOLEAN",
    # FineWeb (Penedo et al. 2024; datatrove FineWebQualityFilter), over non-blank lines
    "fineweb_line_punct_ratio": "DOUBLE",  # lines ending in terminal punctuation
    "fineweb_short_line_ratio": "DOUBLE",  # lines of at most 30 characters
    "fineweb_char_dup_ratio": "DOUBLE",  # characters in duplicate lines / characters that are not newlines
    "fineweb_list_ratio": "DOUBLE",  # newlines per word
    # FineWeb's rules on the text as FineWeb's pipeline hands it to them: C4QualityFilter(filter_no_terminal_punct=
    # False) has removed the lines it drops (too few words, too long a word, javascript, policy) and citations
    "fineweb_chain_line_punct_ratio": "DOUBLE",
    "fineweb_chain_short_line_ratio": "DOUBLE",
    "fineweb_chain_char_dup_ratio": "DOUBLE",
    "fineweb_chain_list_ratio": "DOUBLE",
}
_ARROW = {"BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_()}
SCHEMA = pa.schema([(name, _ARROW[kind]) for name, kind in COLUMNS.items()])

_MOD = np.array([2147483629, 2147483587], dtype=np.uint64)  # two primes below 2**31: 62-bit keys
_BASE = np.array([1000003, 999983], dtype=np.uint64)


class QualityAnnotator:
    """Gopher, C4 and FineWeb rule values per document (see the module docstring)."""

    kind = "quality"
    columns = COLUMNS
    reads = ("text",)

    def __init__(self) -> None:
        self._nlp = None

    def __getstate__(self) -> dict:
        return {}  # spaCy is loaded again in each worker process

    def __setstate__(self, state: dict) -> None:
        self._nlp = None

    def identity(self) -> dict:
        """What the numbers depend on: these definitions and spaCy's tokenizer rules (its release)."""
        return {"definitions": VERSION, "words": "spacy.blank('en') tokenizer", "spacy": _spacy_version()}

    @property
    def nlp(self):
        if self._nlp is None:
            self._nlp = load_spacy()
        return self._nlp

    def annotate(self, batch: pa.Table) -> pa.Table:
        texts = [text or "" for text in batch.column("text").to_pylist()]
        rows = [quality_values(text, doc, self.nlp) for text, doc in zip(texts, self.nlp.tokenizer.pipe(texts, batch_size=64))]
        return pa.table({name: pa.array([row[name] for row in rows], SCHEMA.field(name).type) for name in COLUMNS})


class Tokens:
    """spaCy's tokens of a text as arrays: start offsets, texts, and which are punctuation (no Token objects)."""

    def __init__(self, text: str, doc):
        from spacy.attrs import IDX, IS_PUNCT, LENGTH

        values = doc.to_array([IDX, LENGTH, IS_PUNCT]) if len(doc) else np.zeros((0, 3), dtype=np.uint64)
        self.starts = values[:, 0].astype(np.int64)
        self.is_punct = values[:, 2].astype(bool).tolist()
        self.texts = [text[i:i + n] for i, n in zip(self.starts.tolist(), values[:, 1].tolist())]


def _spacy_version() -> str:
    try:
        return metadata.version("spacy")
    except metadata.PackageNotFoundError:
        return "not installed"


def load_spacy():
    """spaCy's blank English pipeline (rules only, nothing downloaded), as datatrove uses for English words.

    Raises:
        ValueError: spaCy is not installed (naming the extra that brings it).
    """
    try:
        import spacy
    except ImportError as exc:
        raise ValueError("the quality annotator needs spaCy for words: pip install 'corpusdb[annotate]'") from exc
    return spacy.blank("en")


def quality_values(text: str, doc, nlp) -> dict:
    """Every column of `COLUMNS` for one text, `doc` being spaCy's tokenization of it."""
    tokens = Tokens(text, doc)
    words = [w for w in (t.strip() for t in tokens.texts) if w]  # datatrove's strip_strings
    out = _gopher_quality(text, words)
    out.update(_gopher_repetition(text, words))
    out.update(_c4(text, tokens, nlp))
    chain = out.pop("_chain")
    out.update(_fineweb(text, len(words)))
    out.update(_fineweb_chain(*chain))
    return out


def _ratio(count: float, total: float) -> float | None:
    return count / total if total else None


def _gopher_quality(text: str, words: list[str]) -> dict:
    n_words = len(words)
    lengths = [len(w) for w in words if w[0] not in PUNCTUATION_SET or any(ch not in PUNCTUATION_SET for ch in w)]
    lines = text.splitlines()
    return {
        "n_words": n_words,
        "gopher_words": len(lengths),
        "gopher_mean_word_length": sum(lengths) / len(lengths) if lengths else None,
        "gopher_hash_ratio": _ratio(text.count("#"), n_words),
        "gopher_ellipsis_ratio": _ratio(text.count("...") + text.count("…"), n_words),
        "gopher_bullet_lines_ratio": _ratio(sum(s.lstrip().startswith(("•", "-")) for s in lines), len(lines)),
        "gopher_ellipsis_lines_ratio": _ratio(sum(s.rstrip().endswith(("...", "…")) for s in lines), len(lines)),
        "gopher_alpha_words_ratio": _ratio(sum(w.isalpha() or any(c.isalpha() for c in w) for w in words), n_words),
        "gopher_stop_words": len(STOP_WORDS.intersection(words)),
    }


def _duplicates(elements: list[str]) -> tuple[int, int]:
    """(repeated elements, their characters): every occurrence after the first counts."""
    seen: set[str] = set()
    count = chars = 0
    for element in elements:
        if element in seen:
            count += 1
            chars += len(element)
        else:
            seen.add(element)
    return count, chars


def _gopher_repetition(text: str, words: list[str]) -> dict:
    if not text:
        return {name: None for name in COLUMNS if name.startswith(("gopher_dup_", "gopher_top_"))}
    size = len(text)
    paragraphs = PARAGRAPHS.split(text.strip())
    para_dups, para_chars = _duplicates(paragraphs)
    lines = LINE_RUNS.split(text)
    line_dups, line_chars = _duplicates(lines)
    out = {
        "gopher_dup_para_frac": para_dups / len(paragraphs), "gopher_dup_para_char_frac": para_chars / size,
        "gopher_dup_line_frac": line_dups / len(lines), "gopher_dup_line_char_frac": line_chars / size,
    }
    spaced = _Substrings(words, " ")
    for n in TOP_NGRAMS:
        out[f"gopher_top_{n}gram_frac"] = spaced.top_ngram_chars(n) / size
    joined = _Substrings(words, "")
    for n in DUP_NGRAMS:
        out[f"gopher_dup_{n}gram_frac"] = joined.repeated_ngram_chars(n) / size
    return out


class _Substrings:
    """The word n-grams of a document as 62-bit polynomial hashes of their text, `sep` between words.

    An n-gram's key is the hash of exactly the string datatrove compares (`sep.join` of its words),
    so two n-grams share a key when their strings are equal, as datatrove's sets and counters see
    them (with `sep = ""`, also when different words concatenate to the same string); two different
    strings share one with probability about 2**-62.
    """

    def __init__(self, words: list[str], sep: str):
        self.n_words = len(words)
        stream = sep.join(words) + sep
        lengths = np.array(list(map(len, words)), dtype=np.int64) + len(sep)
        self.starts = np.zeros(len(words) + 1, dtype=np.int64)  # word i begins at starts[i] in the stream
        np.cumsum(lengths, out=self.starts[1:])
        self.sep = len(sep)
        codes = np.frombuffer(stream.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64) + 1
        size = len(codes)
        self.prefix, self.inverse = [], []
        for which, mod in enumerate(_MOD):
            powers, inverse = _powers(which, size + 1)
            prefix = np.zeros(size + 1, dtype=np.uint64)
            np.cumsum((codes % mod) * powers[:size] % mod, out=prefix[1:])
            self.prefix.append(prefix % mod)
            self.inverse.append(inverse)

    def keys(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(key, string length) of every n-gram, in order."""
        count = self.n_words - n + 1
        begin = self.starts[:count]
        end = self.starts[n:n + count] - self.sep  # without the separator after its last word
        key = np.zeros(count, dtype=np.uint64)
        for prefix, inverse, mod, shift in zip(self.prefix, self.inverse, _MOD, (np.uint64(32), np.uint64(0))):
            value = (prefix[end] + mod - prefix[begin]) % mod * inverse[begin] % mod
            key |= value << shift
        return key, end - begin

    def top_ngram_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram times its count; the first to appear among equals
        (datatrove's `Counter.most_common(1)`); 0 without n-grams."""
        if self.n_words < n:
            return 0
        keys, lengths = self.keys(n)
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        best = counts.max()
        at = first[counts == best].min()
        return int(lengths[at]) * int(best)

    def repeated_ngram_chars(self, n: int) -> int:
        """datatrove's `find_all_duplicate`: scan n-grams left to right; an n-gram seen before adds its
        characters and the scan jumps past it, otherwise it is remembered and the scan moves one word."""
        if self.n_words < n:
            return 0
        keys, lengths = self.keys(n)
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        candidates = np.flatnonzero(counts[inverse] > 1)  # only n-grams that occur twice can repeat
        seen: set[int] = set()
        position = chars = 0
        for at in candidates.tolist():
            if at < position:
                continue  # jumped over
            key = int(keys[at])
            if key in seen:
                chars += int(lengths[at])
                position = at + n
            else:
                seen.add(key)
                position = at + 1
        return chars


_POWERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # modulus index -> (base**i, base**-i), grown by doubling


def _powers(which: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(base**i % mod, base**-i % mod) for i < at least `count` (products stay below 2**62)."""
    mod, base = _MOD[which], _BASE[which]
    powers, inverse = _POWERS.get(which, (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)))
    while len(powers) < count:
        n = len(powers)
        step = np.uint64(pow(int(base), n, int(mod)))
        back = np.uint64(pow(int(base), (int(mod) - 2) * n, int(mod)))  # base**-n by Fermat
        powers = np.concatenate([powers, powers * step % mod])
        inverse = np.concatenate([inverse, inverse * back % mod])
        _POWERS[which] = (powers, inverse)
    return powers, inverse


def _c4(text: str, tokens: Tokens, nlp) -> dict:
    """C4's line rules in both settings: sentences of kept lines, and the two phrases that drop a page."""
    out = {"c4_sentences": 0, "c4_lorem_ipsum": False, "c4_curly_bracket": False,
           "c4_any_end_sentences": 0, "c4_any_end_lorem_ipsum": False, "c4_any_end_curly_bracket": False}
    kept: list[str] = []  # FineWeb's setting: the lines C4 keeps (citations cut), and their words
    kept_words = 0
    offset = 0
    for raw in text.splitlines(keepends=True):
        line_start = offset
        offset += len(raw)
        body = (raw.splitlines() or [""])[0]  # the line without its ending
        line = body.strip()
        words = line.split()
        if len(words) < C4_MIN_WORDS_PER_LINE or any(len(w) > C4_MAX_WORD_LENGTH for w in words):
            continue
        cited = C4_CITATION.sub("", line)
        lower = cited.lower()
        ends = cited.endswith(C4_END_PUNCTUATION) and not cited.endswith("...")
        prefixes = ("c4_any_end_", "c4_") if ends else ("c4_any_end_",)
        if "lorem ipsum" in lower:
            for prefix in prefixes:
                out[prefix + "lorem_ipsum"] = True
            continue
        if "javascript" in lower:
            continue
        if "{" in cited:
            for prefix in prefixes:
                out[prefix + "curly_bracket"] = True
            continue
        if any(p in lower for p in C4_POLICY):
            continue
        if cited == line:  # the document's tokens of this line are the line's own tokens
            begin = line_start + len(body) - len(body.lstrip())
            lo, hi = np.searchsorted(tokens.starts, [begin, begin + len(line)]).tolist()
            texts, punct = tokens.texts[lo:hi], tokens.is_punct[lo:hi]
        else:  # a citation was cut out: tokenize what is left, as datatrove does
            line_doc = nlp.tokenizer(cited)
            texts, punct = [t.text for t in line_doc], [t.is_punct for t in line_doc]
        n = _sentences(texts, punct)
        for prefix in prefixes:
            out[prefix + "sentences"] += n
        kept.append(cited)
        kept_words += sum(1 for t in texts if t.strip())
    out["_chain"] = (kept, kept_words)
    return out


def _sentences(tokens: list[str], is_punct: list[bool]) -> int:
    """Sentences spaCy's sentencizer finds in these tokens (datatrove's `split_into_sentences` gives at
    least one part): a sentence starts at the first token after a sentence-ending mark that is
    neither punctuation nor such a mark."""
    marks = _sentence_marks()
    count, seen_mark = 1, False
    for token, punct in zip(tokens, is_punct):
        ends = token in marks
        if seen_mark and not punct and not ends:
            count += 1
            seen_mark = False
        elif ends:
            seen_mark = True
    return count


_MARKS: frozenset[str] | None = None


def _sentence_marks() -> frozenset[str]:
    """The sentence-ending marks of spaCy's sentencizer (its defaults, as datatrove's English tokenizer uses)."""
    global _MARKS
    if _MARKS is None:
        from spacy.pipeline import Sentencizer

        _MARKS = frozenset(Sentencizer.default_punct_chars)
    return _MARKS


def _fineweb_chain(kept: list[str], n_words: int) -> dict:
    """FineWeb's rules on the text C4's step leaves: its kept lines joined by newlines, stripped."""
    values = _fineweb("\n".join(kept).strip(), n_words)
    return {name.replace("fineweb_", "fineweb_chain_"): value for name, value in values.items()}


def _fineweb(text: str, n_words: int) -> dict:
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return {"fineweb_line_punct_ratio": None, "fineweb_short_line_ratio": None, "fineweb_char_dup_ratio": None,
                "fineweb_list_ratio": None}
    return {
        "fineweb_line_punct_ratio": sum(line.endswith(FINEWEB_STOP_CHARS) for line in lines) / len(lines),
        "fineweb_short_line_ratio": sum(len(line) <= FINEWEB_SHORT_LINE for line in lines) / len(lines),
        "fineweb_char_dup_ratio": _ratio(_duplicates(lines)[1], len(text.replace("\n", ""))),
        "fineweb_list_ratio": _ratio(text.count("\n"), n_words),
    }
