"""Object F1 on touching circles with and without the paper's weight map (eq. 2), at the same
budget (01_pytorch.py's defaults, or --steps), over several seeds; and a figure of the
validation images where the two nets disagree most.

    python benchmarks/bench_weight_map.py [--seeds 0 1 2] [--steps 150] [--figure PATH]
"""

import argparse
import contextlib
import importlib
import io
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.metrics import object_f1  # noqa: E402
from common.plotting import save_segmentation_figure  # noqa: E402

lesson = importlib.import_module("01_pytorch")


def train_and_predict(config):
    """Final validation scores and masks of one run, as `01_pytorch.py` would train it."""
    device = torch.device("cpu")
    torch.manual_seed(config.seed)
    data = lesson.make_data(config)
    model = lesson.build_model(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    autocast = lesson.autocast_for(config, device)
    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        _, scores, preds = lesson.train(model, optimizer, data, config, device, autocast)
    return scores, preds, data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 01_pytorch.py's)")
    parser.add_argument("--figure", type=Path, help="Input | Truth | without | with, for the first seed")
    args = parser.parse_args()

    results = {False: [], True: []}
    for seed in args.seeds:
        runs = {}
        for weighted in (False, True):
            config = replace(
                lesson.TrainConfig(), seed=seed, steps=args.steps, touching=True, weight_map=weighted
            )
            runs[weighted] = train_and_predict(config)
            scores = runs[weighted][0]
            results[weighted].append(scores)
            print(f"seed {seed}, weight map {'on ' if weighted else 'off'}: {describe(scores)}", flush=True)
        if args.figure and seed == args.seeds[0]:
            save_comparison(runs, args.figure)

    print(f"\nmeans over seeds {args.seeds}:")
    for weighted, runs in results.items():
        means = {key: statistics.mean(run[key] for run in runs) for key in runs[0]}
        print(f"weight map {'on ' if weighted else 'off'}: {describe(means)}")


def describe(scores):
    return (
        f"object F1 {scores['val_object_f1']:.4f}, Dice {scores['val_dice']:.4f}, "
        f"boundary F1 {scores['val_boundary_f1']:.4f}"
    )


def save_comparison(runs, path):
    """The four validation images whose object F1 differs most between the two nets."""
    (_, plain, data), (_, weighted, _) = runs[False], runs[True]
    plain_f1 = object_f1(plain, data.val_instances, per_image=True)
    weighted_f1 = object_f1(weighted, data.val_instances, per_image=True)
    rows = np.argsort(-np.abs(weighted_f1 - plain_f1), kind="stable")[:4]
    save_segmentation_figure(
        data.val_images.numpy()[rows],
        data.val_masks.numpy()[rows],
        [plain[rows], weighted[rows]],
        path,
        title="Touching circles: the validation images where the two nets differ most",
        row_labels=[f"object F1 {plain_f1[i]:.2f} → {weighted_f1[i]:.2f}" for i in rows],
        columns=("Input", "Ground truth", "Without weight map", "With weight map"),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
