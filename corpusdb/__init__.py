"""corpusdb: a data-centric corpus refinement database for language-model pre-training.

    import corpusdb
    db = corpusdb.open("demo/db")
    db.sql("select source, count(*) from documents group by source").show()
"""

from corpusdb.db import Database, init, open
from corpusdb.errors import (
    CatalogError,
    CorpusDBError,
    DatabaseNotFoundError,
    InputError,
    ModelError,
    QueryError,
    StorageError,
)

__version__ = "0.1.0"

__all__ = [
    "CatalogError",
    "CorpusDBError",
    "Database",
    "DatabaseNotFoundError",
    "InputError",
    "ModelError",
    "QueryError",
    "StorageError",
    "init",
    "open",
]
