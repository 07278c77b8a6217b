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

.PHONY: demo figures example test bench clean

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(PY) 00_scratch.py --figure $(OUT)/unet_architecture.png
	$(PY) 01_pytorch.py --out $(OUT) --checkpoint $(CHECKPOINT) $(TRAIN_ARGS)
	$(PY) 00_scratch.py --weights $(basename $(CHECKPOINT)).npz --out $(OUT)

# Every other figure the README shows but section 7's (`make example`), each by the command the README
# names under it (about 55 minutes).
figures: demo
	$(PY) 00_scratch.py --paper --figure $(OUT)/unet_paper_architecture.png > /dev/null
	$(PY) 01_pytorch.py --no-skip --out $(OUT)/no_skip --checkpoint checkpoints/no_skip.pt
	$(PY) 01_pytorch.py --touching --out $(OUT)/touching --checkpoint checkpoints/touching.pt
	$(PY) 01_pytorch.py --touching --weight-map --out $(OUT)/touching_weight_map \
		--checkpoint checkpoints/touching_weight_map.pt
	$(PY) -m common.data $(OUT)/many_circles.png
	$(PY) 01_pytorch.py --predict $(OUT)/many_circles.png --checkpoint $(CHECKPOINT) --out $(OUT) --overwrite
	$(PY) benchmarks/bench_weight_map.py --seeds 0 --steps 150 --figure $(OUT)/weight_map_comparison.png
	$(PY) benchmarks/bench_tiling.py --checkpoint $(CHECKPOINT) --figure $(OUT)/tiling_seams.png
	$(PY) 00_scratch.py --train --out $(OUT)
	$(PY) benchmarks/bench_parity.py --figure $(OUT)/numpy_pytorch_parity.png
	$(PY) 01_pytorch.py --touching --train-size 8 --steps 300 --augment elastic --out $(OUT)/few_elastic \
		--checkpoint checkpoints/few_elastic.pt
	$(PY) benchmarks/bench_data_efficiency.py --figure $(OUT)/data_efficiency.png  # 45 runs, about 25 min
	$(PY) benchmarks/bench_small_batches.py --figure $(OUT)/small_batches.png  # 13-18 min

# Your own images, worked through: a synthetic nuclei data set written as files into $(EXAMPLE)/, a net
# trained on its one 256×512 image, the test images predicted and scored (figures into $(OUT)/cells).
EXAMPLE ?= example
example: $(INSTALLED)
	$(PY) -m common.cells $(EXAMPLE)
	$(PY) 01_pytorch.py --images $(EXAMPLE)/train/images --masks $(EXAMPLE)/train/masks --weight-map \
		--steps 600 --out $(OUT)/cells --checkpoint $(EXAMPLE)/cells.pt
	$(PY) 01_pytorch.py --predict $(EXAMPLE)/test/images --truth $(EXAMPLE)/test/masks --labels \
		--checkpoint $(EXAMPLE)/cells.pt --out $(OUT)/cells/predictions --overwrite

test: $(INSTALLED)
	$(PY) -m pytest

bench: $(INSTALLED)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_numpy_vs_torch.py
	$(PY) benchmarks/bench_numpy_vs_torch.py --workload train-step
	$(PY) benchmarks/bench_parity.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_weight_map.py --steps 150
	$(PY) benchmarks/bench_tiling.py
	$(PY) benchmarks/bench_data_efficiency.py
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_small_batches.py
	$(PY) benchmarks/bench_small_batches.py --circles --seeds 0 1 2 3 --threads 2

clean:
	rm -rf $(VENV) checkpoints .pytest_cache $(EXAMPLE)
