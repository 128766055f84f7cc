"""JSON lines into records: blocks of lines parsed by Arrow, and any block Arrow cannot take exactly, line by line.

    python -c "from corpusdb.ingest.jsonl import arrow_block; print(arrow_block(b'{\"text\": \"a\"}\\n', 1, 'text', ()))"

A block of whole lines (`BLOCK_BYTES`) is parsed by `pyarrow.json` in C++ with an explicit schema
of the text field and the meta fields as strings (every other field is skipped unparsed). Arrow's
answer is taken only where it is certainly what reading each line alone gives (`records`): one row
per line, no blank line, every text a string, every meta value a string or absent, valid UTF-8, and
a line that spells `NaN` or `Infinity` (which Arrow takes as numbers and JSON does not) only inside
a string. Anything else (a malformed line, a number in a
meta field, a duplicate key, bytes that are not UTF-8, a dotted field path) sends the whole block
line by line, which keeps every record, bad-record reason and message exactly as before.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

BLOCK_BYTES = 8 << 20  # JSON lines parsed by Arrow at a time
BOM = b"\xef\xbb\xbf"
MISSING = object()
# a line that is empty or only whitespace (line by line, such lines are skipped and numbered), searched
# for between newlines (a literal first byte: the search is fast)
_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c]*\n")
_LINE_SPACE = b" \t\r\x0b\x0c"


def has_blank_line(data: bytes) -> bool:
    """Whether a block of lines holds a line that is empty or only whitespace, its first and last line
    included, without a copy of the block (copying the 8 MB blocks of 1M documents cost four times the search)."""
    if _BLANK_LINE.search(data):
        return True
    end = data.find(b"\n")
    if not data[: len(data) if end < 0 else end].strip(_LINE_SPACE):
        return True
    return not data.endswith(b"\n") and not data[data.rfind(b"\n") + 1 :].strip(_LINE_SPACE)


class Number(str):
    """A JSON number no double or 64-bit integer holds, kept as written."""


def lookup(record: dict, path: str, missing: object = None) -> object:
    """The value at a dotted field path of a JSON object (`missing` where there is none)."""
    value: object = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return missing
        value = value[key]
    return value


def meta_value(value: object) -> str | None:
    """A meta column's value: strings as they are, anything else as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, alone or inside a list or object
        return json.dumps(value, default=str, separators=(",", ":"))  # as compact as orjson's


def _float_or_text(literal: str) -> float | str:
    number = float(literal)
    return number if math.isfinite(number) else Number(literal)


def _int_or_text(literal: str) -> int | str:
    number = int(literal)
    return number if -(2**63) <= number < 2**64 else Number(literal)


def loads_lenient(line: bytes) -> object:
    """Parse a line orjson refused only for a number it cannot hold; raise ValueError otherwise."""
    return json.loads(line, parse_float=_float_or_text, parse_int=_int_or_text,
                      parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not JSON")))


def rounded_integer(value: object) -> bool:
    """Whether orjson may have parsed an integer beyond 64 bits into a float (it does so silently)."""
    if isinstance(value, float):
        return value.is_integer() and abs(value) >= 2**63
    if isinstance(value, list):
        return any(rounded_integer(v) for v in value)
    if isinstance(value, dict):
        return any(rounded_integer(v) for v in value.values())
    return False


def utf8_problem(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    return None


def split_lines(data: bytes) -> list[bytes]:
    """A block's lines as iterating the file gives them: each with its newline, the last one as it is."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def line_count(data: bytes) -> int:
    """Lines in a block: every newline ends one, and a last line may have none."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _occurrences(data: np.ndarray, token: bytes) -> np.ndarray:
    """Where `token` starts in `data` (bytes as uint8), ascending: its first byte found vectorised, then
    narrowed by each next byte (bytes.find of a short token is several times slower on a block)."""
    at = np.flatnonzero(data[: max(len(data) - len(token) + 1, 0)] == token[0])
    for offset, byte in enumerate(token[1:], start=1):
        if not len(at):
            break
        at = at[data[at + offset] == byte]
    return at


def _json_constants_quoted(data: bytes) -> bool:
    """Whether every line that spells NaN or Infinity is JSON (the words inside strings): Arrow takes
    them as numbers, JSON does not. Only those lines are parsed again, with orjson."""
    view = np.frombuffer(data, dtype=np.uint8)
    for token in (b"NaN", b"Infinity"):
        end = -1
        for at in _occurrences(view, token).tolist():
            if at < end:  # in the line just parsed
                continue
            start, end = data.rfind(b"\n", 0, at) + 1, data.find(b"\n", at)
            end = len(data) if end == -1 else end
            try:
                orjson.loads(data[start:end])
            except orjson.JSONDecodeError:
                return False
    return True


def arrow_block(data: bytes, n_lines: int, text_field: str, fields: tuple[str, ...]) -> pa.Table | None:
    """The block's records (its `n_lines` lines) as a table of `text_field` and `fields` (all strings), one
    row per line, or None where that might differ from reading each line alone (the caller then does that)."""
    if has_blank_line(data) or not _json_constants_quoted(data):
        return None
    names = list(dict.fromkeys([text_field, *fields]))
    options = pajson.ParseOptions(explicit_schema=pa.schema([(name, pa.string()) for name in names]),
                                  unexpected_field_behavior="ignore", newlines_in_values=False)
    try:
        table = pajson.read_json(pa.py_buffer(data), parse_options=options,
                                 read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1))
        table.validate(full=True)  # Arrow's JSON reader may pass bytes that are not UTF-8 into a string
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != n_lines or table.column(text_field).null_count:
        return None
    return table


def records(lines: list[bytes], first: int, text_field: str, meta_paths: list[str],
            bad: Callable[[str, str, str, str], None]) -> Iterator[tuple[int, str, dict]]:
    """(line number, text, record) of each good line, read alone with orjson; `bad(reason, where, problem,
    fix)` hears of each bad one (and may raise)."""
    for number, line in enumerate(lines, start=first):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problem = utf8_problem(line)
            if problem:
                bad("not_utf8", f"line {number}", problem, "re-encode the file as UTF-8")
                continue
            try:  # a number orjson cannot hold (1e400, 2**70) is still JSON
                record = loads_lenient(line)
                json.dumps(record, ensure_ascii=False).encode("utf-8")  # an escaped lone surrogate is no text
            except (ValueError, RecursionError):  # UnicodeEncodeError included; RecursionError: nested too deep
                bad("malformed_json", f"line {number}", f"malformed JSON ({exc})", "fix the line")
                continue
        if not isinstance(record, dict):
            bad("malformed_json", f"line {number}", "not a JSON object", "write one object per line")
            continue
        if any(rounded_integer(lookup(record, path)) for path in meta_paths):
            record = loads_lenient(line)  # keep the integer's digits, as text
        text = lookup(record, text_field, MISSING)
        if text is MISSING:
            fields = ", ".join(list(record)[:8])
            bad("missing_field", f"line {number}", f"no field {text_field!r} (fields: {fields})",
                "name the text field with --text-field")
            continue
        if text is None:
            bad("null_text", f"line {number}", f"field {text_field!r} is null",
                "give every record a text, or name another field with --text-field")
            continue
        if not isinstance(text, str):
            bad("wrong_type", f"line {number}", f"field {text_field!r} is {type(text).__name__}, not a string",
                "name a string field with --text-field")
            continue
        yield number, text, record
