"""Which input sizes a U-Net can take, and what size comes out.

`depth` is the number of 2×2 max-pool steps. Every pool needs an even side, so with
"same" padding the input must be a multiple of 2**depth. With "valid" padding (the
paper's) each 3×3 convolution also trims 2 pixels, so sizes must satisfy both: the
paper's 572 works (572 → 568 → 284 → … → 28 → … → 388), 570 does not.
"""

import itertools

PADDINGS = ("same", "valid")
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
