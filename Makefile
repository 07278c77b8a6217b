# Two commands are the whole set-up: `make demo` and `make test`.
# Each creates .venv on first use; the install re-runs only when requirements.txt changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Where `make demo` writes; tests point these at a temporary folder and a short training.
OUT ?= assets
CHECKPOINT ?= checkpoints/unet_circles.pt
TRAIN_ARGS ?=

.PHONY: demo test bench clean

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(PY) 00_scratch.py --figure $(OUT)/unet_architecture.png
	$(PY) 01_pytorch.py --out $(OUT) --checkpoint $(CHECKPOINT) $(TRAIN_ARGS)
	$(PY) 00_scratch.py --weights $(basename $(CHECKPOINT)).npz --out $(OUT)

test: $(INSTALLED)
	$(PY) -m pytest

bench: $(INSTALLED)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_numpy_vs_torch.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_weight_map.py --steps 150

clean:
	rm -rf $(VENV) checkpoints .pytest_cache
