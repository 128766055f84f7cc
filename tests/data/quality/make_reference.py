"""Write datatrove's own numbers and decisions for the test corpus: the reference tests/test_quality.py checks against.

    python -m venv .venv-datatrove && .venv-datatrove/bin/pip install 'datatrove[processing]==0.10.1' 'xxhash<4'
    .venv-datatrove/bin/python tests/data/quality/make_reference.py    # -> tests/data/quality/datatrove_reference.jsonl

Runs in a separate environment (datatrove is a peer, never a dependency of corpusdb). For every
document of tests/data/corpus/*.jsonl and tests/data/quality/cases.jsonl, normalised as ingest
stores it, it records the verdict of each of datatrove's filters (True, or its reason) and the
number each rule compares, computed with datatrove's own helpers in the order its filters do; and
FineWeb's pipeline as a chain (Gopher repetition, Gopher quality, C4 with any line ending, FineWeb,
each on the text the one before left: `fineweb_chain`, True or the first filter that drops it), with
the FineWeb numbers on the C4-edited text (`fineweb_chain_*`, where C4 keeps the document).
"""

import json
import sys
import unicodedata
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_duplicates, find_top_duplicate, get_n_grams
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION, split_into_sentences, split_into_words

HERE = Path(__file__).resolve().parent
FILES = sorted((HERE.parent / "corpus").glob("*.jsonl")) + [HERE / "cases.jsonl"]


def normalize(text: str) -> str:
    """corpusdb.text.normalize: what ingest stores."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def ratio(a, b):
    return a / b if b else None


def values(text: str) -> dict:
    words = split_into_words(text)
    n_words = len(words)
    non_symbol = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = text.splitlines()
    out = {
        "n_words": n_words,
        "gopher_words": len(non_symbol),
        "gopher_mean_word_length": float(np.mean([len(w) for w in non_symbol])) if non_symbol else None,
        "gopher_hash_ratio": ratio(text.count("#"), n_words),
        "gopher_ellipsis_ratio": ratio(text.count("...") + text.count("…"), n_words),
        "gopher_bullet_lines_ratio": ratio(sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines), len(lines)),
        "gopher_ellipsis_lines_ratio": ratio(sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines), len(lines)),
        "gopher_alpha_words_ratio": ratio(sum(any(c.isalpha() for c in w) for w in words), n_words),
        "gopher_stop_words": len(set(STOP_WORDS).intersection(set(words))),
    }
    repetition = GopherRepetitionFilter()
    if text:
        paragraphs = repetition.paragraph_exp.split(text.strip())
        d, c = find_duplicates(paragraphs)
        out["gopher_dup_para_frac"], out["gopher_dup_para_char_frac"] = d / len(paragraphs), c / len(text)
        split = repetition._line_splitter.split(text)
        d, c = find_duplicates(split)
        out["gopher_dup_line_frac"], out["gopher_dup_line_char_frac"] = d / len(split), c / len(text)
        for n in (2, 3, 4):
            grams = get_n_grams(words, n)
            out[f"gopher_top_{n}gram_frac"] = find_top_duplicate(grams) / len(text) if grams else 0.0
        for n in range(5, 11):
            out[f"gopher_dup_{n}gram_frac"] = find_all_duplicate(words, n) / len(text)
    for terminal, prefix in ((True, "c4_"), (False, "c4_any_end_")):
        sentences, lorem, bracket = 0, False, False
        for line in text.splitlines():  # C4QualityFilter.filter's loop, without its early returns
            line = line.strip()
            words_in_line = line.split()
            if any(len(word) > 1000 for word in words_in_line):
                continue
            line = CITATION_REGEX.sub("", line)
            if terminal and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                continue
            if len(words_in_line) < 3:
                continue
            lower = line.lower()
            if "lorem ipsum" in lower:
                lorem = True
                continue
            if "javascript" in lower:
                continue
            if "{" in line:
                bracket = True
                continue
            if any(p in lower for p in POLICY_SUBSTRINGS):
                continue
            sentences += len(split_into_sentences(line))
        out[prefix + "sentences"], out[prefix + "lorem_ipsum"], out[prefix + "curly_bracket"] = sentences, lorem, bracket
    out.update(fineweb_values(text, words, "fineweb_"))
    # FineWeb's pipeline: its C4 step (filter_no_terminal_punct=False) edits the text the FineWeb rules then read
    doc = Document(text=text, id="x")
    if C4QualityFilter(filter_no_terminal_punct=False).filter(doc) is True:
        out.update(fineweb_values(doc.text, split_into_words(doc.text), "fineweb_chain_"))
    return out


def fineweb_values(text: str, words: list[str], prefix: str) -> dict:
    """The numbers FineWebQualityFilter.filter compares, on `text`."""
    kept = [line for line in text.split("\n") if line.strip() != ""]
    if not kept:
        return {}
    return {
        prefix + "line_punct_ratio": sum(1 for line in kept if line.endswith(tuple(TERMINAL_PUNCTUATION))) / len(kept),
        prefix + "short_line_ratio": sum(1 for line in kept if len(line) <= 30) / len(kept),
        prefix + "char_dup_ratio": ratio(find_duplicates(kept)[1], len(text.replace("\n", ""))),
        prefix + "list_ratio": ratio(text.count("\n"), len(words)),
    }


def verdicts(text: str) -> dict:
    filters = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
               "c4": C4QualityFilter(), "c4_fineweb": C4QualityFilter(filter_no_terminal_punct=False),
               "fineweb": FineWebQualityFilter()}
    out = {}
    for name, step in filters.items():
        try:
            result = step.filter(Document(text=text, id="x"))
        except ZeroDivisionError:  # datatrove divides by the word count before checking it is not 0
            result = (False, "ZeroDivisionError")
        out[name] = True if result is True else result[1]
    # FineWeb's pipeline as a chain: each filter reads the document as the one before left it
    doc = Document(text=text, id="x")
    out["fineweb_chain"] = True
    for name, step in (("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter()),
                       ("c4_fineweb", C4QualityFilter(filter_no_terminal_punct=False)), ("fineweb", FineWebQualityFilter())):
        try:
            result = step.filter(doc)
        except ZeroDivisionError:
            result = (False, "ZeroDivisionError")
        if result is not True:
            out["fineweb_chain"] = f"{name}: {result[1]}"
            break
    return out


def main() -> None:
    out = HERE / "datatrove_reference.jsonl"
    with out.open("w") as sink:
        for path in FILES:
            for number, line in enumerate(path.read_bytes().decode("utf-8").split("\n")):
                if not line.strip():
                    continue
                text = normalize(json.loads(line)["text"])
                record = {"file": str(path.relative_to(HERE.parent)), "line": number, "values": values(text),
                          "verdicts": verdicts(text)}
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
