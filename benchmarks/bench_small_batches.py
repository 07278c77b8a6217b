"""Small batches of large tiles, as the paper trained (batch 1 of a 572² tile): batch norm (the
default, with Adam and one-cycle to a peak lr of 1e-2) against group norm (--norm group), which
is run where a batch holds fewer pixels than the default batch of 16 images of 64² (65,536).

    python benchmarks/bench_small_batches.py [--batches 1 4 16] [--tiles 64 128 256]
        [--steps 200] [--seeds 0] [--threads 1] [--figure PATH]
    python benchmarks/bench_small_batches.py --circles [--batches 1 4 16] [--seeds 0 1 2 3]

Each run trains the default UNet (base 8, depth 3, same padding, as 01_pytorch.py's TrainConfig
builds it) for --steps steps on tiles cut at random places from 4 images of 512² holding a
cluster of 300 nearly touching circles each, and predicts 2 held-out images of the same kind
whole, in eval mode, every 10 steps. The table gives the median over seeds of the final pixel
error, Dice and boundary F1, the worst pixel error after step 20 (a net that learned and then
lost it), the final error in train mode (each image normalised by its own statistics: where it
is far below the eval-mode error, batch norm's running statistics are what went wrong), and
the seconds a run took, evaluations included. A cell of 65,536 pixels or more shows the
batch-norm run twice: group norm is not run there.

--circles trains 01_pytorch.py's own recipe instead, on its 64² circle images (--train-size 64,
each image whole, so every batch holds circles), both norms at each batch size, and gives the
median test scores and, over the seeds, the last step at which the validation Dice was still
under 0.1: a net that says "background" everywhere. About 5 minutes on 2 threads for 4 seeds.

Measured on one CPU thread (torch.set_num_threads(1); --threads changes it): the default grid
takes 13-18 minutes, most of it the three batch-16 runs (`--tiles 64 128`: about 5).
"""

import argparse
import copy
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runs import lesson, train_and_predict  # noqa: E402
from common.data import touching_circles  # noqa: E402
from common.dataset import BATCH_NORM_PIXELS  # noqa: E402
from common.metrics import boundary_f1, dice  # noqa: E402
from common.plotting import save_figure  # noqa: E402

IMAGE_SIDE, TRAIN_IMAGES, HELD_OUT = 512, 4, 2
# 300 circles of radius 5-13 px (the 64² circles' are 5-14 px) grow one cluster that covers about
# a quarter of the image: much of it is background, so a small tile may hold no circle at all.
MANY_CIRCLES = dict(circles=(300, 300), radius=(0.01, 0.025))
HELD_OUT_SEED = 10_000  # added to the seed, as common/recipe.py's VAL_SEED
EVAL_EVERY = 10
STABLE_FROM = 20  # the worst error is taken from this step on: the first steps may be bad
# Group norm is run where a batch has fewer pixels than the default's, below which --images warns.
RECIPES = {
    "batch norm": lambda batch, tile: "batch",
    "group norm": lambda batch, tile: "group" if batch * tile**2 < BATCH_NORM_PIXELS else "batch",
}
CIRCLE_IMAGES = 64  # --circles: training images, drawn with replacement at batch 1 … 16


def large_images(seed, n):
    """(n, 1, S, S) standardised images of many touching circles, and their masks."""
    images, masks, _ = touching_circles(n, IMAGE_SIDE, seed=seed, **MANY_CIRCLES)
    return torch.from_numpy(images), torch.from_numpy(masks)


def random_tiles(images, masks, tile, count, generator):
    """`count` tile² windows at random places of random images: (count, 1, tile, tile) each."""
    n, _, height, width = images.shape
    picks = torch.randint(n, (count,), generator=generator).tolist()
    tops = torch.randint(height - tile + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(width - tile + 1, (count,), generator=generator).tolist()
    windows = [
        np.s_[k, :, top : top + tile, left : left + tile]
        for k, top, left in zip(picks, tops, lefts, strict=True)
    ]
    return torch.stack([images[w] for w in windows]), torch.stack([masks[w] for w in windows])


@torch.inference_mode()
def predict_whole(model, images, train_mode=False):
    """Masks (N, 1, H, W) of whole images, in eval mode, or with `train_mode` each image alone
    normalised by its own statistics (on a copy, whose running statistics may change)."""
    if train_mode:
        copied = copy.deepcopy(model).train()
        return torch.cat([copied(image[None]) > 0 for image in images]).float()
    was_training = model.training
    preds = (model.eval()(images) > 0).float()
    model.train(was_training)
    return preds


def pixel_error(preds, masks):
    return (preds != masks).float().mean().item()


def train_run(norm, batch, tile, train, held_out, steps, seed):
    """One run from scratch, as 01_pytorch.py trains (BCE, Adam, its one-cycle schedule), on
    random tiles; its held-out error every EVAL_EVERY steps and its final scores."""
    torch.manual_seed(seed)
    config = replace(lesson.TrainConfig(), batch_size=batch, size=tile, steps=steps, seed=seed, norm=norm)
    model = lesson.build_model(config, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = lesson.make_scheduler(optimizer, config, steps)
    generator = torch.Generator().manual_seed(seed)
    curve, began = [], time.perf_counter()
    for step in range(1, steps + 1):
        images, masks = random_tiles(*train, tile, batch, generator)
        loss = F.binary_cross_entropy_with_logits(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % EVAL_EVERY == 0:
            curve.append((step, pixel_error(predict_whole(model, held_out[0]), held_out[1])))
    preds, truth = predict_whole(model, held_out[0]).numpy(), held_out[1].numpy()
    return {
        "curve": curve,
        "error": pixel_error(torch.from_numpy(preds), held_out[1]),
        "dice": dice(preds, truth),
        "boundary_f1": boundary_f1(preds, truth),
        "worst": max((error for step, error in curve if step >= STABLE_FROM), default=float("nan")),
        "train_mode_error": pixel_error(predict_whole(model, held_out[0], train_mode=True), held_out[1]),
        "seconds": time.perf_counter() - began,
    }


def run_grid(args):
    """{(batch, tile, recipe): (norm, [one result per seed])}; a run two recipes share is run once."""
    done, grid = {}, {}
    for seed in args.seeds:
        train = large_images(seed, TRAIN_IMAGES)
        held_out = large_images(seed + HELD_OUT_SEED, HELD_OUT)
        for batch in args.batches:
            for tile in args.tiles:
                for name, rule in RECIPES.items():
                    norm = rule(batch, tile)
                    key = (norm, batch, tile, seed)
                    if key not in done:
                        done[key] = train_run(norm, batch, tile, train, held_out, args.steps, seed)
                        print(f"{describe(batch, tile, name, norm, [done[key]])}  seed {seed}", flush=True)
                    grid.setdefault((batch, tile, name), (norm, []))[1].append(done[key])
    return grid


def medians(runs):
    return {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "curve"}


def describe(batch, tile, name, norm, runs):
    """A table row: batch, tile, recipe, norm, error, Dice, boundary F1, worst, train-mode error, s."""
    m = medians(runs)
    return (
        f"| {batch} | {tile} | {name} | {norm} | {100 * m['error']:.2f} % | {m['dice']:.4f} | "
        f"{m['boundary_f1']:.3f} | {100 * m['worst']:.1f} % | {100 * m['train_mode_error']:.2f} % | "
        f"{m['seconds']:.0f} |"
    )


def save_curves(grid, args, path):
    """One panel per (batch, tile): the held-out pixel error against the step, each recipe a colour."""
    rows, cols = len(args.batches), len(args.tiles)
    figure = Figure(figsize=(4 * cols, 3 * rows))
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for (r, batch), (c, tile) in ((rb, ct) for rb in enumerate(args.batches) for ct in enumerate(args.tiles)):
        ax = axes[r, c]
        for colour, name in zip(("tab:red", "tab:blue"), RECIPES, strict=True):
            norm, runs = grid[batch, tile, name]
            for k, run in enumerate(runs):
                steps, errors = zip(*run["curve"], strict=True)
                label = f"{norm} norm" if k == 0 else None
                ax.plot(steps, 100 * np.array(errors), color=colour, alpha=0.8, label=label)
        ax.set_yscale("log")
        ax.set_title(f"batch {batch}, tile {tile}²", fontsize=10)
        ax.legend(fontsize=8)
        if c == 0:
            ax.set_ylabel("held-out pixel error, %")
        if r == rows - 1:
            ax.set_xlabel("step")
    save_figure(figure, path)


def circle_grid(args):
    """{(batch, norm): [per seed: test scores and the last step still under Dice 0.1]} for
    01_pytorch.py's circles, validated every 10 steps."""
    grid = {}
    for seed in args.seeds:
        for batch in args.batches:
            for norm in ("batch", "group"):
                config = replace(
                    lesson.TrainConfig(),
                    steps=args.steps,
                    batch_size=batch,
                    train_size=CIRCLE_IMAGES,
                    seed=seed,
                    norm=norm,
                    eval_every=10,
                )
                scores, _, _, history = train_and_predict(config)
                background = [entry["step"] for entry in history[1:] if entry["val_dice"] < 0.1]
                scores["background_until"] = max(background, default=0)
                grid.setdefault((batch, norm), []).append(scores)
                print(f"batch {batch}, {norm} norm, seed {seed}: {describe_circles(scores)}", flush=True)
    return grid


def describe_circles(scores):
    until = scores["background_until"]
    return f"test Dice {scores['test_dice']:.4f}, boundary F1 {scores['test_boundary_f1']:.3f}, " + (
        f"validation Dice under 0.1 until step {until}" if until else "validation Dice never under 0.1"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 128, 256], help="sides ≤ 512, of 8·k")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core free)")
    parser.add_argument("--figure", type=Path, help="the held-out error curves of the grid")
    parser.add_argument("--circles", action="store_true", help="01_pytorch.py's 64² circles, whole")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    began = time.perf_counter()
    if args.circles:
        grid = circle_grid(args)
        print(
            f"\n{(time.perf_counter() - began) / 60:.1f} min; medians over seeds {args.seeds}, "
            f"{args.steps} steps"
        )
        for (batch, norm), runs in grid.items():
            middle = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            middle["background_until"] = max(run["background_until"] for run in runs)  # the worst seed
            print(f"batch {batch:>2}, {norm} norm: {describe_circles(middle)}")
        return
    grid = run_grid(args)
    print(
        f"\n{(time.perf_counter() - began) / 60:.1f} min on {args.threads} thread(s); medians over seeds "
        f"{args.seeds}, {args.steps} steps, {HELD_OUT} held-out images of {IMAGE_SIDE}² predicted whole"
    )
    print(
        "| batch | tile | recipe | norm | pixel error | Dice | boundary F1 | worst after step 20 "
        "| train-mode error | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (batch, tile, name), (norm, runs) in grid.items():
        print(describe(batch, tile, name, norm, runs))
    if args.figure:
        save_curves(grid, args, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
