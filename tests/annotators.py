"""User annotator functions the tests run through `corpusdb annotate --fn tests.annotators:NAME`."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def shouting(batch: pa.Table) -> dict:
    """Share of letters that are upper case, and whether the text has an exclamation mark (a dict of columns)."""
    texts = batch.column("text").to_pylist()
    letters = [sum(c.isalpha() for c in t) for t in texts]
    upper = [sum(c.isupper() for c in t) for t in texts]
    return {"upper_share": [u / n if n else None for u, n in zip(upper, letters)], "exclaims": ["!" in t for t in texts]}


def source_length(batch: pa.Table) -> pa.Table:
    """A pyarrow Table: the length of the source's name (reads a column other than text)."""
    return pa.table({"source_length": pc.utf8_length(batch.column("source"))})


def too_few_rows(batch: pa.Table) -> dict:
    return {"x": [1] * max(batch.num_rows - 1, 0)}


def raises(batch: pa.Table) -> dict:
    raise RuntimeError("the classifier is not loaded")


def all_none(batch: pa.Table) -> dict:
    return {"label": [None] * batch.num_rows}


def process_id(batch: pa.Table) -> dict:
    """The id of the process that annotated each document (which worker ran the batch), and the text's length."""
    import os

    return {"pid": pa.array([os.getpid()] * batch.num_rows, pa.int64()), "length": pc.utf8_length(batch.column("text"))}
