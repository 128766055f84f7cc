"""The demo corpus's figures, worded as the README quotes them (`make demo` prints them and records them).

    python -m corpusdb.ingest.demo_figures demo/db --write results/demo_figures.json

`tests/test_demo.py` checks that the README quotes the recorded figures, so a `make demo` whose
corpus changed (other Debian package versions, a new source) shows up as a diff of
`results/demo_figures.json` and a failing test until the README says what the demo does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def figures(db) -> dict:
    """Documents, text bytes, sources and near-duplicates (documents beyond one per MinHash cluster) of `db`."""
    documents, n_bytes, sources = db.sql("select count(*), coalesce(sum(n_bytes), 0), count(distinct source) from documents"
                                         ).fetchall()[0]
    near = db.sql("select count(*) filter (where doc_id <> cluster_id) from minhash").fetchall()[0][0]
    return {"documents": documents, "bytes": int(n_bytes), "sources": sources, "near_duplicates": near}


def sentence(f: dict) -> str:
    """The README's wording of the figures."""
    return (f"the demo corpus is {f['documents']:,} documents, {f['bytes'] / 1e6:.1f} MB of text in {f['sources']} "
            f"sources, of which {f['near_duplicates']:,} are near-duplicates of another")


def main(argv: list[str] | None = None) -> None:
    import corpusdb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the demo database (after ingest and `corpusdb minhash`)")
    parser.add_argument("--write", type=Path, help="also record the figures here as JSON")
    args = parser.parse_args(argv)
    found = figures(corpusdb.open(args.db))
    print(f"Figures the README quotes: {sentence(found)}.")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
