"""Scoring: sums of log-probabilities equal a plain transformers forward pass, resumes and shards are exact."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import corpusdb
from corpusdb.scoring.windows import make_batches, pack, windows
from tests.conftest import CORPUS

CLI = [sys.executable, "-m", "corpusdb.cli"]


def reference_logprob(model, tokenizer, text: str, context: int, stride: int) -> tuple[float | None, int]:
    """The transformers perplexity guide's loop, one document at a time, unpacked: (sum_logprob, n_tokens)."""
    x = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
    seq_len = x.size(1)
    if seq_len < 2:
        return None, 0
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + context, seq_len)
        trg_len = end - prev_end
        inputs = x[:, begin:end]
        labels = inputs.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(inputs, labels=labels).loss
        n = int((labels[:, 1:] != -100).sum())
        total += -loss.item() * n
        count += n
        prev_end = end
        if end == seq_len:
            break
    return total, count


def _scores(db: corpusdb.Database, name: str) -> list[tuple]:
    db.refresh()
    return db.sql(
        "select doc_id, sum_logprob, n_tokens, n_bytes from scores where model = ? order by doc_id", params=[name]
    ).fetchall()


@pytest.fixture
def small_db(tmp_path: Path) -> corpusdb.Database:
    """Short (fortunes), medium (bible) and long (git-docs) real documents, plus an empty one."""
    db = corpusdb.init(str(tmp_path / "db"))
    for source in ("fortunes", "bible", "git-docs"):
        db.ingest([str(CORPUS / f"{source}.jsonl")], source=source, progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    db.ingest([str(empty)], source="empty", progress=False)
    return db


@pytest.mark.parametrize("arch,stride,batch_tokens", [("gpt2", 32, 256), ("gpt2", 63, 4096), ("llama", 20, 512)])
def test_sum_logprob_equals_plain_forward(small_db, tiny_models, arch, stride, batch_tokens):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = small_db.score(str(tiny_models[arch]), arch, stride=stride, batch_tokens=batch_tokens, chunk_docs=100,
                            part_bytes=10**9, progress=False)
    assert report.n_documents == 298 and report.n_parts_written == 3
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
    context = model.config.max_position_embeddings if arch == "llama" else model.config.n_positions
    texts = dict(small_db.sql("select doc_id, text from documents").fetchall())
    long_docs = 0
    for doc_id, sum_logprob, n_tokens, n_bytes in _scores(small_db, arch):
        expected, expected_tokens = reference_logprob(model, tokenizer, texts[doc_id], context, stride)
        assert n_tokens == expected_tokens and n_bytes == len(texts[doc_id].encode())
        if expected is None:
            assert sum_logprob is None and texts[doc_id] == ""
            continue
        assert sum_logprob == pytest.approx(expected, abs=1e-4 * max(1, n_tokens) ** 0.5, rel=1e-6)
        long_docs += n_tokens > context
    assert long_docs >= 10  # windows were exercised


def test_packing_puts_several_documents_in_a_row(tiny_models):
    rows = pack([30, 10, 20, 5, 64, 33], 64)
    assert sorted(sum(([i] for r in rows for i in r), [])) == [0, 1, 2, 3, 4, 5]
    assert all(sum([30, 10, 20, 5, 64, 33][i] for i in r) <= 64 for r in rows) and len(rows) == 3
    sequences = [list(range(n)) for n in (3, 70, 1, 40)]
    import numpy as np

    batches = make_batches([np.array(s) for s in sequences], context=32, stride=16, row_tokens=32, batch_tokens=64, pad_id=0)
    scored = sum(int((b.doc_index >= 0).sum()) for b in batches)
    assert scored == 2 + 69 + 0 + 39  # every token but the first of each sequence, once
    for w in windows(70, 32, 16):
        assert w.length <= 32


def test_different_tokenizers_give_consistent_bits_per_byte(small_db, tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for arch in ("gpt2", "llama"):
        small_db.score(str(tiny_models[arch]), arch, progress=False)
    per_model = small_db.sql(
        "select model, count(*), count(sum_logprob), sum(n_tokens), sum(n_bytes), sum(sum_logprob) from scores group by 1 order by 1"
    ).fetchall()
    (_, docs_g, scored_g, tokens_g, bytes_g, sum_g), (_, docs_l, scored_l, tokens_l, bytes_l, sum_l) = per_model
    assert docs_g == docs_l == 298 and scored_g == scored_l == 297 and bytes_g == bytes_l
    assert tokens_g != tokens_l  # different tokenizers cut the same text differently
    texts = [t for (t,) in small_db.sql("select text from documents where source = 'bible' order by doc_id").fetchall()]
    ids = [i for (i,) in small_db.sql("select doc_id from documents where source = 'bible' order by doc_id").fetchall()]
    for arch in ("gpt2", "llama"):
        model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
        tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
        # perplexity of the bible documents from an independent, unpacked run
        total, count = 0.0, 0
        context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
        for text in texts:
            s, n = reference_logprob(model, tokenizer, text, context, context // 2)
            total, count = total + s, count + n
        perplexity = math.exp(-total / count)
        n_bytes = sum(len(t.encode()) for t in texts)
        (bpb,) = small_db.sql(
            "select -sum(sum_logprob) / sum(n_bytes) / ln(2) from scores where model = ? and doc_id in (select unnest(?))",
            params=[arch, ids],
        ).fetchall()[0]
        assert bpb == pytest.approx(math.log2(perplexity) * count / n_bytes, rel=1e-6)
    # random weights: about log2(vocabulary) bits per token either way
    assert -sum_g / tokens_g == pytest.approx(math.log(1000), rel=0.05)
    assert -sum_l / tokens_l == pytest.approx(math.log(400), rel=0.05)


def _cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


def test_killed_job_resumes_to_the_bits_of_a_single_run(tiny_models, tmp_path):
    """Parts end every --part-bytes bytes of text (on CPU, about a minute of work), cut from every document
    whether scored or not: a kill keeps every committed part, and the resumed job packs the remaining parts
    as the uninterrupted run did, so its scores are the same bits, not merely close."""
    model = str(tiny_models["gpt2"])
    lines = [line for s in ("fortunes", "bible", "git-docs") for line in (CORPUS / f"{s}.jsonl").read_text().splitlines()]
    sources = []  # ten ingests, ten documents parts: DuckDB reads them in parallel, in an order that varies
    for i in range(10):
        sources.append(tmp_path / f"docs-{i}.jsonl")
        sources[-1].write_text("\n".join(lines[i::10]) + "\n")
    whole, crashed = corpusdb.init(str(tmp_path / "whole")), corpusdb.init(str(tmp_path / "crashed"))
    for path in sources:
        for db in (whole, crashed):
            db.ingest([str(path)], source="x", progress=False)
    report = whole.score(model, "m", part_bytes=16000, threads=1, progress=False)
    assert report.n_parts_written >= 6  # 119 kB of text: parts by bytes, not by the default 8192 documents
    url = str(tmp_path / "crashed")
    settings = ("--part-bytes", "16000", "--threads", "1", "--no-progress")
    result = _cli("score", url, "--model", model, "--as", "m", *settings, "--commit-every", "0",
                  env={"CORPUSDB_FAILPOINT": "score.after_part=3"})
    assert result.returncode == 75, result.stderr
    db = corpusdb.open(url)
    done = db.sql("select count(*) from scores").fetchall()[0][0]
    finished = set(db.snapshot.tables["scores"])
    assert 0 < done < 297 and len(finished) == 3
    result = _cli("score", url, "--model", model, "--as", "m", *settings)
    assert result.returncode == 0, result.stderr
    assert f"scored {297 - done} documents" in result.stdout and f"{done} documents were scored before" in result.stdout
    resumed = corpusdb.open(url)
    assert finished <= set(resumed.snapshot.tables["scores"])  # the finished parts were kept, not rescored
    assert _scores(resumed, "m") == _scores(whole, "m")  # bit for bit
    again = _cli("score", url, "--model", model, "--as", "m", "--no-progress")
    assert "scored 0 documents" in again.stdout
    renamed = _cli("score", url, "--model", model, "--as", "m", "--part-tokens", "6000")
    assert renamed.returncode == 2 and "--part-tokens is now --part-bytes" in renamed.stderr


def _assert_same_scores(got: list[tuple], want: list[tuple]) -> None:
    """Same documents, token and byte counts; sums equal up to float32 reduction order."""
    assert [(d, n, b) for d, _, n, b in got] == [(d, n, b) for d, _, n, b in want]
    for (_, a, *_), (_, b, *_) in zip(got, want, strict=True):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-5)


def test_shards_together_equal_a_single_run(small_db, tiny_models, tmp_path):
    model = str(tiny_models["llama"])
    small_db.score(model, "single", progress=False)
    sharded = corpusdb.open(small_db.url)
    reports = [sharded.score(model, "sharded", shard=f"{i}/3", progress=False) for i in (2, 0, 1)]
    assert sum(r.n_documents for r in reports) == 298 and all(r.n_documents > 50 for r in reports)
    _assert_same_scores(_scores(sharded, "sharded"), _scores(sharded, "single"))


def test_torchrun_with_two_ranks_equals_a_single_process(small_db, tiny_models):
    model = str(tiny_models["gpt2"])
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "corpusdb.cli",
         "score", small_db.url, "--model", model, "--as", "ranked", "--no-progress"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = sorted(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("scored"))
    assert len(counts) == 2 and sum(counts) == 298 and counts[0] > 100  # each rank took its own residue
    single = corpusdb.open(small_db.url)
    single.score(model, "single", progress=False)
    _assert_same_scores(_scores(single, "ranked"), _scores(single, "single"))


def test_a_view_limits_what_is_scored(small_db, tiny_models):
    model = str(tiny_models["gpt2"])
    report = small_db.score(model, "m", view="filter_source(['bible'])", progress=False)
    assert report.n_documents == 12
    assert small_db.sql("select count(*) from scores s join documents d using (doc_id) where d.source = 'bible'").fetchall() == [(12,)]
    assert small_db.score(model, "m", progress=False).n_documents == 298 - 12  # the rest, later


def test_new_documents_are_scored_incrementally(small_db, tiny_models, tmp_path):
    model = str(tiny_models["gpt2"])
    assert small_db.score(model, "m", progress=False).n_documents == 298
    small_db.ingest([str(CORPUS / "shakespeare.jsonl")], source="shakespeare", progress=False)
    report = small_db.score(model, "m", progress=False)
    assert report.n_documents == 12 and report.n_documents_before == 298
    assert small_db.sql("select count(*) from scores").fetchall() == [(310,)]


def _bert(path: Path) -> Path:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(path)
    return path


def test_bad_models_and_settings_are_one_line_errors(small_db, tiny_models, tmp_path):
    from corpusdb.errors import CatalogError, ModelError

    gpt2 = str(tiny_models["gpt2"])
    cases = [
        ("/nonexistent/model", {}, ModelError, "model '/nonexistent/model' not found: no such folder or .gguf file"),
        (str(tmp_path), {}, ModelError, "the folder has no config.json; pass a folder written by save_pretrained"),
        (str(_bert(tmp_path / "bert")), {}, ModelError, "is a BertModel, not a causal language model"),
        (gpt2, {"stride": 64}, ValueError, "stride 64 must be between 1 and context - 1 = 63"),
        (gpt2, {"context": 65}, ValueError, "context 65 exceeds the model's 64 positions"),
        (gpt2, {"precision": "fp8"}, ValueError, "precision 'fp8' is not one of auto, fp32, bf16, fp16"),
        (gpt2, {"shard": "2/2"}, ValueError, "shard 2/2 is out of range; use i/n with 0 <= i < n"),
    ]
    for model, options, error, message in cases:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            small_db.score(model, "m", progress=False, **options)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0' asked for but no CUDA GPU is visible; use --device cpu"):
            small_db.score(gpt2, "m", device="cuda:0", progress=False)
    with pytest.raises(ValueError, match="score name 'a/b' must be 1-64 letters"):
        small_db.score(gpt2, "a/b", progress=False)
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((tiny_models["gpt2"] / name).read_bytes())
    with pytest.raises(ModelError, match="its tokenizer cannot be loaded"):
        small_db.score(str(no_tokenizer), "m", progress=False)
    assert small_db.sql("select count(*) from scores").fetchall() == [(0,)]  # nothing written by any of these
    assert corpusdb.open(small_db.url).snapshot.models == {}

    small_db.score(gpt2, "m", stride=40, progress=False)
    with pytest.raises(CatalogError, match="scores 'm' were made with stride=40, not 32; pass the same settings, another --as name, or --replace"):
        small_db.score(gpt2, "m", progress=False)
    with pytest.raises(ValueError, match="--replace deletes every score of NAME, so it cannot run sharded or under torchrun"):
        small_db.score(gpt2, "m", replace=True, shard="0/2", progress=False)
    report = small_db.score(gpt2, "m", replace=True, progress=False)
    assert report.n_documents == 298 and corpusdb.open(small_db.url).snapshot.models["m"]["stride"] == 32


def test_cli_score_errors_and_help(small_db, tiny_models, tmp_path):
    result = _cli("score", small_db.url, "--model", str(_bert(tmp_path / "bert")), "--as", "b")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: model '{tmp_path / 'bert'}' is a BertModel, not a causal language model; "
        "score with a decoder-only LM (GPT-2, Llama, SmolLM2, ...)"
    ]
    result = _cli("score", small_db.url, "--model", "no-such-org/no-such-model", "--as", "x", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("Error: model 'no-such-org/no-such-model' is not a local folder or .gguf file, nor in the "
                                    "local hub cache, and the hub cannot be reached (HF_HUB_OFFLINE is set); pass a local path")
    missing = tmp_path / "out" / "nope"  # its folder exists: a path, reported at once (not after hub retries)
    missing.parent.mkdir()
    result = _cli("score", small_db.url, "--model", str(missing.relative_to(tmp_path)), "--as", "x", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("Error: model 'out/nope' not found: no such folder")
    result = _cli("score", small_db.url, "--model", str(tiny_models["llama"]), "--as", "llama", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["n_documents"] == 298 and report["precision"] == "fp32" and report["n_tokens"] > 50_000
    catalog = corpusdb.open(small_db.url).snapshot.models["llama"]
    assert catalog["architecture"] == "LlamaForCausalLM" and catalog["context"] == 48 and catalog["stride"] == 24


def test_a_score_name_is_bound_to_the_models_content_not_its_path(small_db, tiny_models, tmp_path, monkeypatch):
    import shutil

    from corpusdb.errors import CatalogError

    gpt2 = tiny_models["gpt2"]
    texts = small_db.sql("select doc_id from documents order by doc_id").fetchall()
    half = f"select * from documents where doc_id <= {texts[len(texts) // 2][0]}"
    small_db.score(str(gpt2), "ref", view=half, progress=False)
    # the same files under another folder, named by a relative path: the same model, so the rest is scored
    moved = tmp_path / "elsewhere" / "gpt2"
    shutil.copytree(gpt2, moved)
    monkeypatch.chdir(tmp_path)
    report = small_db.score("elsewhere/gpt2", "ref", progress=False)
    assert report.n_documents_before == len(texts) // 2 + 1 and report.n_documents == len(texts) - report.n_documents_before
    # a checkpoint retrained in place is another model: refused before it is loaded (these weights could not even load)
    (moved / "model.safetensors").write_bytes(b"retrained weights")
    with pytest.raises(CatalogError, match=r"scores 'ref' were made by another model: '.*gpt2' \(content [0-9a-f]{12}\), "
                                           r"not 'elsewhere/gpt2' \(content [0-9a-f]{12}\), e.g. a checkpoint retrained in place; "
                                           r"score under another --as name, drop the old scores first"):
        small_db.score("elsewhere/gpt2", "ref", progress=False)
    # another model (its own tokenizer) under the name: refused after loading, before any document is scored
    with pytest.raises(CatalogError, match="scores 'ref' were made by another model"):
        small_db.score(str(tiny_models["llama"]), "ref", progress=False)
    assert corpusdb.open(small_db.url).sql("select count(*) from scores where model = 'ref'").fetchall() == [(len(texts),)]
    # a name with no scores yet (an empty view scored) is listed, not an error
    small_db.score(str(gpt2), "empty", view="select * from documents where false", progress=False)
    listed = {m["name"]: m for m in small_db.models()}
    assert listed["empty"]["n_documents"] == 0 and listed["ref"]["n_documents"] == len(texts)
    assert listed["ref"]["content_hash"] and listed["ref"]["tokenizer_hash"] and listed["ref"]["bits_per_byte"] > 0


def test_models_lists_drops_and_renames_score_names(small_db, tiny_models):
    from click.testing import CliRunner

    from corpusdb.cli import cli

    small_db.score(str(tiny_models["gpt2"]), "ref", progress=False)
    small_db.score(str(tiny_models["llama"]), "teach", progress=False)
    version = corpusdb.open(small_db.url).version
    runner = CliRunner()
    result = runner.invoke(cli, ["models", small_db.url, "--format", "csv"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "name,model,content_hash,tokenizer_hash,n_documents,n_tokens,bits_per_byte,context,precision,unit"
    assert [line.split(",")[0] for line in lines[1:]] == ["ref", "teach"] and all(",298," in line for line in lines[1:])
    result = runner.invoke(cli, ["models", small_db.url, "--rename", "ref", "reference"])
    assert result.exit_code == 0 and result.output == f"scores 'ref' renamed to 'reference' in version {version + 1}\n"
    db = corpusdb.open(small_db.url)
    assert sorted(db.snapshot.models) == ["reference", "teach"]
    assert db.sql("select count(*) from scores where model = 'reference'").fetchall() == [(298,)]
    assert db.sql("select count(*) from difference('teach', 'reference')").fetchall() == [(149,)]
    result = runner.invoke(cli, ["models", small_db.url, "--drop", "teach"])
    assert result.exit_code == 0 and result.output == f"scores 'teach' dropped (298 rows) in version {version + 2}\n"
    result = runner.invoke(cli, ["sql", small_db.url, "select * from difference('teach', 'reference')"])
    assert result.exit_code == 1 and result.output == "Error: Invalid Input Error: difference: no scores named 'teach'; scored models: reference\n"
    # the dropped scores are still there as of the version before
    result = runner.invoke(cli, ["sql", small_db.url, "select count(*) as n from scores where model = 'teach'", "--as-of", str(version),
                                 "--format", "csv"])
    assert result.output == "n\n298\n"
    result = runner.invoke(cli, ["models", small_db.url, "--drop", "teach"])
    assert result.exit_code == 1 and result.output == "Error: no scores named 'teach'; `corpusdb models DB` lists them\n"
    result = runner.invoke(cli, ["models", small_db.url, "--rename", "reference", "a/b"])
    assert result.exit_code == 1 and "score name 'a/b' must be 1-64 letters" in result.output


@pytest.mark.gpu
def test_bf16_scoring_on_gpu_agrees_with_fp32_on_cpu(small_db, tiny_models):
    model = str(tiny_models["llama"])
    small_db.score(model, "cpu", device="cpu", progress=False)
    report = small_db.score(model, "gpu", device="cuda", progress=False)
    assert report.precision == "bf16" and report.device == "cuda:0"
    rows = small_db.sql(
        "select a.sum_logprob, b.sum_logprob, a.n_tokens from scores a join scores b using (doc_id) "
        "where a.model = 'cpu' and b.model = 'gpu' and a.n_tokens > 0"
    ).fetchall()
    assert len(rows) == 297
    for cpu, gpu, n in rows:
        assert abs(cpu - gpu) / n < 0.05  # bf16 matmuls: per-token log-probabilities within a few hundredths


def test_cpu_threads_are_set_for_the_job_and_loading_is_not_in_tokens_per_second(small_db, tiny_models):
    before = torch.get_num_threads()
    report = small_db.score(str(tiny_models["gpt2"]), "one_thread", threads=1, device="cpu", progress=False)
    assert report.threads == 1 and ", 1 thread)" in report.summary() and torch.get_num_threads() == before
    assert 0 < report.load_seconds < report.seconds
    assert report.tokens_per_second == pytest.approx(report.n_tokens / (report.seconds - report.load_seconds))
    assert f"({report.load_seconds:.1f} s loading the model)" in report.summary()
    with pytest.raises(ValueError, match="threads 0 must be positive"):
        small_db.score(str(tiny_models["gpt2"]), "zero", threads=0, progress=False)
