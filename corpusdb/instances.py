"""Instances: documents cut into consecutive spans of at most N tokens, MiniPLM's unit of selection.

    corpusdb instances demo/db --tokenizer out/student --tokens 1024

MiniPLM never selects whole documents: it cuts the corpus into fixed-length instances of the
student's tokenizer, scores each instance on its own and keeps the best ones. This job records
those cuts as rows of `instances/part-<hash>.parquet` (the `instance_spans` table): `instance_id`
(xxh3 of doc_id, byte_start and byte_end, so equal cuts get equal ids on every run; the doc_id
itself for a document that is a single instance), `doc_id`,
`position` (0, 1, ... within the document), `byte_start`/`byte_end` into the document's UTF-8
text, `n_tokens` and `n_bytes`. The `instances` view adds each span's text and its document's
columns; policies take `docs := 'instances'` and `corpusdb score --unit instances` scores them.

The job reads the documents in their parts' order (one DuckDB thread, as scoring does; a view's
rows in doc_id order), so a part of spans holds the instances of a few documents parts and records
them (`covers`: a task of a distributed selection over instances reads the spans of its own parts).

A span ends where one token ends and the next begins, so a document's spans concatenate back to
its text exactly; where a byte-level token splits a character, the cut moves back to the nearest
token boundary that is also a character boundary. The tokenizer and N are recorded in the
version (`settings["instances"]`): a re-run with the same ones cuts only documents without
instances (a killed job resumes; documents ingested later are cut incrementally), and other ones
are refused unless `replace=True`, which is refused in turn while scores of the old instances exist.
A job that finds, at a commit, that another job cut some of the same documents meanwhile fails
(its uncommitted parts removed) rather than commit a document's instances twice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from tqdm.auto import tqdm

from corpusdb import failpoint
from corpusdb.covers import FIELD as COVERS
from corpusdb.covers import instance_models
from corpusdb.errors import CatalogError, ConflictError
from corpusdb.scoring.model import load_tokenizer
from corpusdb.versions import Snapshot

TABLE = "instance_spans"
FOLDER = "instances"
SCHEMA = pa.schema([
    ("instance_id", pa.int64()), ("doc_id", pa.int64()), ("position", pa.int32()), ("byte_start", pa.int64()),
    ("byte_end", pa.int64()), ("n_tokens", pa.int64()), ("n_bytes", pa.int64()),
])
TOKENIZE_DOCS = 256  # documents per tokenizer call
FILE = "__corpusdb_part"  # the stream's column naming each document's part


@dataclass
class InstancesReport:
    """What an instances job did."""

    n_documents: int = 0
    n_documents_before: int = 0
    n_instances: int = 0
    n_tokens: int = 0
    n_parts_written: int = 0
    seconds: float = 0.0
    version: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (f"cut {self.n_documents:,} documents into {self.n_instances:,} instances ({self.n_tokens:,} tokens) in "
                f"{self.seconds:.1f} s; {self.n_documents_before:,} documents had instances before; version {self.version}")


def spans(text: str, offsets: list[tuple[int, int]], max_tokens: int) -> list[tuple[int, int, int]]:
    """Cut `text` into consecutive (byte_start, byte_end, n_tokens) spans of at most `max_tokens` tokens.

    `offsets` are the tokens' character offsets (a fast tokenizer's offset mapping). The spans
    cover the text's UTF-8 bytes exactly, in order; a cut sits where a token ends and the next one
    starts at or after it (a token boundary on a character boundary), moving back from the
    max_tokens-th token when a byte-level token splits a character there.
    """
    if max_tokens < 1:
        raise ValueError(f"tokens per instance must be positive, not {max_tokens}")
    n = len(offsets)
    if not text:
        return []
    cuts: list[tuple[int, int]] = []  # (character position, tokens before it)
    begin, last_char = 0, 0
    while n - begin > max_tokens:
        k = begin + max_tokens  # the next span would start at token k
        while k > begin + 1 and not (offsets[k - 1][1] <= offsets[k][0] and offsets[k - 1][1] > last_char):
            k -= 1
        char = offsets[k - 1][1]
        if char <= last_char or char >= len(text):  # no usable boundary: one token splitting characters throughout
            k = begin + max_tokens
            char = max(last_char, min(offsets[k - 1][1], len(text)))
            if char <= last_char or char >= len(text):
                break
        cuts.append((char, k))
        begin, last_char = k, char
    out = []
    byte_pos, char_pos, token_pos = 0, 0, 0
    for char, token in [*cuts, (len(text), n)]:
        size = len(text[char_pos:char].encode("utf-8", "surrogatepass"))
        out.append((byte_pos, byte_pos + size, token - token_pos))
        byte_pos, char_pos, token_pos = byte_pos + size, char, token
    return out


def instance_ids(doc_id: int, bounds: list[tuple[int, int, int]]) -> list[int]:
    """Stable ids: xxh3-64 of (doc_id, byte_start, byte_end) as a signed 64-bit integer; a document
    that is one instance keeps its doc_id, so policies over such instances draw and break ties as
    over documents (the same seeds give the same selection)."""
    if len(bounds) == 1:
        return [doc_id]
    packed = np.array([(doc_id, start, end) for start, end, _ in bounds], dtype=np.int64)
    return [int(np.uint64(xxhash.xxh3_64_intdigest(row.tobytes())).astype(np.int64)) for row in packed]


def cut_documents(tokenizer, doc_ids, texts: list[str], max_tokens: int) -> pa.Table:
    """The instance_spans rows of a batch of documents (documents without text get none)."""
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for start in range(0, len(texts), TOKENIZE_DOCS):
        batch = texts[start:start + TOKENIZE_DOCS]
        encoded = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        for doc_id, text, offsets in zip(doc_ids[start:start + TOKENIZE_DOCS], batch, encoded):
            bounds = spans(text or "", offsets, max_tokens)
            ids = instance_ids(int(doc_id), bounds)
            for position, ((byte_start, byte_end, n_tokens), instance_id) in enumerate(zip(bounds, ids)):
                for name, value in zip(SCHEMA.names, (instance_id, int(doc_id), position, byte_start, byte_end, n_tokens,
                                                      byte_end - byte_start)):
                    columns[name].append(value)
    return pa.table(columns, schema=SCHEMA)


def instance_settings(tokenizer_name: str, tokenizer, max_tokens: int) -> dict:
    from corpusdb.scoring.identity import tokenizer_hash

    return {"tokenizer": tokenizer_name, "tokenizer_hash": tokenizer_hash(tokenizer), "tokens": int(max_tokens),
            "vocab_size": len(tokenizer)}


def _check_settings(old: dict | None, new: dict) -> None:
    if not old:
        return
    for key in ("tokenizer_hash", "tokens"):
        if old.get(key) != new.get(key):
            what = "tokenizer" if key == "tokenizer_hash" else "tokens per instance"
            raise CatalogError(
                f"instances were cut with another {what} ({old.get('tokenizer')!r}, {old.get('tokens')} tokens), not "
                f"({new.get('tokenizer')!r}, {new.get('tokens')} tokens); pass the same --tokenizer and --tokens, "
                "or --replace to cut every document again")


def _doc_ids(db, path: str) -> np.ndarray:
    return pq.read_table(db.location.join(path), columns=["doc_id"], filesystem=db.location.fs).column("doc_id").to_numpy()


def run_instances(db, tokenizer: str, tokens: int, *, view: str | None = None, replace: bool = False,
                  part_docs: int = 4096, progress: bool | None = None, commit_seconds: float = 60.0,
                  loaded_tokenizer=None) -> InstancesReport:
    """Cut the documents of `db` (or of `view`) without instances into spans of at most `tokens` tokens.

    Raises:
        ModelError: the tokenizer cannot be loaded.
        CatalogError: instances exist with another tokenizer or length (without `replace`), or
            `replace` while scores of instances exist (drop them first: they would go stale).
    """
    from corpusdb.views import relation_sql

    started = time.perf_counter()
    if tokens < 1:
        raise ValueError(f"--tokens {tokens} must be positive")
    if part_docs < 1:
        raise ValueError(f"part_docs {part_docs} must be positive")
    db.writable()
    db.refresh()
    if replace and instance_models(db.snapshot):
        names = ", ".join(instance_models(db.snapshot))
        raise CatalogError(f"scores of the current instances exist ({names}); they would no longer match new instances: "
                           f"drop them first (`corpusdb models DB --drop NAME`), or keep the instances")
    tok = loaded_tokenizer or load_tokenizer(tokenizer, need_fast=True)
    settings = instance_settings(tokenizer, tok, tokens)
    if not replace:
        _check_settings(db.snapshot.settings.get("instances"), settings)

    def register(snapshot: Snapshot) -> str:
        if replace:
            if instance_models(snapshot):
                raise CatalogError(f"scores of instances were added meanwhile ({', '.join(instance_models(snapshot))}); "
                                   "drop them first")
            snapshot.tables[TABLE] = {}
        else:
            _check_settings(snapshot.settings.get("instances"), settings)
        snapshot.settings["instances"] = settings
        return f"instances of {tokens} tokens ({tokenizer})" + (" replaced" if replace else "")

    # parts whose documents this job does not cut: those its query saw (committed before it registered) and its own;
    # a part another job commits meanwhile is checked at every later commit (its documents may come later here)
    known = set(db.commit("instances", register).tables[TABLE])
    ids_of: dict[str, np.ndarray] = {}  # doc_ids of other jobs' parts, read once
    # the documents in place order, each with its part (a part of spans records the documents parts it covers:
    # `corpusdb.covers`); a view's rows have no part, and are cut in doc_id order
    placed = view is None
    files = {db.location.url_of(path): db.location.relpath(path) for path in db.parts("documents")} if placed else {}
    source = (f"(select doc_id, text, n_bytes, {FILE} from ({db.documents_with_files(FILE)}))" if placed
              else f"(select doc_id, text, n_bytes, null::varchar as {FILE} from ({relation_sql(db, view)}))")
    pending = f"from {source} where n_bytes > 0 and doc_id not in (select doc_id from instance_spans)"
    n_todo, n_all = db.con.execute(f"select (select count(*) {pending}), (select count(*) from {source} where n_bytes > 0)").fetchall()[0]
    report = InstancesReport(n_documents_before=n_all - n_todo)
    written: list[tuple[str, dict, np.ndarray]] = []  # (part, info, its doc_ids) not committed yet

    def commit() -> None:
        batch = list(written)
        if not batch:
            return

        def change(snapshot: Snapshot) -> str:
            _check_settings(snapshot.settings.get("instances"), settings)
            others = [p for p in snapshot.tables[TABLE] if p not in known]  # committed by another job meanwhile
            if others:
                for path in others:
                    if path not in ids_of:
                        ids_of[path] = _doc_ids(db, path)
                theirs = np.concatenate([ids_of[path] for path in others])
                if np.isin(np.concatenate([ids for _, _, ids in batch]), theirs).any():
                    raise ConflictError("another `corpusdb instances` job cut some of the same documents while this one ran; "
                                        "re-run this one: it cuts only the documents still without instances")
            for path, info, _ in batch:
                snapshot.tables[TABLE][path] = info
            return f"{sum(info['rows'] for _, info, _ in batch):,} instances"

        db.commit("instances", change)
        known.update(path for path, _, _ in batch)
        del written[:len(batch)]

    last_commit = time.monotonic()
    cursor = db.con.cursor()
    # one DuckDB thread while the stream is read in place order: a parallel scan interleaves row groups in an order
    # that varies run to run (as the scoring job reads)
    duckdb_threads = db.con.execute("select current_setting('threads')").fetchall()[0][0]
    if placed:
        db.con.execute("set threads = 1")
    try:
        order = "" if placed else " order by doc_id"
        reader = cursor.sql(f"select doc_id, text, {FILE} {pending}{order}").to_arrow_reader(part_docs)
        with tqdm(total=n_todo, unit="doc", desc="instances", disable=(not progress) if progress is not None else None,
                  dynamic_ncols=True) as bar:
            from corpusdb.scoring.job import _rechunk

            for batch in _rechunk(reader, part_docs):
                table = cut_documents(tok, batch.column("doc_id").to_numpy(), batch.column("text").to_pylist(), tokens)
                key = xxhash.xxh3_64_hexdigest(table.column("instance_id").to_numpy().tobytes())
                part = db.location.write_parquet(table, FOLDER, f"part-{key}-{uuid.uuid4().hex[:8]}.parquet")
                info = {"size": part.size, "hash": part.hash, "rows": table.num_rows}
                parts = set(batch.column(FILE).to_pylist())
                if placed and parts <= files.keys():  # else unknown: every task of a selection reads the part
                    info[COVERS] = sorted({files[p] for p in parts})
                written.append((db.location.relpath(part.path), info, batch.column("doc_id").to_numpy()))
                report.n_parts_written += 1
                report.n_documents += batch.num_rows
                report.n_instances += table.num_rows
                report.n_tokens += int(pc.sum(table.column("n_tokens")).as_py() or 0)
                bar.update(batch.num_rows)
                bar.set_postfix(instances=f"{report.n_instances:,}", refresh=False)
                if time.monotonic() - last_commit >= commit_seconds:
                    commit()
                    last_commit = time.monotonic()
                failpoint.after_part("instances", report.n_parts_written)
        commit()
    except BaseException:
        try:  # parts finished before the failure are kept; a re-run cuts only what is missing
            commit()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            for path, _, _ in written:  # parts that cannot be committed are removed
                db.location.remove(db.location.join(path))
        raise
    finally:
        cursor.close()
        db.con.execute(f"set threads = {int(duckdb_threads)}")
    report.version = db.version
    report.seconds = time.perf_counter() - started
    return report
