"""Overlap-tile inference with the trained net on a large image of circles: how the margin trades
time for agreement with one whole-image pass, and why tiles must sit on the 2**depth grid.

    python benchmarks/bench_tiling.py [--checkpoint checkpoints/unet_circles.pt] [--figure PATH]

Rows: one pass over the whole image; tiles of 128 px with margins 0, 16 (the default) and the
exact margin `common.geometry.exact_margin` computes; tiles of 256 px with the exact margin.
Each: the median time of 3 passes, how many mask pixels differ from the whole pass, the largest
|Δ logit| at least 48 px from the image's border, and Dice against the truth. --figure draws
|Δ logit| for tiles on the grid with the exact margin beside tiles off it (a margin 2 px larger).
"""

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import checkpoints  # noqa: E402
from common.data import synthetic_circles  # noqa: E402
from common.geometry import exact_margin  # noqa: E402
from common.metrics import dice  # noqa: E402
from common.plotting import save_figure  # noqa: E402
from common.tiling import predict_tiled  # noqa: E402

lesson = importlib.import_module("01_pytorch")
SIZE, CIRCLES, BORDER = 1024, 150, 48


def timed(run, repeats=3):
    """(median seconds, the last result)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/unet_circles.pt"))
    parser.add_argument("--figure", type=Path, help="aligned and misaligned tiles, |Δ logit| maps")
    args = parser.parse_args()
    checkpoint = checkpoints.load(args.checkpoint)
    depth, align = checkpoint.model_args["depth"], 2 ** checkpoint.model_args["depth"]
    model = lesson.UNet(**checkpoint.model_args).eval()
    model.load_state_dict({name: torch.from_numpy(value) for name, value in checkpoint.state.items()})
    scale = 64 / SIZE  # the training images' radii, in pixels
    images, masks = synthetic_circles(
        1, SIZE, seed=0, circles=(CIRCLES, CIRCLES), radius=(0.08 * scale, 0.22 * scale)
    )
    image, truth = images[0], masks[0, 0] > 0  # (1, H, W) standardised, (H, W)

    @torch.inference_mode()
    def forward(window):
        return model(torch.from_numpy(window)).numpy()

    seconds, whole = timed(lambda: forward(image[None])[0])
    inner = (slice(None), slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    print(f"depth {depth}: exact margin {exact_margin(depth)} px; {SIZE}×{SIZE} image of {CIRCLES} circles")
    print(f"one whole pass: {seconds:.2f} s, Dice {dice(whole[0] > 0, truth):.4f}")
    exact = exact_margin(depth)
    for tile, margin in ((128, 0), (128, 16), (128, exact), (256, exact)):
        seconds, tiled = timed(
            lambda tile=tile, margin=margin: predict_tiled(image, forward, tile, align, margin)
        )
        print(
            f"tile {tile}, margin {margin:2d}: {seconds:.2f} s, {((tiled > 0) != (whole > 0)).sum():,} of "
            f"{whole[0].size:,} mask pixels differ from the whole pass, max |Δ logit| away from the "
            f"border {np.abs(tiled - whole)[inner].max():.2g}, Dice {dice(tiled[0] > 0, truth):.4f}"
        )
    if args.figure:
        save_seams(image, whole, forward, align, depth, args.figure)


def save_seams(image, whole, forward, align, depth, path):
    """|Δ logit| against the whole pass: tiles on the grid with the exact margin, and tiles 2 px
    further apart (align 1 lets predict_tiled place them anywhere), whose pooling grids drift."""
    margin = exact_margin(depth)
    cases = {
        f"tiles on the {align}-px grid, margin {margin}": predict_tiled(image, forward, 128, align, margin),
        f"tiles off the grid, margin {margin + 2}": predict_tiled(image, forward, 128, 1, margin + 2),
    }
    figure = Figure(figsize=(12, 6))
    for ax, (name, tiled) in zip(figure.subplots(1, 2), cases.items(), strict=True):
        difference = np.abs(tiled - whole)[0, :256, :256]
        shown = ax.imshow(np.maximum(difference, 1e-7), cmap="magma", norm="log", vmin=1e-7, vmax=10)
        ax.set_title(f"{name}\nmax |Δ logit| {difference[BORDER:, BORDER:].max():.2g}")
        ax.set_xticks([])
        ax.set_yticks([])
    figure.colorbar(shown, ax=figure.axes, fraction=0.03, label="|Δ logit| against one whole pass")
    save_figure(figure, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
