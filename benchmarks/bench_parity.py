"""NumPy's training against PyTorch's, step for step: the same initial weights, the same batches
(the same index lists), Adam with the same one-cycle schedule, in float64. Prints the first
batch's gradients against autograd's, by kind of layer; then both losses at every step and their
largest relative difference; --figure draws both curves on one axis.

    python benchmarks/bench_parity.py [--steps 20] [--figure assets/numpy_pytorch_parity.png]
"""

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data import synthetic_circles  # noqa: E402
from common.plotting import save_figure  # noqa: E402

scratch = importlib.import_module("00_scratch")
lesson = importlib.import_module("01_pytorch")


def train_side_by_side(net, images, masks, batches, lr):
    """Trains `net` (float64, batch norm in training mode) and a NumPy copy of its weights on the
    same batches, one step each in turn. Returns (NumPy losses, PyTorch losses, NumPy weights)."""
    params = {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}
    steps = len(batches)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = lesson.make_scheduler(optimizer, lesson.TrainConfig(lr=lr), steps)
    no_autocast = lesson.autocast_for(lesson.TrainConfig(), torch.device("cpu"))
    moments = scratch.adam_moments(params)
    numpy_losses, torch_losses = [], []
    net.train()
    for step, index in enumerate(batches, start=1):
        batch = [torch.from_numpy(t[index]) for t in (images, masks, np.ones_like(masks))]
        torch_losses.append(lesson.train_step(net, *batch, optimizer, scheduler, no_autocast))
        numpy_losses.append(scratch.train_step(params, moments, images[index], masks[index], step, steps, lr))
    return np.array(numpy_losses), np.array(torch_losses), params


DIFFERENCE_FLOOR = 1e-17  # below float64's resolution: where the two losses are equal


LAYER_KINDS = {  # a weight's kind, by the first of these its name contains
    ".conv": "3×3 convolution",
    ".bn": "batch norm (training mode)",
    "up_convs.": "2×2 up-convolution",
    "head.": "1×1 head",
}


def gradient_errors(net, images, masks):
    """Each kind of layer's largest relative error (CS231n's, as --gradient-check prints it) of
    loss_and_gradients against autograd on one batch, with the number of weights compared."""
    params = {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}
    _, grads, _ = scratch.loss_and_gradients(params, images, masks)
    net.train().zero_grad()
    F.binary_cross_entropy_with_logits(net(torch.from_numpy(images)), torch.from_numpy(masks)).backward()
    errors = {}
    for name, parameter in net.named_parameters():
        kind = next(kind for key, kind in LAYER_KINDS.items() if key in name)
        largest, count = errors.get(kind, (0.0, 0))
        error = scratch.relative_error(grads[name], parameter.grad.numpy())
        errors[kind] = (max(largest, error), count + parameter.numel())
    return errors


def save_parity_figure(numpy_losses, torch_losses, path):
    """Both loss curves on one axis, and their relative difference on a log axis beside it."""
    steps = np.arange(1, len(numpy_losses) + 1)
    figure = Figure(figsize=(11, 3.8))
    loss_ax, difference_ax = figure.subplots(1, 2)
    loss_ax.plot(steps, torch_losses, marker="o", markersize=7, fillstyle="none", label="PyTorch (autograd)")
    loss_ax.plot(steps, numpy_losses, marker=".", linestyle="--", label="NumPy (00_scratch.py)")
    title = f"The same {len(steps)} batches, both ways"
    loss_ax.set(ylabel="training BCE of the batch", yscale="log", title=title)
    relative = np.abs(numpy_losses - torch_losses) / np.abs(torch_losses)
    difference_ax.plot(steps, np.maximum(relative, DIFFERENCE_FLOOR), marker=".", color="black")
    difference_ax.set(
        ylabel=f"|NumPy − PyTorch| / PyTorch (0 drawn at {DIFFERENCE_FLOOR:g})",
        yscale="log",
        title="Relative difference, float64",
    )
    for ax in (loss_ax, difference_ax):
        ax.set(xlabel="optimizer step", xticks=steps[:: max(1, len(steps) // 10)])
        ax.grid(alpha=0.3, which="both")
    loss_ax.legend()
    save_figure(figure, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--figure", type=Path, help="draw both curves to this file")
    args = parser.parse_args()
    config = lesson.TrainConfig()
    images, masks = synthetic_circles(256, config.size, seed=0)
    images, masks = images.astype(np.float64), masks.astype(np.float64)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(images), size=config.batch_size, replace=False) for _ in range(args.steps)]
    net = lesson.UNet(base_channels=config.base_channels, depth=config.depth).double()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in scratch.init_params().items()})
    print(
        f"default network (base {config.base_channels}, depth {config.depth}), float64, "
        f"batches of {config.batch_size}, lr {config.lr}, one-cycle over {args.steps} steps"
    )
    print(
        f"\nthe first batch's gradients against autograd\n{'layer':<28} {'weights':>8} {'max rel. error':>15}"
    )
    for kind, (error, count) in gradient_errors(net, images[batches[0]], masks[batches[0]]).items():
        print(f"{kind:<28} {count:>8,} {error:15.1e}")
    numpy_losses, torch_losses, _ = train_side_by_side(net, images, masks, batches, config.lr)
    print()
    print(f"{'step':>4} {'NumPy':>12} {'PyTorch':>12} {'relative':>9}")
    relative = np.abs(numpy_losses - torch_losses) / np.abs(torch_losses)
    for step, (ours, theirs, difference) in enumerate(
        zip(numpy_losses, torch_losses, relative, strict=True), start=1
    ):
        print(f"{step:>4} {ours:12.8f} {theirs:12.8f} {difference:9.1e}")
    print(f"largest relative difference: {relative.max():.1e}")
    if args.figure:
        save_parity_figure(numpy_losses, torch_losses, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
