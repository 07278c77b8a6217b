"""U-Net in pure NumPy, both ways: its forward pass, printing how every tensor changes on its
way, and its backward pass, which trains it.

Read top to bottom: the layers (each forward beside its backward, as in CS231n's layers.py) →
the trace that records them → the network (`double_conv`, then `unet_forward` with its skip
connections in plain sight) → the network backward (`unet_backward`, where the skip's gradient
joins the encoder's) → the loss and `loss_and_gradients` → parameters, named as PyTorch names
them → the gradient check → Adam and the one-cycle schedule → training → main(). Options and
checkpoints live in common/.

    python 00_scratch.py            # a small U-Net on one synthetic circle image
    python 00_scratch.py --paper    # the paper's network: 572×572 in, 388×388×2 out
    python 00_scratch.py --paper --figure assets/unet_paper_architecture.png   # drawn, with its crops
    python 00_scratch.py --weights checkpoints/unet_circles.npz   # run what 01_pytorch.py trained
    python 00_scratch.py --gradient-check   # every weight's gradient against finite differences
    python 00_scratch.py --train    # train it in NumPy, 01_pytorch.py's recipe: under 2 minutes

The arithmetic is real and equals PyTorch's: tests/test_scratch.py runs both forwards with the
same weights, tests/test_backward.py every gradient against autograd. No torch is imported here.
"""

import math
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import checkpoints, cli, recipe
from common.checkpoints import CheckpointError, foreign
from common.cli import option
from common.data import synthetic_circles
from common.files import save_json
from common.geometry import (
    PADDINGS,
    batch_norm_problem,
    is_trainable,
    output_size,
    parameter_shapes,
    receptive_fields,
    size_error,
    training_memory_problems,
)
from common.metrics import describe_scores, dice, foreground, segmentation_scores
from common.plotting import (
    FIGURE_SUFFIXES,
    save_architecture_figure,
    save_segmentation_figure,
    save_training_curves,
)

COLUMN_BUFFER_BYTES = 4 * 2**20  # im2col is built a band of rows at a time, at most this big
EVAL_EVERY = 100  # validate every this many steps (and early on, and at the end), as 01_pytorch.py

# ----------------------------------------------------------------------------- the layers
#
# Each layer is a pair, as in CS231n's layers.py: its forward, then its backward, which takes
# the gradient of the loss with respect to the layer's output (`dout`, the output's shape) and
# what the forward saw, and returns the gradients with respect to its inputs and weights.


def pad_flat(x, k, padding):
    """Each map of x with the zero border a k×k convolution with this padding needs, flattened
    to one row, plus k-1 zeros at its end (the last window of a row may run that far).

    In a flattened map of width W, the tap (dy, dx) of the window at output pixel (i, j) sits at
    (i + dy)·W + j + dx: for all pixels at once, one contiguous run, shifted by dy·W + dx. The
    runs also cover k-1 columns at each row's end that wrap into the next row; the caller drops
    those outputs.

    Inputs:
    - x: (N, C, H, W)
    - padding: "same" (border k//2, output H×W), "valid" (none, the paper's: output H-k+1) or
      "full" (border k-1, output H+k-1: the backward pass of a valid convolution)
    Returns:
    - flat: (N, C, H'·W' + k-1), H' = H + 2·border, W' = W + 2·border; and (H', W')
    """
    n, c, height, width = x.shape
    border = {"same": k // 2, "valid": 0, "full": k - 1}[padding]
    padded_h, padded_w = height + 2 * border, width + 2 * border
    flat = np.zeros((n, c, padded_h * padded_w + k - 1), dtype=x.dtype)
    maps = flat[:, :, : padded_h * padded_w].reshape(n, c, padded_h, padded_w)
    maps[:, :, border : border + height, border : border + width] = x
    return flat, (padded_h, padded_w)


def im2col_bands(flat, size, k, out_channels):
    """The k×k windows of the padded maps laid out as columns (im2col), a band at a time.

    Each output pixel of a convolution is a dot product of the weights with the window under
    it, so with the windows as columns a whole layer is one matrix product, which BLAS runs near
    the processor's peak. Each tap's row of columns is one contiguous run of the flattened maps
    (pad_flat), so the k² copies are long, fast ones. The columns take k² times the input's
    memory, hence the bands: as many whole images as fit in COLUMN_BUFFER_BYTES with their
    product (small images: few, large products), else a band of one image's rows (the paper's
    572² tiles). One pair of buffers serves every band: fresh allocations this size cost a page
    fault per 4 KiB.

    Inputs:
    - flat, size: pad_flat's output, maps of size (H, W)
    - out_channels: F, the channels of the product
    Yields:
    - (images, rows, columns, product): the band's slices of the N images and of the H-k+1
      output rows; its columns (C·k·k, images·rows·W); a buffer (F, images, rows, W) for the
      product. Each output row has W columns, of which the last k-1 wrap around into the next
      row and are to be dropped. Both buffers are valid until the next band.
    """
    n, c, _ = flat.shape
    height, width = size
    out_h = height - k + 1
    rows = max(1, COLUMN_BUFFER_BYTES // (flat.itemsize * (c * k * k + out_channels) * width))  # that fit
    images, rows = (min(n, rows // out_h), out_h) if rows >= out_h else (1, rows)
    buffer = np.empty(c * k * k * images * rows * width, dtype=flat.dtype)
    products = np.empty(out_channels * images * rows * width, dtype=flat.dtype)
    for first in range(0, n, images):
        maps = flat[first : first + images].transpose(1, 0, 2)  # (C, images, H·W + k-1)
        for top in range(0, out_h, rows):
            g, r = maps.shape[1], min(rows, out_h - top)
            columns = buffer[: c * k * k * g * r * width].reshape(c, k * k, g, r * width)
            for tap in range(k * k):
                start = (top + tap // k) * width + tap % k
                columns[:, tap] = maps[:, :, start : start + r * width]
            product = products[: out_channels * g * r * width].reshape(out_channels, g, r, width)
            yield slice(first, first + g), slice(top, top + r), columns.reshape(c * k * k, -1), product


def conv2d(x, w, b=None, padding="same"):
    """A k×k convolution (k = 3 or 1), stride 1: one matrix product per band.

    Inputs:
    - x: (N, C, H, W)
    - w: (F, C, k, k)
    - b: (F,) or None
    - padding: "same" (output H×W), "valid" (output (H-k+1)×(W-k+1)) or "full" (H+k-1)
    Returns:
    - out: (N, F, H', W'), in the dtype of x and w
    """
    f, c, k, _ = w.shape
    flat, (height, width) = pad_flat(x.astype(np.result_type(x, w), copy=False), k, padding)
    out = np.empty((x.shape[0], f, height - k + 1, width - k + 1), dtype=flat.dtype)
    weights = w.reshape(f, c * k * k)  # (F, C·k·k)
    for images, rows, columns, product in im2col_bands(flat, (height, width), k, f):
        np.matmul(weights, columns, out=product.reshape(f, -1))  # (F, images·rows·W)
        out[images, :, rows] = product[..., : width - k + 1].transpose(1, 0, 2, 3)  # wrapped columns dropped
    if b is not None:
        out += b[:, None, None]
    return out


def conv2d_backward(dout, x, w, padding="same"):
    """Gradients of a convolution, each one more convolution-shaped product.

    Every weight met every window, so dw is dout times the windows: the forward's im2col
    columns again, one GEMM per band. Every input pixel fed the outputs whose windows cover it,
    so dx is dout convolved with the kernel turned 180° and its in/out channels swapped, over
    a border of k-1-p zeros (p the forward's border): "same" again after a same convolution,
    "full" after a valid one. The bias was added to every output pixel: db sums dout.

    Inputs:
    - dout: (N, F, H', W')
    - x: (N, C, H, W), the forward's input; w: (F, C, k, k); padding as in the forward
    Returns:
    - dx: (N, C, H, W); dw: (F, C, k, k); db: (F,)
    """
    f, c, k, _ = w.shape
    flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, F, k, k)
    dx = conv2d(dout, flipped, padding="same" if padding == "same" else "full")
    flat, (height, width) = pad_flat(x.astype(np.result_type(dout, x), copy=False), k, padding)
    dw = np.zeros((f, c * k * k), dtype=flat.dtype)
    for images, rows, columns, band in im2col_bands(flat, (height, width), k, f):
        band[..., : width - k + 1] = dout[images, :, rows].transpose(1, 0, 2, 3)
        band[..., width - k + 1 :] = 0  # the wrapped columns fed no output
        dw += band.reshape(f, -1) @ columns.T  # (F, C·k·k)
    return dx, dw.reshape(w.shape), dout.sum(axis=(0, 2, 3))


def relu(x):
    """max(0, x), in place: the input is not needed again and the maps are large."""
    return np.maximum(x, 0, out=x)


def relu_backward(dout, out):
    """The gradient passes where the unit was on (out > 0) and stops where it was clipped.

    Inputs:
    - dout, out: (N, C, H, W), out the forward's output
    Returns:
    - dx: (N, C, H, W)
    """
    return dout * (out > 0)


def batch_norm(x, weight, bias, running_mean, running_var, eps=1e-5):
    """Batch normalisation at inference: each channel standardised with the statistics
    gathered in training, then scaled and shifted by the learned weight and bias. In place.

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


def batch_norm_train(x, weight, bias, eps=1e-5):
    """Batch normalisation in training: each channel standardised with the batch's own mean and
    (biased) variance over N, H and W, then scaled and shifted. The caller keeps the statistics,
    from which the running ones that inference uses are averaged, and x̂ for the backward pass.

    Inputs:
    - x: (N, C, H, W)
    - weight, bias: (C,)
    Returns:
    - out, x_hat: (N, C, H, W), x_hat the standardised input; mean, var: (C,), the batch's
    """
    mean = x.mean(axis=(0, 2, 3))
    x_hat = x - mean[:, None, None]
    var = np.square(x_hat).mean(axis=(0, 2, 3))
    x_hat *= (1 / np.sqrt(var + eps))[:, None, None]
    out = x_hat * weight[:, None, None]
    out += bias[:, None, None]
    return out, x_hat, mean, var


def batch_norm_train_backward(dout, x_hat, weight, var, eps=1e-5):
    """The mean and variance depend on every pixel of the channel, so each pixel's gradient
    loses the channel's mean gradient and its projection on x̂:
    dx = γ/σ · (dout − mean(dout) − x̂ · mean(dout · x̂)), σ = √(var + eps); the two means are
    dbias and dweight over the m pixels of a channel.

    Inputs:
    - dout, x_hat: (N, C, H, W), x_hat the forward's standardised input
    - weight, var: (C,), var the forward's batch variance
    Returns:
    - dx: (N, C, H, W); dweight, dbias: (C,)
    """
    m = x_hat.size // x_hat.shape[1]  # pixels per channel
    dbias = dout.sum(axis=(0, 2, 3))
    dweight = (dout * x_hat).sum(axis=(0, 2, 3))
    dx = x_hat * (dweight / m)[:, None, None]
    np.subtract(dout, dx, out=dx)
    dx -= (dbias / m)[:, None, None]
    dx *= (weight / np.sqrt(var + eps))[:, None, None]
    return dx, dweight, dbias


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


def max_pool2x2_backward(dout, x):
    """Only the window's maximum reached the output, so it alone gets the gradient; the other
    three get 0. A tie (after a ReLU, windows of zeros are common) goes to the first maximum
    in reading order, top-left, top-right, bottom-left, bottom-right, as PyTorch's CPU kernel does.

    Inputs:
    - dout: (N, C, H/2, W/2)
    - x: (N, C, H, W), the forward's input
    Returns:
    - dx: (N, C, H, W)
    """
    out = max_pool2x2(x)
    dx = np.zeros_like(x, dtype=dout.dtype)
    taken = np.zeros(out.shape, dtype=bool)  # windows whose maximum has had its gradient
    for row, col in ((0, 0), (0, 1), (1, 0), (1, 1)):
        first = (x[:, :, row::2, col::2] == out) & ~taken
        dx[:, :, row::2, col::2] = dout * first
        taken |= first
    return dx


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


def up_conv2x2_backward(dout, x, w):
    """The patches do not overlap, so each output pixel came from exactly one input pixel and
    one kernel tap: gather dout back into per-pixel patches, then the forward's one matrix
    product runs transposed (for dx) and against the input (for dw).

    Inputs:
    - dout: (N, F, 2H, 2W)
    - x: (N, C, H, W), the forward's input; w: (C, F, 2, 2)
    Returns:
    - dx: (N, C, H, W); dw: (C, F, 2, 2); db: (F,)
    """
    n, c, h, width = x.shape
    f = w.shape[1]
    dpatches = dout.reshape(n, f, h, 2, width, 2).transpose(0, 1, 3, 5, 2, 4)  # (N, F, 2, 2, H, W)
    dpatches = dpatches.reshape(n, f * 4, h * width)
    dx = (w.reshape(c, f * 4) @ dpatches).reshape(n, c, h, width)  # (N, C, H, W)
    dw = np.einsum("ncp,nfp->cf", x.reshape(n, c, h * width), dpatches)  # (C, F·2·2)
    return dx, dw.reshape(w.shape), dout.sum(axis=(0, 2, 3))


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


def center_crop_backward(dout, height, width):
    """The cropped-away border reached nothing, so its gradient is 0: dout, zero-padded back
    to the encoder map's size.

    Inputs:
    - dout: (N, C, h, w)
    - height, width: the forward's input size
    Returns:
    - dx: (N, C, height, width)
    """
    dx = np.zeros(dout.shape[:2] + (height, width), dtype=dout.dtype)
    center_crop(dx, *dout.shape[-2:])[...] = dout
    return dx


def concat(encoded, up):
    """The skip connection: the encoder's map and the up-sampled one, stacked as channels.

    Inputs:
    - encoded: (N, C, H, W), up: (N, C', H, W)
    Returns:
    - out: (N, C + C', H, W)
    """
    return np.concatenate([encoded, up], axis=1)


def concat_backward(dout, channels):
    """Each channel came from one of the two maps, so the gradient splits by channel.

    Inputs:
    - dout: (N, C + C', H, W)
    - channels: C, the encoder map's channels
    Returns:
    - dencoded: (N, C, H, W); dup: (N, C', H, W)
    """
    return dout[:, :channels], dout[:, channels:]


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


def conv_step(x, params, name, padding, trace, stage, cache=None):
    """3×3 conv → [batch norm] → ReLU, reading the weights stored under `name`. With a `cache`
    (training), batch norm uses the batch's own statistics, and what the backward pass needs is
    kept under `name`: the input, batch norm's x̂ and statistics, the output."""
    w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
    out = conv2d(x, w, b, padding)
    bn = name.replace("conv", "norm")  # encoder.0.conv1 → encoder.0.norm1, as in 01_pytorch.UNet
    batchnorm = f"{bn}.weight" in params
    x_hat = None
    if batchnorm and cache is None:
        out = batch_norm(
            out, *(params[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        )
    elif batchnorm:
        out, x_hat, mean, var = batch_norm_train(out, params[f"{bn}.weight"], params[f"{bn}.bias"])
    out = relu(out)
    if cache is not None:
        cache[name] = (x, x_hat, (mean, var) if batchnorm else None, out)
    if trace:
        op = "conv 3×3 BN ReLU" if batchnorm else "conv 3×3 ReLU"
        trace(stage, op, x, out, *conv_cost(w, b, out, batchnorm))
    return out


def double_conv(x, params, prefix, padding, trace, stage, cache=None):
    """(3×3 conv → [BN] → ReLU) × 2 — paper, Fig. 1, the blue arrows of every level.

    Inputs:
    - x: (N, C, H, W)
    Returns:
    - out: (N, F, H, W) with same padding, (N, F, H-4, W-4) with valid padding
    """
    x = conv_step(x, params, f"{prefix}.conv1", padding, trace, stage, cache)
    return conv_step(x, params, f"{prefix}.conv2", padding, trace, stage, cache)


def network_depth(params):
    """The number of pooling steps, read off the weights' names (one encoder block per step)."""
    return sum(1 for name in params if name.startswith("encoder.") and name.endswith(".conv1.weight"))


def unet_forward(x, params, *, padding="same", skip=True, trace=None, cache=None):
    """The U-Net of the paper's Fig. 1: contract, expand, and join the two by skip connections.

    Inputs:
    - x: (N, C, H, W), H and W a size the network can take (common.geometry); float32, or
      float64 for checks: the network computes in the dtype of x and the weights
    - params: weights named exactly as `01_pytorch.UNet(...).state_dict()`; depth and batch
      norm are read off the names
    - padding: "same" or "valid", as the weights were trained
    - skip: False feeds the decoder zeros where the encoder map would be (01_pytorch.py --no-skip)
    - trace: a `Trace` to record every operation, or None
    - cache: None for inference; a dict for training, which batch norm then runs in (batch
      statistics), filled with what `unet_backward` needs
    Returns:
    - logits: (N, K, H', W'), H' = H with same padding, less with valid
    """
    depth = network_depth(params)
    skips = []
    for level in range(depth):  # the contracting path: what is in the image
        x = double_conv(
            x, params, f"encoder.{level}", padding, trace, f"enc{level + 1}", cache
        )  # (N, C, H, W)
        skips.append(x)
        pooled = max_pool2x2(x)  # (N, C, H/2, W/2)
        if trace:
            trace(f"enc{level + 1}", "max-pool 2×2", x, pooled)
        x = pooled
    x = double_conv(x, params, "bottleneck", padding, trace, "bottom", cache)  # (N, 2C, H/2, W/2)

    for step in range(depth):  # the expanding path: where it is
        w, b = params[f"up_convs.{step}.weight"], params[f"up_convs.{step}.bias"]
        if cache is not None:
            cache[f"up_convs.{step}"] = x
        up = up_conv2x2(x, w, b)  # (N, C, 2H, 2W)
        stage = f"dec{depth - step}"
        if trace:
            trace(stage, "up-conv 2×2", x, up, *up_conv_cost(w, b, x))
        encoded = skips.pop()
        cropped = center_crop(encoded, *up.shape[-2:])  # (N, C, 2H, 2W)
        if not skip:
            cropped = np.zeros_like(cropped)
        x = concat(cropped, up)  # (N, 2C, 2H, 2W): encoder detail + decoder context
        if trace:
            trace(stage, "concat", up, x, note=concat_note(f"enc{depth - step}", encoded, cropped, up, x))
        x = double_conv(x, params, f"decoder.{step}", padding, trace, stage, cache)  # (N, C, 2H, 2W)

    w, b = params["head.weight"], params["head.bias"]
    if cache is not None:
        cache["head"] = x
    logits = conv2d(x, w, b, "valid")  # 1×1: (N, K, H, W), one score per class and pixel
    if trace:
        trace("head", "conv 1×1", x, logits, *conv_cost(w, b, logits))
    return logits


# ----------------------------------------------------------------------------- the network, backward


def conv_step_backward(dout, params, name, padding, cache, grads):
    """conv_step's layers in reverse: ReLU, batch norm, convolution. Adds the gradients of the
    step's weights to `grads` and returns the gradient with respect to its input."""
    x, x_hat, stats, out = cache[name]
    dout = relu_backward(dout, out)
    bn = name.replace("conv", "norm")
    if stats is not None:
        dout, grads[f"{bn}.weight"], grads[f"{bn}.bias"] = batch_norm_train_backward(
            dout, x_hat, params[f"{bn}.weight"], stats[1]
        )
    dx, grads[f"{name}.weight"], db = conv2d_backward(dout, x, params[f"{name}.weight"], padding)
    if f"{name}.bias" in params:  # none before batch norm
        grads[f"{name}.bias"] = db
    return dx


def double_conv_backward(dout, params, prefix, padding, cache, grads):
    """double_conv in reverse: its second step, then its first."""
    dx = conv_step_backward(dout, params, f"{prefix}.conv2", padding, cache, grads)
    return conv_step_backward(dx, params, f"{prefix}.conv1", padding, cache, grads)


def unet_backward(dlogits, params, cache, *, padding="same", skip=True, paths=None):
    """The gradient of the loss with respect to every weight: unet_forward's steps in reverse,
    each layer's backward fed the gradient of its output.

    The decoder splits each concatenation's gradient in two: the up-sampled half flows on down
    the U, the encoder's half jumps straight back to the level it came from, where it is added
    to the gradient that climbed back up through every level below. The skip connection is a
    short path for the gradient as well as for the detail: the top encoder level is 3 layers
    from the loss by its skip, 5·depth+1 by the way round the U.

    Inputs:
    - dlogits: (N, K, H', W'), the loss's gradient with respect to the logits
    - params, padding, skip: as the forward ran; cache: the dict it filled
    - paths: a list or None; given, one (level, |gradient by the skip|, |by the path below|)
      pair of norms per encoder level is appended
    Returns:
    - grads: {name: array}, one per weight and bias, named and shaped as in params
    """
    depth = network_depth(params)
    grads, dskips = {}, {}
    dx, grads["head.weight"], grads["head.bias"] = conv2d_backward(
        dlogits, cache["head"], params["head.weight"], "valid"
    )
    for step in reversed(range(depth)):  # the expanding path, from its top
        level = depth - 1 - step
        dx = double_conv_backward(dx, params, f"decoder.{step}", padding, cache, grads)  # (N, 2C, 2H, 2W)
        encoded = cache[f"encoder.{level}.conv2"][3]  # the encoder map the skip copied
        dcropped, dup = concat_backward(dx, encoded.shape[1])  # (N, C, 2H, 2W) each
        dskips[level] = center_crop_backward(dcropped, *encoded.shape[-2:]) if skip else 0
        x = cache[f"up_convs.{step}"]
        dx, grads[f"up_convs.{step}.weight"], grads[f"up_convs.{step}.bias"] = up_conv2x2_backward(
            dup, x, params[f"up_convs.{step}.weight"]
        )  # (N, 2C, H, W)
    dx = double_conv_backward(dx, params, "bottleneck", padding, cache, grads)
    for level in reversed(range(depth)):  # the contracting path, from its bottom
        encoded = cache[f"encoder.{level}.conv2"][3]
        dx = max_pool2x2_backward(dx, encoded)  # (N, C, H, W): from every level below
        if paths is not None:
            paths.append((level, float(np.linalg.norm(dskips[level])), float(np.linalg.norm(dx))))
        dx = dx + dskips[level]  # the skip's gradient joins it
        dx = double_conv_backward(dx, params, f"encoder.{level}", padding, cache, grads)
    return grads


# ----------------------------------------------------------------------------- the loss


def bce_with_logits(logits, masks, weight_map=None):
    """Binary cross-entropy of sigmoid(logits) against the masks, mean over pixels, each pixel's
    term times its weight (paper, eq. 1-2; all 1 without a map), and its gradient.

    Per pixel, −[y·log σ(z) + (1−y)·log(1−σ(z))] = log(1 + e^z) − y·z, computed as
    max(z, 0) − y·z + log(1 + e^−|z|) so that no exponential overflows; its derivative is the
    famously simple σ(z) − y.

    Inputs:
    - logits, masks: (N, 1, H', W'), masks 0 or 1; weight_map: (N, 1, H', W') or None
    Returns:
    - loss: a float; dlogits: (N, 1, H', W')
    """
    per_pixel = np.maximum(logits, 0) - masks * logits + np.log1p(np.exp(-np.abs(logits)))
    dlogits = sigmoid(logits) - masks
    if weight_map is not None:
        per_pixel, dlogits = per_pixel * weight_map, dlogits * weight_map
    return per_pixel.mean(), dlogits / logits.size


def loss_and_gradients(params, images, masks, *, padding="same", weight_map=None, skip=True):
    """The loss of one batch, the gradient of every weight, and batch norm's batch statistics:
    one forward in training mode, the loss, one backward. `params` is left as it is.

    Inputs:
    - params: as for unet_forward, running statistics included
    - images: (N, 1, H, W); masks and weight_map: (N, 1, H', W'), the output's size
    Returns:
    - loss: a float
    - grads: {name: array} for every convolution and batch-norm weight and bias
    - batch_stats: {"<norm>.running_mean": batch mean, "<norm>.running_var": unbiased batch
      variance} per batch-norm layer, which the running statistics are averaged towards
    """
    cache = {}
    logits = unet_forward(images, params, padding=padding, skip=skip, cache=cache)
    loss, dlogits = bce_with_logits(logits, masks, weight_map)
    grads = unet_backward(dlogits, params, cache, padding=padding, skip=skip)
    return float(loss), grads, batch_statistics(cache)


def batch_statistics(cache):
    """Each batch-norm layer's batch mean and variance, the variance unbiased (× n/(n−1)) as
    PyTorch averages it into the running variance, though it normalises with the biased one."""
    stats = {}
    for name, (_, x_hat, layer_stats, _) in ((k, v) for k, v in cache.items() if ".conv" in k):
        if layer_stats is not None:
            bn, (mean, var) = name.replace("conv", "norm"), layer_stats
            n = x_hat.size // x_hat.shape[1]
            stats[f"{bn}.running_mean"], stats[f"{bn}.running_var"] = mean, var * n / (n - 1)
    return stats


# ----------------------------------------------------------------------------- parameters


def init_params(in_channels=1, out_channels=1, base_channels=8, depth=3, norm="batch", seed=0):
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
    shapes = parameter_shapes(network | dict(padding="same", norm=norm, skip=True))
    params = {}
    for name, shape in shapes.items():
        if len(shape) == 4:  # a kernel: (F, C, k, k), or (C, F, 2, 2) for an up-convolution
            fan_in = shape[0] if name.startswith("up_convs") else math.prod(shape[1:])
            params[name] = (rng.standard_normal(shape) * math.sqrt(2 / fan_in)).astype(np.float32)
        elif name.endswith("num_batches_tracked"):
            params[name] = np.array(0, np.int64)
        elif name.endswith(("norm1.weight", "norm2.weight", "running_var")):
            params[name] = np.ones(shape, np.float32)
        else:  # biases and running means
            params[name] = np.zeros(shape, np.float32)
    return params


# ----------------------------------------------------------------------------- checking the gradients


def relative_error(a, b):
    """CS231n's max |a − b| / max(|a| + |b|, 1e-8): about 1e-7 or less means the two agree."""
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-8)))


def training_loss(params, images, masks, padding="same", skip=True):
    """The loss alone, as loss_and_gradients computes it: batch norm in training mode."""
    return bce_with_logits(unet_forward(images, params, padding=padding, skip=skip, cache={}), masks)[0]


def gradient_check(params, images, masks, *, padding="same", skip=True, entries=3, h=1e-6, seed=0):
    """Each weight's analytic gradient against centred finite differences, CS231n's check:
    (L(w + h) − L(w − h)) / 2h on `entries` random entries of every parameter.

    Returns:
    - {name: largest relative error over the entries checked}
    """
    rng = np.random.default_rng(seed)
    _, grads, _ = loss_and_gradients(params, images, masks, padding=padding, skip=skip)
    errors = {}
    for name, grad in grads.items():
        value = params[name]
        numeric, analytic = [], []
        for index in map(tuple, rng.integers(0, value.shape, size=(entries, value.ndim))):
            kept = value[index]
            value[index] = kept + h
            above = training_loss(params, images, masks, padding, skip)
            value[index] = kept - h
            below = training_loss(params, images, masks, padding, skip)
            value[index] = kept
            numeric.append((above - below) / (2 * h))
            analytic.append(grad[index])
        errors[name] = relative_error(np.array(numeric), np.array(analytic))
    return errors


# ----------------------------------------------------------------------------- optimiser and schedule


def one_cycle(step, steps, peak_lr, momenta=(0.85, 0.95), final_div_factor=1e4):
    """(learning rate, Adam's β1) for optimizer step `step` (0, 1, …) of `steps`, exactly as
    PyTorch's OneCycleLR (cosine annealing, Adam's β1 cycled) computes them in 01_pytorch.py.

    Warm-up from peak/2 to the peak over the first steps, while β1 falls from 0.95 to 0.85 (a
    larger step wants less of the past); then both anneal back along a half cosine, the rate
    to peak/2/10⁴, β1 to 0.95.
    """
    start_lr = peak_lr / recipe.DIV_FACTOR
    low, high = momenta
    phases = [  # (last step, rate from → to, β1 from → to), as OneCycleLR lays them out
        (recipe.warm_up_fraction(steps) * steps - 1, start_lr, peak_lr, high, low),
        (steps - 1, peak_lr, start_lr / final_div_factor, low, high),
    ]
    first = 0.0
    for last, lr_from, lr_to, beta_from, beta_to in phases:
        if step <= last or last == steps - 1:
            cosine = (math.cos(math.pi * (step - first) / (last - first)) + 1) / 2  # 1 → 0
            return lr_to + (lr_from - lr_to) * cosine, beta_to + (beta_from - beta_to) * cosine
        first = last


def adam_moments(params):
    """Adam's running mean and mean square of each trainable weight's gradient, from zero."""
    trainable = {name: value for name, value in params.items() if is_trainable(name)}
    return {name: (np.zeros_like(value), np.zeros_like(value)) for name, value in trainable.items()}


def adam_step(params, grads, moments, step, lr, beta1, beta2=0.999, eps=1e-8):
    """Adam (Kingma & Ba, 2015), in place, as torch.optim.Adam computes it: each weight moves by
    its gradient's running mean over the root of its running mean square, so every weight takes
    steps of about `lr` whatever its gradient's scale. The bias corrections undo the moments'
    start at zero.

    Inputs:
    - params, grads: {name: array}; moments: {name: (m, v)}, updated in place
    - step: 1 for the first update
    """
    for name, grad in grads.items():
        m, v = moments[name]
        m += (1 - beta1) * (grad - m)  # m ← β1·m + (1 − β1)·g
        v *= beta2
        v += (1 - beta2) * grad * grad
        denominator = np.sqrt(v) / math.sqrt(1 - beta2**step) + eps
        params[name] -= lr / (1 - beta1**step) * m / denominator


def update_running_stats(params, batch_stats, momentum=0.1):
    """Batch norm's running statistics, which inference uses, move a tenth of the way to this
    batch's, as PyTorch's BatchNorm2d does; its batch counter counts one more."""
    for name, value in batch_stats.items():
        params[name] = (1 - momentum) * params[name] + momentum * value.astype(params[name].dtype)
        counter = name.rsplit(".", 1)[0] + ".num_batches_tracked"
        if name.endswith("running_mean"):
            params[counter] = params[counter] + 1


# ----------------------------------------------------------------------------- training


def shuffled_batches(n, batch_size, rng):
    """Index batches without end, reshuffled every epoch (the last, smaller batch dropped); with
    fewer images than a batch, each batch draws them with replacement."""
    while True:
        if n < batch_size:
            yield rng.integers(n, size=batch_size)
            continue
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def train_step(params, moments, images, masks, step, steps, peak_lr, padding="same"):
    """One optimizer step: forward, loss, backward, Adam, running statistics. Returns the loss."""
    loss, grads, batch_stats = loss_and_gradients(params, images, masks, padding=padding)
    lr, beta1 = one_cycle(step - 1, steps, peak_lr)
    adam_step(params, grads, moments, step, lr, beta1)
    update_running_stats(params, batch_stats)
    return loss


def predict_masks(params, images, padding="same", batch_size=64):
    """Binary masks (N, 1, H', W'): batch norm on its running statistics, logit > 0."""
    logits = [
        unet_forward(images[i : i + batch_size], params, padding=padding)
        for i in range(0, len(images), batch_size)
    ]
    return foreground(np.concatenate(logits))[:, None].astype(np.float32)


def evaluate(params, held_out, padding="same", prefix="val"):
    """Scores on a held-out set (images, masks) and the predicted masks."""
    images, masks = held_out
    preds = predict_masks(params, images, padding)
    return segmentation_scores(preds, masks, prefix=prefix), preds


def train(params, train_set, val, options, batches):
    """Adam with the one-cycle schedule on `batches` (index lists into train_set), validated at
    the steps 01_pytorch.py validates at. Updates params in place.

    Returns the history (one entry per validation, as in metrics.json) and the last scores.
    """
    steps = options.steps
    moments = adam_moments(params)
    history, losses, evaluating, start = [], [], 0.0, time.perf_counter()
    for step in tqdm(range(steps + 1), desc="training", unit="step", file=sys.stdout):
        if step > 0:
            index = next(batches)
            losses.append(
                train_step(
                    params, moments, *(t[index] for t in train_set), step, steps, options.lr, options.padding
                )
            )
            if not math.isfinite(losses[-1]):
                sys.exit(
                    f"00_scratch.py: training diverged at step {step}; nothing was saved. Try a lower --lr"
                )
        if step in recipe.evaluation_steps(steps, EVAL_EVERY):
            began = time.perf_counter()
            loss, losses = (float(np.mean(losses)) if losses else None), []
            scores, _ = evaluate(params, val, options.padding)
            evaluating += time.perf_counter() - began
            seconds = time.perf_counter() - start
            timing = {"seconds": round(seconds, 3), "train_seconds": round(seconds - evaluating, 3)}
            history.append({"step": step, **timing, "train_loss": loss} | scores)
            shown = "  -   " if loss is None else f"{loss:.4f}"
            tqdm.write(f"step {step:5d}  loss {shown}  {describe_scores(scores)}", file=sys.stdout)
    return history, scores


# ----------------------------------------------------------------------------- main


@dataclass
class NetworkOptions:
    """The network to trace or train; each field is also the option of the same name
    (`--base-channels`)."""

    size: int = cli.size_option()
    depth: int = cli.depth_option()
    base_channels: int = cli.base_channels_option()
    padding: str = option("same", choices=PADDINGS, help="same keeps sizes; valid is the paper's")
    seed: int = cli.seed_option(seeds="the images and the weights (and with --train the batch order)")


@dataclass
class TrainOptions:
    """--train's recipe: 01_pytorch.py's, its options defined once in common/cli.py."""

    steps: int = cli.steps_option(400, "--train: optimizer steps")
    batch_size: int = cli.batch_size_option()
    lr: float = cli.lr_option()
    train_size: int = cli.train_size_option()


# Paper, Fig. 1: 572×572 in, four pools, 64…1024 channels, unpadded convolutions; 2 classes, no BN.
PAPER = dict(size=572, depth=4, base_channels=64, padding="valid")
CHECKPOINT = Path("checkpoints/unet_numpy.npz")
TRAINING_FIGURES = ("numpy_metrics.json", "numpy_unet_segmentation.png", "numpy_training_curves.png")
FORWARD_FIGURE = "numpy_forward_segmentation.png"  # --weights: another script's weights, run here


def build_parser():
    parser = cli.ArgumentParser(
        description="U-Net in NumPy: print the shape trace of its forward pass; check its gradients "
        "(--gradient-check); train it (--train)."
    )
    cli.add_options(parser, NetworkOptions)
    cli.add_options(parser, TrainOptions)
    add = parser.add_argument
    add(
        "--paper",
        action="store_true",
        help=f"the paper's network: {PAPER}, 2 classes; other options override it",
    )
    add("--weights", type=cli.readable_file, help="run this trained .npz (or .pt) on fresh circle images")
    add("--figure", type=cli.output_file(*FIGURE_SUFFIXES), help="also draw the architecture to this file")
    add("--gradient-check", action="store_true", help="every weight's gradient against finite differences")
    add("--train", action="store_true", help="train the network on circles, in NumPy")
    add("--out", type=cli.writable_folder, default=Path("assets"), help="folder for figures and metrics")
    add(
        "--checkpoint", type=cli.output_file(".npz"), default=CHECKPOINT, help="--train: the weights to write"
    )
    return parser


def parse_args(argv=None):
    """(args, checkpoint or None), every option checked before any work. --paper and --weights
    set the network's defaults: an option given explicitly overrides --paper, and must agree with
    the weights, which decide the network."""
    parser = build_parser()
    args = parser.parse_args(argv)
    mode = "--train" if args.train else "--gradient-check" if args.gradient_check else None
    cli.check_rules(
        parser,
        [
            (
                "--train",
                args.train and args.gradient_check and "and --gradient-check are two runs; choose one",
            ),
            ("--paper", args.paper and args.weights and "the --weights decide the network"),
            (
                "--paper",
                args.paper and mode and f"is the 2-class network without batch norm; {mode} takes ours",
            ),
            ("--weights", args.weights and args.train and "--train starts from fresh weights"),
            ("--figure", args.figure and mode and f"draws the traced forward pass; leave out {mode}"),
            *cli.unused_options(args, TrainOptions, "is for --train") * (not args.train),
            ("--checkpoint", not args.train and args.checkpoint != CHECKPOINT and "is where --train writes"),
        ],
    )
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
    figures = [args.out / FORWARD_FIGURE] if args.weights else []
    cli.check_rules(
        parser,
        [
            ("--weights", differ and f"the weights were trained with {differ}; drop the option that differs"),
            (
                "--weights",
                checkpoint
                and checkpoint.model_args["norm"] == "group"
                and f"{args.weights} has group norm, which this NumPy network lacks; "
                "01_pytorch.py --predict runs it",
            ),
            ("--size", size_error(args.size, args.depth, args.padding)),
            ("--out", cli.first_refusal(figures)),
            *(training_problems(args) if args.train else []),
        ],
    )
    return args, checkpoint


def training_problems(args):
    """(option, problem) rules for --train: memory, batch norm, and the files it will write."""
    memory = training_memory_problems(
        args.train_size, 2 * recipe.VAL_SIZE, args.size, args.batch_size, args.base_channels, args.depth
    )
    return [
        *memory,
        ("--batch-size", batch_norm_problem(args.batch_size, args.size, args.depth, args.padding)),
        ("--checkpoint", cli.first_refusal([args.checkpoint]) or foreign(args.checkpoint)),
        ("--out", cli.first_refusal([args.out / name for name in TRAINING_FIGURES])),
    ]


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
        1,
        out_channels,
        args.base_channels,
        args.depth,
        norm="none" if args.paper else "batch",
        seed=args.seed,
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
    path = args.out / FORWARD_FIGURE
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


def run_gradient_check(args, checkpoint):
    """Every weight's gradient against finite differences, in float64 and in float32, then how
    much gradient reaches each encoder level by its skip and by the way round the U."""
    images, masks = synthetic_circles(2, args.size, seed=args.seed)
    masks = center_crop(masks, *[output_size(args.size, args.depth, args.padding)] * 2)
    params = (
        checkpoint.state if checkpoint else init_params(1, 1, args.base_channels, args.depth, seed=args.seed)
    )
    skip = checkpoint.model_args["skip"] if checkpoint else True
    weights = f"the weights of {args.weights}" if checkpoint else "fresh weights"
    print(
        f"gradient check: depth {args.depth}, base {args.base_channels} channels, {args.padding} padding, "
        f"{weights}, 2 images of {args.size}×{args.size};\n"
        "3 random entries of each weight, centred differences"
    )
    checks = {
        dtype.__name__: gradient_check(
            {name: value.astype(dtype) for name, value in params.items()},
            images.astype(dtype),
            masks.astype(dtype),
            padding=args.padding,
            skip=skip,
            h=h,
        )
        for dtype, h in ((np.float64, 1e-6), (np.float32, 1e-3))
    }
    print(f"\n{'weight':<26} {'shape':<16} {'float64':>9} {'float32':>9}   (max relative error)")
    for name, errors in checks["float64"].items():
        shape = shape_text(params[name].shape)
        print(f"{name:<26} {shape:<16} {errors:9.1e} {checks['float32'][name]:9.1e}")
    worst = {dtype: max(errors.values()) for dtype, errors in checks.items()}
    print(f"{'largest':<43} {worst['float64']:9.1e} {worst['float32']:9.1e}")
    if skip:
        print_gradient_paths(
            {name: value.astype(np.float64) for name, value in params.items()}, images, masks, args
        )
    else:
        print("\nwithout skips every gradient reaches the encoder the long way, round the U")


def print_gradient_paths(params, images, masks, args):
    """The norm of the gradient arriving at each encoder level's output by its skip and from
    the level below (unet_backward's `paths`): how much of the learning signal takes the short way."""
    cache, paths = {}, []
    logits = unet_forward(images.astype(np.float64), params, padding=args.padding, cache=cache)
    unet_backward(bce_with_logits(logits, masks)[1], params, cache, padding=args.padding, paths=paths)
    print("\ngradient arriving at each encoder level's output (norm): by its skip + from the level below")
    for level, by_skip, from_below in sorted(paths):
        share = by_skip / (by_skip + from_below)
        print(f"enc{level + 1}   {by_skip:9.2e} + {from_below:9.2e}   ({share:.0%} by the skip)")


def run_training(args):
    """Circles → fresh weights → Adam, one-cycle → outputs: 01_pytorch.py's training, in NumPy."""
    side = output_size(args.size, args.depth, args.padding)  # masks are cropped to the output

    def circles(n, offset):
        images, masks = synthetic_circles(n, args.size, seed=args.seed + offset)
        return images, center_crop(masks, side, side)

    train_set = circles(args.train_size, 0)
    val, test = circles(recipe.VAL_SIZE, recipe.VAL_SEED), circles(recipe.VAL_SIZE, recipe.TEST_SEED)
    params = init_params(1, 1, args.base_channels, args.depth, seed=args.seed)
    n_params = sum(value.size for name, value in params.items() if is_trainable(name))
    print(
        f"NumPy U-Net (base_channels={args.base_channels}, depth={args.depth}, {args.padding} padding): "
        f"{n_params:,} parameters, {args.train_size} images of {args.size}×{args.size}, {args.steps} steps"
    )
    batches = shuffled_batches(args.train_size, args.batch_size, np.random.default_rng(args.seed))
    history, scores = train(params, train_set, val, args, batches)
    final, preds = evaluate(params, test, args.padding, prefix="test")
    save_training_outputs(args, params, history, scores | final, test, preds)
    print(f"final: {describe_scores(final)}  ({history[-1]['seconds']:.1f} s of training)")
    print("wrote " + ", ".join(map(str, [args.checkpoint, *(args.out / name for name in TRAINING_FIGURES)])))


def save_training_outputs(args, params, history, final, test, preds):
    """The weights (an .npz both scripts read), then numpy_metrics.json, the segmentation of four
    test images and the training curves, as 01_pytorch.py writes them."""
    run_id = checkpoints.new_run_id()
    network = {name: getattr(args, name) for name in ("base_channels", "depth", "padding")}
    model_args = dict(in_channels=1, out_channels=1, norm="batch", skip=True) | network
    checkpoints.save_npz(args.checkpoint, model_args=model_args, state=params, run_id=run_id, step=args.steps)
    config = {
        field.name: getattr(args, field.name) for field in fields(NetworkOptions) + fields(TrainOptions)
    }
    metrics, segmentation, curves = (args.out / name for name in TRAINING_FIGURES)
    save_json(metrics, {"run_id": run_id, "config": config, "history": history, "final": final})
    images, masks = (center_crop(t[:4], *preds.shape[-2:]) for t in test)
    labels = [f"Dice {d:.3f}" for d in dice(preds[:4], masks, per_image=True)]
    title = (
        f"U-Net trained in NumPy: {describe_scores({k: v for k, v in final.items() if k.startswith('test')})}"
    )
    save_segmentation_figure(images, masks, preds[:4], segmentation, title=title, row_labels=labels)
    save_training_curves(history, curves)


def main(argv=None):
    args, checkpoint = parse_args(argv)
    if args.train:
        run_training(args)
    elif args.gradient_check:
        run_gradient_check(args, checkpoint)
    else:
        trace = run_trained(args, checkpoint) if checkpoint else run_random(args)
        if args.figure:
            save_architecture_figure(trace.rows, args.figure)
            print(f"wrote {args.figure}")


if __name__ == "__main__":
    cli.run(main)
