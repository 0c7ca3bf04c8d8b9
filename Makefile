# Two commands matter: `make run` (the main job) and `make test` (everything CI checks).
# Both create ./.venv on first use and install the package with its dev extras into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv itself is pinned: a new uv may resolve or install differently.
UV_VERSION := 0.13.9

# Every environment installs exactly one constraints file (constraints/airflow-<minor>.txt, cut by
# `make lock`, README "Reproducible environments"): what CI installs changes only when the files are
# re-cut on purpose, never because a dependency released something. .venv is the newest minor; the
# older ones get .venv-af<minor>/ each.
NEWEST := 3.3
MATRIX := 3.0 3.1 3.2
MINORS := $(MATRIX) $(NEWEST)

.PHONY: run test lint typecheck pytest bench chaos emulator clean soak matrix lock lock-check \
	$(addprefix test-af,$(MATRIX))

# install(venv, minor): a new virtualenv holding exactly the constraints file and this package (no
# second resolution); `uv pip check` fails if pyproject.toml asks for what the file lacks. Rebuilt from
# scratch whenever the file or pyproject.toml changes, so nothing of an earlier file stays behind.
define install
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(1)/bin/uv pip install -q --python $(1)/bin/python -r constraints/airflow-$(2).txt
	$(1)/bin/uv pip install -q --python $(1)/bin/python --no-deps -e .
	$(1)/bin/uv pip check -q --python $(1)/bin/python
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml constraints/airflow-$(NEWEST).txt
	$(call install,$(VENV),$(NEWEST))

# One cached virtualenv per older minor, rebuilt when its constraints file or pyproject.toml changes.
.venv-af%/.installed: pyproject.toml constraints/airflow-%.txt
	$(call install,.venv-af$*,$*)

# On older minors: every unit and emulator test, and the real-Airflow tests marked `matrix`.
MATRIX_PYTEST_ARGS ?= -m "not slow or matrix"

$(addprefix test-af,$(MATRIX)): test-af%: .venv-af%/.installed  ## unit, emulator and `matrix` tests on one older minor
	.venv-af$*/bin/python -m airflow_provider_tts.compat
	.venv-af$*/bin/pytest -q -p no:cacheprovider $(MATRIX_PYTEST_ARGS)

matrix: $(addprefix test-af,$(MATRIX))  ## every older minor, one after another

run: $(STAMP)  ## the main job: emulator + pipeline, real audio into ./output/
	$(BIN)/python scripts/main_job.py

test: lint typecheck pytest  ## what CI runs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Two pytest-xdist workers, whole files each: half the suite's time is real Airflow processes (scheduler,
# triggerer, Celery workers) starting and waiting, which two at a time overlap (29 -> 20 min here).
# PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The scripts that write a section of BENCHMARKS.md; the others in benchmarks/ are their helpers
# (worker processes, the moto server, trigger variants) and exit with a usage error on their own.
BENCHMARKS := $(shell grep -l write_section benchmarks/[a-z]*.py)

bench: $(STAMP)  ## every benchmark; each writes its section of BENCHMARKS.md
	@for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Issue 26: 1,000-text batch + 300 one-task operators + 50 /tts-stream texts on the distributed engine while
# workers and triggerers are SIGKILLed every 30 s and PostgreSQL and Redis restart once (RELIABILITY D2).
# CHAOS_ARGS changes sizes, seed or timing (tools/chaos.py --help), e.g. CHAOS_ARGS="--seed 7".
CHAOS_ARGS ?=
chaos: $(STAMP)  ## kill anything at any time on the distributed engine; every text paid once, stored once
	$(BIN)/python tools/chaos.py $(CHAOS_ARGS)

emulator: $(STAMP)  ## serve both vendor APIs on a local port
	$(BIN)/python -m airflow_provider_tts.emulator

lock: $(STAMP)  ## re-cut constraints/airflow-*.txt (needs the package index); commit the result
	$(BIN)/python tools/lock.py

lock-check: $(STAMP)  ## offline: every constraints file still satisfies pyproject.toml
	$(BIN)/python tools/lock.py --check

clean:
	rm -rf $(VENV) $(addprefix .venv-af,$(MATRIX)) output .mypy_cache .ruff_cache .pytest_cache

soak: $(STAMP)  ## the full soak: 10,000 waits through 30 % injected faults; figures in output/soak.json
	TTS_SOAK_WAITS=10000 TTS_SOAK_REPORT=output/soak.json $(BIN)/pytest -q -p no:cacheprovider -s tests/reliability/test_soak.py
