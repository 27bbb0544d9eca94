# Common entry points. PYTHON can point at a virtualenv's interpreter.
PYTHON ?= python
RESULTS ?= results
GROUP ?= default
# Extra arguments: ARGS for `make train` (Hydra overrides), REPRO_ARGS for `make reproduce` (e.g.
# "--seeds 1 --dataset mnist --dry-run" or Hydra overrides such as "epochs=2 device=cuda")
ARGS ?=
REPRO_ARGS ?=
BENCH_ARGS ?=
# ABLATION_ARGS: options and Hydra overrides, e.g. "--dry-run --only gamma -- dataset=mnist"
ABLATION_ARGS ?=
# e.g. GPU_ARGS="--out $$OUT/h200 --archive" on a lent machine (its $OUT returns few files: take the archive)
GPU_ARGS ?=
# make compare OPTIMIZER=torch.optim.NAdam WORKLOADS=curves_synth [OUT=compare/nadam] [COMPARE_ARGS="--protocol quick"]
OPTIMIZER ?=
WORKLOADS ?= mnist,faces_synth,curves_synth
OUT ?=
COMPARE_ARGS ?=

TUNE_DATASETS ?= mnist faces curves
TUNE_OPTIMIZERS ?= paper
TUNE_TRIALS ?= 16
TUNE_WORKERS ?= 1
TUNE_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test demo train bench figures summary report ablations gpu-campaign reproduce tune campaign-cpu data compare

help:  ## this list
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install:  ## install the package with everything the README uses, tests included (torch pinned as in CI)
	$(PYTHON) -m pip install -c constraints-ci.txt -e ".[dev,sweep,modern]"

test:  ## the full test suite (CPU, offline; < 15 min on 2 cores)
	$(PYTHON) -m pytest -q tests

demo:  ## a few minutes offline on a CPU (it prints its estimate): LocoProp-M, K-FAC, RMSProp on CURVES-like data
	$(PYTHON) -m scripts.demo --results $(RESULTS)/demo

train:  ## one training run: make train ARGS="dataset=mnist dataset.root=data/mnist optimizer=adam epochs=1"
	$(PYTHON) -m benchmarks.train $(ARGS)

bench:  ## speed table (ms/step, ratios) for every optimizer on this machine
	$(PYTHON) -m benchmarks.speed $(BENCH_ARGS)

figures:  ## figures of one group of runs -> results/figures/<group>/
	$(PYTHON) -m scripts.figures --results $(RESULTS) --group $(GROUP)

summary:  ## summary.md / summary.csv of one group of runs -> results/summaries/<group>/
	$(PYTHON) -m scripts.summary --results $(RESULTS) --group $(GROUP)

report:  ## every table, figure and number of the reference comparison, from the committed runs (README, docs/results.md)
	$(PYTHON) -m scripts.report

ablations:  ## LocoProp ablations (configs/ablation/, CURVES-like by default) and their figures
	$(PYTHON) -m scripts.ablations --results $(RESULTS) $(ABLATION_ARGS)

gpu-campaign:  ## on one H100/H200 inside a time budget (8 min): bench, GPU tests, the MNIST comparison, report
	$(PYTHON) -m scripts.gpu_campaign $(GPU_ARGS)

reproduce:  ## the paper's comparison with the tuned configs, then figures and tables (--dry-run: the plan)
	$(PYTHON) -m scripts.reproduce --results $(RESULTS) $(REPRO_ARGS)

tune:  ## full-length searches (equal budget, successive halving, SQLite studies) -> $(RESULTS)/tuned/<dataset>/<optimizer>.yaml
	for d in $(TUNE_DATASETS); do for o in $(TUNE_OPTIMIZERS); do \
	  $(PYTHON) -m scripts.tune --dataset $$d --optimizer $$o --trials $(TUNE_TRIALS) --workers $(TUNE_WORKERS) \
	    --results $(RESULTS) -- $(TUNE_ARGS) || exit 1; \
	done; done

compare:  ## a new optimizer (config name or module.Class) under the reference protocol, beside the committed rows -> OUT (compare/<name>)
	@test -n "$(OPTIMIZER)" || { echo "make compare: give OPTIMIZER=<config name or module.Class>"; exit 2; }
	$(PYTHON) -m scripts.compare $(OPTIMIZER) --workloads $(WORKLOADS) $(if $(OUT),--out $(OUT)) $(COMPARE_ARGS)

campaign-cpu:  ## the shipped CPU reference comparison (many CPU hours; resumable): results/reference/cpu/
	nice -n 19 $(PYTHON) -m scripts.campaign cpu-reference --workers 2 --threads 1
	nice -n 19 $(PYTHON) -m scripts.campaign cpu-relatives --workers 2 --threads 1
	nice -n 19 $(PYTHON) -m scripts.campaign cpu-modern --workers 2 --threads 1

data:  ## download and check MNIST, FACES, CURVES and the Olivetti faces into ./data (needs internet)
	$(PYTHON) -m scripts.download_data --root data
