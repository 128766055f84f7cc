"""Errors corpusdb raises on purpose: each names the problem and the fix in one line.

    python -c "import corpusdb; corpusdb.open('/nonexistent')"   # -> DatabaseNotFoundError
"""


class CorpusDBError(Exception):
    """Base class of every error corpusdb raises on purpose."""


class DatabaseNotFoundError(CorpusDBError):
    """The URL holds no corpusdb database (no corpusdb.json)."""


class CatalogError(CorpusDBError):
    """corpusdb.json is unreadable or of a format version this corpusdb cannot read."""


class StorageError(CorpusDBError):
    """A URL cannot be reached, listed, read or written (missing, denied, unreachable)."""


class InputError(CorpusDBError):
    """An input record or file is malformed: bad JSON, missing field, not UTF-8, wrong type."""


class QueryError(CorpusDBError):
    """A SQL statement failed: unknown table, view or column, or a syntax error."""


class ModelError(CorpusDBError):
    """A scoring model cannot be found or loaded, is not a causal LM, or its tokenizer is unusable."""


class VersionError(CorpusDBError):
    """A version does not exist, cannot be read, or a commit could not be made."""


class ConflictError(CorpusDBError):
    """A job running at the same time made a change this one cannot be applied on top of."""


class ExportError(CorpusDBError):
    """An export target holds files corpusdb did not write, or an export folder is malformed."""
