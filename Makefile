# Two commands on a fresh machine:  `make run`  (setup + the Level 1 pipeline, offline)  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Every target that runs something (run, smoke, sweep, level3, notebook, config) takes these; PRESET and
# RUN_DIR given on the command line (or in the environment) win, else each target has its own:
# smoke -> preset smoke, sweep -> preset sweep, level3 -> preset level3, the rest -> default; the run dir is runs/<preset>.
PRESET  ?= default
RUN_DIR ?= runs/$(PRESET)
SET     ?=# config overrides, e.g. make run SET="dpo.beta=0.05 sample.n_samples=8"
ARGS    ?=# more flags, e.g. make sweep ARGS="--betas 0.1,1 --seeds 0" (notebook: papermill's, ARGS="-p RUN_SWEEP True")
CONFIG_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))

given  = $(filter command environment,$(firstword $(origin $(1))))
preset = $(if $(call given,PRESET),$(PRESET),$(1))
rundir = $(if $(call given,RUN_DIR),$(RUN_DIR),runs/$(call preset,$(1)))
# $(call cli,PYTHON,STAGE,its preset): one target's command line
cli = $(1) -m alignment $(2) --preset $(call preset,$(3)) --set run_dir=$(call rundir,$(3)) $(SET) $(ARGS)

ifneq ($(SET),)
ifneq ($(filter notebook,$(MAKECMDGOALS)),)
$(error SET does not reach the notebook: its parameters cell takes papermill's -p, e.g. make notebook ARGS="-p START_POLICY offline")
endif
endif

.PHONY: setup run smoke sweep level3 notebook notebook-publish config test bench clean

$(BIN)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/.installed  ## venv + pinned requirements + offline assets (models, reviews, reward and judge heads)
	$(BIN)/python -m alignment assets

run: setup  ## Level 1 on the embedded offline default: samples, pairs, DPO sigmoid vs hinge, eval table (into runs/default)
	$(call cli,$(BIN)/python,run,default)

smoke: setup  ## the whole Level 1 at tiny sizes (into runs/smoke): ~1-2 min once the assets, heads and smoke-sized SFT model are built
	$(call cli,$(BIN)/python,run,smoke)

sweep: setup  ## Level 2 frontiers: 6 divergences x 4 betas x 3 seeds + best-of-N (N <= 64), matched-KL verdicts (into runs/sweep; ~1 h on 2 cores)
	$(call cli,$(BIN)/python,sweep,sweep)

level3: setup  ## Level 3, what buys reward per nat of KL: DPO, reward distillation, online DPO, RLOO with sequence and per-token credit (and per-token trained 3 passes), variational best-of-N x betas 0.1-1 (the costliest from 0.3) x 3 seeds + best-of-N (into runs/level3)
	$(call cli,$(BIN)/python,level3,level3)

notebook: setup  ## execute the notebook headless at SMOKE size (PRESET sets its SIZE; run dir runs/<size>) into runs/notebook-<size>.ipynb
	$(BIN)/python -m papermill "Alignment Methods.ipynb" runs/notebook-$(call preset,smoke).ipynb -p SIZE $(call preset,smoke) $(if $(call given,RUN_DIR),-p RUN_DIR $(RUN_DIR)) --cwd . $(ARGS)

notebook-publish: setup  ## re-execute the committed notebook in place at default size (reuses runs/default: run `make run` first; shows runs/sweep and runs/level3, else the committed results)
	OMP_NUM_THREADS=1 $(BIN)/python -m alignment.study.notebook "Alignment Methods.ipynb" SIZE=default

config:  ## print the resolved config (PRESET, SET, ARGS="--config F.yaml"); installs nothing, loads no model
	$(call cli,$(CONFIG_PY),config,default)

test: $(BIN)/.installed  ## unit + integration tests (tiny local models, offline), then the notebook at SMOKE size
	$(BIN)/python -m pytest -q tests

bench: setup  ## speed ratios vs baselines measured side by side (CI runs only `--quick`, in tests)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf runs
