"""`corpusdb.ingest`, the ingestion jobs: files, folders and globs on any fsspec filesystem into the `documents` table.
The source lives in `ingest/` beside `corpusdb/`; it installs as `corpusdb.ingest`.

    corpusdb ingest demo/db s3://bucket/crawl/*.jsonl.zst --source crawl --on-error skip
"""

from corpusdb.ingest.job import IngestReport, run_ingest

__all__ = ["IngestReport", "run_ingest"]
