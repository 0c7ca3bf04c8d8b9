# Two commands matter: `make run` (the main job) and `make test` (everything CI checks).
# Both create ./.venv on first use and install the package with its dev extras into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench emulator clean soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	($(BIN)/python -m pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev]") \
	  || $(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)  ## the main job: emulator + pipeline, real audio into ./output/
	$(BIN)/python scripts/main_job.py

test: lint typecheck pytest  ## what CI runs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)  ## every benchmark; each writes its section of BENCHMARKS.md
	@for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

emulator: $(STAMP)  ## serve both vendor APIs on a local port
	$(BIN)/python -m airflow_provider_tts.emulator

clean:
	rm -rf $(VENV) output .mypy_cache .ruff_cache .pytest_cache

soak: $(STAMP)  ## the full soak: 10,000 waits through 30 % injected faults; figures in output/soak.json
	TTS_SOAK_WAITS=10000 TTS_SOAK_REPORT=output/soak.json $(BIN)/pytest -q -p no:cacheprovider -s tests/reliability/test_soak.py
