# Common entry points. PYTHON can point at a virtualenv's interpreter.
PYTHON ?= python
RESULTS ?= results
GROUP ?= default
# Extra Hydra overrides for `make train` / `make reproduce`, e.g. ARGS="dataset=mnist optimizer=adam"
ARGS ?=
REPRO_ARGS ?=
BENCH_ARGS ?=

TUNE_DATASETS ?= mnist faces curves
TUNE_OPTIMIZERS ?= sgd nesterov adagrad rmsprop adam shampoo kfac locoprop_s locoprop_m
TUNE_TRIALS ?= 16
TUNE_WORKERS ?= 1
TUNE_ARGS ?=

.PHONY: install test demo train bench figures summary reproduce tune campaign-cpu data

install:  ## install the package, its test tools and the sweep launchers (CI pins torch via constraints-ci.txt)
	$(PYTHON) -m pip install -c constraints-ci.txt -e ".[dev,sweep]"

test:  ## the full test suite (CPU, offline; < 15 min on 2 cores)
	$(PYTHON) -m pytest -q tests

demo:  ## a few-minute offline CPU run: curves_synth, Adam and RMSProp, then the figures
	$(PYTHON) -m scripts.demo --results $(RESULTS)/demo

train:  ## one training run: make train ARGS="dataset=mnist dataset.root=../shared/data/mnist optimizer=adam epochs=1"
	$(PYTHON) -m benchmarks.train $(ARGS)

bench:  ## speed table (ms/step, ratios) for every optimizer on this machine
	$(PYTHON) -m benchmarks.speed $(BENCH_ARGS)

figures:  ## figures from the local run tables
	$(PYTHON) -m scripts.figures --results $(RESULTS) --group $(GROUP) --out $(RESULTS)/figures

summary:  ## summary.md / summary.csv from the local run tables
	$(PYTHON) -m scripts.summary --results $(RESULTS) --group $(GROUP) --out $(RESULTS)

reproduce:  ## the paper's comparison with the tuned configs, then figures and tables
	$(PYTHON) -m scripts.reproduce results=$(RESULTS) $(REPRO_ARGS)

tune:  ## full-length searches (equal budget, successive halving, SQLite studies) -> results/tuned/<dataset>/<optimizer>.yaml
	for d in $(TUNE_DATASETS); do for o in $(TUNE_OPTIMIZERS); do \
	  $(PYTHON) -m scripts.tune --dataset $$d --optimizer $$o --trials $(TUNE_TRIALS) --workers $(TUNE_WORKERS) \
	    --results $(RESULTS) -- $(TUNE_ARGS) || exit 1; \
	done; done

campaign-cpu:  ## the shipped CPU reference comparison (many CPU hours; resumable): results/reference/cpu/
	nice -n 19 $(PYTHON) -m scripts.campaign cpu-reference --workers 2 --threads 1

data:  ## download FACES, CURVES (and MNIST) into ./data (needs internet)
	$(PYTHON) -m scripts.download_data --root data
