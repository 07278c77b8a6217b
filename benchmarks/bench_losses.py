"""--loss compared: binary cross-entropy, soft Dice and their sum, at the same steps, the median
over seeds, on three kinds of data: the default circles, only 8 training images of them, and
small circles that cover about 1 % of the image, where a per-pixel loss is said to learn
"all background".

    python benchmarks/bench_losses.py [--seeds 0 1 2] [--steps 300] [--cases default few small]

Held-out test scores, and the predicted foreground as a share of the true one (1 is right;
near 0 is the all-black prediction).
"""

import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runs import SCORES, lesson, medians, train_and_predict  # noqa: E402
from common.data import synthetic_circles  # noqa: E402
from common.metrics import SCORE_NAMES  # noqa: E402

SMALL_CIRCLES = partial(synthetic_circles, circles=(1, 2), radius=(0.03, 0.06))  # radius 2-4 px at 64²
CASES = {  # name: (what it is, TrainConfig changes, the circles drawn)
    "default": ("the default circles, 1000 training images", {}, None),
    "few": ("the default circles, 8 training images", {"train_size": 8}, None),
    "small": ("1-2 small circles (radius 2-4 px), 1000 training images", {}, SMALL_CIRCLES),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()

    results, began = {}, time.perf_counter()
    for case in args.cases:
        description, changes, draw = CASES[case]
        for loss in lesson.LOSSES:
            for seed in args.seeds:
                config = replace(lesson.TrainConfig(), steps=args.steps, loss=loss, seed=seed, **changes)
                data = lesson.make_data(config, draw)
                if loss == lesson.LOSSES[0] and seed == args.seeds[0]:
                    share = data.train_masks.mean().item()
                    print(f"{case}: {description}, foreground {100 * share:.1f} % of the pixels")
                scores, preds, data, _ = train_and_predict(config, data)
                scores["found"] = float((preds > 0).mean() / data.test[1].numpy().mean())
                results.setdefault((case, loss), []).append(scores)
                shown = "  ".join(
                    f"{SCORE_NAMES[key[5:]]} {scores[key]:.4f}" for key in SCORES if key in scores
                )
                print(f"  {loss:<8} seed {seed}: {shown}  foreground found {scores['found']:.2f}", flush=True)
    print(f"\n{len(results) * len(args.seeds)} runs in {(time.perf_counter() - began) / 60:.1f} min")
    print(f"medians over seeds {args.seeds}, {args.steps} steps, test images")
    print("| data | loss | Dice | boundary F1 | foreground found |")
    for (case, loss), runs in results.items():
        middle, found = medians(runs), np.median([run["found"] for run in runs])
        dice, boundary = middle["test_dice"], middle["test_boundary_f1"]
        print(f"| {case} | {loss} | {dice:.3f} | {boundary:.3f} | {found:.2f} |")


if __name__ == "__main__":
    main()
