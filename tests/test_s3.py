"""Object storage for real: a SeaweedFS S3 server on loopback, with authentication."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
import s3fs
from click.testing import CliRunner

import corpusdb
from corpusdb.cli import cli
from tests.conftest import rows

pytestmark = pytest.mark.s3


def upload_fixture(options: dict, bucket: str, corpus_dir) -> list[str]:
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    names = []
    for path in sorted(corpus_dir.glob("*.jsonl")):
        data = path.read_bytes()
        if path.name.startswith(("bible", "fortunes")):
            fs.pipe(f"{bucket}/raw/{path.name}.gz", gzip.compress(data))
            names.append(f"{path.name}.gz")
        else:
            fs.pipe(f"{bucket}/raw/{path.name}", data)
            names.append(path.name)
    return names


def test_ingest_from_s3_into_s3_and_query_it_back(s3_options, bucket, corpus_dir, fixture_db):
    upload_fixture(s3_options, bucket, corpus_dir)
    url = f"s3://{bucket}/db"
    db = corpusdb.init(url, storage_options=s3_options)
    for path in sorted(corpus_dir.glob("*.jsonl")):
        source = path.name.split(".")[0]
        pattern = f"s3://{bucket}/raw/{source}.jsonl*"
        db.ingest([pattern], source=source, meta={"title": "title"}, progress=False)
    reopened = corpusdb.open(url, storage_options=s3_options)
    assert rows(reopened, "*") == rows(fixture_db, "*")
    counts = reopened.sql("select source, count(*) from documents group by 1 order by 1").fetchall()
    assert counts == fixture_db.sql("select source, count(*) from documents group by 1 order by 1").fetchall()
    fs = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    assert not [p for p in fs.find(f"{bucket}/db") if "/.tmp-" in p]
    # Re-running is a no-op.
    report = reopened.ingest([f"s3://{bucket}/raw/"], source="bible", meta={"title": "title"}, progress=False)
    assert report.n_docs_written == 0
    assert rows(reopened, "*") == rows(fixture_db, "*")


def test_cli_against_s3_with_endpoint_from_the_environment(s3_server, s3_options, bucket, corpus_dir):
    upload_fixture(s3_options, bucket, corpus_dir)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": s3_server["key"],
        "AWS_SECRET_ACCESS_KEY": s3_server["secret"],
        "AWS_ENDPOINT_URL": s3_server["endpoint"],
    }
    db = f"s3://{bucket}/clidb"
    cli_cmd = [sys.executable, "-m", "corpusdb.cli"]
    result = subprocess.run(
        [*cli_cmd, "ingest", db, f"s3://{bucket}/raw/bible.jsonl.gz", "--source", "bible", "--json", "--no-progress"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_docs_written"] == len((corpus_dir / "bible.jsonl").read_text().splitlines())
    result = subprocess.run(
        [*cli_cmd, "sql", db, "select source, count(*) as n from documents group by 1", "--format", "csv"],
        capture_output=True, text=True, env=env,
    )
    assert result.stdout == "source,n\nbible,12\n"


def test_wrong_secret_is_a_clear_one_line_error(s3_server, s3_options, bucket, corpus_dir):
    upload_fixture(s3_options, bucket, corpus_dir)
    runner = CliRunner()
    endpoint = f"endpoint_url={s3_server['endpoint']}"
    args = ["-o", f"key={s3_server['key']}", "-o", "secret=wrong", "-o", endpoint]
    result = runner.invoke(cli, ["ingest", "/tmp/unused-db", f"s3://{bucket}/raw/bible.jsonl.gz", *args, "--no-progress"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: s3://{bucket}/raw/bible.jsonl.gz: access denied with access key id {s3_server['key']!r} (from -o key=...) "
        "(The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.); check the credentials "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or -o key=... -o secret=...)\n"
    )
    result = runner.invoke(cli, ["stats", f"s3://{bucket}/db", *args])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: s3://{bucket}/db/corpusdb.json: access denied (")


def test_unreachable_endpoint_is_a_clear_one_line_error(s3_server):
    runner = CliRunner()
    args = ["-o", "key=k", "-o", "secret=s", "-o", "endpoint_url=http://127.0.0.1:9"]
    result = runner.invoke(cli, ["stats", "s3://nowhere/db", *args])
    assert result.exit_code == 1
    assert result.output.startswith("Error: s3://nowhere/db/corpusdb.json: cannot reach the storage server (")
    assert result.output.endswith("check the endpoint (-o endpoint_url=... or AWS_ENDPOINT_URL)\n")
    assert result.output.count("\n") == 1


def test_missing_bucket_is_not_found(s3_options):
    result = CliRunner().invoke(
        cli,
        ["ingest", "/tmp/unused-db", "s3://no-such-bucket-here/x.jsonl", "--no-progress",
         "-o", f"key={s3_options['key']}", "-o", f"secret={s3_options['secret']}",
         "-o", f"endpoint_url={s3_options['client_kwargs']['endpoint_url']}"],
    )
    assert result.output == "Error: s3://no-such-bucket-here/x.jsonl: not found; check the path (and bucket name)\n"
