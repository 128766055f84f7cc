"""DuckDB's memory: one setting bounds every query of a database; what does not fit spills to a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli
from corpusdb.db import MEMORY_LIMIT_ENV


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> str:
    """1M scored documents (~220 MB of text): a curriculum over them sorts more than a 256 MB limit holds
    (DuckDB needs about 192 MB for its keys and runs on 2 threads; it does not spill at 400 MB)."""
    from benchmarks.synthetic import build

    folder = tmp_path_factory.mktemp("memory") / "db"
    build(folder, 1_000_000, progress=False)
    return str(folder)


def _setting(db: corpusdb.Database, name: str) -> str:
    return db.sql(f"select current_setting('{name}')").fetchall()[0][0]


def test_a_limit_spills_to_the_connections_own_folder_and_changes_no_row(synthetic, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "")  # unset for the test (an empty value sets no limit), restored after
    query = "select doc_id, curriculum_rank, length(text) from curriculum('reference')"
    free = corpusdb.open(synthetic)
    expected = free.sql(query).fetchall()
    bounded = corpusdb.open(synthetic, memory_limit="256MB")
    assert _setting(bounded, "memory_limit") == "244.1 MiB"
    spill = Path(_setting(bounded, "temp_directory"))
    assert spill.parent == Path(tempfile.gettempdir()) and spill.name.startswith("corpusdb-spill-")
    assert bounded.sql(query).fetchall() == expected  # the sort of every text spilled, the rows are the same
    assert spill.is_dir()  # something did spill, and there
    bounded.close()
    assert not spill.exists()  # removed with the connection
    assert not Path(".tmp").exists()  # DuckDB's default spill folder in the working directory is never used


def test_the_environment_sets_the_limit_and_an_argument_wins(synthetic, monkeypatch, tmp_path):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "100MB")
    monkeypatch.setenv("CORPUSDB_TEMP_DIRECTORY", str(tmp_path))
    db = corpusdb.open(synthetic)
    assert _setting(db, "memory_limit") == "95.3 MiB"
    assert Path(_setting(db, "temp_directory")).parent == tmp_path
    assert _setting(corpusdb.open(synthetic, memory_limit="1GB"), "memory_limit") == "953.6 MiB"
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match="memory limit 'lots' is not a size DuckDB reads; give a number and a unit"):
        corpusdb.open(synthetic)


def test_the_cli_option_applies_to_the_command_and_a_bad_size_is_one_line(synthetic, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "")  # unset for the test (an empty value sets no limit), restored after
    runner = CliRunner()
    result = runner.invoke(cli, ["--memory-limit", "lots", "sql", synthetic, "select 1"])
    assert result.exit_code == 1 and result.output == (
        "Error: memory limit 'lots' is not a size DuckDB reads; give a number and a unit, e.g. 4GB or 500MB\n")
    result = runner.invoke(cli, ["--memory-limit", "100MB", "sql", synthetic,
                                 "select current_setting('memory_limit') as limit_", "--format", "csv"])
    assert result.exit_code == 0 and result.output.splitlines() == ["limit_", "95.3 MiB"], result.output
    assert os.environ[MEMORY_LIMIT_ENV] == "100MB"  # shards and worker processes inherit it


EXPORT_PEAK = """
import sys, pyarrow as pa, corpusdb
db = corpusdb.open(sys.argv[1])
manifest = db.view("select * from difference('teacher', 'reference')").export(
    sys.argv[2], format=sys.argv[3], part_size_mb=float(sys.argv[4]), progress=False)
print(len(manifest["parts"]), pa.default_memory_pool().max_memory())
"""


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_an_export_holds_a_batch_not_a_part(synthetic, tmp_path, fmt):
    """Arrow's own peak allocation for an export of 110 MB of text as one part is about that of the same
    export in parts of 16 MB: a part is streamed to its file, never held (it was 3.3x, 348 MB)."""
    peaks = {}
    for size in (16, 1024):
        out = subprocess.run([sys.executable, "-c", EXPORT_PEAK, synthetic, str(tmp_path / f"{fmt}-{size}"), fmt, str(size)],
                             capture_output=True, text=True, check=True).stdout.split()
        parts, peaks[size] = int(out[0]), int(out[1])
        assert parts == (1 if size == 1024 else 7)
    assert peaks[1024] < 1.3 * peaks[16], peaks
