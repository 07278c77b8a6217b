"""Overlap-tile inference (paper, Fig. 2): segment an image of any size, one tile at a time.

The network sees a tile of side `tile` and, with valid padding, predicts only its centre: every
unpadded convolution lost a border. So the image is cut into tiles whose *outputs* sit side by
side, each tile's input reaching beyond its output into the neighbours (or, at the image's
edge, into a mirror image of the border, as the paper does). Memory grows with the tile, not
with the image.

Tiles start at multiples of `align` = 2**depth. Max-pooling commutes with a shift only if the
shift is a multiple of its stride; after `depth` pools, only shifts by multiples of 2**depth
leave the network's output a shifted copy of itself. Placed so, a valid-padding net stitches
exactly the logits a single pass over the whole (mirrored) image would give, whatever the
tile size. A same-padding net has seen zeros past each tile's edge instead of the real
neighbours; dropping a `margin` of context around each tile's output hides most of that.
"""

import math

import numpy as np

from common.geometry import output_size, size_error


def kept_step(out_tile, align, margin):
    """Output pixels kept from each tile (and the distance between tiles): what is left of
    the tile's output after the margin, rounded down to a multiple of `align`."""
    return (out_tile - 2 * margin) // align * align


def predict_tiled(image, forward, tile, align, margin=0):
    """Logits for a whole image from a network that takes square tiles.

    Inputs:
    - image: (C, H, W), any H and W
    - forward: maps (1, C, tile, tile) float32 to logits (1, K, t, t), t ≤ tile
      (the torch net or 00_scratch.unet_forward, wrapped)
    - tile: input tile side, a size the network can take
    - align: the network's total down-sampling, 2**depth
    - margin: output pixels dropped around each tile's output (for same-padding nets), a
      multiple of `align`: the image then starts on the pooling grid of every tile
    Returns:
    - logits: (K, H, W) float32
    """
    channels, height, width = image.shape
    zeros = np.zeros((1, channels, tile, tile), dtype=np.float32)
    out_tile = forward(zeros).shape[-1]
    border = (tile - out_tile) // 2  # input pixels a valid net consumes on each side
    step = kept_step(out_tile, align, margin)
    if margin % align:
        raise ValueError(
            f"margin {margin} is not a multiple of {align}: the tiles would see the pooling grid out of phase"
        )
    if step <= 0:
        raise ValueError(f"tile {tile} keeps no output after a margin of {margin} (align {align})")

    rows, cols = math.ceil(height / step), math.ceil(width / step)
    before = border + margin  # padding so that the first tile's kept output starts at pixel 0
    after_h = (rows - 1) * step + tile - before - height
    after_w = (cols - 1) * step + tile - before - width
    padded = np.pad(image, ((0, 0), (before, after_h), (before, after_w)), mode="reflect")

    logits = None
    for row in range(rows):
        for col in range(cols):
            top, left = row * step, col * step  # offsets in padded coordinates: multiples of align
            window = padded[None, :, top : top + tile, left : left + tile]
            kept = forward(np.ascontiguousarray(window))[0, :, margin : margin + step, margin : margin + step]
            if logits is None:
                logits = np.empty((kept.shape[0], rows * step, cols * step), dtype=np.float32)
            logits[:, top : top + step, left : left + step] = kept
    return logits[:, :height, :width]


def tiling_problems(tile, margin, depth, padding):
    """(option, problem or None) pairs for a --tile and --margin that `predict_tiled` cannot use
    with this network: a tile it cannot take, a margin off the 2**depth grid, or one that leaves
    nothing of a tile's output."""
    out_tile = output_size(tile, depth, padding) or 0
    return [
        ("--tile", size_error(tile, depth, padding)),
        ("--margin", margin % 2**depth and f"must be a multiple of 2**depth = {2**depth}, the pooling grid"),
        (
            "--margin",
            kept_step(out_tile, 2**depth, margin) <= 0 and f"leaves nothing of a {out_tile}-px output",
        ),
    ]
