"""Ingest's text normalisation over Arrow (`corpusdb.text.normalize_texts`) vs the per-text loop it must equal.

    python benchmarks/normalize_texts.py              # 300,000 texts of each kind
    python benchmarks/normalize_texts.py --n 1000000

Every ingested text is normalised (NFC, Unix line endings, no whitespace at either end) before it
is hashed into its doc_id. The baseline is the plain loop a user writes over a batch that comes as
Arrow: each text to Python, `normalize(text)`, and the texts back to Arrow. `normalize_texts` finds the texts that may change
with vectorised checks and sends only those through `normalize`; ASCII texts with whitespace at an
end are trimmed by Arrow, and a text whose bytes are all below 0xCC (code points below U+0300: every
Latin-1 and Latin Extended letter) is already NFC. Kinds of text: ASCII words, a seventh of them
with a space or newline at an end (the synthetic corpus of `scale.py`); Latin-script text with
accented letters in every text (French, German, Spanish, ...); the same with a combining accent
(U+0301) in a tenth of them, which must go through NFC. Both sides give the same texts (checked);
the best of --repeat runs counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from corpusdb.text import normalize, normalize_texts  # noqa: E402

WORDS = ["corpus", "teacher", "reference", "token", "policy", "parquet", "instance", "selection", "distillation"]
LATIN = ["été", "déjà", "über", "Straße", "niño", "façade", "crème", "Ångström", "œuvre", "naïve", "smörgåsbord"]


def texts(kind: str, n: int, rng: np.random.Generator) -> list[str]:
    pool = WORDS if kind == "ascii" else WORDS + LATIN
    words = np.array(pool)[rng.integers(0, len(pool), size=(n, 30))]
    out = [" ".join(row) for row in words.tolist()]
    if kind == "ascii":
        out = [t + (" " if i % 14 == 0 else "\n" if i % 14 == 7 else "") for i, t in enumerate(out)]
    else:  # every text holds a non-ASCII letter
        out = [t + " " + LATIN[i % len(LATIN)] for i, t in enumerate(out)]
    if kind == "combining":
        out = [t + " cafe\u0301" if i % 10 == 0 else t for i, t in enumerate(out)]
    return out


def best(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.process_time()
        result = fn()
        times.append(time.process_time() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300_000, help="texts of each kind [default: 300000]")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'texts':<34}{'per-text loop':>14}{'normalize_texts':>17}{'ratio':>8}{'changed':>10}")
    for kind in ("ascii", "latin", "combining"):
        values = texts(kind, args.n, rng)
        array = pa.array(values, pa.string())
        loop_s, expected = best(lambda: pa.array([normalize(text) for text in array.to_pylist()], pa.string()),  # noqa: B023
                                args.repeat)
        ours_s, got = best(lambda: normalize_texts(array), args.repeat)  # noqa: B023
        if not got.equals(expected):
            raise SystemExit(f"{kind}: normalize_texts differs from the per-text loop")
        changed = sum(a != b for a, b in zip(values, expected.to_pylist()))
        print(f"{kind + f' ({args.n:,})':<34}{loop_s:>12.3f} s{ours_s:>15.3f} s{ours_s / loop_s:>7.2f}x{changed:>10,}")


if __name__ == "__main__":
    main()
