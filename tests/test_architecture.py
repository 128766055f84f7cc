"""The architecture: no import circle among corpusdb's modules, and a wheel that installs only `corpusdb`."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

SOURCES = {"corpusdb": ROOT / "corpusdb", "corpusdb.ingest": ROOT / "ingest", "corpusdb.train": ROOT / "train"}


def _modules() -> dict[str, Path]:
    """Every module of the package by its installed name (ingest/ and train/ install as corpusdb.ingest, corpusdb.train)."""
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere: at the top, inside functions, under TYPE_CHECKING."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 50 and "corpusdb.ingest.job" in graph and "corpusdb.annotations.job" in graph
    assert "corpusdb.db" in graph["corpusdb.ingest.job"]  # the jobs receive the core database ...
    assert not {m for m in graph["corpusdb.db"] if m.startswith(("corpusdb.ingest", "corpusdb.scoring", "corpusdb.dedup",
                                                                  "corpusdb.annotations", "corpusdb.views", "corpusdb.export"))}
    assert _cycles(graph) == []  # ... and nothing imports back into a circle


def test_the_wheel_installs_only_corpusdb(tmp_path):
    """`ingest/` and `train/` ship as corpusdb.ingest and corpusdb.train: no top-level `ingest` or `train` in site-packages."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("corpusdb", "ingest", "train", "sql"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("corpusdb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"corpusdb", wheel.name.split("-py3")[0] + ".dist-info",
                                                wheel.name.split("-py3")[0] + ".data"}
    expected = {f"{package.replace('.', '/')}/{path.relative_to(folder)}" for package, folder in SOURCES.items()
                for path in folder.rglob("*.py")}
    assert expected <= set(names)  # every module ships (no package forgotten in pyproject.toml)
    sql = {p.name for p in (ROOT / "sql").glob("*.sql")}
    assert {n.rsplit("/", 1)[1] for n in names if n.endswith(".sql")} == sql


def test_every_guarantee_in_the_readme_names_a_test_that_exists():
    """The README's "What corpusdb guarantees" table backs each line with tests: they must exist."""
    import re

    readme = (ROOT / "README.md").read_text()
    table = readme.split("### What corpusdb guarantees", 1)[1].split("\n### ", 1)[0]
    named = 0
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith(("| guarantee", "| ---")):
            continue
        current = None
        for ref in re.findall(r"`((?:test_\w+\.py)?(?:::\w+)?)`", line.rsplit("|", 2)[1]):
            module, _, test = ref.partition("::")
            current = module or current
            source = (ROOT / "tests" / current).read_text()
            assert not test or re.search(rf"^def {test}\(", source, re.M), f"README names {current}::{test}, which does not exist"
            named += 1
    assert named >= 12
