# Every target sets itself up: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install stamps: the demo needs only the package, the tests also the test extra
# (TensorFlow for TFDS's builder tests, ~600 MB).
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test lint demo bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# ruff comes with the test extra; its rules are in pyproject.toml [tool.ruff].
lint: $(TEST_STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python experiments/exp3_dropout.py --loss=acce

clean:
	rm -rf $(VENV) build *.egg-info
