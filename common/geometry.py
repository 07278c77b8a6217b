"""Which input sizes a U-Net can take, what size comes out, and the shapes of its weights.

`depth` is the number of 2×2 max-pool steps. Every pool needs an even side, so with
"same" padding the input must be a multiple of 2**depth. With "valid" padding (the
paper's) each 3×3 convolution also trims 2 pixels, so sizes must satisfy both: the
paper's 572 works (572 → 568 → 284 → … → 28 → … → 388), 570 does not.
"""

import itertools
import math

PADDINGS = ("same", "valid")
NORMS = ("batch", "group", "none")  # what follows each 3×3 convolution, before its ReLU
TRIM_PER_DOUBLE_CONV = {"same": 0, "valid": 4}  # two 3×3 convolutions, 1 px lost per side each


def output_size(size, depth, padding):
    """Side of the output map for a square input of `size`, or None if the net cannot take it."""
    trim = TRIM_PER_DOUBLE_CONV[padding]
    for _ in range(depth):  # contracting path: double conv, then pool
        size -= trim
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= trim  # bottleneck
    for _ in range(depth):  # expanding path: up-conv doubles, double conv trims
        size = 2 * size - trim
    return size if size > 0 else None


def bottleneck_size(size, depth, padding):
    """Side of the bottleneck's output, the smallest map batch norm normalises (size valid)."""
    trim = TRIM_PER_DOUBLE_CONV[padding]
    for _ in range(depth):
        size = (size - trim) // 2
    return size - trim


def batch_norm_problem(batch_size, size, depth, padding):
    """Why batch norm cannot train on these batches, or None: a channel of a single value has
    no variance, and PyTorch refuses it."""
    if batch_size * bottleneck_size(size, depth, padding) ** 2 < 2:
        one_value = "with a 1×1 bottleneck leaves batch norm one value per channel"
        return f"{batch_size} {one_value}; use 2+ or a larger --size"
    return None


def nearest_valid_sizes(size, depth, padding):
    """The closest input sizes below and above `size` that the net can take (None if none below)."""
    below = next((s for s in range(size - 1, 0, -1) if output_size(s, depth, padding)), None)
    above = next(s for s in itertools.count(size + 1) if output_size(s, depth, padding))
    return below, above


def size_error(size, depth, padding):
    """A one-line explanation of why `size` does not fit, or None if it does."""
    if output_size(size, depth, padding):
        return None
    below, above = nearest_valid_sizes(size, depth, padding)
    nearest = f"{below} or {above}" if below else f"{above}"
    if padding == "same":
        reason = f"each of its {depth} pools halves an even side, so it must be a multiple of {2**depth}"
    else:
        reason = "each pool needs an even side after every level's two convolutions trim 4 px"
    return (
        f"size {size} does not fit a depth-{depth} U-Net with {padding} padding ({reason}); "
        f"nearest valid sizes: {nearest}"
    )


def receptive_fields(depth, padding, size):
    """How many input pixels, along one axis, can change one output pixel: one number for each
    position of the output pixel in one period of the pooling grid (0 … 2**depth − 1); see
    `receptive_intervals`. Paper network: 188 or 204 px; the default (depth 3): 92 or 100 px."""
    return [hi - lo + 1 for lo, hi in receptive_intervals(depth, padding, size)]


def exact_margin(depth):
    """The context a same-padding tile must drop around its output so that every kept pixel
    equals a whole-image pass: a multiple of 2**depth, so that every tile sees the pooling grid
    in the same phase, and enough that no kept pixel's field reaches past the tile's edge (a
    pixel's reach depends on its phase in the grid: see `receptive_intervals`). 24, 48 and 96
    px at depths 2, 3 and 4."""
    period = 2**depth
    intervals = receptive_intervals(depth, "same", period)  # for output pixels 0 … period − 1
    reach = max(max(-lo, hi - (period - 1)) for lo, hi in intervals)  # past the block's left and right
    return math.ceil(reach / period) * period


def receptive_intervals(depth, padding, size):
    """The input pixels, along one axis, that can change output pixel p, as an interval (lo, hi)
    of input coordinates, for each p in one period of the pooling grid (0 … 2**depth − 1).

    The field depends on the position because a pool's 2×2 window starts on even pixels and an
    up-convolution gives each output pixel one input pixel: the two halves of an up-convolved
    pair see windows that end on different sides. Traced backwards as intervals: a 3×3 conv
    widens one by a pixel on each side (same padding) or shifts it (valid), a pool doubles it, an
    up-convolution halves it, and a skip connection joins the encoder's interval (shifted by the
    crop) to the decoder's.

    Inputs:
    - depth, padding: the network's; size: an input size it takes (valid padding's crops depend on it)
    Returns:
    - a list of 2**depth (lo, hi) pairs; with same padding, input and output coordinates coincide
    """
    pad = 1 if padding == "same" else 0  # how far a 3×3 convolution reaches before its output pixel
    trim = TRIM_PER_DOUBLE_CONV[padding]
    encoded, side = [], size
    for _ in range(depth):
        side -= trim
        encoded.append(side)
        side //= 2
    side -= trim
    crops = [0] * depth  # where each skip's crop starts in its encoder map
    for level in reversed(range(depth)):
        side *= 2
        crops[level] = (encoded[level] - side) // 2
        side -= trim

    def through_double_conv(lo, hi):  # an interval of one map → the interval of its input
        return lo - 2 * pad, hi + 2 * (2 - pad)

    def encoder_input(level, lo, hi):  # encoder `level`'s output → the network's input
        lo, hi = through_double_conv(lo, hi)
        return (lo, hi) if level == 0 else encoder_input(level - 1, 2 * lo, 2 * hi + 1)

    def decoder_input(level, lo, hi):  # decoder `level`'s output (`depth`: the bottleneck's) → input
        lo, hi = through_double_conv(lo, hi)
        if level == depth:
            return encoder_input(depth - 1, 2 * lo, 2 * hi + 1)
        skip = encoder_input(level, lo + crops[level], hi + crops[level])
        up = decoder_input(level + 1, lo // 2, hi // 2)
        return min(skip[0], up[0]), max(skip[1], up[1])

    return [decoder_input(0, p, p) for p in range(2**depth)]


# Limits on what a command line or a checkpoint may ask for, so that a typo cannot ask for more
# memory than a machine has: at depth 6 and base 128 the bottleneck has 8192 channels and the net
# 2.0 billion parameters. Training needs more: see `training_memory_problems`.
MAX_SIZE = 1024
MAX_DEPTH = 6
MAX_BASE_CHANNELS = 128
MAX_DATA_PIXELS = 2**29  # training and validation images held in memory: 2 GiB per float32 array
MAX_BATCH_WORK = 2**25  # pixels × base channels of one batch: its activations take about 5 GB
MAX_TRAIN_PARAMETERS = 100_000_000  # with their gradients and Adam's two moments, 1.6 GB

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # batch norm's statistics


def parameter_shapes(model_args):
    """Name → shape of every entry of `UNet(**model_args).state_dict()`, in its order.

    Computed, not built: a checkpoint's shapes are checked before a network of that size is
    ever allocated. Level l has base_channels·2^l channels; followed by a norm, a convolution
    has no bias (the norm subtracts the mean); each norm has a scale and a shift per channel,
    and batch norm also keeps its running mean and variance and a step count.
    """
    shapes = {}

    def double_conv(prefix, c_in, c_out):  # paper, Fig. 1: two 3×3 convolutions per level
        for conv, c in (("1", c_in), ("2", c_out)):
            shapes[f"{prefix}.conv{conv}.weight"] = (c_out, c, 3, 3)
            if model_args["norm"] == "none":
                shapes[f"{prefix}.conv{conv}.bias"] = (c_out,)
                continue
            norm = f"{prefix}.norm{conv}"
            shapes[f"{norm}.weight"] = shapes[f"{norm}.bias"] = (c_out,)
            if model_args["norm"] == "batch":
                shapes[f"{norm}.running_mean"] = shapes[f"{norm}.running_var"] = (c_out,)
                shapes[f"{norm}.num_batches_tracked"] = ()

    base, depth = model_args["base_channels"], model_args["depth"]
    channels = [base * 2**level for level in range(depth + 1)]
    inputs = [model_args["in_channels"]] + channels[:-2]
    for level, (c_in, c_out) in enumerate(zip(inputs, channels[:-1], strict=True)):
        double_conv(f"encoder.{level}", c_in, c_out)
    double_conv("bottleneck", channels[-2], channels[-1])
    for step, c in enumerate(reversed(channels[1:])):
        shapes[f"up_convs.{step}.weight"] = (c, c // 2, 2, 2)  # ConvTranspose2d: (in, out, k, k)
        shapes[f"up_convs.{step}.bias"] = (c // 2,)
    for step, c in enumerate(reversed(channels[1:])):
        double_conv(f"decoder.{step}", c, c // 2)
    shapes["head.weight"] = (model_args["out_channels"], base, 1, 1)
    shapes["head.bias"] = (model_args["out_channels"],)
    return shapes


def is_trainable(name):
    """Whether a state_dict entry is a parameter the optimizer updates, not a buffer."""
    return name.rsplit(".", 1)[-1] not in BUFFERS


def training_memory_problems(train_size, held_out, size, batch_size, base_channels, depth):
    """(option, problem or None) pairs for a training run that would not fit in memory: its
    images, one batch's activations, its weights with their gradients and Adam's moments."""
    pixels = (train_size + held_out) * size**2
    work = batch_size * size**2 * base_channels
    network = dict(in_channels=1, out_channels=1, base_channels=base_channels, depth=depth)
    shapes = parameter_shapes(network | dict(padding="same", norm="batch", skip=True))
    parameters = sum(math.prod(shape) for name, shape in shapes.items() if is_trainable(name))
    return [
        (
            "--train-size",
            pixels > MAX_DATA_PIXELS
            and f"{train_size:,} + {held_out:,} images of {size}² are "
            f"{pixels:,} pixels; at most {MAX_DATA_PIXELS:,} are held in memory",
        ),
        (
            "--batch-size",
            work > MAX_BATCH_WORK
            and f"{batch_size} images of {size}² with {base_channels} base "
            f"channels are {work:,} pixel-channels a batch; at most {MAX_BATCH_WORK:,}",
        ),
        (
            "--base-channels",
            parameters > MAX_TRAIN_PARAMETERS
            and f"{base_channels} at depth {depth} makes "
            f"{parameters:,} parameters; at most {MAX_TRAIN_PARAMETERS:,} are trained",
        ),
    ]
