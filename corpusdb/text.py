"""Text normalisation and the content hash that makes `doc_id`.

    python -c "from corpusdb.text import doc_id; print(doc_id('Hello world'))"

`doc_id` is the xxh3-64 hash of the normalised text's UTF-8 bytes, as a signed 64-bit integer
(Parquet INT64, which every engine reads; Spark has no unsigned 64-bit type). At a billion documents
the expected number of colliding pairs is about 0.03.
"""

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_SIGN = 1 << 64
_HALF = 1 << 63


def normalize(text: str) -> str:
    """Return `text` in Unicode NFC with Unix line endings and no leading or trailing whitespace."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def doc_id(normalized_text: str | bytes) -> int:
    """Return the signed 64-bit content hash of already normalised text (or of its UTF-8 bytes)."""
    data = normalized_text.encode("utf-8") if isinstance(normalized_text, str) else normalized_text
    value = xxhash.xxh3_64_intdigest(data)
    return value - _SIGN if value >= _HALF else value


# the characters str.strip() removes among ASCII: what a text may start or end with and still be ASCII
_ASCII_SPACE = np.zeros(256, dtype=np.bool_)
_ASCII_SPACE[[ord(c) for c in map(chr, range(128)) if c.isspace()]] = True


def string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets into its data (int64, one past each text's end included) and its whole
    data buffer (uint8), without a copy of the data."""
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], dtype=width)[texts.offset : texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    return offsets.astype(np.int64), (np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8))


# A UTF-8 lead byte from 0xCC on starts a code point from U+0300 on: every code point below U+0300 is
# in NFC alone and beside any other of them (none combines; tests/test_ingest_properties.py checks every
# pair), so a text whose bytes are all below 0xCC is already NFC
_NFC_SAFE_BELOW = 0xCC
# the characters below U+0300 that str.strip() removes beyond ASCII: U+0085 and U+00A0, as UTF-8
_LATIN1_SPACE_SECOND = (0x85, 0xA0)
# what str.strip() removes among ASCII, for Arrow's trim of texts that are ASCII throughout
_ASCII_SPACE_CHARACTERS = "".join(c for c in map(chr, range(128)) if c.isspace())


def _max_bytes(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The largest byte of each text `rows` (non-empty ones) of a string array's data."""
    out = np.zeros(len(rows), dtype=np.uint8)
    for start in range(0, len(rows), 65536):
        chunk = rows[start : start + 65536]
        # reduceat's segments run from each index to the next, the last to the end of the (sliced) data:
        # [start, end) of each text, and the gaps between them
        bounds = np.stack([offsets[chunk], offsets[chunk + 1]], axis=1).ravel()
        out[start : start + len(chunk)] = np.maximum.reduceat(data[: bounds[-1]], bounds[:-1])[::2]
    return out


def normalize_texts(texts: pa.Array) -> pa.Array:
    """`normalize` of every text of a string array (no nulls), found with vectorised checks: a text
    changes only with whitespace at either end, a carriage return, or a code point from U+0300 on
    (NFC). ASCII texts with whitespace at an end are trimmed by Arrow; the rest that may change go
    through `normalize`."""
    if not len(texts):
        return texts
    offsets, data = string_buffers(texts)
    used = data[offsets[0] : offsets[-1]]
    sizes = np.diff(offsets)
    filled = sizes > 0
    starts, ends = offsets[:-1][filled], offsets[1:][filled]
    spaced = np.zeros(len(texts), dtype=np.bool_)
    spaced[filled] = _ASCII_SPACE[data[starts]] | _ASCII_SPACE[data[ends - 1]]
    python = np.zeros(len(texts), dtype=np.bool_)
    top = int(used.max()) if len(used) else 0
    if top >= 128:
        wide = ~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False)
        spaced_wide = np.zeros(len(texts), dtype=np.bool_)
        two = sizes >= 2
        first, last = offsets[:-1][two], offsets[1:][two]
        spaced_wide[two] = ((data[first] == 0xC2) & np.isin(data[first + 1], _LATIN1_SPACE_SECOND)) | (
            (data[last - 2] == 0xC2) & np.isin(data[last - 1], _LATIN1_SPACE_SECOND))
        python |= wide & (spaced | spaced_wide)
        if top >= _NFC_SAFE_BELOW:
            rows = np.flatnonzero(wide & ~python)
            python[rows[_max_bytes(data, offsets, rows) >= _NFC_SAFE_BELOW]] = True
        spaced &= ~wide
    if np.any(used == 13):  # "\r"
        python |= pc.match_substring(texts, "\r").to_numpy(zero_copy_only=False)
    trim = spaced & ~python
    if not trim.any() and not python.any():
        return texts
    out = texts
    if trim.any():
        index = pa.array(np.flatnonzero(trim))
        out = pc.replace_with_mask(out, pa.array(trim), pc.utf8_trim(texts.take(index), _ASCII_SPACE_CHARACTERS))
    if python.any():
        index = np.flatnonzero(python)
        normalized = pa.array([normalize(text) for text in texts.take(pa.array(index)).to_pylist()], texts.type)
        out = pc.replace_with_mask(out, pa.array(python), normalized)
    return out


def doc_ids(texts: pa.Array) -> np.ndarray:
    """`doc_id` of every text of a string array of normalised texts (no nulls), as int64."""
    offsets, data = string_buffers(texts)
    view, bounds = memoryview(data), offsets.tolist()
    hashes = map(xxhash.xxh3_64_intdigest, map(view.__getitem__, map(slice, bounds[:-1], bounds[1:])))
    return np.fromiter(hashes, dtype=np.uint64, count=len(texts)).view(np.int64)
