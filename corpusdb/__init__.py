"""corpusdb: a data-centric corpus refinement database for language-model pre-training.

    import corpusdb
    db = corpusdb.open("demo/db")
    db.sql("select source, count(*) from documents group by source").show()
"""

from corpusdb.db import Database, init, open
from corpusdb.errors import (
    CatalogError,
    ConflictError,
    CorpusDBError,
    DatabaseNotFoundError,
    ExportError,
    InputError,
    ModelError,
    QueryError,
    StorageError,
    VersionError,
)

__version__ = "0.1.0"

__all__ = [
    "CatalogError",
    "ConflictError",
    "CorpusDBError",
    "Database",
    "DatabaseNotFoundError",
    "ExportError",
    "InputError",
    "ModelError",
    "QueryError",
    "StorageError",
    "VersionError",
    "init",
    "open",
]
