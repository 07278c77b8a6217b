"""Your own images and masks as a training set: files paired by name, read, checked and split,
every refusal one line that names the file and the fix, before any training starts."""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.data import standardize
from common.geometry import MAX_DATA_PIXELS
from common.images import ImageError, image_size, read_image, read_mask
from common.metrics import label_components

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIX = "_mask"  # a.png pairs with a.png or a_mask.png in the masks folder
FEW_FOREGROUND = 0.03  # below this share of object pixels a net can score well by saying "background"
# Batch norm's statistics want as many pixels a batch as the default's 16 images of 64²: with
# fewer, tiles train worse and the held-out error spikes (benchmarks/bench_small_batches.py).
BATCH_NORM_PIXELS = 16 * 64**2


class DataError(Exception):
    """Files that cannot be trained on; the message is one line for the user."""


@dataclass
class Annotated:
    """One image and its objects, as training and validation use them."""

    name: str  # the image file, as the user named it
    image: np.ndarray  # (H, W) float32, standardised as --predict standardises
    instances: np.ndarray  # (H, W) int32: 0 background, 1…K the objects
    labelled: bool  # the mask gave instance labels (else: its connected components)

    @property
    def mask(self):
        return self.instances > 0


def image_files(folder):
    """The image files directly in `folder`, by name (hidden files skipped)."""
    return sorted(
        path
        for path in Path(folder).iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def check_not_empty(images, folder):
    if not images:
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")


def by_stem(paths, folder):
    """{stem: path}; two files of one stem (a.png and a.tif) are ambiguous."""
    found = {}
    for path in paths:
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path.name} in {folder} share a name; keep one")
        found[path.stem] = path
    return found


def pair_files(images_folder, masks_folder):
    """[(image, mask)]: image a.* with mask a.* or a_mask.* (the extensions may differ). In one
    folder for both, the *_mask files are the masks."""
    same = Path(images_folder).resolve() == Path(masks_folder).resolve()
    images, masks = image_files(images_folder), image_files(masks_folder)
    if same:
        images = [path for path in images if not path.stem.endswith(MASK_SUFFIX)]
        masks = [path for path in masks if path.stem.endswith(MASK_SUFFIX)]
    check_not_empty(images, images_folder)
    masks = by_stem(masks, masks_folder)
    pairs, used = [], set()
    for stem, image in by_stem(images, images_folder).items():
        names = (stem + MASK_SUFFIX,) if same else (stem, stem + MASK_SUFFIX)
        candidates = [masks[name] for name in names if name in masks]
        if len(candidates) > 1:
            raise DataError(f"{image.name} could pair with {candidates[0]} or {candidates[1].name}; keep one")
        if not candidates:
            raise DataError(
                f"{image} has no mask in {masks_folder} (looked for {stem}.* and {stem}{MASK_SUFFIX}.*)"
            )
        pairs.append((image, candidates[0]))
        used.add(candidates[0])
    unpaired = sorted(set(masks.values()) - used)
    if unpaired:
        raise DataError(
            f"{unpaired[0]} is a mask without an image in {images_folder}; remove it or add its image"
        )
    return pairs


def separate_touching(labels):
    """Instance labels with every pixel that 4-touches another object set to background: two
    objects that share a border become two with a gap between, as the paper's cells have.
    Without it the binary target cannot say where one object ends, and the weight map
    (which weighs background between objects) has no gap to weigh.

    Inputs:
    - labels: (H, W) int, 0 background, 1…K the objects
    Returns:
    - (H, W) int32, each object less its border with others
    """
    padded = np.pad(labels, 1)  # (H + 2, W + 2): background beyond the image
    height, width = labels.shape
    touching = np.zeros(labels.shape, bool)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        touching |= (neighbour != 0) & (neighbour != labels)
    return np.where(touching & (labels != 0), 0, labels).astype(np.int32)


def instances_of(labels, labelled):
    """The objects of a mask as training and scoring see them: instance labels with their shared
    borders made background, or a binary mask's connected components."""
    return separate_touching(labels) if labelled else label_components(labels[None] > 0)[0].astype(np.int32)


def option_rules(config, default):
    """(option, problem) pairs for --images and what goes with it, the circles' options refused:
    `config` is the run's TrainConfig, `default` one with every option at its default."""
    own = config.images is not None
    circles_only = "is for the circles; with --images every image in the folder trains"
    return [
        ("--masks", own and not config.masks and "--images needs --masks, the folder of their masks"),
        ("--masks", not own and config.masks and "is for --images"),
        ("--val-images", not own and config.val_images and "is for --images"),
        ("--val-images", bool(config.val_images) != bool(config.val_masks) and "and --val-masks go together"),
        (
            "--val-fraction",
            (not own or config.val_images)
            and config.val_fraction != default.val_fraction
            and "is for --images without --val-images",
        ),
        ("--touching", own and config.touching and "draws circles; your images have their own objects"),
        ("--train-size", own and config.train_size != default.train_size and circles_only),
        ("--val-size", own and config.val_size != default.val_size and "counts circles; use --val-fraction"),
    ]


def read_pair(image_path, mask_path, pixels=None):
    """An Annotated image: the pixels (read here unless given) standardised over the whole
    image, as --predict does, and the mask's objects (`instances_of`)."""
    try:
        pixels = read_image(image_path) if pixels is None else pixels
        labels, labelled = read_mask(mask_path)
    except ImageError as error:
        raise DataError(str(error)) from None
    if pixels.shape != labels.shape:
        (h, w), (mh, mw) = pixels.shape, labels.shape
        raise DataError(f"{image_path} is {w}×{h} but its mask {mask_path} is {mw}×{mh}; they must match")
    if pixels.std(dtype=np.float64) < 1e-6:
        raise DataError(f"{image_path} is uniform: there is nothing in it to learn from")
    return Annotated(
        str(image_path), standardize(pixels[None, None])[0, 0], instances_of(labels, labelled), labelled
    )


def read_folders(images_folder, masks_folder):
    """Every pair of the two folders, read and checked, once their headers say they fit in memory."""
    pairs = pair_files(images_folder, masks_folder)
    check_total_size([image for image, _ in pairs], images_folder)
    return [read_pair(image, mask) for image, mask in pairs]


def check_total_size(paths, folder):
    """Refuse, from the headers alone, images that together would not fit in memory."""
    try:
        pixels = sum(math.prod(image_size(path)) for path in paths)
    except ImageError as error:
        raise DataError(str(error)) from None
    if pixels > MAX_DATA_PIXELS:
        raise DataError(
            f"the {len(paths)} images of {folder} hold {pixels:,} pixels; at most {MAX_DATA_PIXELS:,} "
            "are held in memory at once: give fewer"
        )


def hold_out(annotated, fraction, gap, size):
    """(training, validation) images for --val-fraction: the last `fraction` of the images by
    name; a single image gives its last `fraction` of columns instead, and its training part
    ends `gap` columns before them, so that no training tile's context reaches into the
    held-out strip. An image too narrow to leave a tile of `size` is refused."""
    if len(annotated) > 1:
        held = max(1, round(fraction * len(annotated)))
        held = min(held, len(annotated) - 1)
        return annotated[:-held], annotated[-held:]
    (one,) = annotated
    width = one.image.shape[1]
    strip = max(1, round(fraction * width))
    train, val = slice(0, max(0, width - strip - gap)), slice(width - strip, width)
    left = train.stop
    if left < size:
        raise DataError(
            f"{one.name} is {width} px wide: without its last {strip} columns (--val-fraction) and a gap "
            f"of {gap}, {left} are left, fewer than a {size}-px tile; give --val-images and --val-masks, "
            "or a smaller --size"
        )
    return [columns(one, train, "training part")], [columns(one, val, "held-out strip")]


def columns(annotated, part, what):
    """The columns `part` of an image, as an image of their own."""
    return Annotated(
        f"{annotated.name} ({what})",
        annotated.image[:, part],
        annotated.instances[:, part],
        annotated.labelled,
    )


def problems(train, size):
    """The first reason the training images cannot give tiles of `size`, or None."""
    for annotated in train:
        height, width = annotated.image.shape
        if min(height, width) < size:
            return (
                f"{annotated.name} is {width}×{height} pixels, smaller than the {size}-px tiles "
                f"training cuts; give a smaller --size or larger images"
            )
    return None


def warnings(train, batch_size, size, norm, weight_map):
    """What the user should know before minutes of training: masks with no object, a
    foreground so rare that predicting background everywhere scores well on the loss, a batch
    too small for batch norm's statistics, binary masks under the weight map."""
    said = [f"the mask of {a.name} is all background" for a in train if not a.mask.any()]
    pixels = sum(a.mask.size for a in train)
    share = sum(int(a.mask.sum()) for a in train) / pixels
    if share < FEW_FOREGROUND:
        said.append(
            f"objects are {share:.2%} of the training pixels: a net can learn to say background "
            "everywhere; try --weight-map or --loss bce+dice"
        )
    pixels = batch_size * size**2
    if norm == "batch" and pixels < BATCH_NORM_PIXELS:
        said.append(
            f"a batch of {batch_size} tiles of {size}² is {pixels:,} pixels: batch norm's statistics "
            f"are noisy below {BATCH_NORM_PIXELS:,} (README, 'Small batches of large tiles'); a "
            "larger --batch-size or --size trains better"
        )
    if weight_map and not all(a.labelled for a in train):
        said.append(
            "binary masks: the weight map takes their connected components as the objects, "
            "so objects that touch count as one; instance-label masks keep them apart"
        )
    return said


def read_for_prediction(images, truth):
    """[(image path, pixels, Annotated with the true objects or None)] for --predict: one file,
    or each image of a folder, with --truth a mask file or a folder of masks paired by name;
    every file read before any is segmented, so that a bad one is refused before anything is
    written."""
    if truth and truth.is_dir() != images.is_dir():
        raise DataError(f"give --truth a folder with a --predict folder, a file with a file ({truth})")
    if images.is_dir():
        pairs = pair_files(images, truth) if truth else [(path, None) for path in image_files(images)]
        check_not_empty(pairs, images)
    else:
        pairs = [(images, truth)]
    check_total_size([path for path, _ in pairs], images)
    read = []
    for path, mask in pairs:
        try:
            pixels = read_image(path)
        except ImageError as error:
            raise DataError(str(error)) from None
        read.append((path, pixels, mask and read_pair(path, mask, pixels)))
    return read
