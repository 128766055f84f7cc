"""Exporting views: lossless round trips, token arrays, crash safety, object storage, the HTML report, the CLI."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli
from corpusdb.errors import ExportError
from tests.conftest import CORPUS, export_files, ingest_per_source
from tests.views_fixture import build
from corpusdb.train.dataset import Blocks

VIEW = "difference('teacher', 'reference', alpha := 1)"


@pytest.fixture(scope="module")
def scored_source(tmp_path_factory, tiny_models) -> str:
    """The fixture corpus scored by two tiny models named teacher and reference (made once per module)."""
    path = str(tmp_path_factory.mktemp("scored") / "db")
    db = corpusdb.init(path)
    ingest_per_source(db, CORPUS, meta={"title": "title"})
    db.score(str(tiny_models["gpt2"]), "teacher", progress=False)
    db.score(str(tiny_models["llama"]), "reference", progress=False)
    db.close()
    return path


@pytest.fixture
def scored_db(scored_source, tmp_path) -> corpusdb.Database:
    """A copy of the scored database of its own for each test (the database folder holds only relative paths)."""
    shutil.copytree(scored_source, tmp_path / "db")
    return corpusdb.open(str(tmp_path / "db"))


def _texts_in_place_order(db: corpusdb.Database, view: str) -> list[str]:
    """The view's texts in the order of their documents in the committed parts (parts sorted by path, then rows):
    the order an export of a view that keeps documents unchanged writes them in."""
    kept = {doc_id for (doc_id,) in db.sql(f"select doc_id from {view}").fetchall()}
    texts = []
    for part in db.parts("documents"):
        table = pq.read_table(part, columns=["doc_id", "text"])
        texts += [t for d, t in zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()) if d in kept]
    return texts


def _view_rows(db: corpusdb.Database, view: str) -> list[dict]:
    return sorted(db.view(view).relation().to_arrow_table().to_pylist(), key=lambda r: r["doc_id"])


def test_parquet_and_jsonl_exports_round_trip(scored_db, tmp_path):
    rows = _view_rows(scored_db, VIEW)
    assert len(rows) == 357
    manifest = scored_db.view(VIEW).export(str(tmp_path / "pq"), part_size_mb=0.05)
    assert manifest["n_rows"] == 357 and len(manifest["parts"]) >= 5
    assert manifest["sql"] == f"select * from {VIEW}" and len(manifest["inputs_hash"]) == 32
    assert set(manifest["definitions"]) == {"difference", "difference_coverage", "difference_units", "instances_of",
                                            "difference_kept", "instances_of_kept", "require", "require_coverage", "require_unit", "score_command",
                                            "scored_models", "unit_key", "unit_of"}
    assert set(manifest["models"]) == {"teacher", "reference"} and manifest["version"] == scored_db.version
    assert all(m["content_hash"] and m["tokenizer_hash"] for m in manifest["models"].values())
    back = [r for p in manifest["parts"] for r in pq.read_table(tmp_path / "pq" / p["file"]).to_pylist()]
    assert sorted(back, key=lambda r: r["doc_id"]) == rows  # every column of every row
    assert sum(p["bytes"] for p in manifest["parts"]) == sum(r["n_bytes"] for r in rows)

    manifest = scored_db.view(VIEW).export(str(tmp_path / "jsonl"), format="jsonl", part_size_mb=0.1)
    reimported = corpusdb.init(str(tmp_path / "again"))
    reimported.ingest([str(tmp_path / "jsonl" / "part-*.jsonl")], source="x", meta={"orig_source": "source", "title": "title"}, progress=False)
    assert sorted(reimported.sql("select doc_id, orig_source, text, n_bytes, title from documents").fetchall()) == sorted(
        (r["doc_id"], r["source"], r["text"], r["n_bytes"], r["title"]) for r in rows
    )


@pytest.mark.parametrize("slice_bytes", [None, 2000])
def test_token_export_decodes_back_to_the_text(scored_db, tmp_path, tiny_models, monkeypatch, slice_bytes):
    """Whole parts in one tokenizer call, or (as a 256 MB part is) in many slices of text: the same tokens."""
    from transformers import AutoTokenizer

    import corpusdb.export_base

    if slice_bytes:
        monkeypatch.setattr(corpusdb.export_base, "TOKENIZE_BYTES", slice_bytes)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    manifest = scored_db.view("documents").export(str(tmp_path / "tok"), format="tokens", tokenizer=str(tiny_models["gpt2"]),
                                                  part_size_mb=0.1)
    assert manifest["dtype"] == "uint16" and manifest["eos_token_id"] == tokenizer.eos_token_id
    texts = dict(scored_db.sql("select doc_id, text from documents").fetchall())
    total = 0
    for part in manifest["parts"]:
        tokens = np.fromfile(tmp_path / "tok" / part["file"], dtype="<u2")
        index = pq.read_table(tmp_path / "tok" / part["index"]).to_pylist()
        assert len(tokens) == part["tokens"] == sum(i["n_tokens"] for i in index)
        for entry in index:
            ids = tokens[entry["offset"] : entry["offset"] + entry["n_tokens"]]
            assert ids[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(ids[:-1].tolist()) == texts[entry["doc_id"]]
        total += len(index)
    assert total == len(texts) == manifest["n_rows"]


def test_a_killed_export_has_no_manifest_and_a_rerun_completes_it(tmp_path):
    db = corpusdb.init(str(tmp_path / "db"))
    ingest_per_source(db, CORPUS)
    clean = db.view("documents").export(str(tmp_path / "clean"), part_size_mb=0.02)
    out = tmp_path / "crashed"
    script = f"import corpusdb; corpusdb.open({str(tmp_path / 'db')!r}).view('documents').export({str(out)!r}, part_size_mb=0.02)"
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "CORPUSDB_FAILPOINT": "export.after_part=3"},
                            capture_output=True, text=True)
    assert result.returncode == 75, result.stderr
    assert not (out / "manifest.json").exists() and len(list(out.glob("part-*.parquet"))) == 3
    # a file nobody told corpusdb about, even one named like a part, is never touched: the export refuses
    (out / "part-00099.parquet").write_bytes(b"someone else's file")
    with pytest.raises(ExportError, match=r"crashed holds 1 file\(s\) corpusdb did not write \(e.g. 'part-00099.parquet'\)"):
        db.view("documents").export(str(out), part_size_mb=0.02)
    assert (out / "part-00099.parquet").read_bytes() == b"someone else's file"
    (out / "part-00099.parquet").unlink()
    again = db.view("documents").export(str(out), part_size_mb=0.02)
    assert [p["file"] for p in again["parts"]] == [p["file"] for p in clean["parts"]]
    for part in clean["parts"]:
        assert (out / part["file"]).read_bytes() == (tmp_path / "clean" / part["file"]).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == export_files(clean)
    # complete and unchanged: a re-run does nothing; another view there needs overwrite
    assert db.view("documents").export(str(out), part_size_mb=0.02)["created_at"] == again["created_at"]
    with pytest.raises(ExportError, match="already holds another export \\('documents' at version 9, inputs [0-9a-f]{12}: "
                                          "another selection, other data or other settings\\); pass --overwrite"):
        db.view("dedup(missing := 'keep')").export(str(out))
    replaced = db.view("dedup(missing := 'keep')").export(str(out), overwrite=True)
    assert replaced["view"] == "dedup(missing := 'keep')"  # the old export's files went once the new manifest was in place
    assert sorted(p.name for p in out.iterdir()) == export_files(replaced)


@pytest.mark.s3
def test_export_to_s3(tmp_path, s3_options, bucket):
    import s3fs

    db = build(tmp_path / "db")
    url = f"s3://{bucket}/exports/refined"
    manifest = db.view("difference('teacher', 'reference', missing := 'exclude')").export(url, storage_options=s3_options)
    fs = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    assert json.loads(fs.cat_file(f"{bucket}/exports/refined/manifest.json")) == manifest
    table = pq.read_table(f"{bucket}/exports/refined/{manifest['parts'][0]['file']}", filesystem=fs)
    assert table.num_rows == manifest["n_rows"] == 3


def test_report_renders_plots(scored_db, tmp_path):
    scored_db.minhash(workers=1, progress=False)
    scored_db.create_view("short", "select * from documents where n_bytes < 1000")
    scored_db.annotate("shout", "tests.annotators:shouting", progress=False, workers=1)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", scored_db.url, "--out", str(out), "--docs", "dedup"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    titles = ("Bits per byte by source, over dedup", "Teacher vs reference, with the selection boundary",
              "Difference scores, with the cut", "Kept fraction of each source", "Annotation shout (python) over dedup: ",
              "Per-source shares of each view")
    for title in titles:
        assert f"<h2>{title}" in page
    assert page.count('src="data:image/png;base64,') == len(titles)
    assert "<td>short</td>" in page and "difference(&#x27;teacher&#x27;, &#x27;reference&#x27;, alpha := 0.5, docs := &#x27;dedup&#x27;)" in page
    # the examples: the top of the ranking is the row with the highest difference score over dedup, with its text
    (top_id, top_text), = scored_db.sql("select doc_id, text from difference_scores('teacher', 'reference', docs := 'dedup') "
                                        "order by score desc, doc_id limit 1").fetchall()
    top = page[page.index("<h3>The top of the ranking</h3>"):page.index("<h3>The bottom of the ranking</h3>")]
    first_row = top.split("<tr>")[2]  # after the header row
    assert first_row.startswith(f"<td>{top_id}</td>") and html.escape(top_text[:100]) in first_row
    assert "bits per byte" in page and "nats" not in page
    result = CliRunner().invoke(cli, ["report", scored_db.url, "--out", str(tmp_path / "x.html"), "--docs", "nope"])
    assert result.exit_code == 1 and "no table or view named 'nope'" in result.output
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium here (apt-get install chromium) to open the report")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1000,3000",
                    out.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1000, 3000)
    assert sum(1 for count in image.histogram() if count) > 50  # plots rendered, not a blank or error page


def test_view_commands(tmp_path):
    db = build(tmp_path / "db")
    runner = CliRunner()
    result = runner.invoke(cli, ["view", "create", db.url, "refined", "--sql", "select * from difference('teacher', 'reference', missing := 'exclude')"])
    assert result.exit_code == 0 and result.output == "view 'refined' saved (3 rows now) in version 6\n"
    assert (tmp_path / "db" / "views" / "refined.sql").read_text() == "select * from difference('teacher', 'reference', missing := 'exclude')\n"
    result = runner.invoke(cli, ["view", "create", db.url, "broken", "--sql", "select nope from documents"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: view 'broken' is not valid SQL over this database: Binder Error: Referenced column \"nope\" not found")
    result = runner.invoke(cli, ["view", "create", db.url, "broken2", "--sql", "select * from no_such_view"])
    assert result.exit_code == 1 and "no_such_view does not exist" in result.output
    assert not (tmp_path / "db" / "views" / "broken.sql").exists() and "broken" not in corpusdb.open(db.url).snapshot.views
    result = runner.invoke(cli, ["view", "create", db.url, "dedup", "--sql", "select 1"])
    assert result.exit_code == 1 and "'dedup' is a table or built-in view; choose another name" in result.output
    result = runner.invoke(cli, ["view", "list", db.url, "--format", "csv"])
    assert "refined,user view,\"select * from difference('teacher', 'reference', missing := 'exclude')\",\n" in result.output
    assert "difference,built-in macro,MiniPLM Difference Sampling" in result.output
    result = runner.invoke(cli, ["view", "stats", db.url, "refined", "--format", "json"])
    stats = json.loads(result.output)
    assert stats["n_documents"] == 3 and stats["n_bytes"] == 40 and stats["n_tokens"] == {"reference": 19, "teacher": 20}
    assert stats["sources"] == [{"source": "web", "n_documents": 3, "n_bytes": 40, "share_documents": 1.0, "share_bytes": 1.0}]
    assert stats["quantiles"]["score"] == [1.0, 1.0, 1.0, 1.0, 1.5, 1.8, 2.0]
    result = runner.invoke(cli, ["compare", db.url, "refined", "filter_source(['web'])", "--format", "json"])
    compared = json.loads(result.output)
    assert (compared["n_a"], compared["n_b"], compared["n_both"], compared["jaccard"]) == (3, 3, 3, 1.0)
    result = runner.invoke(cli, ["export", db.url, "refined", str(tmp_path / "out"), "--no-progress"])
    assert result.output == f"exported 3 rows (40 bytes) in 1 parts to {tmp_path / 'out'} (version 6)\n"
    result = runner.invoke(cli, ["export", db.url, "nope", str(tmp_path / "out2")])
    assert result.exit_code == 1 and result.output.startswith("Error: no table or view named 'nope'; views: ")
    result = runner.invoke(cli, ["sql", db.url, "select * from difference('teacher', 'reference', per := 'word', missing := 'exclude')"])
    assert result.exit_code == 1 and result.output == "Error: Invalid Input Error: difference: per must be 'byte' or 'token', not 'word'\n"
    assert runner.invoke(cli, ["view", "drop", db.url, "refined"]).output == "view 'refined' dropped in version 7\n"
    assert not (tmp_path / "db" / "views" / "refined.sql").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_megatron_export_reads_back_token_exact_with_megatron_core(scored_db, tmp_path, tiny_models):
    """`--format megatron` is Megatron-LM's indexed dataset: megatron-core's own reader gives back every row's tokens."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    manifest = scored_db.view(VIEW).export(str(tmp_path / "mg"), format="megatron", tokenizer=str(tiny_models["gpt2"]),
                                           part_size_mb=0.05)
    assert len(manifest["parts"]) > 1 and manifest["dtype"] == "uint16"
    texts = _texts_in_place_order(scored_db, VIEW)
    read = []
    for part in manifest["parts"]:
        assert {part["file"], part["index"]} == {f"{part['prefix']}.bin", f"{part['prefix']}.idx"}
        dataset = IndexedDataset(str(tmp_path / "mg" / part["prefix"]))
        assert len(dataset) == part["rows"] and list(dataset.document_indices) == list(range(part["rows"] + 1))
        read += [dataset[i].tolist() for i in range(len(dataset))]
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    assert read == expected and sum(len(r) for r in read) == manifest["n_tokens"]
    with pytest.raises(ValueError, match="is a Megatron-LM export"):
        Blocks(str(tmp_path / "mg"))  # not streamed back by ViewDataset: that one is for Megatron-LM


def test_datatrove_export_has_datatroves_tokenized_layout(scored_db, tmp_path, tiny_models):
    """`--format datatrove`: PREFIX.ds (tokens, EOS after each document), PREFIX.ds.index (uint64 document ends) and
    PREFIX.ds.metadata, as datatrove's DocumentTokenizer writes them and nanotron's DatatroveFolderDataset reads them
    (checked against that layout: datatrove is not installed beside corpusdb)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    out = tmp_path / "dt"
    manifest = scored_db.view(VIEW).export(str(out), format="datatrove", tokenizer=str(tiny_models["gpt2"]), part_size_mb=0.05)
    assert len(manifest["parts"]) > 1
    texts = _texts_in_place_order(scored_db, VIEW)
    read = []
    for part in manifest["parts"]:
        prefix = part["prefix"]
        assert (part["file"], part["index"], part["metadata"]) == (f"{prefix}.ds", f"{prefix}.ds.index", f"{prefix}.ds.metadata")
        tokens = np.fromfile(out / part["file"], dtype="<u2")
        ends = np.fromfile(out / part["index"], dtype="<u8")
        assert len(ends) == part["rows"] and ends[-1] == len(tokens) == part["tokens"]
        read += [tokens[a:b].tolist() for a, b in zip([0, *ends[:-1].tolist()], ends.tolist())]
        name, tokens_line, _ = (out / part["metadata"]).read_text().split("\n")
        assert name == f"{tokenizer.name_or_path}|2" and int(tokens_line) == len(tokens)
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    assert read == expected and sum(map(len, read)) == manifest["n_tokens"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *(p[k] for p in manifest["parts"]
                                                                               for k in ("file", "index", "metadata"))])
    with pytest.raises(ValueError, match="is a datatrove export"):
        Blocks(str(out))


def test_a_parquet_part_s_bytes_do_not_depend_on_how_its_rows_came(tmp_path):
    """Arrow's writer checks its dictionary's size at the chunks it is given and falls back to plain pages there: a
    part's row groups are written as one chunk, so the rows split into batches anywhere give the same bytes (a
    sharded export's batches are cut where its plan's slices end, one process's where DuckDB's batches do)."""
    import pyarrow as pa

    from corpusdb.part_sink import PartSink
    from corpusdb.storage import Location

    rng = np.random.default_rng(0)
    n = 30_000  # ~3 MB of distinct text in a row group: past the 1 MB dictionary page, so the writer falls back
    texts = [rng.bytes(int(k)).hex() for k in rng.integers(20, 80, n)]
    table = pa.table({"doc_id": np.arange(n), "text": texts, "n_bytes": [len(t) for t in texts]})
    written = []
    for name, sizes in (("one", [n]), ("small", [1000] * 30), ("uneven", [1, 4096, 13_000, 7, 12_896])):
        sink = PartSink(Location(str(tmp_path / name)), "parquet", "k", None, part_bytes=1 << 30)
        start = 0
        for size in sizes:
            for batch in table.slice(start, size).to_batches():
                sink.add(batch)
            start += size
        sink.finish()
        written.append((tmp_path / name / sink.parts[0]["file"]).read_bytes())
    assert pq.ParquetFile(tmp_path / "one" / sink.parts[0]["file"]).metadata.row_group(0).column(1).encodings[-1] \
        == "RLE_DICTIONARY" and written[0] == written[1] == written[2]


def test_a_sharded_export_is_the_bytes_of_one_process_and_survives_a_killed_shard(scored_db, tmp_path, tiny_models,
                                                                                  monkeypatch):
    """`shards=3`: the driver cuts the parts on keys, local processes write them; every file is the single-process
    export's, even when a shard's process is killed after its first part (the pool runs it again); the CLI's
    --shards too."""
    tokenizer = str(tiny_models["gpt2"])
    one = scored_db.view(VIEW).export(str(tmp_path / "one"), format="megatron", tokenizer=tokenizer, part_size_mb=0.02)
    monkeypatch.setenv("CORPUSDB_FAILPOINT", "export.after_part=1")
    monkeypatch.setenv("CORPUSDB_FAILPOINT_ONCE", str(tmp_path / "crashed-once"))
    many = scored_db.view(VIEW).export(str(tmp_path / "many"), format="megatron", tokenizer=tokenizer, part_size_mb=0.02,
                                       shards=3, workers=2)
    assert (tmp_path / "crashed-once").exists()  # a shard's process died, and its parts were written again
    assert len(one["parts"]) > 6 and many["parts"] == one["parts"] and many["n_tokens"] == one["n_tokens"]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "many").iterdir()) == export_files(one)  # no plan left behind
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
    monkeypatch.delenv("CORPUSDB_FAILPOINT")
    single = scored_db.view(VIEW).export(str(tmp_path / "single"), part_size_mb=0.02)
    result = CliRunner().invoke(cli, ["export", scored_db.url, VIEW, str(tmp_path / "cli"), "--part-size-mb", "0.02",
                                      "--shards", "2", "--task-memory-limit", "500MB"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["parts"] == single["parts"]
    for part in single["parts"]:
        assert (tmp_path / "single" / part["file"]).read_bytes() == (tmp_path / "cli" / part["file"]).read_bytes()
    with pytest.raises(ValueError, match="does not hand out documents' or instances' text unchanged"):
        scored_db.view(f"select doc_id, upper(text) as text, n_bytes from {VIEW}").export(str(tmp_path / "x"), shards=2)
    # MDS: the plan cuts the parts where MDSWriter ends its shards (from the samples' columns but the text), for a view
    # this process cuts and for a policy's tasks
    for i, view in enumerate(("select * from documents where n_bytes > 100", VIEW)):
        one = scored_db.view(view).export(str(tmp_path / f"mds-one{i}"), format="mds", part_size_mb=0.02)
        many = scored_db.view(view).export(str(tmp_path / f"mds-many{i}"), format="mds", part_size_mb=0.02, shards=3,
                                           executor="inline")
        assert many["parts"] == one["parts"] and len(one["parts"]) > 4
        names = sorted(p.name for p in (tmp_path / f"mds-one{i}").iterdir())
        assert names == sorted(p.name for p in (tmp_path / f"mds-many{i}").iterdir())
        for name in names:  # index.json among them
            if name != "manifest.json":
                assert (tmp_path / f"mds-one{i}" / name).read_bytes() == (tmp_path / f"mds-many{i}" / name).read_bytes()
    for fmt, words in (("mds", "an MDS export with a tokenizer cuts its shards by the token ids' bytes"),
                       ("litdata", "litdata's chunks are cut by LitData's own writer")):
        with pytest.raises(ValueError, match=f"{re.escape(words)}.*export it without --shards"):
            scored_db.view(VIEW).export(str(tmp_path / "y"), format=fmt, tokenizer=tokenizer, shards=2)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
