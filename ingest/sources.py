"""Turn ingest SOURCE arguments (files, folders, globs on any fsspec filesystem) into input files.

    python -c "from corpusdb.ingest.sources import list_inputs; print(list_inputs(['tests/data'], 'auto', {}))"
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field

from corpusdb.errors import InputError
from corpusdb.storage import resolve, storage_errors

FORMATS = ("auto", "jsonl", "parquet", "arrow", "text")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".arrow": "arrow",  # Arrow IPC streams, as `datasets.Dataset.save_to_disk` writes them
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".rst": "text",
}


@dataclass(frozen=True)
class InputFile:
    """One file to ingest: where it is, how to read it, and what identifies this version of it."""

    url: str
    path: str
    format: str
    compression: str | None
    size: int
    version: str  # ETag, mtime or creation time: a changed file is a new input
    details: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # the listing's entry

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


def detect(path: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name; format None where the extension says nothing."""
    name = posixpath.basename(path).lower()
    stem, ext = posixpath.splitext(name)
    compression = COMPRESSIONS.get(ext)
    if compression:
        ext = posixpath.splitext(stem)[1]
    return EXTENSIONS.get(ext), compression


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def _export_manifest(fs, path: str) -> dict | None:
    """The manifest of the corpusdb export in folder `path`, or None where the folder is not one."""
    manifest = posixpath.join(path, "manifest.json")
    if not fs.isfile(manifest):
        return None
    try:
        data = json.loads(fs.cat_file(manifest))
    except ValueError:
        return None
    keys = {"format", "parts", "inputs_hash", "view"}
    return data if isinstance(data, dict) and keys <= set(data) and isinstance(data["parts"], list) else None


def _export_parts(source: str, path: str, export: dict, listed: dict) -> dict:
    """The listing entries of the parts an export's manifest names.

    Raises:
        InputError: its parts hold no text records (token arrays), or a part it names is missing.
    """
    if export["format"] not in ("parquet", "jsonl"):
        raise InputError(f"{source} is a corpusdb export of {export.get('view')!r} in format {export['format']}, which holds "
                         "token ids, not text; export the view with --format parquet or jsonl to ingest it")
    parts = [posixpath.join(path, part["file"]) for part in export["parts"]]
    missing = [p for p in parts if p not in listed]
    if missing:
        raise InputError(f"{source} is a corpusdb export whose manifest names {len(missing)} part(s) that are not there "
                         f"(e.g. {posixpath.basename(missing[0])}); export the view again")
    return {p: listed[p] for p in parts}


HF_METADATA = ("state.json", "dataset_info.json")  # next to a `save_to_disk` folder's .arrow files: not records


def _hf_folder(fs, path: str, source: str, infos: dict) -> dict:
    """The records of a folder that Hugging Face `datasets` wrote or laid out, from a folder walk's `infos`:
    without the metadata of `save_to_disk` (state.json, dataset_info.json beside .arrow files) and
    without dataset cards (a README.md whose YAML front matter has a card's keys, beside data files).

    Raises:
        InputError: the folder holds a `DatasetDict` (its splits are separate datasets: name one).
    """
    names = {p: posixpath.basename(p) for p in infos}
    dicts = sorted(posixpath.dirname(p) for p, name in names.items() if name == "dataset_dict.json")
    if dicts:
        split_file = posixpath.join(dicts[0], "dataset_dict.json")
        try:
            splits = json.loads(fs.cat_file(split_file)).get("splits") or []
        except (ValueError, AttributeError):
            splits = []
        example = posixpath.join(source.rstrip("/"), posixpath.relpath(dicts[0], path), str(splits[0]) if splits else "SPLIT")
        raise InputError(f"{source} holds a datasets.DatasetDict (splits: {', '.join(map(str, splits)) or '?'}) whose splits "
                         f"are separate datasets; ingest one split's folder, e.g. {posixpath.normpath(example)}")
    arrow_dirs = {posixpath.dirname(p) for p, name in names.items() if name.endswith(".arrow")}
    listed: dict[str, set[str]] = {}  # a save_to_disk folder: the .arrow files its state.json names (not cache-*.arrow)
    for folder in arrow_dirs:
        state = posixpath.join(folder, "state.json")
        if state in infos:
            try:
                listed[folder] = {str(f["filename"]) for f in json.loads(fs.cat_file(state)).get("_data_files", [])}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            absent = sorted(name for name in listed[folder] if posixpath.join(folder, name) not in infos)
            if absent:  # a copy cut short: ingesting the rest would be a partial dataset without a word
                raise InputError(f"{source}: {posixpath.relpath(state, path)} lists {len(listed[folder])} data files, "
                                 f"{len(absent)} of them missing (e.g. {absent[0]}); copy the saved dataset again")
    data_dirs = {posixpath.dirname(p) for p in infos if detect(p)[0] in ("jsonl", "parquet", "arrow")}
    kept = {}
    for p, info in infos.items():
        folder, name = posixpath.dirname(p), names[p]
        if ((name in HF_METADATA and folder in arrow_dirs)
                or (name.endswith(".arrow") and folder in listed and name not in listed[folder])
                or (name.lower() == "readme.md" and data_dirs and _dataset_card(fs, p))):
            continue
        kept[p] = info
    return kept


CARD_KEYS = re.compile(rb"^(configs|dataset_info|task_categories|size_categories|pretty_name):", re.MULTILINE)


def _dataset_card(fs, path: str) -> bool:
    """Whether the file is a Hugging Face dataset card: YAML front matter (`---`) with a dataset card's keys
    (configs, dataset_info, task_categories, ...), not the front matter of a page of notes."""
    try:
        with fs.open(path, "rb") as f:
            head = f.read(16384).removeprefix(b"\xef\xbb\xbf")
    except OSError:
        return False
    if not head.startswith((b"---\n", b"---\r\n")):
        return False
    front = head[4:].split(b"\n---", 1)[0]
    return CARD_KEYS.search(front) is not None


def list_inputs(sources: list[str], fmt: str, storage_options: dict) -> tuple[list[InputFile], list[str]]:
    """Expand SOURCE arguments into input files sorted by URL, and the URLs skipped as unknown format.

    A folder is searched recursively; in `auto` format, files whose extension names no format are
    skipped (and returned), while such a file named directly is an error. A source that is an
    existing file is that file, even if its name has glob characters (`[`, `*`, `?`).

    Raises:
        InputError: a source matches nothing, or a named file's format cannot be told.
        StorageError: a source cannot be reached or listed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not sources:
        raise InputError("no SOURCE given; name files, folders or globs to ingest")
    found: dict[str, InputFile] = {}
    skipped: list[str] = []
    for source in sources:
        fs, path = resolve(source, storage_options)
        with storage_errors(source, fs):
            if fs.isdir(path):
                infos = fs.find(path, detail=True)
                export = _export_manifest(fs, path)
                if export is not None:  # a corpusdb export: its parts, never its manifest or a stray file
                    infos = _export_parts(source, path, export, infos)
                else:  # a datasets folder: its records, never its metadata or dataset card
                    infos = _hf_folder(fs, path, source, infos)
                explicit = False
            elif any(ch in path for ch in "*?[") and not fs.isfile(path):  # a file named `a[1].jsonl` is itself
                infos = {p: info for p, info in fs.glob(path, detail=True).items() if info.get("type") != "directory"}
                explicit = False
            else:
                if posixpath.basename(path) == "manifest.json" and _export_manifest(fs, posixpath.dirname(path)) is not None:
                    raise InputError(f"{source} is the manifest of a corpusdb export, not records; ingest the export's "
                                     f"folder ({posixpath.dirname(source) or '.'}) to read its parts")
                infos = {path: fs.info(path)}
                explicit = True
        if not infos:
            raise InputError(f"{source}: matches no files; check the path or glob")
        for file_path, info in infos.items():
            if posixpath.basename(file_path).startswith("."):
                continue
            url = fs.unstrip_protocol(file_path) if "://" in source else file_path
            file_format, compression = detect(file_path)
            if fmt != "auto":
                file_format = fmt
            if file_format is None:
                if explicit:
                    raise InputError(
                        f"{source}: cannot tell the format from the file name; pass --format jsonl|parquet|text"
                    )
                skipped.append(url)
                continue
            found[url] = InputFile(url, file_path, file_format, compression, int(info.get("size") or 0), _version(info),
                                   dict(info))
    return [found[url] for url in sorted(found)], sorted(skipped)
