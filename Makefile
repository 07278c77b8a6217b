# Two commands are the whole set-up: `make demo` and `make test`.
# Each creates .venv on first use; the install re-runs only when requirements.txt changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench clean

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(PY) 00_scratch.py
	$(PY) 01_pytorch.py
	$(PY) 00_scratch.py --weights checkpoints/unet_circles.npz

test: $(INSTALLED)
	$(PY) -m pytest

bench: $(INSTALLED)
	$(PY) benchmarks/bench_data.py

clean:
	rm -rf $(VENV) checkpoints .pytest_cache
