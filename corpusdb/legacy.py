"""Upgrading a format-1 database (from before committed versions) in place, on first open.

    python -c "import corpusdb; print(corpusdb.open('old/db').version)"   # 1 after the upgrade

Format 1 listed each table's files on every open and kept models and views in `corpusdb.json`.
The upgrade commits version 1 from exactly that state (every part hashed once), then rewrites
`corpusdb.json` as format 2. It reads everything and deletes nothing, so running it twice (two
processes opening at once) is harmless: the second finds version 1 committed.
"""

from __future__ import annotations

import posixpath

from corpusdb.catalog import FORMAT_VERSION, Catalog, save_catalog
from corpusdb.storage import Location, WrittenFile, content_hash
from corpusdb.versions import Snapshot, commit, version_numbers

FOLDERS = {"documents": "documents", "scores": "scores", "signatures": "minhash/signatures", "minhash": "minhash/clusters"}


def upgrade(location: Location, catalog: Catalog) -> Catalog:
    """Commit version 1 from a format-1 database's files and catalog; returns the format-2 catalog."""
    import pyarrow.parquet as pq

    if not version_numbers(location):
        def change(snapshot: Snapshot) -> str:
            for table, folder in FOLDERS.items():
                for path in location.list_files(folder, suffix=".parquet"):
                    data = location.fs.cat_file(path)
                    rows = pq.ParquetFile(location.fs.open(path)).metadata.num_rows
                    snapshot.add_part(table, location, WrittenFile(path, len(data), content_hash(data)), rows)
            for name in catalog.legacy.get("views", {}):
                sql = location.read_bytes("views", f"{name}.sql").decode().strip()
                snapshot.views[name] = {"sql": sql, "created_at": catalog.legacy["views"][name].get("created_at", "")}
            snapshot.models = dict(catalog.legacy.get("models", {}))
            if catalog.legacy.get("minhash"):
                snapshot.settings["minhash"] = catalog.legacy["minhash"]
            for path in location.list_files("_jobs/ingest", suffix=".json"):
                snapshot.inputs[posixpath.basename(path)[: -len(".json")]] = {"url": None}
            return "upgraded from format 1"

        commit(location, "upgrade", change)
    upgraded = Catalog(format_version=FORMAT_VERSION, created_at=catalog.created_at, tables=catalog.tables)
    save_catalog(location, upgraded)
    return upgraded
