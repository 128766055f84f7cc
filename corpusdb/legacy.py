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
from corpusdb.storage import Location
from corpusdb.versions import Snapshot, commit, existing_part, version_numbers


def upgrade(location: Location, catalog: Catalog) -> Catalog:
    """Commit version 1 from a format-1 database's files and catalog; returns the format-2 catalog."""
    from corpusdb.tables import TABLE_FOLDERS

    if not version_numbers(location):
        def change(snapshot: Snapshot) -> str:
            for table, (folder, _) in TABLE_FOLDERS.items():
                for path in location.list_files(folder, suffix=".parquet"):
                    written, rows, fields = existing_part(location, path)
                    snapshot.add_part(table, location, written, rows, **fields)
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
    # format 1's input markers are read once, above; a killed marker write left a temporary that
    # nothing would ever read or remove
    location.remove_temporaries("_jobs/ingest", lambda name: True)
    upgraded = Catalog(format_version=FORMAT_VERSION, created_at=catalog.created_at, tables=catalog.tables)
    save_catalog(location, upgraded)
    return upgraded
