"""Annotations: every quality signal as a table keyed by doc_id that policies join.

    corpusdb annotate demo/db quality
    corpusdb annotate demo/db language
    corpusdb annotate demo/db shouting --fn mymodule:shouting
    corpusdb annotate demo/db edu --from s3://bkt/edu-scores/
    corpusdb annotations demo/db

An annotation NAME is the DuckDB view `annotations_NAME` (doc_id plus typed columns) over
`annotations/NAME/*.parquet`, versioned with the database and bound to its producer
(`registry`). Built-in annotators (`quality`: the Gopher, C4 and FineWeb rule values; `language`:
fastText language id), user functions (`annotators`) and imports (`importer`) all write it; the
policies `filter_quality` and `filter_language` (sql/) filter on it.
"""

from corpusdb.annotations.annotators import BUILTINS, PythonAnnotator, annotator_for
from corpusdb.annotations.importer import run_import
from corpusdb.annotations.job import AnnotateReport, run_annotate
from corpusdb.annotations.registry import drop_annotation, list_annotations

__all__ = ["BUILTINS", "AnnotateReport", "PythonAnnotator", "annotator_for", "drop_annotation", "list_annotations",
           "run_annotate", "run_import"]
