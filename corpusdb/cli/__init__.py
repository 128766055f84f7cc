"""The `corpusdb` command line: a thin layer over the library, one module per group of commands.

    corpusdb --help
    corpusdb ingest demo/db demo/raw/bible.jsonl.gz --source bible
    corpusdb score demo/db --model out/teacher --as teacher
"""

from corpusdb.cli import annotate, catalog, data, dedup, score, train, views  # noqa: F401 - registers the commands
from corpusdb.cli.base import cli


def main() -> None:
    cli(prog_name="corpusdb")


__all__ = ["cli", "main"]
