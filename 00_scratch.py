"""U-Net's forward pass in pure NumPy, printing how every tensor changes on its way.

Read top to bottom: the layers (each one function) → the trace that records them → the
network (`double_conv`, then `unet_forward` with its skip connections in plain sight) → its
parameters, named as PyTorch names them → main(). Options and checkpoints live in common/.

    python 00_scratch.py            # a small U-Net on one synthetic circle image
    python 00_scratch.py --paper    # the paper's network: 572×572 in, 388×388×2 out
    python 00_scratch.py --paper --figure assets/unet_paper_architecture.png   # drawn, with its crops
    python 00_scratch.py --weights checkpoints/unet_circles.npz   # run what 01_pytorch.py trained

The arithmetic is real and equals PyTorch's (tests/test_scratch.py runs both with the same
weights). No torch is imported here.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from common import checkpoints, cli
from common.checkpoints import CheckpointError
from common.cli import option
from common.data import synthetic_circles
from common.geometry import PADDINGS, parameter_shapes, receptive_fields, size_error
from common.metrics import dice, foreground
from common.plotting import FIGURE_SUFFIXES, save_architecture_figure, save_segmentation_figure

COLUMN_BUFFER_BYTES = 16 * 2**20  # im2col is built a band of rows at a time, at most this big

# ----------------------------------------------------------------------------- the layers


def conv2d(x, w, b=None, padding="same"):
    """A k×k convolution (k = 3 or 1), stride 1, as one matrix product per band of rows.

    Each output pixel is a dot product of the weights with the k×k×C window under it. Laying
    those windows out as columns (im2col) turns the whole layer into one matrix product, which
    BLAS runs near the processor's peak. The columns take k² times the input's memory, so they
    are built for a band of output rows at a time.

    Inputs:
    - x: (N, C, H, W)
    - w: (F, C, k, k)
    - b: (F,) or None
    - padding: "same" adds a zero border of k//2 so the output is H×W; "valid" (the paper's)
      adds none, so the output is (H-k+1)×(W-k+1)
    Returns:
    - out: (N, F, H', W')
    """
    f, c, k, _ = w.shape
    if padding == "same":
        x = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    n, _, height, width = x.shape
    out_h, out_w = height - k + 1, width - k + 1
    weights = w.reshape(f, c * k * k)  # (F, C·k·k)
    out = np.empty((n, f, out_h * out_w), dtype=np.float32)
    band = min(out_h, max(1, COLUMN_BUFFER_BYTES // (4 * c * k * k * out_w)))
    # One buffer for every band: fresh allocations of this size cost a page fault per 4 KiB.
    buffer = np.empty((c * k * k, band * out_w), dtype=np.float32)
    for i in range(n):
        for top in range(0, out_h, band):
            rows = min(band, out_h - top)
            windows = sliding_window_view(x[i, :, top : top + rows + k - 1], (k, k), axis=(1, 2))
            columns = buffer[:, : rows * out_w]  # (C·k·k, rows·W'): one window per column (im2col)
            np.copyto(columns.reshape(c, k, k, rows, out_w), windows.transpose(0, 3, 4, 1, 2))
            np.matmul(weights, columns, out=out[i, :, top * out_w : (top + rows) * out_w])
    out = out.reshape(n, f, out_h, out_w)  # (N, F, H', W')
    if b is not None:
        out += b[:, None, None]
    return out


def relu(x):
    """max(0, x), in place: the input is not needed again and the maps are large."""
    return np.maximum(x, 0, out=x)


def batch_norm(x, weight, bias, running_mean, running_var, eps=1e-5):
    """Batch normalisation at inference: each channel standardised with the statistics
    gathered in training, then scaled and shifted by the learned weight and bias.

    Inputs:
    - x: (N, C, H, W)
    - weight, bias, running_mean, running_var: (C,)
    Returns:
    - out: (N, C, H, W)
    """
    scale = weight / np.sqrt(running_var + eps)  # (C,)
    shift = bias - running_mean * scale
    x *= scale[:, None, None]
    x += shift[:, None, None]
    return x


def max_pool2x2(x):
    """2×2 max-pool, stride 2: halves the map, so the next level sees twice the context.

    Inputs:
    - x: (N, C, H, W), H and W even
    Returns:
    - out: (N, C, H/2, W/2)
    """
    # The larger of each window's four pixels, taken pairwise over strided views: one pass,
    # where a reduction over a reshaped (N, C, H/2, 2, W/2, 2) array is several times slower.
    top = np.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2])
    bottom = np.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2])
    return np.maximum(top, bottom, out=top)


def up_conv2x2(x, w, b):
    """Up-convolution (transposed 2×2 convolution, stride 2): every input pixel paints a 2×2
    patch of the output, weighted per output channel. Doubles the map, halves the channels.

    Inputs:
    - x: (N, C, H, W)
    - w: (C, F, 2, 2), PyTorch's ConvTranspose2d layout
    - b: (F,)
    Returns:
    - out: (N, F, 2H, 2W)
    """
    n, c, h, width = x.shape
    f = w.shape[1]
    patches = w.reshape(c, f * 4).T @ x.reshape(n, c, h * width)  # (N, F·2·2, H·W)
    patches = patches.reshape(n, f, 2, 2, h, width)
    out = patches.transpose(0, 1, 4, 2, 5, 3).reshape(n, f, 2 * h, 2 * width)  # (N, F, 2H, 2W)
    out += b[:, None, None]
    return out


def center_crop(x, height, width):
    """The central (height, width) window of x — paper, Fig. 1, "copy and crop".

    With valid padding the decoder's map is smaller than the encoder map it joins, because
    every unpadded convolution lost a border; the encoder map is cropped to fit.

    Inputs:
    - x: (N, C, H, W)
    Returns:
    - out: (N, C, height, width), a view
    """
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def sigmoid(x):
    """Probability of the one foreground class from its logit: 1 / (1 + e^-x), written as
    e^-log(1 + e^-x) so that large negative logits do not overflow."""
    return np.exp(-np.logaddexp(0, -x))


def softmax(x, axis=1):
    """Pixel-wise soft-max over the class axis (paper, Sec. 3); shifted by the max for stability."""
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- the trace


@dataclass
class Trace:
    """Collects one row per operation and prints it as the data flows; `unet_forward` takes
    `trace=None` to stay silent."""

    echo: bool = True
    rows: list = field(default_factory=list)

    def __call__(self, stage, op, x_in, x_out, params=0, flops=0, note=""):
        row = dict(
            stage=stage,
            op=op,
            shape_in=x_in.shape[1:],
            shape_out=x_out.shape[1:],
            params=params,
            flops=flops,
            note=note,
        )
        self.rows.append(row)
        if self.echo:
            print(format_row(row))


def shape_text(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def format_row(row):
    """One aligned line of at most 100 characters: stage, op, shapes, parameters, MFLOPs.
    A concat line spells out what it joins in place of the last columns, wrapped before
    " + " onto a second line where one would be too long."""
    lead = f"{row['stage']:<6} {row['op']:<17} "
    if row["note"]:
        if len(lead + row["note"]) <= TRACE_WIDTH:
            return lead + row["note"]
        first, rest = row["note"].split(" + ", 1)
        return f"{lead}{first}\n{' ' * len(lead)}+ {rest}"
    flow = f"{shape_text(row['shape_in'])} → {shape_text(row['shape_out'])}"
    params = f"{row['params']:,}" if row["params"] else ""
    mflops = f"{row['flops'] / 1e6:,.1f}" if row["flops"] else ""
    return f"{lead}{flow:<44} {params:>11} {mflops:>10}".rstrip()


TRACE_WIDTH = 100
TRACE_HEADER = f"{'stage':<6} {'op':<17} {'(C, H, W) in → out':<44} {'params':>11} {'MFLOPs':>10}"


def conv_cost(w, b, out, batchnorm=False):
    """(parameters, FLOPs) of a convolution: 2 FLOPs (multiply, add) per weight per output
    pixel; the parameters count its bias and batch norm's scale and shift, as PyTorch does."""
    params = w.size + (0 if b is None else b.size) + (2 * w.shape[0] if batchnorm else 0)
    return params, 2 * w.size * out.shape[2] * out.shape[3]


def up_conv_cost(w, b, x):
    """(parameters, FLOPs) of an up-convolution: every input pixel meets every weight once."""
    return w.size + b.size, 2 * w.size * x.shape[2] * x.shape[3]


def concat_note(name, skip, cropped, up, joined):
    """What a skip connection joins, e.g. "crop(enc4 (512, 64, 64) → (512, 56, 56)) + up …"."""
    encoder = f"{name} {shape_text(skip.shape[1:])}"
    if cropped.shape != skip.shape:
        encoder = f"crop({encoder} → {shape_text(cropped.shape[1:])})"
    return f"{encoder} + up {shape_text(up.shape[1:])} → {shape_text(joined.shape[1:])}"


# ----------------------------------------------------------------------------- the network


def conv_step(x, params, name, padding, trace, stage):
    """3×3 conv → [batch norm] → ReLU, reading the weights stored under `name`."""
    w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
    out = conv2d(x, w, b, padding)
    bn = name.replace("conv", "bn")
    if f"{bn}.weight" in params:
        out = batch_norm(
            out, *(params[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        )
    out = relu(out)
    if trace:
        batchnorm = f"{bn}.weight" in params
        trace(
            stage,
            "conv 3×3 BN ReLU" if batchnorm else "conv 3×3 ReLU",
            x,
            out,
            *conv_cost(w, b, out, batchnorm),
        )
    return out


def double_conv(x, params, prefix, padding, trace, stage):
    """(3×3 conv → [BN] → ReLU) × 2 — paper, Fig. 1, the blue arrows of every level.

    Inputs:
    - x: (N, C, H, W)
    Returns:
    - out: (N, F, H, W) with same padding, (N, F, H-4, W-4) with valid padding
    """
    x = conv_step(x, params, f"{prefix}.conv1", padding, trace, stage)
    return conv_step(x, params, f"{prefix}.conv2", padding, trace, stage)


def network_depth(params):
    """The number of pooling steps, read off the weights' names (one encoder block per step)."""
    return sum(1 for name in params if name.startswith("encoder.") and name.endswith(".conv1.weight"))


def unet_forward(x, params, *, padding="same", skip=True, trace=None):
    """The U-Net of the paper's Fig. 1: contract, expand, and join the two by skip connections.

    Inputs:
    - x: (N, C, H, W) float32, H and W a size the network can take (common.geometry)
    - params: weights named exactly as `01_pytorch.UNet(...).state_dict()`; depth and batch
      norm are read off the names
    - padding: "same" or "valid", as the weights were trained
    - skip: False feeds the decoder zeros where the encoder map would be (01_pytorch.py --no-skip)
    - trace: a `Trace` to record every operation, or None
    Returns:
    - logits: (N, K, H', W'), H' = H with same padding, less with valid
    """
    depth = network_depth(params)
    skips = []
    for level in range(depth):  # the contracting path: what is in the image
        x = double_conv(x, params, f"encoder.{level}", padding, trace, f"enc{level + 1}")  # (N, C, H, W)
        skips.append(x)
        pooled = max_pool2x2(x)  # (N, C, H/2, W/2)
        if trace:
            trace(f"enc{level + 1}", "max-pool 2×2", x, pooled)
        x = pooled
    x = double_conv(x, params, "bottleneck", padding, trace, "bottom")  # (N, 2C, H/2, W/2)

    for step in range(depth):  # the expanding path: where it is
        w, b = params[f"up_convs.{step}.weight"], params[f"up_convs.{step}.bias"]
        up = up_conv2x2(x, w, b)  # (N, C, 2H, 2W)
        stage = f"dec{depth - step}"
        if trace:
            trace(stage, "up-conv 2×2", x, up, *up_conv_cost(w, b, x))
        encoded = skips.pop()
        cropped = center_crop(encoded, *up.shape[-2:])  # (N, C, 2H, 2W)
        if not skip:
            cropped = np.zeros_like(cropped)
        x = np.concatenate([cropped, up], axis=1)  # (N, 2C, 2H, 2W): encoder detail + decoder context
        if trace:
            trace(stage, "concat", up, x, note=concat_note(f"enc{depth - step}", encoded, cropped, up, x))
        x = double_conv(x, params, f"decoder.{step}", padding, trace, stage)  # (N, C, 2H, 2W)

    w, b = params["head.weight"], params["head.bias"]
    logits = conv2d(x, w, b, "valid")  # 1×1: (N, K, H, W), one score per class and pixel
    if trace:
        trace("head", "conv 1×1", x, logits, *conv_cost(w, b, logits))
    return logits


# ----------------------------------------------------------------------------- parameters


def init_params(in_channels=1, out_channels=1, base_channels=8, depth=3, batchnorm=True, seed=0):
    """Weights for a fresh U-Net, named and shaped exactly as `01_pytorch.UNet.state_dict()`
    (common/geometry.py lists them, so that a checkpoint can be checked without building a net).

    Paper, Sec. 3: Gaussian with std √(2/N), N the inputs feeding one output pixel (C·k² for a
    k×k conv, C for the stride-2 up-conv, whose output pixels each see one tap per channel).
    Biases start at zero; batch norm at the identity (weight 1, bias 0, mean 0, variance 1).
    """
    rng = np.random.default_rng(seed)
    network = dict(
        in_channels=in_channels, out_channels=out_channels, base_channels=base_channels, depth=depth
    )
    shapes = parameter_shapes(network | dict(padding="same", batchnorm=batchnorm, skip=True))
    params = {}
    for name, shape in shapes.items():
        if len(shape) == 4:  # a kernel: (F, C, k, k), or (C, F, 2, 2) for an up-convolution
            fan_in = shape[0] if name.startswith("up_convs") else math.prod(shape[1:])
            params[name] = (rng.standard_normal(shape) * math.sqrt(2 / fan_in)).astype(np.float32)
        elif name.endswith("num_batches_tracked"):
            params[name] = np.array(0, np.int64)
        elif name.endswith(("bn1.weight", "bn2.weight", "running_var")):
            params[name] = np.ones(shape, np.float32)
        else:  # biases and running means
            params[name] = np.zeros(shape, np.float32)
    return params


# ----------------------------------------------------------------------------- main


@dataclass
class NetworkOptions:
    """The network to trace; each field is also the option of the same name (`--base-channels`)."""

    size: int = cli.size_option()
    depth: int = cli.depth_option()
    base_channels: int = cli.base_channels_option()
    padding: str = option("same", choices=PADDINGS, help="same keeps sizes; valid is the paper's")
    seed: int = cli.seed_option(seeds="the image and the weights")


# Paper, Fig. 1: 572×572 in, four pools, 64…1024 channels, unpadded convolutions; 2 classes, no BN.
PAPER = dict(size=572, depth=4, base_channels=64, padding="valid")


def build_parser():
    parser = cli.ArgumentParser(description="Run a U-Net forward pass in NumPy and print its shape trace.")
    cli.add_options(parser, NetworkOptions)
    parser.add_argument(
        "--paper",
        action="store_true",
        help=f"the paper's network: {PAPER}, 2 classes; other options override it",
    )
    parser.add_argument(
        "--weights", type=cli.readable_file, help="run this trained .npz (or .pt) on fresh circle images"
    )
    parser.add_argument(
        "--figure", type=cli.output_file(*FIGURE_SUFFIXES), help="also draw the architecture to this file"
    )
    parser.add_argument(
        "--out",
        type=cli.writable_folder,
        default=Path("assets"),
        help="folder for the figure --weights makes",
    )
    return parser


def parse_args(argv=None):
    """(args, checkpoint or None), every option checked before any work. --paper and --weights
    set the network's defaults: an option given explicitly overrides --paper, and must agree with
    the weights, which decide the network."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_rules(parser, [("--paper", args.paper and args.weights and "the --weights decide the network")])
    checkpoint = None
    if args.weights:
        try:
            checkpoint = checkpoints.load(args.weights)
        except CheckpointError as error:
            parser.error(f"argument --weights: {error}")
    trained = (
        {key: checkpoint.model_args[key] for key in ("depth", "base_channels", "padding")}
        if checkpoint
        else {}
    )
    parser.set_defaults(**(PAPER if args.paper else trained))
    args = parser.parse_args(argv)
    differ = ", ".join(f"{key}={value}" for key, value in trained.items() if getattr(args, key) != value)
    cli.check_rules(
        parser,
        [
            ("--weights", differ and f"the weights were trained with {differ}; drop the option that differs"),
            ("--size", size_error(args.size, args.depth, args.padding)),
            ("--out", args.weights and cli.first_refusal([args.out / "numpy_unet_segmentation.png"])),
        ],
    )
    return args, checkpoint


def print_totals(trace, args):
    """Sums of the traced rows, which count parameters as PyTorch does (no running statistics),
    and what one output pixel sees: the input pixels that can change it, a span that depends on
    where the pixel sits in the pooling grid. (With valid padding this is not the border the
    convolutions cut away: that is how far the output's edge sits inside the input's.)"""
    total_params = sum(row["params"] for row in trace.rows)
    flops = sum(row["flops"] for row in trace.rows)
    spans = receptive_fields(args.depth, args.padding, args.size)
    print(f"\ntotal: {total_params:,} parameters, {flops / 1e9:.2f} GFLOPs per image")
    print(
        f"receptive field of one output pixel: {min(spans)}-{max(spans)} px a side, "
        f"by its place in the {2**args.depth}-px pooling grid"
    )


def traced_forward(images, params, args, headline, **network):
    """The forward pass with its trace printed under `headline`: the shapes lesson."""
    print(f"{headline}\n\n{TRACE_HEADER}")
    trace = Trace()
    logits = unet_forward(images, params, padding=args.padding, trace=trace, **network)
    return logits, trace


def run_random(args):
    """A fresh network (paper initialisation) on one synthetic circle image."""
    out_channels = 2 if args.paper else 1
    params = init_params(
        1, out_channels, args.base_channels, args.depth, batchnorm=not args.paper, seed=args.seed
    )
    images, _ = synthetic_circles(1, args.size, seed=args.seed)
    headline = (
        f"U-Net: depth {args.depth}, base {args.base_channels} channels, {args.padding} padding, "
        f"one {args.size}×{args.size} circle image"
    )
    logits, trace = traced_forward(images, params, args, headline)
    probabilities = softmax(logits) if out_channels > 1 else sigmoid(logits)
    print(
        f"{'out':<6} {'soft-max' if out_channels > 1 else 'sigmoid':<17} "
        f"{shape_text(logits.shape[1:])} → {shape_text(probabilities.shape[1:])}: class probabilities"
    )
    print_totals(trace, args)
    return trace


def run_trained(args, checkpoint):
    """The weights 01_pytorch.py trained, on circle images it never saw: NumPy alone segments them."""
    images, masks = synthetic_circles(8, args.size, seed=args.seed + 20_000)
    headline = (
        f"trained U-Net from {args.weights}: depth {args.depth}, {args.padding} padding; "
        f"8 fresh {args.size}×{args.size} images"
    )
    logits, trace = traced_forward(
        images, checkpoint.state, args, headline, skip=checkpoint.model_args["skip"]
    )
    print_totals(trace, args)
    preds = foreground(logits)[:, None].astype(np.float32)  # (N, 1, H', W')
    target = center_crop(masks, *preds.shape[-2:])
    per_image = dice(preds, target, per_image=True)
    print(f"\nDice of the NumPy forward pass against the ground truth: {per_image.mean():.4f}")
    path = args.out / "numpy_unet_segmentation.png"
    save_segmentation_figure(
        center_crop(images, *preds.shape[-2:])[:4],
        target[:4],
        preds[:4],
        path,
        title=f"NumPy forward pass, trained weights: Dice {per_image.mean():.3f}",
        row_labels=[f"Dice {d:.3f}" for d in per_image[:4]],
    )
    print(f"wrote {path}")
    return trace


def main(argv=None):
    args, checkpoint = parse_args(argv)
    trace = run_trained(args, checkpoint) if checkpoint else run_random(args)
    if args.figure:
        save_architecture_figure(trace.rows, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    cli.run(main)
