# make demo — the whole pipeline on the embedded SynthArt dataset (CPU, minutes); SEEDS=3 adds B1 seeds
# make test — lint, the import-layer contracts (pyproject.toml) and the test suite
# make explore [TASK=synthart-style] — the explorer (E3) on a finished run: http://127.0.0.1:8765/
# make reproduce DATASET=cub|apy|wikiart — the paper's settings on a real dataset (GPU; see README)
# make gpu-check — every CUDA path, benchmarks against their targets → bench/RESULTS-<gpu>.md (≤ 10 min)
# make reproduce-release DATASET=cub|apy|wikiart RELEASE=DIR — the tables from the authors' release (CPU)
# make mutate [MODULE="atomic queries …"] — mutation testing (mutmut), one module at a time; hours, not CI (docs/mutation.md)

PYTHON ?= python3
SEEDS ?= 1
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint format reproduce reproduce-release bench clean-demo gpu-check explore mutate

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed
	SEEDS=$(SEEDS) bash scripts/demo.sh $(PY)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# TASK reaches E3 through the environment, never through a shell string
explore: $(VENV)/.installed
	$(PY) E3_explore.py --task "$${TASK:-synthart-style}"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

reproduce: $(VENV)/.installed
	SEEDS=$(SEEDS) bash scripts/reproduce.sh $(PY) $(DATASET)

# DATASET and RELEASE reach the script through the environment, never through a shell string
reproduce-release: $(VENV)/.installed
	bash scripts/reproduce_release.sh $(PY)

bench: $(VENV)/.installed
	$(PY) bench/backward_search.py
	$(PY) bench/train_throughput.py
	$(PY) bench/explorer_latency.py
	$(PY) bench/explorer_map.py

gpu-check: $(VENV)/.installed
	$(PY) scripts/gpu_check.py

# MODULE reaches the script through the environment, never through a shell string; at the lowest
# priority: the machine stays usable for everything else
mutate: $(VENV)/.installed
	nice -n 19 $(PY) scripts/mutate.py $${MODULE:-}
