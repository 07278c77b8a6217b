"""Synthetic segmentation data: noisy grey images of circles and their exact masks.

Circles stand in for the paper's cells: the task is easy to state (which pixels are
inside a circle?), the ground truth is exact, and any amount of data is free.
"""

import numpy as np

CHUNK_PIXELS = 2**20  # pixels drawn at once (256 images of 64×64): bounds the temporary arrays


def synthetic_circles(
    n,
    size=64,
    *,
    seed=0,
    circles=(1, 4),
    radius=(0.08, 0.22),
    noise=0.35,
    contrast=(0.6, 1.4),
):
    """Draw `n` images of 1-4 filled circles on a flat background, with Gaussian noise.

    Inputs:
    - n: number of images
    - size: image side in pixels
    - seed: the same seed gives identical arrays
    - circles: (min, max) circles per image, inclusive
    - radius: (min, max) radius as a fraction of `size`
    - noise: standard deviation of the pixel noise, relative to the mean contrast of 1
    - contrast: (min, max) brightness step between background and circle
    Returns:
    - images: (n, 1, size, size) float32, each standardised to zero mean and unit variance,
      as a network's input usually is
    - masks: (n, 1, size, size) float32, exactly 0 (background) or 1 (circle)
    """
    rng = np.random.default_rng(seed)
    most = circles[1]
    counts = rng.integers(circles[0], most + 1, size=n)
    centers = rng.uniform(0.1 * size, 0.9 * size, size=(n, most, 2)).astype(np.float32)
    radii = rng.uniform(radius[0] * size, radius[1] * size, size=(n, most)).astype(np.float32)
    present = np.arange(most) < counts[:, None]  # (n, most): circles beyond the count are unused
    steps = rng.uniform(*contrast, size=n).astype(np.float32)

    pixel = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    masks = np.empty((n, 1, size, size), dtype=np.float32)
    images = np.empty((n, 1, size, size), dtype=np.float32)
    chunk = max(1, CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        batch = slice(start, start + chunk)
        mask = np.zeros((len(counts[batch]), size, size), dtype=bool)  # (b, size, size)
        for k in range(most):  # a few circles: vectorised over images and pixels, looped over circles
            cy = centers[batch, k, 0, None, None]  # (b, 1, 1)
            cx = centers[batch, k, 1, None, None]
            r = radii[batch, k, None, None]
            inside = (pixel[:, None] - cy) ** 2 + (pixel[None, :] - cx) ** 2 <= r**2  # (b, size, size)
            mask |= inside & present[batch, k, None, None]
        masks[batch, 0] = mask
        images[batch, 0] = render(mask, steps[batch], noise, rng)
    return images, masks


def touching_circles(
    n,
    size=64,
    *,
    seed=0,
    circles=(3, 6),
    radius=(0.08, 0.16),
    gap=(1.0, 3.0),
    noise=0.35,
    contrast=(0.6, 1.4),
):
    """Draw `n` images of clustered circles that nearly touch, as cells in tissue do: each
    circle after the first is placed `gap` pixels (1-3) from one already there, and never
    closer than gap[0] to any. The thin background between them is what the paper's weight
    map (eq. 2) makes the network learn.

    Inputs: as `synthetic_circles`, plus
    - gap: (min, max) distance in pixels between a new circle's edge and its neighbour's
    Returns:
    - images, masks: (n, 1, size, size) float32, as `synthetic_circles`
    - instances: (n, size, size) int32, 0 for background and k for the k-th circle
    """
    rng = np.random.default_rng(seed)
    pixel = np.arange(size, dtype=np.float32) + 0.5
    instances = np.zeros((n, size, size), dtype=np.int32)
    for i in range(n):
        placed = place_touching(rng, rng.integers(circles[0], circles[1] + 1), size, radius, gap)
        for k, (cy, cx, r) in enumerate(placed, start=1):
            instances[i][(pixel[:, None] - cy) ** 2 + (pixel[None, :] - cx) ** 2 <= r**2] = k
    masks = (instances > 0)[:, None].astype(np.float32)
    steps = rng.uniform(*contrast, size=n).astype(np.float32)
    images = render(masks[:, 0], steps, noise, rng)[:, None]
    return images, masks, instances


def place_touching(rng, count, size, radius, gap, tries_per_circle=50):
    """(cy, cx, r) of up to `count` circles inside the image, each new one beside an old one.

    Rejection sampling: a candidate that leaves the image or comes closer than gap[0] to any
    circle is drawn again; after `tries_per_circle` misses per circle the cluster stays smaller.
    """
    placed = []
    for _ in range(tries_per_circle * count):
        if len(placed) == count:
            break
        r = rng.uniform(*radius) * size
        if placed:
            ny, nx, nr = placed[rng.integers(len(placed))]
            angle, distance = rng.uniform(0, 2 * np.pi), nr + r + rng.uniform(*gap)
            cy, cx = ny + distance * np.sin(angle), nx + distance * np.cos(angle)
        else:
            cy, cx = rng.uniform(0.3 * size, 0.7 * size, size=2)
        inside = r <= cy <= size - r and r <= cx <= size - r
        if inside and all(np.hypot(cy - qy, cx - qx) >= qr + r + gap[0] for qy, qx, qr in placed):
            placed.append((cy, cx, r))
    return placed


def render(masks, steps, noise, rng):
    """Images from (b, H, W) masks: a brightness step per image, Gaussian noise, standardised."""
    noisy = steps[:, None, None] * masks + noise * rng.standard_normal(masks.shape, dtype=np.float32)
    return standardize(noisy)


def standardize(images):
    """Zero mean, unit variance per image, over its last two axes.

    The same normalisation must be applied to any image the trained network sees.
    """
    mean = images.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)  # float32 sums of squares
    std = images.std(axis=(-2, -1), keepdims=True, dtype=np.float64)  # overflow past about 1e19
    return ((images - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def circle_image(size, circles, seed=0):
    """One large (size, size) grey image in [0, 1] of many circles, with the training data's
    radii in pixels (5-14 px) and noise: something to try `01_pytorch.py --predict` on."""
    scale = 64 / size  # radius fractions are relative to the 64-px training images
    images, _ = synthetic_circles(
        1, size, seed=seed, circles=(circles, circles), radius=(0.08 * scale, 0.22 * scale)
    )
    image = images[0, 0]
    return (image - image.min()) / (image.max() - image.min())


if __name__ == "__main__":
    import argparse

    from common.images import save_grey_png

    parser = argparse.ArgumentParser(description="Write a PNG of many circles to try --predict on.")
    parser.add_argument("path", help="where to write the PNG")
    parser.add_argument("--size", type=int, default=1024, help="side in pixels (default %(default)s)")
    parser.add_argument("--circles", type=int, default=150, help="how many (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    args = parser.parse_args()
    save_grey_png(circle_image(args.size, args.circles, args.seed), args.path)
