# affcache: `make demo` and `make test` each install first (into .venv) when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SPLIT ?= train
FEATURES ?=
MODEL ?= gru
# empty: each command's own default (extract: full, real weights; demo: tiny, on the built-in sample)
PROFILE ?=
DATA ?= artifacts/sample
CACHE ?= artifacts/features
RUNS ?= artifacts/runs
DEVICE ?= auto

# ultralytics: no update checks or font downloads; a writable settings folder
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/artifacts/ultralytics
# the tiny profile never needs the hub; the full profile may download real weights on first use
ifeq ($(PROFILE),tiny)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
endif
PROFILE_ARG = $(if $(PROFILE),--profile $(PROFILE))

.PHONY: install test demo sample extract train bench status clean docs

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps mediapipe==0.10.21
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

EXTRACT_FEATURES := faces,mouth,landmarks,clip

extract: $(STAMP)
	$(PY) pipeline.py extract --split $(SPLIT) --features $(or $(FEATURES),$(EXTRACT_FEATURES)) --data-root $(DATA) --cache-dir $(CACHE) $(PROFILE_ARG) --device $(DEVICE) $(if $(FACE_WEIGHTS),--face-weights $(FACE_WEIGHTS)) $(EXTRACT_ARGS)

# The main job on the built-in sample: data, every feature (tiny models), a unimodal and a fusion head,
# evaluation and the test submission. Re-running skips what is already done.
demo: $(STAMP)
	$(if $(filter-out tiny,$(PROFILE)),,HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1) $(PY) pipeline.py demo --data-root $(DATA) --cache-dir $(CACHE) --runs-dir $(RUNS) $(PROFILE_ARG) --device $(DEVICE)

# scale out: one Ray task per video (RAY_ADDRESS=auto joins a running cluster), or a shard of the split
# per scheduler task, e.g. in a Slurm array: make extract EXTRACT_ARGS="--shard $$SLURM_ARRAY_TASK_ID/$$SLURM_ARRAY_TASK_COUNT"
.PHONY: extract-ray bench-scale
extract-ray: $(STAMP)
	$(PY) pipeline.py extract --split $(SPLIT) --features $(or $(FEATURES),$(EXTRACT_FEATURES)) --data-root $(DATA) --cache-dir $(CACHE) $(PROFILE_ARG) --device $(DEVICE) --backend ray $(if $(RAY_ADDRESS),--address $(RAY_ADDRESS)) $(if $(FACE_WEIGHTS),--face-weights $(FACE_WEIGHTS)) $(EXTRACT_ARGS)

# figures for the record (not tests): extraction speed and memory, training data path, scaling out
bench: $(STAMP)
	$(PY) bench/extract.py
	$(PY) bench/extract.py --audio
	$(PY) bench/train.py --scale 0.02 --steps 100
	$(PY) bench/scale.py

bench-scale: $(STAMP)
	$(PY) bench/scale.py

sample: $(STAMP)
	$(PY) pipeline.py sample-data --out $(DATA)

# without FEATURES or CONFIG, the head's default recipe configs/heads/$(MODEL).yaml names the inputs
train: $(STAMP)
	$(PY) pipeline.py train --model $(MODEL) $(if $(FEATURES),--features $(FEATURES)) $(if $(CONFIG),--config $(CONFIG)) --data-root $(DATA) --cache-dir $(CACHE) --runs-dir $(RUNS) --device $(DEVICE) $(TRAIN_ARGS)

# a method end to end (configs/$(RECIPE)/reproduce.yaml): report in artifacts/reproduce/$(RECIPE)/report.md,
# its stores in artifacts/reproduce/$(RECIPE)/features unless CACHE=... is given
RECIPE ?= ras
.PHONY: reproduce
reproduce: $(STAMP)
	$(PY) pipeline.py reproduce $(RECIPE) --data-root $(DATA) $(if $(filter command line environment,$(origin CACHE)),--cache-dir $(CACHE)) $(PROFILE_ARG) --device $(DEVICE) $(REPRODUCE_ARGS)

# stacking: a run's per-frame [hidden, VA] as the feature store CACHE/NAME.zarr, e.g.
#   make train MODEL=gru FEATURES=clip TRAIN_ARGS="--name gru-clip" && make export RUN=gru-clip NAME=face_gru && make train MODEL=raav FEATURES=face_gru,wavlm,qwen3vl,audio_reliability
.PHONY: export
SPLITS ?= train,val,test
export: $(STAMP)
	$(PY) pipeline.py export $(RUN) --name $(NAME) --splits $(SPLITS) --runs-dir $(RUNS) --cache-dir $(CACHE) --device $(DEVICE) $(EXPORT_ARGS)

# docs/CLI.md is generated from the Typer app (tests/test_cli_docs.py checks it is current)
docs: $(STAMP)
	$(PY) -m typer pipeline.py utils docs --name "python pipeline.py" --title "affcache command reference" --output docs/CLI.md

status: $(STAMP)
	$(PY) pipeline.py status --data-root $(DATA) --cache-dir $(CACHE)

clean:
	rm -rf artifacts
