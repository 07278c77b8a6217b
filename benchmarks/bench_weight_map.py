"""Object F1 on touching circles with and without the paper's weight map (eq. 2), at the same
budget (01_pytorch.py's defaults, or --steps), over several seeds, on the held-out test images;
and a figure of the test image where the weight map helps most: the map, both predictions, a zoom.

    python benchmarks/bench_weight_map.py [--seeds 0 1 2] [--steps 150] [--figure PATH]
"""

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runs import lesson, train_and_predict  # noqa: E402
from common.data import touching_circles  # noqa: E402
from common.metrics import object_f1  # noqa: E402
from common.plotting import save_figure  # noqa: E402
from common.weight_map import weight_map  # noqa: E402


def weight_map_data(config, balanced):
    """The circles make_data draws, their weight maps without the class-balancing term w_c
    (the separation alone) unless `balanced`."""
    data = lesson.make_data(config)
    if config.weight_map and not balanced:
        _, _, instances = touching_circles(config.train_size, config.size, seed=config.seed)  # as drawn
        maps = np.stack([weight_map(labels, balanced=False) for labels in instances])[:, None]
        data.train_weights = torch.from_numpy(maps)
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 01_pytorch.py's)")
    parser.add_argument("--figure", type=Path, help="map | without | with | zoom, for the first seed")
    parser.add_argument("--separation-only", action="store_true", help="weight map with w_c = 1")
    args = parser.parse_args()

    results = {False: [], True: []}
    for seed in args.seeds:
        runs = {}
        for weighted in (False, True):
            config = replace(
                lesson.TrainConfig(), seed=seed, steps=args.steps, touching=True, weight_map=weighted
            )
            runs[weighted] = train_and_predict(config, weight_map_data(config, not args.separation_only))
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
        f"object F1 {scores['test_object_f1']:.4f}, Dice {scores['test_dice']:.4f}, "
        f"boundary F1 {scores['test_boundary_f1']:.4f}"
    )


def save_comparison(runs, path):
    """For the test image whose object F1 gains most from the weight map: the map (eq. 2),
    the predictions without and with it, and a zoom on the gap where the two differ most."""
    (_, plain, data, _), (_, weighted, _, _) = runs[False], runs[True]
    gains = object_f1(weighted, data.test[2], per_image=True) - object_f1(plain, data.test[2], per_image=True)
    i = int(np.argmax(gains))
    instances, image = data.test[2][i], data.test[0][i, 0].numpy()
    without, with_map = plain[i, 0] > 0, weighted[i, 0] > 0
    differ = (without != with_map).astype(float)
    cy, cx = np.unravel_index(np.argmax(box_sum(differ, ZOOM)), differ.shape)  # the densest disagreement
    zoom = (slice(max(cy - ZOOM, 0), cy + ZOOM), slice(max(cx - ZOOM, 0), cx + ZOOM))
    panels = {
        "Weight map (eq. 2)": (weight_map(instances), "magma"),
        f"Without: object F1 {object_f1(without, instances):.2f}": (without, "gray"),
        f"With: object F1 {object_f1(with_map, instances):.2f}": (with_map, "gray"),
        "Zoom: input, without (red), with (cyan)": (None, None),
    }
    figure = Figure(figsize=(16, 4.4))
    for ax, (title, (panel, cmap)) in zip(figure.subplots(1, 4), panels.items(), strict=True):
        if panel is None:
            ax.imshow(image[zoom], cmap="gray", interpolation="nearest")
            ax.contour(without[zoom], levels=[0.5], colors="red", linewidths=1.5)
            ax.contour(with_map[zoom], levels=[0.5], colors="cyan", linewidths=1.5, linestyles="--")
        else:
            shown = ax.imshow(panel, cmap=cmap, interpolation="nearest")
            if cmap == "magma":
                figure.colorbar(shown, ax=ax, fraction=0.046)
            ax.add_patch(
                Rectangle((zoom[1].start, zoom[0].start), 2 * ZOOM, 2 * ZOOM, fill=False, ec="yellow")
            )
        ax.set_title(title, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(figure, path)
    print(f"wrote {path} (test image {i})")


ZOOM = 8  # half the side of the zoomed window, in pixels


def box_sum(values, half):
    """Sum of `values` in the (2·half)² window around every pixel: where disagreements crowd."""
    windows = sliding_window_view(np.pad(values, half), (2 * half, 2 * half))
    return windows.sum(axis=(-2, -1))[: values.shape[0], : values.shape[1]]


if __name__ == "__main__":
    main()
