"""MinHash near-duplicate detection: datasketch-identical signatures, planted near-duplicates in real text."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

import corpusdb
from corpusdb.dedup.minhash import MinHasher, shingle_hash, shingles, words
from tests.conftest import fixture_texts


@pytest.mark.parametrize("num_perm,seed,ngram", [(128, 1, 5), (64, 7, 3)])
def test_signatures_equal_datasketch(num_perm, seed, ngram):
    texts = fixture_texts("bible", "fortunes")[:120] + ["", "One two.", "A, b; c! D e f G h"]
    ours = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram).signatures(texts)
    sha1 = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram, hash="sha1").signatures(texts)
    for text, mine, mine_sha1 in zip(texts, ours, sha1, strict=True):
        fast = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash)
        default = MinHash(num_perm=num_perm, seed=seed)  # datasketch's own sha1_hash32
        for shingle in shingles(text, ngram):
            fast.update(shingle)
            default.update(" ".join(shingle).encode("utf-8"))
        assert np.array_equal(fast.hashvalues, mine) and np.array_equal(default.hashvalues, mine_sha1)


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    sa, sb = set(shingles(a, ngram)), set(shingles(b, ngram))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def plant(text: str, target: float, rng: random.Random, vocabulary: list[str]) -> str:
    """Edit `text` (substitutions, insertions, deletions, truncation, case and spacing) until its
    shingle Jaccard with the original falls to about `target`."""
    tokens = text.split()
    kind = rng.choice(["edits", "edits", "edits", "truncate"])
    if kind == "truncate":
        keep = max(6, int(len(tokens) * target))
        edited = tokens[:keep]
    else:
        edited = list(tokens)
        while True:
            position = rng.randrange(len(edited))
            operation = rng.choice(["substitute", "insert", "delete"])
            if operation == "substitute":
                edited[position] = rng.choice(vocabulary)
            elif operation == "insert":
                edited.insert(position, rng.choice(vocabulary))
            elif len(edited) > 6:
                del edited[position]
            if jaccard(text, " ".join(edited)) <= target:
                break
    if rng.random() < 0.5:  # case and whitespace changes do not change shingles
        edited = [w.upper() if rng.random() < 0.1 else w for w in edited]
    return ("\n  " if rng.random() < 0.5 else " ").join(edited)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[str]]:
    """Real documents of 80+ words, each with 2 near-duplicates (J 0.8-1.0) and 1 far variant (J 0.1-0.45)."""
    rng = random.Random(0)
    originals = [t for t in fixture_texts() if 80 <= len(words(t)) <= 3000]
    originals = rng.sample(originals, 60)
    vocabulary = sorted({w for t in originals for w in t.split()})
    records = []
    for group, text in enumerate(originals):
        records.append({"text": text, "group": str(group)})
        for _ in range(2):
            records.append({"text": plant(text, rng.uniform(0.82, 0.98), rng, vocabulary), "group": str(group)})
        records.append({"text": plant(text, rng.uniform(0.1, 0.45), rng, vocabulary), "group": str(group)})
    folder = tmp_path_factory.mktemp("planted")
    path = folder / "planted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, [r["text"] for r in records]


def _clusters(db: corpusdb.Database) -> dict[int, int]:
    db.refresh()
    return dict(db.sql("select doc_id, cluster_id from minhash").fetchall())


def test_planted_near_duplicates_are_found(planted, tmp_path):
    path, texts = planted
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(path)], source="planted", meta={"group": "group"}, progress=False)
    report = db.minhash(threshold=0.8, workers=2, progress=False)
    assert report.clustered and (report.bands, report.rows) == (17, 7)  # exact verification: banding for recall
    rows = db.sql("select d.doc_id, d.text, d.\"group\", m.cluster_id from documents d join minhash m using (doc_id)").fetchall()
    assert len(rows) == len(set(texts))
    true_positive = false_positive = false_negative = merged_far = found_085 = missed_085 = 0
    by_group: dict[str, list] = {}
    for row in rows:
        by_group.setdefault(row[2], []).append(row)
    for members in by_group.values():
        for (_, ta, _, ca), (_, tb, _, cb) in combinations(members, 2):
            similarity = jaccard(ta, tb)
            same = ca == cb
            if similarity >= 0.8:
                true_positive += same
                false_negative += not same
            if similarity >= 0.85:
                found_085 += same
                missed_085 += not same
            elif similarity < 0.5:
                false_positive += same
                merged_far += same
    # pairs across groups: any merge must be a real near-duplicate in the fixture text itself
    clusters: dict[int, list] = {}
    for row in rows:
        clusters.setdefault(row[3], []).append(row)
    for members in clusters.values():
        for (_, ta, ga, _), (_, tb, gb, _) in combinations(members, 2):
            if ga != gb:
                similarity = jaccard(ta, tb)
                true_positive += similarity >= 0.8
                false_positive += similarity < 0.8
    precision = true_positive / max(true_positive + false_positive, 1)
    recall = true_positive / max(true_positive + false_negative, 1)
    recall_085 = found_085 / max(found_085 + missed_085, 1)
    assert true_positive >= 100
    print(f"planted near-duplicates: precision {precision:.3f}, recall {recall:.3f} (at J >= 0.85: {recall_085:.3f}), "
          f"{true_positive} true pairs")
    # the default (exact verification near the threshold, banding for recall) finds pairs just above 0.8 too
    assert precision >= 0.97 and recall >= 0.98 and recall_085 >= 0.99, (precision, recall, recall_085, false_positive)
    assert merged_far == 0
    # the cluster id is the smallest doc_id of the cluster
    for cluster_id, members in clusters.items():
        assert cluster_id == min(m[0] for m in members)


def test_exact_verification_within_a_small_memory_budget_gives_the_same_clusters(planted, tmp_path):
    """`verify_memory` bounds the shingle sets held at once: with 16 KB the texts are read in many
    more groups (and sets evicted), and the clusters are the same."""
    from corpusdb.dedup.exact import ExactJaccard
    from corpusdb.dedup.job import hasher_of

    path, _ = planted
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(path)], source="planted", progress=False)
    roomy = db.minhash(workers=1, progress=False)
    clusters = _clusters(db)
    tight = db.minhash(workers=1, progress=False, verify_memory="16KB")
    assert _clusters(db) == clusters
    assert roomy.cluster_counts["n_exact_checks"] == tight.cluster_counts["n_exact_checks"] > 50
    assert tight.cluster_counts["n_text_reads"] > 2 * roomy.cluster_counts["n_text_reads"]
    exact = ExactJaccard(db.con, hasher_of(db.snapshot.settings["minhash"]), memory=16_000)
    ids = np.array(db.sql("select doc_id from documents order by doc_id").fetchnumpy()["doc_id"], dtype=np.int64)
    pairs = np.stack([ids[:-1], ids[1:]], axis=1)
    values = exact(pairs)
    assert len(exact.groups(pairs)) >= 1 and exact.cached <= 16_000 + max(s.nbytes + 64 for s in exact.cache.values())
    assert np.array_equal(values, ExactJaccard(db.con, exact.hasher)(pairs))
    with pytest.raises(ValueError, match="is not a number and a unit"):
        db.minhash(workers=1, progress=False, verify_memory="lots")


def test_rerun_is_idempotent_and_new_documents_join_clusters(planted, tmp_path):
    path, texts = planted
    lines = path.read_text().splitlines()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(lines[::2]) + "\n")
    second.write_text("\n".join(lines[1::2]) + "\n")
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(first)], source="a", progress=False)
    db.minhash(workers=1, progress=False)
    before = _clusters(db)
    signature_files = sorted(p.name for p in (tmp_path / "db/minhash/signatures").iterdir())
    again = db.minhash(workers=1, progress=False)
    assert again.n_documents_signed == 0 and again.n_parts_done_before == 1
    assert _clusters(db) == before
    assert sorted(p.name for p in (tmp_path / "db/minhash/signatures").iterdir()) == signature_files

    db.ingest([str(second)], source="b", progress=False)
    added = db.minhash(workers=1, progress=False)
    assert added.n_parts_signed == 1 and added.n_parts_done_before == 1
    fresh = corpusdb.init(str(tmp_path / "fresh"))
    fresh.ingest([str(path)], source="all", progress=False)
    fresh.minhash(workers=2, progress=False)
    assert _clusters(db) == _clusters(fresh)
    assert len({c for c in _clusters(db).values()}) < len(_clusters(db)) * 0.6


def test_shards_and_a_killed_job_give_the_table_of_a_single_run(planted, tmp_path, corpus_dir):
    path, _ = planted
    single, sharded, crashed = (corpusdb.init(str(tmp_path / name)) for name in ("single", "sharded", "crashed"))
    for db in (single, sharded, crashed):
        db.ingest([str(path)], source="planted", progress=False, part_size_mb=0.05)
        for p in sorted(corpus_dir.glob("*.jsonl")):
            db.ingest([str(p)], source=p.stem, progress=False)
    single.minhash(progress=False)
    first = sharded.minhash(shard="1/3", progress=False)
    assert not first.clustered and sharded.sql("select count(*) from minhash").fetchall() == [(0,)]
    sharded.minhash(shard="0/3", progress=False)
    assert sharded.minhash(shard="2/3", progress=False).clustered
    assert _clusters(sharded) == _clusters(single)

    crashed = crashed.url
    result = subprocess.run(  # committing after every part, killed after its 4th signature part is written
        [sys.executable, "-m", "corpusdb.cli", "minhash", crashed, "--workers", "1", "--no-progress", "--commit-every", "0"],
        env={**os.environ, "CORPUSDB_FAILPOINT": "minhash.after_part=4"}, capture_output=True, text=True,
    )
    assert result.returncode == 75, result.stderr
    assert len(list((Path(crashed) / "minhash/signatures").iterdir())) == 4
    result = subprocess.run([sys.executable, "-m", "corpusdb.cli", "minhash", crashed, "--no-progress"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 parts were done before" in result.stdout  # the 4th was written, never committed: done again
    assert _clusters(corpusdb.open(crashed)) == _clusters(single)


def test_dedup_report_and_errors(planted, tmp_path):
    from click.testing import CliRunner

    from corpusdb.cli import cli

    path, _ = planted
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(path)], source="planted", progress=False)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["alpha beta gamma delta epsilon zeta", "one two three", ""]))
    db.ingest([str(other)], source="other", progress=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["dedup-report", db.url])
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: {db.url} has no near-duplicate clusters yet; run `corpusdb minhash {db.url}` first"
    )
    result = runner.invoke(cli, ["minhash", db.url, "--threshold", "1.5"])
    assert result.exit_code == 1 and "threshold 1.5 must be between 0 and 1" in result.output
    result = runner.invoke(cli, ["minhash", db.url, "--bands", "20", "--rows", "9"])
    assert result.exit_code == 1 and "bands 20 x rows 9 must use at most num_perm = 128 signature values" in result.output
    result = runner.invoke(cli, ["minhash", db.url, "--memory-limit", "lots"])
    assert result.exit_code == 1 and result.output.strip() == (
        "Error: memory limit 'lots' is not a size DuckDB reads; give a number and a unit, e.g. 4GB or 500MB")
    assert not corpusdb.open(db.url).snapshot.tables["signatures"]  # the bad limit failed before any signing
    assert runner.invoke(cli, ["minhash", db.url, "--no-progress"]).exit_code == 0
    clusters = _clusters(corpusdb.open(db.url))
    # a memory limit bounds the clustering's working tables, not what it finds
    result = runner.invoke(cli, ["minhash", db.url, "--no-progress", "--memory-limit", "64MB"])
    assert result.exit_code == 0, result.output
    assert _clusters(corpusdb.open(db.url)) == clusters
    result = runner.invoke(cli, ["dedup-report", db.url, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = {row["source"]: row for row in json.loads(result.output)}
    assert report["other"]["n_documents"] == 3 and report["other"]["n_duplicates"] == 0 and report["other"]["size_1"] == 3
    planted_row = report["planted"]
    assert planted_row["n_documents"] == 240 and 100 <= planted_row["n_duplicates"] <= 125
    assert planted_row["size_1"] + planted_row["size_2"] + planted_row["size_3_5"] + planted_row["size_6_plus"] == 240
    assert report["(all)"]["n_documents"] == 243 and report["(all)"]["n_duplicates"] == planted_row["n_duplicates"]


def test_a_shard_leaves_other_shards_files_alone(planted, tmp_path):
    """Shards run at once: one must not remove another's in-flight temporary file or its stale parts twice."""
    path, _ = planted
    db = corpusdb.init(str(tmp_path / "db"))
    db.ingest([str(path)], source="planted", progress=False, part_size_mb=0.05)
    folder = tmp_path / "db" / "minhash" / "signatures"
    folder.mkdir(parents=True)
    foreign = folder / ".tmp-part-0000000000000000.parquet-inflight"  # as another shard's write_atomic leaves it mid-write
    foreign.write_bytes(b"being written")
    db.minhash(shard="0/2", workers=1, progress=False)
    assert foreign.exists()
    db.location.remove(str(folder / "part-gone.parquet"))  # already removed by another shard: not an error
