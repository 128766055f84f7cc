"""Annotators: what turns a batch of documents into annotation columns, and how one is chosen by name.

    corpusdb annotate demo/db quality                          # built-in: Gopher, C4, FineWeb rule values
    corpusdb annotate demo/db language                         # built-in: fastText language id
    corpusdb annotate demo/db shouting --fn mymodule:shouting  # any Python function

An annotator has a `kind`, the document columns it `reads` (None: all of them), its output
`columns` (DuckDB types; None until its first batch), an `identity()` (JSON: what its numbers
depend on) and `annotate(batch)`, which takes a pyarrow Table of documents (doc_id first) and
returns a Table of exactly as many rows, in order. Annotators are pickled to worker processes,
where they load their models again.

A user function (`--fn module:function` or `path/to/file.py:function`) gets the pyarrow Table and
may return a pyarrow Table or RecordBatch, a dict of columns, or a polars or pandas DataFrame. Its
identity is its name and the content hash of its module's source file, so editing the function
and annotating more documents under the same name is refused (`--replace` recomputes all).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from corpusdb.errors import InputError
from corpusdb.storage import content_hash

BUILTINS = ("quality", "language", "classifier", "fasttext")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def annotator_for(name: str, *, annotator: str | None = None, fn: str | Callable | None = None, model: str | None = None,
                  label: str | None = None, max_length: int | None = None, threads: int | None = None):
    """The annotator a job of annotation NAME runs: `fn` (a user function), else the built-in `annotator`,
    else the built-in named NAME.

    Raises:
        ValueError: none of these applies, or options that do not go together.
    """
    if fn is not None and annotator is not None:
        raise ValueError("pass either --fn (your function) or --annotator (a built-in), not both")
    kind = annotator or name
    if kind not in ("classifier", "fasttext") and label is not None:
        raise ValueError("--label is an option of the classifier and fasttext annotators (--annotator classifier|fasttext "
                         "--model PATH)")
    if kind != "classifier" and (max_length or threads):
        raise ValueError("--max-length and --threads are options of the classifier annotator (--annotator classifier "
                         "--model PATH)")
    if fn is not None:
        if model:
            raise ValueError("--model is an option of the language and classifier annotators, not of --fn")
        return PythonAnnotator(fn)
    if kind not in BUILTINS:
        raise ValueError(f"no built-in annotator named {kind!r} (built-ins: {', '.join(BUILTINS)}); pass --annotator "
                         f"{'|'.join(BUILTINS)}, --fn module:function for your own, or --from URL to import columns computed elsewhere")
    if kind == "classifier":
        from corpusdb.annotations.classifier import ClassifierAnnotator

        return ClassifierAnnotator(model, label_name=label, max_length=max_length, threads=threads)
    if kind == "fasttext":
        from corpusdb.annotations.fasttext_classifier import FastTextAnnotator

        return FastTextAnnotator(model, label_name=label)
    if kind == "quality":
        if model:
            raise ValueError("--model is an option of the language annotator; the quality annotator has no model")
        from corpusdb.annotations.quality import QualityAnnotator

        return QualityAnnotator()
    from corpusdb.annotations.language import LanguageAnnotator

    return LanguageAnnotator(model)


class PythonAnnotator:
    """A user function over batches of documents (pyarrow in, columns out)."""

    kind = "python"
    reads = None
    columns = None

    def __init__(self, fn: str | Callable):
        if callable(fn):
            self.spec = f"{fn.__module__}:{fn.__qualname__}"
            self._function: Callable | None = fn
        else:
            self.spec = str(fn)
            self._function = None
            self.function  # noqa: B018 - a bad spec fails here, before any work
        self._identity: dict | None = None

    def __getstate__(self) -> dict:
        state = {"spec": self.spec, "_identity": self._identity, "_function": None}
        if self._function is not None and _importable(self._function):
            state["_function"] = self._function  # pickled by reference; resolved again from spec otherwise
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def picklable(self) -> bool:
        """Whether worker processes can run it (a lambda or a function of an interactive session cannot)."""
        return self._function is None or _importable(self._function)

    @property
    def function(self) -> Callable:
        if self._function is None:
            self._function = resolve(self.spec)
        return self._function

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = {"function": self.spec, "source_hash": _source_hash(self.function)}
        return self._identity

    def annotate(self, batch: pa.Table) -> pa.Table:
        try:
            result = self.function(batch)
        except Exception as exc:  # the user's code: one line, with where it failed
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise InputError(f"annotator {self.spec} raised {type(exc).__name__}: {exc} "
                             f"(at {Path(where.filename).name}:{where.lineno}); fix the function and re-run: "
                             "parts already committed are kept") from exc
        return as_columns(result, batch, self.spec)


def _importable(function: Callable) -> bool:
    """Whether pickle can send `function` by reference (a module-level function, not a lambda)."""
    import pickle

    try:
        pickle.dumps(function)
        return True
    except Exception:  # noqa: BLE001 - any pickling failure means: resolve it again from its spec
        return False


def resolve(spec: str) -> Callable:
    """The function `module:function` (a module importable from here or the current folder) or `file.py:function`.

    Raises:
        ValueError: a malformed spec, a module that cannot be imported, a missing or non-callable name.
    """
    module_name, _, qualname = spec.rpartition(":")
    if not module_name or not qualname:
        raise ValueError(f"--fn {spec!r} must be module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ValueError(f"--fn {spec!r}: {path} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"corpusdb_annotator_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())  # `corpusdb annotate ... --fn mymodule:f` run next to mymodule.py
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--fn {spec!r}: cannot import {module_name} ({exc}); run from the folder that holds it, "
                         "or pass path/to/file.py:function") from exc
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"--fn {spec!r}: {module_name} has no {qualname}")
    if not callable(target):
        raise ValueError(f"--fn {spec!r}: {qualname} is not a function")
    return target


def _source_hash(function: Callable) -> str:
    """Content hash of the source file that defines `function` (its own source, or its code, without a file)."""
    try:
        path = inspect.getsourcefile(function)
        if path and Path(path).is_file():
            return content_hash(Path(path).read_bytes())
        return content_hash(inspect.getsource(function).encode())
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        return content_hash(code.co_code + repr(code.co_consts).encode()) if code else "unknown"


def as_columns(result, batch: pa.Table, spec: str) -> pa.Table:
    """A user function's result as a pyarrow Table of annotation columns for `batch`'s rows.

    Raises:
        InputError: not a table of columns, the wrong number of rows, a doc_id column that is not
            the batch's, or a column name that is not a plain SQL identifier.
    """
    table = _to_table(result, spec)
    if table.num_rows != batch.num_rows:
        raise InputError(f"annotator {spec} returned {table.num_rows} rows for a batch of {batch.num_rows} documents; "
                         "return one row per document, in the batch's order")
    if "doc_id" in table.column_names:
        if not table.column("doc_id").equals(batch.column("doc_id")):
            raise InputError(f"annotator {spec} returned a doc_id column that is not the batch's doc_ids in order; "
                             "leave doc_id out (rows are matched by position) or return it unchanged")
        table = table.drop_columns(["doc_id"])
    if not table.num_columns:
        raise InputError(f"annotator {spec} returned no columns; return at least one column besides doc_id")
    for name in table.column_names:
        if not COLUMN_RE.match(name):
            raise InputError(f"annotator {spec} returned a column named {name!r}; use letters, digits and '_' "
                             "(starting with a letter or '_'), so SQL can name it")
    if len(set(name.lower() for name in table.column_names)) != table.num_columns:
        raise InputError(f"annotator {spec} returned columns that differ only in case: {', '.join(table.column_names)}")
    return table


def _to_table(result, spec: str) -> pa.Table:
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if isinstance(result, dict):
        try:
            return pa.table(result)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InputError(f"annotator {spec} returned a dict that is not columns of equal length: {exc}") from exc
    if hasattr(result, "to_arrow"):  # polars
        return result.to_arrow()
    if type(result).__module__.startswith("pandas"):
        return pa.Table.from_pandas(result, preserve_index=False)
    raise InputError(f"annotator {spec} returned {type(result).__name__}; return a pyarrow Table, a dict of columns, "
                     "or a polars or pandas DataFrame")
