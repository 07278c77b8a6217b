"""One training run of 01_pytorch.py, in process and quiet, scored on its held-out test set:
the unit the comparison benchmarks repeat over seeds, data and options."""

import contextlib
import importlib
import io
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

lesson = importlib.import_module("01_pytorch")

SCORES = ("test_dice", "test_boundary_f1", "test_object_f1")


def train_and_predict(config, data=None):
    """Test scores, predicted test masks, the data and the validation history of one run,
    trained on the CPU as `01_pytorch.py` trains; `data` (a CircleData) replaces the circles
    the config would draw."""
    device = torch.device("cpu")
    torch.manual_seed(config.seed)
    data = data or lesson.make_data(config)
    model = lesson.build_model(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    autocast = lesson.autocast_for(config, device)
    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        history, _, _ = lesson.train(model, optimizer, data, config, device, autocast)
    scores, preds = lesson.evaluate(model, data.test, device, autocast, prefix="test")
    return scores, preds, data, history


def medians(runs):
    """{score: median over the runs} for the scores every run has."""
    return {key: statistics.median(run[key] for run in runs) for key in SCORES if key in runs[0]}
