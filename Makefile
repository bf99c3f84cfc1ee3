# Two set-up-and-go commands: `make run` (default pipeline end to end) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_TRAIN_ENABLE_PREEMPTION_WATCHER := 0
export RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION := 0

PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

.PHONY: install run run-text run-clip run-graph run-speech run-video services services-stop test test-fast browser bench ui ui-stop clean help

help:
	@echo "make run    - install (first time) and run the default pipeline with dvc repro"
	@echo "make test   - install (first time) and run the whole test suite (~32 min on 2 cores), printing the 25 slowest tests"
	@echo "make test-fast - the quick tier while working (~3 min): no slow, services, ray_cluster or gpu tests"
	@echo "make run-text - the language pipeline (configs/text.yaml: SST-2, Tiny Shakespeare) in workspaces/text/"
	@echo "make run-graph - the graph pipeline (configs/graph.yaml: DGI, GraphCL, GraphMAE on Cora) in workspaces/graph/"
	@echo "make run-speech - the speech pipeline (configs/speech.yaml: wav2vec 2.0, HuBERT on FSDD) in workspaces/speech/"
	@echo "make run-video - the video pipeline (configs/video.yaml: VideoMAE on moving Fashion-MNIST sprites) in workspaces/video/"
	@echo "make run-clip - the image-text pipeline (configs/clip.yaml: CLIP, SigLIP, SimCLR on Open Clip Art) in workspaces/clip/"
	@echo "make ui     - start the Prefect UI (:$(PREFECT_PORT)) and MLflow UI (:$(MLFLOW_PORT)) and serve the flow"
	@echo "make services - PostgreSQL + SeaweedFS (S3) + MLflow server with basic auth on loopback (infra/SCALING.md)"
	@echo "make bench  - benchmarks (writes bench/results/*.json)"

$(STAMP): requirements.txt requirements-torch.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	@echo "[install 1/4] virtual environment $(VENV) (the whole install: ~5 min and ~7 GB on a 2-core machine)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	@echo "[install 2/4] torch + torchvision (~3 GB, ~2 min): PyPI's torch wheel bundles the CUDA libraries even on a"
	@echo "              CPU-only machine; the CPU-only wheel breaks torchvision here, and the same venv then runs on a GPU"
	$(BIN)/python -m pip install -q -r requirements-torch.txt
	$(BIN)/python -m pip install -q uv==0.13.9
	@echo "[install 3/4] Ray, Prefect, MLflow, DVC, Great Expectations and the rest (requirements.txt, ~1.5 min)"
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -q -r requirements.txt
	@echo "[install 4/4] this project (editable) and DVC's repository"
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -q -e .
	@test -d .dvc || $(BIN)/dvc init -q $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	touch $(STAMP)

install: $(STAMP)

# ssl-tasks repro: dvc repro, and when a stage fails, dvc checkout puts back its last good outputs (DVC deleted them
# before running it; dvc.lock and the DVC cache still hold them); the exit stays non-zero.
run: $(STAMP)
	$(BIN)/ssl-tasks repro
	@echo
	@echo "Leaderboard: artifacts/leaderboard.md (.csv, .png). Next:"
	@echo "  source .venv/bin/activate   # then dvc repro, dvc status, ssl-tasks list work in this shell"
	@echo "  make ui                     # Prefect UI on :$(PREFECT_PORT), MLflow UI on :$(MLFLOW_PORT); prints the runs-table and comparison links"
	@echo "  docs/your-data.md           # your own image folder, from ingest to a leaderboard"
	@echo "  docs/ADDING_A_MODALITY.md   # your own kind of data (audio, graphs, your own vectors)"

# The run-* targets run the Prefect flow, whose stage runner (dvc_runner.repro_stage) does the same for a failed stage.
run-text: $(STAMP)
	$(BIN)/python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(params_file='configs/text.yaml', workspace='text')"
	@echo
	@echo "Leaderboard: workspaces/text/artifacts/leaderboard.md; reproduce there with: cd workspaces/text && dvc repro"

run-graph: $(STAMP)
	$(BIN)/python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(params_file='configs/graph.yaml', workspace='graph')"
	@echo
	@echo "Leaderboard: workspaces/graph/artifacts/leaderboard.md; reproduce there with: cd workspaces/graph && dvc repro"

run-speech: $(STAMP)
	$(BIN)/python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(params_file='configs/speech.yaml', workspace='speech')"
	@echo
	@echo "Leaderboard: workspaces/speech/artifacts/leaderboard.md; reproduce there with: cd workspaces/speech && dvc repro"

run-video: $(STAMP)
	$(BIN)/python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(params_file='configs/video.yaml', workspace='video')"
	@echo
	@echo "Leaderboard: workspaces/video/artifacts/leaderboard.md; reproduce there with: cd workspaces/video && dvc repro"

run-clip: $(STAMP)
	$(BIN)/python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(params_file='configs/clip.yaml', workspace='clip')"
	@echo
	@echo "Leaderboard: workspaces/clip/artifacts/leaderboard.md; reproduce there with: cd workspaces/clip && dvc repro"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q --durations=25

# The browser tests of the Prefect and MLflow UIs drive headless Chromium (Debian's package; no download of a browser
# build) over the DevTools protocol (tests/browser.py).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium (Debian package, ~80 s) for the browser tests of the Prefect and MLflow UIs"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no chromium on PATH and not root: the browser tests of the UIs will fail (apt-get install chromium)"; fi; }

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not services and not ray_cluster and not gpu"

bench: $(STAMP)
	$(BIN)/python -m pip install --no-deps -q -r requirements-bench.txt
	$(BIN)/python bench/throughput.py --objectives
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/quality.py --data fashion_mnist
	$(BIN)/python bench/quality.py --data cifar10_jpeg --objectives simclr byol dino mae colorization
	$(BIN)/python bench/clip_quality.py

services: $(STAMP)
	bash infra/local/install-services.sh
	bash infra/local/services.sh start

services-stop:
	bash infra/local/services.sh stop

ui: $(STAMP)
	bash infra/local/ui.sh start $(PREFECT_PORT) $(MLFLOW_PORT)

ui-stop:
	bash infra/local/ui.sh stop

clean:
	rm -rf data artifacts metrics reports workspaces .dvc/cache
