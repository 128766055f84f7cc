"""Ingestion jobs: files, folders and globs on any fsspec filesystem into the `documents` table.

    corpusdb ingest demo/db s3://bucket/crawl/*.jsonl.zst --source crawl --on-error skip
"""

from ingest.job import IngestReport, run_ingest

__all__ = ["IngestReport", "run_ingest"]
