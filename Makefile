# Two commands on a fresh machine:  `make run`  (setup + the Level 1 pipeline, offline)  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PRESET  ?= default
RUN_DIR ?= runs/$(PRESET)
SET     ?=# more config overrides for run/smoke/sweep, e.g. make run SET="dpo.beta=0.05 sample.n_samples=8"
ARGS    ?=# more flags, e.g. make sweep ARGS="--betas 0.1,1 --seeds 0", make run ARGS=--print-config

.PHONY: setup run smoke sweep notebook notebook-publish test bench clean

$(BIN)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/.installed  ## venv + pinned requirements + offline assets (models, reviews, reward and judge heads)
	$(BIN)/python -m alignment assets

run: setup  ## Level 1 on the embedded offline default: samples, pairs, DPO sigmoid vs hinge, eval table
	$(BIN)/python -m alignment run --preset $(PRESET) --set run_dir=$(RUN_DIR) $(SET) $(ARGS)

smoke:  ## the whole Level 1 at tiny sizes: ~1-2 min once the assets, heads and smoke-sized SFT model are built
	$(MAKE) run PRESET=smoke

sweep: setup  ## Level 2/3 frontiers: 6 divergences x 4 betas x 3 seeds + best-of-N (N <= 64), matched-KL verdicts (~1 h on 2 cores)
	$(BIN)/python -m alignment sweep --preset sweep --set run_dir=runs/sweep $(SET) $(ARGS)

notebook: setup  ## execute the notebook headless at SMOKE size (run dir runs/smoke, as make smoke) into runs/notebook-smoke.ipynb
	$(BIN)/python -m papermill "Alignment Methods.ipynb" runs/notebook-smoke.ipynb -p SIZE smoke --cwd .

notebook-publish: setup  ## re-execute the committed notebook in place at default size (it reuses runs/default and shows runs/sweep: run `make run` and `make sweep` first)
	OMP_NUM_THREADS=1 $(BIN)/python -m alignment.notebook "Alignment Methods.ipynb" SIZE=default

test: $(BIN)/.installed  ## unit + integration tests (tiny local models, offline), then the notebook at SMOKE size
	$(BIN)/python -m pytest -q tests

bench: setup  ## speed ratios vs baselines measured side by side (CI runs only `--quick`, in tests)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf runs
