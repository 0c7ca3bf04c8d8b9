# Two commands matter: `make run` (the main job) and `make test` (everything CI checks).
# Both create ./.venv on first use and install the package with its dev extras into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench emulator clean soak matrix test-af3.0 test-af3.1 test-af3.2

# The older Airflow minors CI also tests (the newest patch of each); 3.3 is .venv itself.
AF_3.0 := 3.0.6
AF_3.1 := 3.1.8
AF_3.2 := 3.2.2
MATRIX := 3.0 3.1 3.2
# Airflow 3.0 declares three dependencies without an upper bound, and today's releases break it (3.1
# capped them): under universal-pathlib 0.3 its ObjectStoragePath refuses every path; under
# fastapi >= 0.118 / cadwyn >= 6 its Execution API answers 422 to the task runner's first call, so no
# task starts. Airflow's constraints file for 3.0 pins releases from before; these pins do the same.
AF_PINS_3.0 := "universal-pathlib>=0.2.6,<0.3" "fastapi[standard]>=0.116,<0.118" "cadwyn>=5.2.1,<6"
# Airflow 3.2.2 leaves fastapi and svcs unbounded (3.3 caps fastapi below 0.137 and no longer needs the
# svcs behaviour below). Under fastapi >= 0.137 (which cadwyn 9 requires) its Execution API fails to
# build (pydantic: "Model 'TITerminalStatePayload' needs a discriminator field"), so no api-server or
# dag-processor starts. Under svcs 26 its in-process Execution API (dag.test(), `airflow dags test`) loses
# its service registry ("'State' object has no attribute 'svcs_registry'"), so every task fails.
AF_PINS_3.2 := "fastapi[standard-no-fastapi-cloud-cli]>=0.129,<0.137" "svcs>=25.1,<26"
# On older minors: the unit and emulator tests, plus the real-Airflow tests marked `matrix`.
MATRIX_PYTEST_ARGS ?= -m "not slow or matrix"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	($(BIN)/python -m pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev]") \
	  || $(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# One cached virtualenv per older minor (.venv-af3.0/ ...), reused while pyproject.toml and the pins
# here are unchanged.
# uv comes from .venv; `uv pip install` resolves the package's own dependencies against that Airflow.
.venv-af%/.installed: pyproject.toml Makefile | $(STAMP)
	@test -n "$(AF_$*)" || { echo "no Airflow patch version known for minor $*"; exit 1; }
	test -x .venv-af$*/bin/python || $(PYTHON) -m venv .venv-af$*
	$(BIN)/uv pip install -q --python .venv-af$*/bin/python "apache-airflow==$(AF_$*)" $(AF_PINS_$*) -e ".[dev]"
	touch $@

# A static pattern rule: make never applies an implicit (%) rule to a .PHONY target, so a plain
# `test-af%:` rule made `make test-af3.0` answer "Nothing to be done" and pass without running a test.
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

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

bench: $(STAMP)  ## every benchmark; each writes its section of BENCHMARKS.md
	@for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

emulator: $(STAMP)  ## serve both vendor APIs on a local port
	$(BIN)/python -m airflow_provider_tts.emulator

clean:
	rm -rf $(VENV) $(addprefix .venv-af,$(MATRIX)) output .mypy_cache .ruff_cache .pytest_cache

soak: $(STAMP)  ## the full soak: 10,000 waits through 30 % injected faults; figures in output/soak.json
	TTS_SOAK_WAITS=10000 TTS_SOAK_REPORT=output/soak.json $(BIN)/pytest -q -p no:cacheprovider -s tests/reliability/test_soak.py
