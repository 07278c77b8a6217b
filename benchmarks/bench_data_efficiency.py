"""The paper's claim measured (Sec. 3.1): held-out scores on touching circles against the number
of training images, with no augmentation, flips (90° turns and mirrors) and flips with elastic
deformation, a fixed number of steps per run, the median over seeds.

    python benchmarks/bench_data_efficiency.py [--sizes 1 4 8 16 64] [--seeds 0 1 2]
        [--steps 300] [--figure PATH]

Every run scores the 256 held-out test images of its seed (--val-size 256), drawn apart from
the training images and never trained on; only 16 validation images follow the training, as
nothing here is chosen by them. About 30 s a run on 2 CPU cores, 45 runs.
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runs import SCORES, lesson, medians, train_and_predict  # noqa: E402
from common.metrics import SCORE_NAMES  # noqa: E402
from common.plotting import save_figure  # noqa: E402

HELD_OUT = 256
WATCHED = 16  # validation images that follow training; the scores are the test set's


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16, 64], help="training images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--augments", nargs="+", default=list(lesson.AUGMENTATIONS))
    parser.add_argument("--figure", type=Path, help="the three scores against the training images")
    args = parser.parse_args()

    results, began = {}, time.perf_counter()
    for size in args.sizes:
        for augment in args.augments:
            for seed in args.seeds:
                config = replace(
                    lesson.TrainConfig(),
                    touching=True,
                    train_size=size,
                    steps=args.steps,
                    val_size=HELD_OUT,
                    eval_every=args.steps,
                    augment=augment,
                    seed=seed,
                )
                data = lesson.make_data(config)
                data.val = tuple(None if t is None else t[:WATCHED] for t in data.val)
                scores = train_and_predict(config, data)[0]
                results.setdefault((size, augment), []).append(scores)
                shown = "  ".join(f"{SCORE_NAMES[key[5:]]} {scores[key]:.4f}" for key in SCORES)
                print(f"{size:3d} images, {augment:<7} seed {seed}: {shown}", flush=True)
    minutes = (time.perf_counter() - began) / 60
    print(f"\n{len(args.sizes) * len(args.augments) * len(args.seeds)} runs in {minutes:.1f} min")
    print_table(results, args)
    if args.figure:
        save_curves(results, args, args.figure)
        print(f"wrote {args.figure}")


def print_table(results, args):
    """Medians over the seeds, one row per training-set size, as the README's table."""
    header = " | ".join(f"{SCORE_NAMES[key[5:]]}: {augment}" for key in SCORES for augment in args.augments)
    print(f"\nmedians over seeds {args.seeds}, {args.steps} steps, {HELD_OUT} test images")
    print(f"| images | {header} |")
    for size in args.sizes:
        row = " | ".join(
            f"{medians(results[size, augment])[key]:.3f}" for key in SCORES for augment in args.augments
        )
        print(f"| {size} | {row} |")


def save_curves(results, args, path):
    """One panel per score: each augmentation's median against the training images (log scale),
    the band from the worst seed to the best."""
    figure = Figure(figsize=(15, 4.4))
    for ax, key in zip(figure.subplots(1, len(SCORES)), SCORES, strict=True):
        for augment in args.augments:
            runs = np.array([[run[key] for run in results[size, augment]] for size in args.sizes])
            ax.plot(args.sizes, np.median(runs, axis=1), marker="o", label=augment)
            ax.fill_between(args.sizes, runs.min(axis=1), runs.max(axis=1), alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.sizes, [str(size) for size in args.sizes])
        ax.set_xlabel("training images")
        ax.set_title(f"held-out {SCORE_NAMES[key[5:]]}")
        ax.grid(alpha=0.3)
    figure.axes[0].legend(title="--augment")
    figure.suptitle(
        f"Touching circles, {args.steps} steps per run: median of {len(args.seeds)} seeds "
        f"(band: worst to best seed)"
    )
    save_figure(figure, path)


if __name__ == "__main__":
    main()
