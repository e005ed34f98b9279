# Every target sets itself up: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install stamps: the demo needs only the package, the tests also the test extra
# (TensorFlow for TFDS's builder tests, ~600 MB) and the onnx extra (jax2onnx and
# onnxruntime for tests/test_onnx.py, ~180 MB).
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Installs pin the versions the documented numbers come from (see requirements.lock).
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c requirements.lock

.PHONY: test lint demo bench clean lock

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e .
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP_INSTALL) -e '.[test,onnx]'
	@touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# ruff comes with the test extra; its rules are in pyproject.toml [tool.ruff].
lint: $(TEST_STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python experiments/exp3_dropout.py --loss=acce

# Re-resolves the lock in a fresh virtual environment (after a dependency change).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test,onnx]'
	{ sed -n '/^#/p' requirements.lock; .lock-venv/bin/python -m pip freeze --exclude-editable \
	  | grep -v '^echojax'; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build *.egg-info
