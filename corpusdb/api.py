"""The Python API: `corpusdb.open` returns a `Database` whose methods run the jobs and views over it.

    python -c "import corpusdb; db = corpusdb.open('demo/db'); print(db.view('dedup').stats()['n_documents'])"

The core (`corpusdb.db.Database`: tables, SQL, versions, commits) knows nothing of the jobs; the jobs
(`corpusdb.ingest`, `corpusdb.scoring`, `corpusdb.dedup`, `corpusdb.annotations`, exports) take a core
database and register what they write. This module sits above both and wires them into one object,
so the import graph has no circle.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import duckdb

from corpusdb import db as core
from corpusdb.views import relation_sql

if TYPE_CHECKING:
    from corpusdb.annotations import AnnotateReport
    from corpusdb.annotations.decontamination import IndexReport
    from corpusdb.dedup import MinhashReport
    from corpusdb.ingest.job import IngestReport
    from corpusdb.scoring import ScoreReport


class Database(core.Database):
    """A corpus database (see `corpusdb.db.Database`) with its jobs as methods: ingest, score, minhash,
    annotate, views and exports."""

    def ingest(self, sources: list[str], **options) -> IngestReport:
        """Ingest files, folders or globs into `documents`; see `corpusdb.ingest.job.run_ingest` for options."""
        from corpusdb.ingest.job import run_ingest

        self.writable()
        report = run_ingest(self, sources, **options)
        self.refresh()
        return report

    def score(self, model: str, name: str, **options) -> ScoreReport:
        """Score the documents not yet scored under `name` with a causal LM; see `corpusdb.scoring.run_score`."""
        from corpusdb.scoring import run_score

        self.writable()
        return run_score(self, model, name, **options)

    def minhash(self, **options) -> MinhashReport:
        """MinHash signatures of new documents, then near-duplicate clusters; see `corpusdb.dedup.run_minhash`."""
        from corpusdb.dedup import run_minhash

        self.writable()
        return run_minhash(self, **options)

    def annotate(self, name: str, annotator=None, **options) -> AnnotateReport:
        """Annotate the documents not yet annotated under `name`; see `corpusdb.annotations.run_annotate`."""
        from corpusdb.annotations import run_annotate

        self.writable()
        return run_annotate(self, name, annotator, **options)

    def import_annotation(self, name: str, sources: list[str] | str, **options) -> AnnotateReport:
        """Import an annotation computed elsewhere (Parquet/JSONL with doc_id or text); see
        `corpusdb.annotations.run_import`."""
        from corpusdb.annotations import run_import

        self.writable()
        return run_import(self, name, [sources] if isinstance(sources, str) else list(sources), **options)

    def decontaminate(self, against: list[str] | str, **options) -> tuple[AnnotateReport, IndexReport]:
        """Find the evaluation sets' word n-grams in every document (annotation `decontamination`, read by
        `filter_decontaminated`); see `corpusdb.annotations.decontamination.run_decontaminate`."""
        from corpusdb.annotations.decontamination import run_decontaminate

        self.writable()
        return run_decontaminate(self, [against] if isinstance(against, str) else list(against), **options)

    def annotations(self) -> list[dict]:
        """Annotation names with their producer, columns, rows and documents covered."""
        from corpusdb.annotations import list_annotations

        return list_annotations(self)

    def create_view(self, name: str, sql: str, replace: bool = False, check_seconds: float | None = 600.0) -> View:
        """Validate and commit a user view (a warning if it selects no rows); see `corpusdb.views.create_view`."""
        from corpusdb.views import create_view

        if create_view(self, name, sql, replace=replace, check_seconds=check_seconds) == 0:
            warnings.warn(f"view {name!r} selects no rows now; check its filters and score names", stacklevel=2)
        return self.view(name)

    def drop_view(self, name: str) -> None:
        """Remove a user view."""
        from corpusdb.views import drop_view

        drop_view(self, name)

    def views(self) -> list[dict]:
        """Built-in and user views with their descriptions."""
        from corpusdb.views import list_views

        return list_views(self)

    def view(self, view: str) -> View:
        """A view by name, a macro call (`difference('teacher', 'ref', alpha := 0.3)`) or a select."""
        return View(self, view)

    def models(self) -> list[dict]:
        """Score names with their model's identity, documents scored, tokens and bits per byte."""
        from corpusdb.models import list_models

        return list_models(self)


class View:
    """A view of a database (a view name, a macro call or a select) with what users do with it."""

    def __init__(self, db: core.Database, view: str):
        self.db = db
        self.name = view
        self.sql = relation_sql(db, view)

    def __repr__(self) -> str:
        return f"<corpusdb.View {self.name!r} of {self.db.url}>"

    def relation(self) -> duckdb.DuckDBPyRelation:
        """The rows, as a DuckDB relation (`.pl()`, `.to_arrow_table()`, `.fetchall()`)."""
        return self.db.sql(self.sql)

    def stats(self) -> dict:
        """Documents, bytes, tokens, per-source shares and score quantiles; see `corpusdb.analysis.view_stats`."""
        from corpusdb.analysis import view_stats

        return view_stats(self.db, self.name)

    def compare(self, other: str | View) -> dict:
        """Overlap with another view; see `corpusdb.analysis.compare_views`."""
        from corpusdb.analysis import compare_views

        return compare_views(self.db, self.name, other.name if isinstance(other, View) else other)

    def export(self, url: str, **options) -> dict:
        """Write the rows to URL as a training subset; see `corpusdb.export.export_view`. Returns the manifest."""
        from corpusdb.export import export_view

        return export_view(self.db, self.name, url, **options)


def init(url: str, storage_options: dict | None = None, *, memory_limit: str | None = None) -> Database:
    """Create a database at `url` (a local path or fsspec URL), or open it if one is there already."""
    return Database.create(url, storage_options, memory_limit=memory_limit)


def open(url: str, storage_options: dict | None = None, *, as_of: int | None = None, allow: Iterable[str] = (),  # noqa: A001
         unsafe: bool = False, memory_limit: str | None = None) -> Database:
    """Open the database at `url`, at its latest version or at version `as_of` (read-only).

    `memory_limit` ("6GB") bounds DuckDB's memory for this database's queries (sorts, joins and
    aggregates spill beyond it); default: the CORPUSDB_MEMORY_LIMIT environment variable, else
    DuckDB's own (80% of RAM).

    Raises:
        DatabaseNotFoundError: no `corpusdb.json` there.
        VersionError: `as_of` is not a committed version.
        StorageError: the URL cannot be reached or read.
    """
    return Database.connect(url, storage_options, as_of=as_of, allow=allow, unsafe=unsafe, memory_limit=memory_limit)


__all__ = ["Database", "View", "init", "open"]
