"""corpusdb: a data-centric corpus refinement database for language-model pre-training.

    import corpusdb
    db = corpusdb.open("demo/db")
    db.sql("select source, count(*) from documents group by source").show()
"""

from corpusdb.api import Database, View, init, open
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

from corpusdb.release import VERSION as __version__

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
    "View",
    "__version__",
    "init",
    "open",
]
