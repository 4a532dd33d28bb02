# Set-up and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision first, pinned, so pip takes them from this machine's disk.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[jxl]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[jxl,test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/fairbits demo

test: install-test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) fairbits-demo
