"""The built-in selection policies: one `.sql` file per view or table macro in `sql/`, with its header.

    python -c "from corpusdb.policies import builtin_views; print([v.name for v in builtin_views()])"

Each file has a header (`-- purpose:`, `-- depends:`, `-- params:`) and is executed on every open,
in dependency order, after the tables it reads and before the user views that may use it.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

HEADER_KEYS = ("purpose", "depends", "params")
# A CTE of a chain: `name as (`, `name as materialized (` or `with name as (`, alone on its line.
STEP_RE = re.compile(r"^(?:with\s+)?([a-z_][a-z0-9_]*)\s+as\s+(?:not\s+)?(?:materialized\s+)?\($", re.M)


def builtin_dir() -> Path:
    """The folder of the built-in policies: `sql/` of the source tree, or where the wheel put it."""
    for candidate in (Path(__file__).resolve().parent.parent / "sql", Path(sys.prefix) / "share" / "corpusdb" / "sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("corpusdb's sql/ folder is missing; reinstall corpusdb")


@dataclass(frozen=True)
class ViewFile:
    """One `.sql` file: its name, header fields and text."""

    name: str
    kind: str  # "view", "macro" or "scalar macro"
    purpose: str
    depends: tuple[str, ...]
    params: str
    text: str
    steps: tuple[str, ...]  # the names of its CTEs


def parse(path: Path) -> ViewFile:
    """Read a built-in `.sql` file and its header.

    Raises:
        ValueError: a header line is missing.
    """
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^--\s*(purpose|depends|params):\s*(.*)$", line)
        if match:
            header.setdefault(match.group(1), match.group(2).strip())
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise ValueError(f"{path}: header line '-- {missing[0]}:' is missing")
    if re.search(rf"create or replace view {path.stem}\b", text):
        kind = "view"
    elif re.search(rf"create or replace macro {path.stem}\(.*\) as table", text, re.S):
        kind = "macro"
    else:
        kind = "scalar macro"
    depends = tuple(d.strip() for d in header["depends"].split(",") if d.strip())
    steps = tuple(dict.fromkeys(STEP_RE.findall(text)))
    return ViewFile(path.stem, kind, header["purpose"], depends, header["params"], text, steps)


@functools.cache
def builtin_views() -> tuple[ViewFile, ...]:
    """Every built-in file, in an order where each comes after what it depends on (read once per process)."""
    files = {f.name: f for f in (parse(p) for p in sorted(builtin_dir().glob("*.sql")))}
    ordered: list[ViewFile] = []
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in done or name not in files:
            return
        if name in trail:
            raise ValueError(f"sql/{name}.sql: circular depends: {' -> '.join(trail + (name,))}")
        for dependency in files[name].depends:
            visit(dependency, trail + (name,))
        done.add(name)
        ordered.append(files[name])

    for name in sorted(files):
        visit(name, ())
    return tuple(ordered)


def load_builtin_views(con: duckdb.DuckDBPyConnection) -> None:
    for view in builtin_views():
        con.execute(view.text)
