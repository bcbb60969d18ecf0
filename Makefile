# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test,onnx]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/marsdust demo -o demo_out

# Two pytest-xdist workers with one torch thread each (tests/conftest.py): CI's 2 cores both busy without
# oversubscription. TEST_WORKERS=0 runs the suite in one process on 2 threads.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) demo_out .pytest_cache
