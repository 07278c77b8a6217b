"""Time to validation Dice 0.98: 01_pytorch.py's default recipe against a plain baseline —
the issue's starting UNet (base 16, depth 4) trained with Adam 1e-3, batch 16, fp32, no tuning —
on the same data, in the same run, alternating so that machine noise hits both alike.

    python benchmarks/bench_train.py [--rounds 3] [--device cpu|cuda]
"""

import argparse
import contextlib
import importlib
import io
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


lesson = importlib.import_module("01_pytorch")

TARGET = 0.98
EVAL_EVERY = 10
RECIPES = {
    "baseline": replace(
        lesson.TrainConfig(),
        base_channels=16,
        depth=4,
        lr=1e-3,
        schedule="constant",
        channels_last=False,
        mixed_precision=False,
        steps=300,
        epochs=100,
    ),
    "default": lesson.TrainConfig(),
}
# Each lever of the default recipe undone alone, to see what it is worth (--ablations).
ABLATIONS = {
    "default, contiguous": replace(lesson.TrainConfig(), channels_last=False),
    "default, base 16 depth 4": replace(lesson.TrainConfig(), base_channels=16, depth=4),
    "default, constant 1e-3": replace(lesson.TrainConfig(), lr=1e-3, schedule="constant"),
}


def run(config, data, device):
    """Train one recipe from scratch; (seconds to TARGET or None, final Dice, images/s)."""
    config = replace(config, eval_every=EVAL_EVERY, device=device.type)
    torch.manual_seed(config.seed)
    model = lesson.build_model(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        history, _, _ = lesson.train(
            model, optimizer, data, config, device, lesson.autocast_for(config, device)
        )
    reached = next((entry["seconds"] for entry in history if entry["val_dice"] >= TARGET), None)
    images_per_second = history[-1]["step"] * config.batch_size / history[-1]["seconds"]
    return reached, history[-1]["val_dice"], images_per_second


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ablations", action="store_true", help="also undo each lever of the default alone")
    args = parser.parse_args()
    recipes = {**RECIPES, **(ABLATIONS if args.ablations else {})}
    device = torch.device(args.device)
    data = lesson.make_data(lesson.TrainConfig())

    results = {name: [] for name in recipes}
    for round_number in range(args.rounds):
        for name, recipe in recipes.items():
            results[name].append(run(recipe, data, device))
            reached, final, rate = results[name][-1]
            print(
                f"round {round_number + 1} {name:>24}: to Dice {TARGET}: "
                f"{'not reached' if reached is None else f'{reached:.1f} s'}, "
                f"final Dice {final:.4f}, {rate:.0f} images/s (evaluation included)",
                flush=True,
            )

    print(
        f"\nmedians over {args.rounds} rounds on {device.type} "
        f"({torch.get_num_threads()} threads; evaluation every {EVAL_EVERY} steps counted in the time):"
    )
    medians = {}
    for name, runs in results.items():
        times = [reached for reached, _, _ in runs if reached is not None]
        medians[name] = statistics.median(times) if len(times) == len(runs) else None
        recipe = recipes[name]
        print(
            f"{name:>24}: base {recipe.base_channels}, depth {recipe.depth}, "
            f"lr {recipe.lr} {recipe.schedule}, channels_last {recipe.channels_last}: "
            f"{'not always' if medians[name] is None else f'{medians[name]:.1f} s'} to Dice {TARGET}, "
            f"final Dice {statistics.median(f for _, f, _ in runs):.4f}, "
            f"{statistics.median(r for _, _, r in runs):.0f} images/s"
        )
    if None not in medians.values():
        print(f"time to Dice {TARGET}, default / baseline: {medians['default'] / medians['baseline']:.2f}")


if __name__ == "__main__":
    main()
