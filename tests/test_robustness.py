"""Real-world input: many small files, damaged compressed files, odd encodings and numbers, literal
paths, object-storage credentials, leftovers of killed jobs, and the CLI's help and summaries."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import fsspec.implementations.local
import pytest
import zstandard
from click.testing import CliRunner

import corpusdb
from tests.conftest import export_files
from corpusdb.cli import cli
from corpusdb.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def _small_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        records = [{"text": f"file {i} record {j}: " + "some words of a small page " * (5 + (i * 7 + j) % 40)}
                   for j in range(1 + i % 3)]
        (folder / f"page-{i:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


class _Counted:
    """Counts calls to fsspec's local filesystem, and the entries its listings return."""

    METHODS = ("ls", "info", "glob", "find", "exists", "isdir", "isfile", "_open", "rm_file", "mv", "makedirs",
               "cat_file", "pipe_file", "walk")

    def __init__(self, monkeypatch):
        self.calls = 0
        self.listed = 0
        cls = fsspec.implementations.local.LocalFileSystem
        for name in self.METHODS:
            original = getattr(cls, name)
            monkeypatch.setattr(cls, name, self._wrap(original))

    def _wrap(self, original):
        def counted(fs, *args, **kwargs):
            self.calls += 1
            result = original(fs, *args, **kwargs)
            if isinstance(result, (list, dict)):
                self.listed += len(result)
            return result
        return counted


def test_ingest_grows_linearly_with_the_number_of_files(tmp_path, monkeypatch):
    """Counted, not timed: filesystem calls and listed entries per input file stay flat from 100 to
    400 files (the old per-input glob of documents/ made them grow with the files already written),
    and small inputs share parts instead of making one each."""
    counts = {}
    for n in (100, 400):
        _small_files(tmp_path / f"in{n}", n)
        db = corpusdb.init(str(tmp_path / f"db{n}"))
        counter = _Counted(monkeypatch)
        report = db.ingest([str(tmp_path / f"in{n}")], source="pages", progress=False)
        monkeypatch.undo()
        assert report.n_inputs_processed == n and report.n_docs_written == sum(1 + i % 3 for i in range(n))
        assert len(db.snapshot.tables["documents"]) == 1  # all of them in one part
        counts[n] = (counter.calls, counter.listed)
    assert counts[400][0] <= 4.4 * counts[100][0], counts
    assert counts[400][1] <= 4.4 * counts[100][1], counts


def test_doc_id_set_stays_a_few_runs_over_many_small_batches():
    """100k one-document inputs add 100k batches: merging must stay O(n log n), not re-sort all per batch."""
    import numpy as np

    from corpusdb.ingest.docids import DocIdSet

    rng = np.random.default_rng(0)
    batches = [rng.integers(-(2**62), 2**62, int(rng.integers(1, 6))) for _ in range(20_000)]
    ids = DocIdSet()
    for batch in batches:
        ids.add(batch)
    everything = np.concatenate(batches)
    n = len(everything)
    assert len(ids) == len(np.unique(everything)) and ids.n_runs <= 2 * int(np.log2(n))
    assert ids.merged <= 2 * n * np.log2(n)  # each id merged O(log n) times, not once per batch
    probe = np.concatenate([everything[::97], rng.integers(-(2**62), 2**62, 1000)])
    assert ids.contains(probe).tolist() == np.isin(probe, everything).tolist()


LINES = "".join(json.dumps({"text": f"document number {i} " + "word " * (i % 50)}) + "\n" for i in range(3000)).encode()
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": zstandard.ZstdCompressor().compress}


@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_a_truncated_compressed_file_is_one_line_naming_where(tmp_path, ext):
    data = COMPRESS[ext](LINES)
    path = tmp_path / f"cut.jsonl.{ext}"
    path.write_bytes(data[: len(data) * 2 // 3])
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(tmp_path / "db"), str(path), "--no-progress"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    name = {"gz": "gzip", "zst": "zstd"}.get(ext, ext)
    size = len(data) * 2 // 3
    assert result.output.startswith(f"Error: {path} after line ")
    assert result.output.endswith(f"({size:,} of {size:,} bytes read): truncated {name} file: it ends before its "
                                  "compressed data does; download or copy it again, or pass --on-error skip to keep "
                                  "the records before the damage\n")
    lines_read = int(result.output.split(" after line ")[1].split(" ")[0].replace(",", ""))
    # with skip, the whole records before the damage are kept and the damage is counted
    result = runner.invoke(cli, ["ingest", str(tmp_path / "db"), str(path), "--no-progress", "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "1 bad records skipped (damaged_file: 1)" in result.output
    db = corpusdb.open(str(tmp_path / "db"))
    texts = [t for (t,) in db.sql("select text from documents").fetchall()]
    assert len(texts) == lines_read and (ext == "bz2" or lines_read > 0)  # bz2 decodes 900 KB blocks whole
    expected = {json.loads(line)["text"].strip() for line in LINES.splitlines()[:lines_read]}
    assert set(texts) == expected


def test_a_file_of_another_compression_says_which(tmp_path):
    path = tmp_path / "really-gzip.jsonl.zst"
    path.write_bytes(gzip.compress(LINES))
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(path), "--no-progress"])
    assert result.exit_code == 1 and result.output == (
        f"Error: {path} after line 0 ({path.stat().st_size:,} of {path.stat().st_size:,} bytes read): not zstd data: "
        "the file starts like gzip; rename it to end in .gz instead of .zst, or pass --on-error skip to keep the "
        "records before the damage\n")
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_bytes(LINES[:2000])
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(plain), "--no-progress"])
    assert result.exit_code == 1 and "not gzip data: the file does not start like any compression corpusdb reads" \
        in result.output and result.output.count("\n") == 1


def test_bom_large_numbers_and_null_text(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"text": "first line after a byte order mark"}\n{"text": "second"}\n')
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"text": "a huge float", "n": 1e400, "m": {"x": -1e999}}\n'
                       '{"text": "a huge integer", "n": 123456789012345678901234567890}\n'
                       '{"text": "an ordinary one", "n": 3.5}\n')
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(bom)], source="bom", progress=False)
    db.ingest([str(numbers)], source="numbers", meta={"n": "n", "m": "m"}, progress=False)
    assert sorted(db.sql("select text from documents where source = 'bom'").fetchall()) == [
        ("first line after a byte order mark",), ("second",)]
    assert sorted(db.sql("select text, n, m from documents where source = 'numbers'").fetchall()) == [
        ("a huge float", "1e400", '{"x":"-1e999"}'),
        ("a huge integer", "123456789012345678901234567890", None),
        ("an ordinary one", "3.5", None),
    ]
    null = tmp_path / "null.jsonl"
    null.write_text('{"text": "fine"}\n{"text": null, "id": 2}\n')
    with pytest.raises(InputError, match=rf"^{null} line 2: field 'text' is null; give every record a text, or name "
                                         "another field with --text-field or pass --on-error skip"):
        db.ingest([str(null)], source="null", progress=False)
    report = db.ingest([str(null)], source="null", on_error="skip", progress=False)
    assert report.bad_records == {"null_text": 1} and report.n_docs_written == 1


def test_a_file_named_with_glob_characters_is_taken_literally(tmp_path):
    odd = tmp_path / "crawl[2024].jsonl"
    odd.write_text('{"text": "a file with brackets in its name"}\n')
    (tmp_path / "crawl2.jsonl").write_text('{"text": "what the glob would match"}\n')
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(odd)], source="odd", progress=False)
    assert db.sql("select text from documents").fetchall() == [("a file with brackets in its name",)]
    db.ingest([str(tmp_path / "crawl[0-9].jsonl")], source="glob", progress=False)  # a real glob still globs
    assert db.sql("select count(*) from documents where source = 'glob'").fetchall() == [(1,)]


@pytest.mark.s3
def test_object_storage_credential_messages(tmp_path, s3_server, s3_options, bucket):
    import s3fs

    s3fs.S3FileSystem(**s3_options).pipe(f"{bucket}/in/a.jsonl", b'{"text": "hello"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_server["endpoint"], HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))

    def ingest(**extra) -> str:
        result = subprocess.run([sys.executable, "-m", "corpusdb.cli", "ingest", str(tmp_path / "db"),
                                 f"s3://{bucket}/in/a.jsonl", "--no-progress"], env={**env, **extra},
                                capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        return result.stderr

    assert ingest(AWS_ACCESS_KEY_ID="nobody", AWS_SECRET_ACCESS_KEY="not-the-secret") == (
        f"Error: s3://{bucket}/in/a.jsonl: access denied with access key id 'nobody' (from AWS_ACCESS_KEY_ID) "
        "(The access key ID you provided does not exist in our records.); check the credentials "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or -o key=... -o secret=...)\n")
    assert ingest() == (
        f"Error: s3://{bucket}/in/a.jsonl: no credentials for object storage found; set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), pass -o key=... -o secret=..., or -o anon=true for a public bucket\n")


def test_the_next_run_removes_its_own_leftovers(tmp_path):
    inputs = tmp_path / "in"
    _small_files(inputs, 3)
    db = corpusdb.init(str(tmp_path / "db"))
    from corpusdb.ingest.job import input_key
    from corpusdb.ingest.readers import ReadOptions
    from corpusdb.ingest.sources import list_inputs

    items, _ = list_inputs([str(inputs)], "auto", {})
    keys = [input_key(item, ReadOptions(), "pages") for item in items]
    documents = tmp_path / "db" / "documents"
    documents.mkdir(parents=True, exist_ok=True)
    stale = documents / f".tmp-part-{keys[0]}-00000-0badcafe.parquet-{'a' * 32}"  # a killed run's write
    young = documents / f".tmp-part-{keys[1]}-00000-0badcafe.parquet-{'b' * 32}"  # maybe a write in flight
    other = documents / f".tmp-part-{'0' * 16}-00000-0badcafe.parquet-{'c' * 32}"  # not this job's input
    for path in (stale, young, other):
        path.write_bytes(b"half a part")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    report = db.ingest([str(inputs)], source="pages", progress=False)
    assert report.n_temporaries_removed == 1 and "1 temporary files a killed run of these inputs left" in report.summary()
    assert not stale.exists() and young.exists() and other.exists()

    # an export: what a killed write left beside the files it owns goes with the next run
    out = tmp_path / "export"
    manifest = db.view("documents").export(str(out))
    part = manifest["parts"][0]["file"]
    leftovers = [out / f".tmp-{part}-{'d' * 32}", out / f".tmp-manifest.json-{'e' * 32}"]
    for path in leftovers:
        path.write_bytes(b"half written")
    again = db.view("documents").export(str(out))
    assert again["reused"] and not any(path.exists() for path in leftovers)
    assert sorted(p.name for p in out.iterdir()) == export_files(manifest)


def test_help_lists_and_summaries(tmp_path, tiny_models):
    runner = CliRunner()
    help_text = runner.invoke(cli, ["train", "--help"], terminal_width=200).output
    assert "--warmup-steps" in help_text and "linear warmup steps [default: 20]" in help_text
    assert "--shuffle / --no-shuffle" in help_text and "--db " not in help_text  # DB is the argument
    module = subprocess.run([sys.executable, "-m", "corpusdb.train.pretrain", "--help"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200"})
    assert re.search(r"--max-steps MAX_STEPS\s+optimizer steps \(default: 200\)", module.stdout), module.stdout

    db = corpusdb.init(str(tmp_path / "db"))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(6)))
    db.ingest([str(tmp_path / "a.jsonl")], source="a", progress=False)
    db.score(str(tiny_models["gpt2"]), "teacher", progress=False)
    out = runner.invoke(cli, ["stats", db.url]).output
    assert "scored by: teacher (6 of 6 documents)\nno near-duplicate clusters (corpusdb minhash)\n" in out

    listed = runner.invoke(cli, ["view", "list", db.url], terminal_width=100).output
    block = listed[listed.index("difference  (built-in macro)"):].split("\n\n")[0]
    assert "…" not in listed and "per := 'byte'" in listed and "docs := 'documents'" in block

    with pytest.warns(UserWarning, match="--warmup-steps 50 is not shorter than --max-steps 2"):
        from corpusdb.train.pretrain import TrainConfig, train

        train(TrainConfig(db=db.url, out=str(tmp_path / "student"), max_steps=2, warmup_steps=50, batch_size=2,
                          seq_len=32, vocab_size=300, tokenizer_docs=6, progress=False, eval_every=0,
                          checkpoint_every=2, log_every=1))
