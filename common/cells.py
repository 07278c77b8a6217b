"""Synthetic fluorescence images of cell nuclei, written as image and mask files: the worked
example of training on one's own images (`python -m common.cells DIR`, then train from DIR).

The circles of common/data.py state the task; real nuclei (the 2018 Data Science Bowl's
fluorescence images, BBBC038) are harder in the ways that matter, and each is drawn here:
irregular outlines of many sizes, faint cells beside bright ones, texture, uneven illumination,
blur, photon noise, and clusters in which cells touch with only a faint darker seam between
them, or sit 1-3 px apart, the case the paper's weight map (eq. 2) is for. The labels are
exact, so any prediction can be scored.
"""

import io
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from common.cli import SEED_LIMIT, ArgumentParser, check_rules, first_refusal, run, whole_number
from common.files import WriteError, atomic_write_all

REFERENCE_AREA = 256 * 512  # `cells` counts are per this many pixels

# How a new cell is placed: anywhere (an isolated cell), beside one already there with 1-3 px
# of background between them, or pressed against it so that the two share a border.
ISOLATED, NEAR, TOUCHING = 0, 1, 2
PLACEMENT_ODDS = (0.4, 0.3, 0.3)
NEAR_GAP = (1.5, 3.5)  # px between the two nominal outlines; rasterised, 1-3 px of background
PRESSED = (0.5, 3.0)  # px by which a touching cell's nominal outline reaches into its neighbour
MOST_CLIPPED = 0.2  # a touching cell loses at most this share of its pixels to its neighbour

FAINTEST = 0.3  # the faintest cell's brightness, relative to the brightest's 1
CHROMATIN = 0.15  # relative standard deviation of the texture inside a cell
CHROMATIN_GRAIN = 1.5  # px, the texture's correlation length (Gaussian σ)
RIM_DIMMING = 0.3  # how much darker a cell is at its own border than inside: the faint seam
RIM_WIDTH = 1.5  # px over which the dimming fades inwards
BACKGROUND = 0.06  # autofluorescence and stray light, relative to the brightest cell
VIGNETTE = 0.15  # the field's corners get this much less light than its centre
TILT = 0.08  # at most this much more light on one side than the other
FULL_SCALE = 1.4  # the light level that maps to image value 1 (headroom above the brightest cell)
READ_NOISE = 2.0  # the camera's read noise, in photons

CAMERA_OFFSET = 100  # a camera's dark level: a 16-bit file's zero light is not 0
CAMERA_LEVELS = 4095  # a 12-bit camera's range above it


class Nucleus(NamedTuple):
    """A star-convex outline r(θ) = r0·(1 + Σ a_k cos(kθ + φ_k)), k = 2…4, stretched along
    `turn` by `stretch` and across it by 1/`stretch` (area kept): nuclei are roundish, rarely
    circles, sometimes elongated, never with deep bays."""

    radius: float  # r0: the equivalent disc's radius
    stretch: float  # √(aspect ratio)
    turn: float  # direction of the long axis, radians
    amplitudes: np.ndarray  # (3,) a_2, a_3, a_4
    phases: np.ndarray  # (3,) φ_2, φ_3, φ_4

    def outline(self, theta):
        k = np.arange(2, 5, dtype=np.float32)
        wobble = self.amplitudes * np.cos(k * theta[..., None] + self.phases)  # (..., 3)
        return self.radius * (1 + wobble.sum(axis=-1))

    def unstretched(self, dy, dx):
        """Offsets from the centre in the frame where the outline is r(θ): (ρ, θ)."""
        cos, sin = math.cos(self.turn), math.sin(self.turn)
        u = (dx * cos + dy * sin) / self.stretch
        v = (dy * cos - dx * sin) * self.stretch
        return np.hypot(u, v), np.arctan2(v, u)

    def inside(self, dy, dx):
        rho, theta = self.unstretched(dy, dx)
        return rho <= self.outline(theta)

    def edge(self, angle):
        """Distance from the centre to the outline in the image's direction `angle`: a ray's
        points keep their θ when unstretched, and their ρ grows in proportion."""
        rho, theta = self.unstretched(np.sin(angle), np.cos(angle))
        return float(self.outline(theta) / rho)

    def reach(self):
        """No outline point is farther from the centre than this."""
        return self.radius * (1 + self.amplitudes.sum()) * self.stretch


def random_nucleus(rng, diameter):
    """Equivalent diameters uniform in `diameter`; aspect ratios 1 + 0.8·u², so that most
    nuclei are near round (median 1.2) and one in ten is longer than 1.65:1."""
    aspect = 1 + 0.8 * rng.random() ** 2
    return Nucleus(
        radius=rng.uniform(*diameter) / 2,
        stretch=math.sqrt(aspect),
        turn=rng.uniform(0, np.pi),
        amplitudes=rng.uniform(0, [0.1, 0.06, 0.04]).astype(np.float32),
        phases=rng.uniform(0, 2 * np.pi, size=3).astype(np.float32),
    )


def rasterise(nucleus, cy, cx, shape):
    """The pixels of `nucleus` centred at (cy, cx), in a window grown 1 px beyond it.

    Returns:
    - window: (rows, columns) slices of the image
    - pixels: (h, w) bool over the window, True inside the outline
    """
    reach = nucleus.reach() + 1
    rows = slice(max(0, math.floor(cy - reach)), min(shape[0], math.ceil(cy + reach) + 1))
    columns = slice(max(0, math.floor(cx - reach)), min(shape[1], math.ceil(cx + reach) + 1))
    dy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] - np.float32(cy)  # (h, 1)
    dx = np.arange(columns.start, columns.stop, dtype=np.float32)[None, :] - np.float32(cx)  # (1, w)
    return (rows, columns), nucleus.inside(dy, dx)


def candidate_centre(rng, placed, nucleus, how, shape):
    """Where to try `nucleus`: anywhere for an isolated cell, else beside a random cell already
    placed, its outline `NEAR_GAP` away from that cell's or `PRESSED` into it."""
    if how == ISOLATED or not placed:
        return rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
    cy, cx, neighbour = placed[rng.integers(len(placed))]
    angle = rng.uniform(0, 2 * np.pi)
    gap = rng.uniform(*NEAR_GAP) if how == NEAR else -rng.uniform(*PRESSED)
    distance = neighbour.edge(angle) + nucleus.edge(angle + np.pi) + gap
    return cy + distance * math.sin(angle), cx + distance * math.cos(angle)


def kept_pixels(pixels, taken, how, area):
    """The window's pixels the new cell gets, or None if it is refused.

    A touching cell gives up the pixels its neighbour holds, as a nucleus pressed against
    another is flattened by it; it is refused if that costs more than `MOST_CLIPPED` of it or
    cuts it in two. Any other cell must keep 1 px of background to every cell (8-neighbours).
    Either is refused if less than half of its nominal `area` is left (most of it beyond the
    image's edge).
    """
    if how == TOUCHING:
        kept = pixels & ~taken
        clipped = pixels.sum() - kept.sum()
        if clipped > MOST_CLIPPED * pixels.sum() or ndimage.label(kept)[1] != 1:
            return None
    elif (ndimage.binary_dilation(pixels, np.ones((3, 3), bool)) & taken).any():
        return None
    else:
        kept = pixels
    return kept if kept.sum() >= area / 2 else None


def place_cells(rng, shape, count, diameter, tries_per_cell=20):
    """Instance labels of up to `count` nuclei, placed one by one by rejection against the
    labels already drawn, so that no two overlap; after `tries_per_cell`·`count` candidates
    the image keeps fewer.

    Returns:
    - (H, W) uint16, 0 = background, 1…K the cells in the order placed
    """
    labels = np.zeros(shape, dtype=np.uint16)
    placed = []  # (cy, cx, nucleus) of each cell so far
    for _ in range(tries_per_cell * count):
        if len(placed) == count:
            break
        nucleus = random_nucleus(rng, diameter)
        how = rng.choice(3, p=PLACEMENT_ODDS)
        cy, cx = candidate_centre(rng, placed, nucleus, how, shape)
        if not (0 <= cy < shape[0] and 0 <= cx < shape[1]):
            continue
        window, pixels = rasterise(nucleus, cy, cx, shape)
        kept = kept_pixels(pixels, labels[window] > 0, how, math.pi * nucleus.radius**2)
        if kept is not None:
            labels[window][kept] = len(placed) + 1
            placed.append((cy, cx, nucleus))
    return labels


def rim_dimming(labels):
    """1 inside each cell, falling to 1 − `RIM_DIMMING` at the cell's own border.

    Stain thins towards a nucleus's edge; where two nuclei touch, both rims meet, and the seam
    between them is only slightly darker than either: what makes touching cells hard to tell
    apart. The border is where a pixel's label differs from a 4-neighbour's.
    """
    padded = np.pad(labels, 1, mode="edge")
    border = (
        (padded[:-2, 1:-1] != labels)
        | (padded[2:, 1:-1] != labels)
        | (padded[1:-1, :-2] != labels)
        | (padded[1:-1, 2:] != labels)
    )
    # Taxicab distance: within the few pixels the dimming reaches it is as good as Euclidean, 8× faster.
    depth = ndimage.distance_transform_cdt((labels > 0) & ~border, metric="taxicab")  # 0 on the border
    return 1 - RIM_DIMMING * np.exp(-depth.astype(np.float32) / RIM_WIDTH)


def chromatin(rng, shape):
    """1 + smooth noise of standard deviation `CHROMATIN`: the grainy texture of stained DNA."""
    grain = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), CHROMATIN_GRAIN)
    return 1 + CHROMATIN * grain / grain.std()


def illumination(rng, shape):
    """The field's uneven light: a vignette (dimmer corners) and a random tilt, as in a
    microscope without flat-field correction. Near 1, at most ±(VIGNETTE + TILT)."""
    y = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]  # (H, 1)
    x = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :]  # (1, W)
    tilt_y, tilt_x = rng.uniform(-TILT / 2, TILT / 2, size=2).astype(np.float32)
    return 1 + VIGNETTE / 2 * (1 - y**2 - x**2) + tilt_y * y + tilt_x * x


def camera(rng, light, photons):
    """What a camera records of `light`: photon noise (`photons` per unit of light) and read
    noise, scaled so that light `FULL_SCALE` is 1, and clipped to [0, 1].

    Photon counts are Poisson; at the tens of photons per pixel here a Gaussian of the same
    variance (the count itself) is indistinguishable from it, and 4× faster to draw.
    """
    expected = light * photons
    noise = np.sqrt(expected + READ_NOISE**2) * rng.standard_normal(light.shape, dtype=np.float32)
    return np.clip((expected + noise) / (photons * FULL_SCALE), 0, 1)


def synthetic_cells(height, width, *, seed=0, cells=(50, 60), diameter=(18, 36), blur=1.0, photons=200):
    """One fluorescence image of nuclei and its exact instance labels.

    Each ingredient is one way real nuclei images are harder than the circles:
    - outlines: star-convex, irregular, some elongated (`Nucleus`), so a shape prior cannot
      replace looking at the pixels;
    - clusters: cells placed beside others, 1-3 px apart or touching, and some isolated
      (`place_cells`): the thin background between close cells is what eq. 2 weighs;
    - brightness: each cell its own, from `FAINTEST` (a third of the brightest) to 1, so a
      single threshold cannot segment the image;
    - texture and rims: grainy chromatin and a dimmer rim, which leaves only a faint seam
      where two cells touch;
    - optics: a background glow, uneven illumination, the point spread function (a Gaussian
      blur) and photon and read noise.

    Inputs:
    - height, width: image size in pixels
    - seed: the same seed gives identical arrays
    - cells: (min, max) number of cells per 256×512 pixels, scaled to the image's area; in
      crowded images rejection may place fewer
    - diameter: (min, max) equivalent diameter of a cell in pixels (that of the disc of its area)
    - blur: σ of the Gaussian point spread function, px
    - photons: photons recorded per pixel of the brightest cell; fewer is noisier
    Returns:
    - image: (height, width) float32 in [0, 1]
    - labels: (height, width) uint16, 0 = background, 1…K the cells, consecutive
    """
    rng = np.random.default_rng(seed)
    count = round(rng.uniform(*cells) * height * width / REFERENCE_AREA)
    if count >= 2**16:
        raise ValueError(f"{count:,} cells do not fit uint16 labels; ask for fewer than 65,536")
    labels = place_cells(rng, (height, width), count, diameter)
    brightness = np.concatenate([[0], rng.uniform(FAINTEST, 1, labels.max())]).astype(np.float32)
    stain = brightness[labels] * chromatin(rng, labels.shape) * rim_dimming(labels)  # (H, W)
    light = (BACKGROUND + stain) * illumination(rng, labels.shape)
    return camera(rng, ndimage.gaussian_filter(light, blur), photons), labels


# ----------------------------------------------------------------------------- the example data set

# (image file, mask file, (height, width)): both mask-naming styles a user's data may have,
# an 8-bit PNG as exported from a viewer and 16-bit TIFFs as a microscope camera writes them.
EXAMPLE = (
    ("train/images/cells_a.png", "train/masks/cells_a_mask.png", (256, 512)),
    ("test/images/cells_b.tif", "test/masks/cells_b.tif", (256, 256)),
    ("test/images/cells_c.tif", "test/masks/cells_c.tif", (256, 256)),
)
FORMATS = {".png": "PNG", ".tif": "TIFF"}


def example_paths(folder):
    return [Path(folder) / name for image, mask, _ in EXAMPLE for name in (image, mask)]


def image_pixels(image, path):
    """An image in [0, 1] as a file holds it: 0-255 in an 8-bit PNG; in a 16-bit TIFF, a
    12-bit camera's counts (0-4095) above its dark offset."""
    if path.suffix == ".png":
        return np.round(image * 255).astype(np.uint8)
    return np.round(CAMERA_OFFSET + image * CAMERA_LEVELS).astype(np.uint16)


def encoded(pixels, path):
    """A writer for `atomic_write_all`: (H, W) uint8 or uint16 grey pixels (Pillow's modes "L"
    and "I;16") in the format `path`'s suffix names, encoded now, so that nothing is written
    unless every file could be."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=FORMATS[path.suffix])
    return lambda file: file.write(buffer.getvalue())


def example_refusal(folder):
    """Why the example cannot be written into `folder`, or None. A file already there is
    never replaced: it may be the user's own image or mask."""
    paths = example_paths(folder)
    existing = next((path for path in paths if os.path.lexists(path)), None)
    if existing:
        return f"{existing} exists; remove it or choose another folder"
    return first_refusal(paths)


def write_example(folder, seed=0):
    """The example data set in `folder`, laid out as a user's own would be (see `EXAMPLE`):
    all files or, if any cannot be written, none. Image i is `synthetic_cells(seed=3·seed + i)`,
    so every image has its own seed and every `seed` its own images.

    Returns:
    - [(image path, mask path, labels)], one per image; labels (H, W) uint16
    Raises WriteError, before writing anything, if `example_refusal` names a reason.
    """
    problem = example_refusal(folder)
    if problem:
        raise WriteError(problem)
    writes, written = {}, []
    for index, (image_name, mask_name, (height, width)) in enumerate(EXAMPLE):
        image, labels = synthetic_cells(height, width, seed=seed * len(EXAMPLE) + index)
        image_path, mask_path = Path(folder) / image_name, Path(folder) / mask_name
        writes[image_path] = encoded(image_pixels(image, image_path), image_path)
        writes[mask_path] = encoded(labels, mask_path)
        written.append((image_path, mask_path, labels))
    atomic_write_all(writes)
    return written


def main(argv=None):
    parser = ArgumentParser(
        description="Write a small data set of synthetic fluorescent nuclei, images and instance-label "
        "masks in train/ and test/ folders, as one's own data would be laid out."
    )
    parser.add_argument("folder", type=Path, help="where to write train/ and test/")
    parser.add_argument("--seed", type=whole_number(0, SEED_LIMIT - 1), default=0, help="seeds the images")
    args = parser.parse_args(argv)
    check_rules(parser, [("folder", example_refusal(args.folder))])
    written = write_example(args.folder, args.seed)
    for image_path, mask_path, labels in written:
        bits = 8 if image_path.suffix == ".png" else 16
        print(f"{image_path}  {labels.shape[1]}×{labels.shape[0]}, {bits}-bit grey")
        print(f"{mask_path}  {labels.max()} cells, 16-bit labels")
    every = [labels for _, _, labels in written]
    cells = sum(int(labels.max()) for labels in every)
    foreground = sum(np.count_nonzero(labels) for labels in every) / sum(labels.size for labels in every)
    print(f"{len(every)} images, {cells} cells, {foreground:.1%} of pixels inside a cell")


if __name__ == "__main__":
    run(main)
