"""U-Net in PyTorch: train it on synthetic circles and look at what it learned.

Read top to bottom: the network's parts → the network → the training recipe and the data →
your own images, cut into tiles → augmentation (the paper's flips and elastic deformation) →
the loss, one training step and the loop → evaluation → the outputs → segmenting an image of
any size, tile by tile → main().
Plumbing (options, checkpoints, files, images) lives in common/.

    python 01_pytorch.py                         # train: about half a minute on 2 CPU cores
    python 01_pytorch.py --no-skip               # the same net with its skip connections cut
    python 01_pytorch.py --touching --weight-map # touching circles, the paper's weight map
    python 01_pytorch.py --touching --train-size 8 --steps 300 --augment elastic  # few images
    python 01_pytorch.py --resume checkpoints/unet_circles.pt --steps 200   # train on
    python 01_pytorch.py --images my/images --masks my/masks --steps 600  # your own images and masks
    python 01_pytorch.py --predict picture.png   # segment your own image (or a folder) into predictions/
"""

import functools
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common import checkpoints, cli, dataset, plotting, recipe
from common.checkpoints import CheckpointError, foreign
from common.cli import option, whole_number
from common.data import standardize, synthetic_circles, touching_circles
from common.dataset import DataError
from common.files import atomic_write_all, save_json
from common.geometry import (
    NORMS,
    batch_norm_problem,
    exact_margin,
    output_size,
    size_error,
    training_memory_problems,
)
from common.images import MAX_LABEL, MAX_PIXELS, mask_pixels, png_writer
from common.metrics import describe_scores, dice, foreground, label_components, segmentation_scores
from common.tiling import kept_step, predict_tiled, tiling_problems
from common.weight_map import weight_map

# ----------------------------------------------------------------------------- the network

# Group norm over groups of 4 channels: 2 to 16 groups at the default's 8 to 64 channels, the
# setting benchmarks/bench_small_batches.py measures.
CHANNELS_PER_GROUP = 4


def normalisation(norm, channels):
    """The layer between each convolution and its ReLU (the paper has none; it came later).

    Batch norm (Ioffe & Szegedy, 2015) standardises each channel over the whole batch: its
    statistics need many pixels a batch, and at evaluation it uses running averages of them.
    Group norm (Wu & He, 2018) standardises groups of channels within each image, the same at
    any batch size and at evaluation. Neither wins everywhere: group norm trains better on few
    sparse tiles a batch, batch norm on the circles at every batch size (README, "Small batches
    of large tiles"), so batch norm stays the default.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(channels // math.gcd(channels, CHANNELS_PER_GROUP), channels)
    return nn.Identity()


class DoubleConv(nn.Module):
    """(3×3 conv => [norm] => ReLU) × 2 — paper, Fig. 1, the blue arrows of every level."""

    def __init__(self, in_channels, out_channels, padding, norm):
        super().__init__()
        pad = 1 if padding == "same" else 0
        bias = norm == "none"  # a bias is redundant right before a norm, which subtracts the mean
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=bias)
        self.norm1 = normalisation(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=bias)
        self.norm2 = normalisation(norm, out_channels)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


def max_pool2x2(x):
    """2×2 max-pool, stride 2: halves the map so the next level sees twice the context."""
    return F.max_pool2d(x, 2)  # (B, C, H/2, W/2)


def center_crop(x, height, width):
    """The central (height, width) window of x — paper, Fig. 1, "copy and crop".

    With valid padding the decoder's map is smaller than the encoder map it joins, because
    every unpadded convolution lost a border; the encoder map is cropped, never the other
    map padded or stretched.
    """
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def he_normal_(module):
    """Paper, Sec. 3: Gaussian weights with std √(2/N), N = inputs feeding one output pixel.

    For a k×k convolution N = in_channels·k²; for the 2×2, stride-2 up-convolution each
    output pixel sees one kernel tap per input channel, so N = in_channels.
    """
    taps = math.prod(module.kernel_size) // math.prod(module.stride)
    nn.init.normal_(module.weight, std=math.sqrt(2 / (module.in_channels * taps)))
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """The U-Net of the paper's Fig. 1, with its size and padding as arguments.

    `depth` is the number of 2×2 max-pool steps; level l has base_channels·2^l channels.
    The defaults (base 8, depth 3, 121 k parameters) reach Dice 0.98 on 64×64 circles in a
    fifth of the time of the paper-like base 16, depth 4 (benchmarks/bench_train.py).
    UNet(out_channels=2, base_channels=64, depth=4, padding="valid", norm="none") is
    exactly the paper's network: 572×572 in, 388×388×2 out, 31,030,658 parameters.
    `skip=False` feeds the decoder zeros where the encoder map would be, same shapes, to
    measure what the skip connections are worth.
    """

    def __init__(
        self,
        in_channels=1,
        out_channels=1,
        base_channels=8,
        depth=3,
        padding="same",
        norm="batch",
        skip=True,
    ):
        super().__init__()
        self.skip = skip
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, padding, norm)
            for c_in, c_out in zip([in_channels] + channels[:-2], channels[:-1], strict=True)
        )
        self.bottleneck = DoubleConv(channels[-2], channels[-1], padding, norm)
        # Up-convolution (paper: "a 2×2 convolution that halves the number of feature channels").
        self.up_convs = nn.ModuleList(
            nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2) for c in reversed(channels[1:])
        )
        self.decoder = nn.ModuleList(DoubleConv(c, c // 2, padding, norm) for c in reversed(channels[1:]))
        self.head = nn.Conv2d(base_channels, out_channels, kernel_size=1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                he_normal_(module)

    def forward(self, x):  # (B, in, H, W)
        skips = []
        for encode in self.encoder:
            x = encode(x)  # (B, C, H, W)
            skips.append(x)
            x = max_pool2x2(x)  # (B, C, H/2, W/2)
        x = self.bottleneck(x)  # (B, 2C, H/2, W/2) at the bottom of the U
        for up_conv, decode in zip(self.up_convs, self.decoder, strict=True):
            x = up_conv(x)  # (B, C, 2H, 2W): channels halved, size doubled
            skip = center_crop(skips.pop(), *x.shape[-2:])  # (B, C, 2H, 2W) from the encoder
            if not self.skip:
                skip = torch.zeros_like(skip)
            x = torch.cat([skip, x], dim=1)  # (B, 2C, 2H, 2W): where + what
            x = decode(x)  # (B, C, 2H, 2W)
        return self.head(x)  # (B, out, H, W): one logit per class and pixel


# ----------------------------------------------------------------------------- the recipe and the data


AUGMENTATIONS = ("none", "flips", "elastic")
# Paper, Sec. 3.1: σ = 10 px on 572² tiles, 1.7 % of the side, which at 64² would be 1.1 px and
# move a circle's outline by under a pixel. 2 px (3 % of the side, a fifth of a typical radius)
# visibly bends circles without folding the image: the field's largest slope stays far below 1.
ELASTIC_SIGMA = 2.0
LOSSES = ("bce", "dice", "bce+dice")


@dataclass
class TrainConfig:
    """Everything that decides a run. Each field is also the command-line option of the same
    name (`batch_size` ↔ `--batch-size`); metrics.json and the checkpoint save the values used."""

    epochs: int = option(10, whole_number(1, 10_000), "passes over the training set")
    steps: int | None = cli.steps_option()
    batch_size: int = cli.batch_size_option()
    lr: float = cli.lr_option()
    schedule: str = option("one-cycle", choices=("one-cycle", "constant"), help="constant: the baseline")
    size: int = cli.size_option()
    depth: int = cli.depth_option()
    base_channels: int = cli.base_channels_option()
    train_size: int = cli.train_size_option()
    val_size: int = option(
        recipe.VAL_SIZE, whole_number(1, 10_000), "validation images, and as many test images"
    )
    seed: int = cli.seed_option()
    eval_every: int = option(100, whole_number(1, 1_000_000), "validate every this many steps and at the end")
    device: str = option(
        "auto", choices=("auto", "cpu", "cuda", "mps"), help="auto: cuda, else mps, else cpu"
    )
    skip: bool = option(True, help="cut the skip connections (the decoder gets zeros) to see what they do")
    norm: str = option(
        "batch", choices=NORMS, help="after each convolution; group: for few tiles a batch (README)"
    )
    channels_last: bool = option(True, help="keep the default NCHW memory layout (1.5× slower on CPU)")
    mixed_precision: bool = option(True, help="train in fp32 on CUDA too, instead of bf16 autocast")
    touching: bool = option(False, help="clusters of circles 1-3 px apart, scored by object F1 too")
    weight_map: bool = option(False, help="weight each pixel's loss by the paper's eq. 2 (needs --touching)")
    augment: str = option(
        "auto",
        choices=("auto", *AUGMENTATIONS),
        help="flips: random 90° turns and mirrors; elastic: those and the paper's elastic deformation; "
        "auto: elastic for --images, none for the circles",
    )
    elastic_sigma: float = option(
        ELASTIC_SIGMA, cli.number_in(0, 64), "--augment elastic: std of the 3×3 grid's displacements, px"
    )
    loss: str = option("bce", choices=LOSSES, help="per-pixel binary cross-entropy, soft Dice, or their sum")
    images: str | None = option(None, cli.readable_folder, "train on the images in this folder, not circles")
    masks: str | None = option(
        None, cli.readable_folder, "--images: their masks, a.* or a_mask.* for image a.*"
    )
    val_images: str | None = option(None, cli.readable_folder, "--images: validate on these images instead")
    val_masks: str | None = option(None, cli.readable_folder, "--val-images: their masks")
    val_fraction: float = option(
        0.2, cli.number_in(0.01, 0.9), "--images alone: the share held out (of one image: its last columns)"
    )


def model_args(config):
    """The UNet keyword arguments a recipe implies: what a checkpoint needs to rebuild the net."""
    fixed = dict(in_channels=1, out_channels=1, padding="same")
    network = dict(base_channels=config.base_channels, depth=config.depth, norm=config.norm, skip=config.skip)
    return fixed | network


@dataclass
class CircleData:
    """Training tensors (N, 1, H, W) with per-pixel loss weights (all 1 unless --weight-map), and
    two held-out sets, each (images, masks, instance labels with --touching or None): validation,
    which watches training (and chose the defaults), and test, for the final scores."""

    train_images: torch.Tensor
    train_masks: torch.Tensor
    train_weights: torch.Tensor
    val: tuple
    test: tuple


def make_data(config, draw=None):
    """Each set drawn from its own seed: the held-out images are ones the net never trains on.
    `draw(n, size, seed=)` replaces the circles the config names (benchmarks vary the data)."""
    draw = draw or (touching_circles if config.touching else synthetic_circles)
    images, masks, *instances = draw(config.train_size, config.size, seed=config.seed)
    if config.weight_map:
        weights = np.stack([weight_map(labels) for labels in instances[0]])[:, None]
    else:
        weights = np.ones_like(masks)

    def held_out(seed):
        images, masks, *instances = draw(config.val_size, config.size, seed=seed)
        return torch.from_numpy(images), torch.from_numpy(masks), (instances or [None])[0]

    tensors = map(torch.from_numpy, (images, masks, weights))
    return CircleData(
        *tensors, held_out(config.seed + recipe.VAL_SEED), held_out(config.seed + recipe.TEST_SEED)
    )


# ----------------------------------------------------------------------------- your own images, in tiles


@dataclass
class TileData:
    """Your own images (--images): a few, of any size. Training cuts tiles from them at random
    places, as the paper trained on tiles of large images; the held-out images are scored whole,
    segmented tile by tile as --predict segments them. There is no third set: the validation
    images give the final scores."""

    train: list  # common.dataset.Annotated: standardised image, instance labels
    weights: list  # (H, W) float32 per training image: eq. 2 with --weight-map, else ones
    val: list
    test: None = None


# The worked example (one 256×512 image) after 20, 100, 200, 300 and 600 steps: test object F1
# 0.54, 0.67, 0.84, 0.90, 0.92. A few images make short epochs: --epochs 10 may be 20 steps.
FEW_STEPS = 300


def tile_data(config, train, val):
    """TileData from the images read (common/dataset.py), with each training image's weight
    map computed once, on the whole image, so that a tile's gaps see objects beyond its edge."""
    weights = [
        weight_map(a.instances) if config.weight_map else np.ones(a.image.shape, np.float32) for a in train
    ]
    return TileData(train, weights, val)


def random_tiles(data, size, count, generator):
    """`count` tiles of size² at random places of the training images, each image chosen in
    proportion to the places it offers, so that every pixel is about as likely to be trained on.

    Returns:
    - images, masks, weights: (count, 1, size, size) float32
    """
    shapes = [a.image.shape for a in data.train]
    places = torch.tensor([(h - size + 1) * (w - size + 1) for h, w in shapes], dtype=torch.float64)
    chosen = torch.multinomial(places, count, replacement=True, generator=generator)
    tiles = []
    for k in chosen.tolist():
        (height, width), a = shapes[k], data.train[k]
        top, left = (int(torch.randint(n - size + 1, (1,), generator=generator)) for n in (height, width))
        window = np.s_[top : top + size, left : left + size]
        tiles.append([a.image[window], a.mask[window], data.weights[k][window]])
    return [torch.from_numpy(np.stack(t)[:, None].astype(np.float32)) for t in zip(*tiles, strict=True)]


def training_batches(data, config):
    """Batches (images, masks, weights) for ever: shuffled circle images, or fresh tiles."""
    generator = torch.Generator().manual_seed(config.seed)
    if isinstance(data, TileData):
        while True:
            yield random_tiles(data, config.size, config.batch_size, generator)
    for index in shuffled_batches(len(data.train_images), config.batch_size, generator):
        yield data.train_images[index], data.train_masks[index], data.train_weights[index]


def steps_per_epoch(data, config):
    """Circles: as many whole batches as the set holds, and at least one (a set smaller than a
    batch). Tiles: as many batches as it takes tiles to cover the training pixels once."""
    if isinstance(data, TileData):
        tiles = math.ceil(sum(a.image.size for a in data.train) / config.size**2)
        return math.ceil(tiles / config.batch_size)
    return max(1, len(data.train_images) // config.batch_size)


def first_training_example(data, config):
    """One training image (a tile of your own), its mask and weights, (1, 1, H, W) each: what
    the weight map and augmentation figures show."""
    if isinstance(data, TileData):
        return random_tiles(data, config.size, 1, torch.Generator().manual_seed(config.seed))
    return data.train_images[:1], data.train_masks[:1], data.train_weights[:1]


# ----------------------------------------------------------------------------- augmentation (paper, Sec. 3.1)


def random_flips(tensors, generator):
    """Each image turned by a random multiple of 90° and mirrored or not: one of the square's
    eight symmetries, the same for every tensor of that image. The paper wants invariance to
    shifts and rotations; on a square pixel grid these eight cost no interpolation.

    Inputs:
    - tensors: a list of (B, C, H, W) tensors, H = W: images, masks, weights
    - generator: a torch.Generator on the CPU, which the choices come from
    Returns:
    - the list, each tensor transformed image by image
    """
    turns = torch.randint(4, (len(tensors[0]),), generator=generator).tolist()
    mirrors = torch.randint(2, (len(tensors[0]),), generator=generator).tolist()

    def symmetry(x, turn, mirror):  # (C, H, W)
        x = torch.rot90(x, turn, dims=(-2, -1))
        return x.flip(-1) if mirror else x

    return [
        torch.stack([symmetry(*choice) for choice in zip(t, turns, mirrors, strict=True)]) for t in tensors
    ]


ELASTIC_GRID = 3  # paper, Sec. 3.1: "random displacement vectors on a coarse 3 by 3 grid"


def elastic_displacements(batch, height, width, sigma, generator):
    """Smooth random displacements (paper, Sec. 3.1): a vector at each node of a 3×3 grid
    spanning the image, each component drawn from N(0, σ²) pixels, interpolated bicubically to
    every pixel.

    Returns:
    - nodes: (B, 2, 3, 3), the (dy, dx) drawn at the grid's nodes, in pixels
    - field: (B, 2, H, W) float64, the (dy, dx) of every pixel
    """
    shape = (batch, 2, ELASTIC_GRID, ELASTIC_GRID)
    nodes = torch.randn(shape, generator=generator, dtype=torch.float64) * sigma
    return nodes, displacement_field(nodes, height, width)


def displacement_field(nodes, height, width):
    """The nodes' (B, 2, 3, 3) displacements interpolated bicubically to (B, 2, H, W), the
    corner nodes on the corner pixels: a smooth field that passes through every node."""
    return F.interpolate(nodes, size=(height, width), mode="bicubic", align_corners=True)


def warp(x, field, mode):
    """x resampled where the field points: output pixel p takes the value at p + field(p),
    mirrored at the border. "bicubic" for images; "nearest" for masks and weight maps, whose
    values must stay the ones they were (no 0.5 on a mask's edge).

    Inputs:
    - x: (B, C, H, W); field: (B, 2, H, W) float64, (dy, dx) in pixels, on x's device
    Returns:
    - (B, C, H, W) in x's dtype
    """
    height, width = x.shape[-2:]
    rows, cols = (torch.arange(n, dtype=field.dtype, device=field.device) for n in (height, width))
    # grid_sample wants (x, y) in [-1, 1], ±1 the centres of the corner pixels (align_corners)
    sample_x = (cols + field[:, 1]) * (2 / (width - 1)) - 1  # (B, H, W)
    sample_y = (rows[:, None] + field[:, 0]) * (2 / (height - 1)) - 1
    # Bicubic in float64 keeps a zero field the identity (float32's rounding of the sample points
    # moves noisy images by up to 2e-5). On the CPU it costs 2 ms a batch of 16 rather than 0.8,
    # beside a training step of about 100. Nearest neighbour only needs the pixel, in x's dtype.
    dtype = torch.float64 if mode == "bicubic" else x.dtype
    grid = torch.stack([sample_x, sample_y], dim=-1).to(dtype)  # (B, H, W, 2)
    out = F.grid_sample(x.to(dtype), grid, mode=mode, padding_mode="reflection", align_corners=True)
    return out.to(x.dtype)


def augment(images, targets, config, generator):
    """The batch as the network trains on it (--augment): "flips" (random turns and mirrors),
    "elastic" (those, then one elastic deformation per image) or "none". The targets (masks,
    weight maps) follow their image through the same transform; a weight map is warped with
    its mask rather than recomputed, which smooth deformations leave nearly exact.

    Returns:
    - images, targets, and the displacement field (B, 2, H, W) used, or None
    """
    field = None
    if config.augment != "none":
        images, *targets = random_flips([images, *targets], generator)
    if config.augment == "elastic":
        _, field = elastic_displacements(len(images), *images.shape[-2:], config.elastic_sigma, generator)
        field = field.to(images.device)
        images, targets = warp(images, field, "bicubic"), [warp(t, field, "nearest") for t in targets]
    return images, targets, field


def augmentation_examples(data, config, count=5):
    """The first training image and its mask, then under `count` draws of the run's
    augmentation, with each draw's displacement field (None without elastic deformation):
    what augmentation.png shows."""
    generator = torch.Generator().manual_seed(config.seed)
    image, mask, _ = first_training_example(data, config)
    images, (masks,), field = augment(
        image.repeat(count, 1, 1, 1), [mask.repeat(count, 1, 1, 1)], config, generator
    )
    return image[0, 0].numpy(), mask[0, 0].numpy(), images[:, 0].numpy(), masks[:, 0].numpy(), field


# ----------------------------------------------------------------------------- training


def build_model(config, device):
    """The configured UNet on `device`, in the memory layout that trains fastest there.

    channels_last (NHWC) lets oneDNN on the CPU and tensor cores on CUDA run convolutions
    without reordering: 1.5× more training steps per second on 2 CPU cores (README).
    """
    model = UNet(**model_args(config)).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast_for(config, device):
    """A context for the forward pass: bf16 autocast on CUDA (tensor cores, and bf16 keeps
    fp32's range, so no loss scaling), plain fp32 elsewhere."""
    enabled = config.mixed_precision and device.type == "cuda"
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=enabled)


def shuffled_batches(n, batch_size, generator):
    """Index batches without end, reshuffled every epoch; an epoch's last, smaller batch is
    dropped. With fewer images than a batch, each batch draws them with replacement."""
    while True:
        if n < batch_size:
            yield torch.randint(n, (batch_size,), generator=generator)
            continue
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def soft_dice_loss(logits, masks, smooth=1.0):
    """1 − soft Dice over the whole batch, (2·Σ p·y + 1) / (Σ p + Σ y + 1) with p = σ(logit).

    It scores overlap rather than pixels, so a rare foreground counts as much as a common one;
    the 1 added above and below keeps an empty mask finite (an empty prediction of it scores 0).
    """
    probabilities = torch.sigmoid(logits.float())
    overlap = (probabilities * masks).sum()
    return 1 - (2 * overlap + smooth) / (probabilities.sum() + masks.sum() + smooth)


def segmentation_loss(logits, masks, weights, loss):
    """--loss: "bce", per-pixel binary cross-entropy of the logits (numerically safer than a
    sigmoid followed by BCE), each pixel's term times its weight (all 1 unless --weight-map);
    "dice", soft Dice, which has no per-pixel terms to weight; "bce+dice", their sum."""
    terms = loss.split("+")
    bce = F.binary_cross_entropy_with_logits(logits, masks, weight=weights) if "bce" in terms else 0
    return bce + (soft_dice_loss(logits, masks) if "dice" in terms else 0)


def train_step(model, images, masks, weights, optimizer, scheduler, autocast, loss="bce"):
    """One optimizer step on the segmentation loss, returning the batch's loss."""
    with autocast():
        loss = segmentation_loss(model(images), masks, weights, loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def total_steps(config, data):
    """--steps if given, else --epochs passes over the training set (`steps_per_epoch`)."""
    return config.steps or config.epochs * steps_per_epoch(data, config)


def make_scheduler(optimizer, config, steps):
    """One-cycle by default: a short warm-up from lr/2, then cosine annealing to ~0, while
    Adam's β1 cycles the other way, 0.95 → 0.85 → 0.95.

    Annealing lets the net, with batch norm, take a peak rate ten times Adam's usual 1e-3:
    it learns fast early and settles late. PyTorch's usual one-cycle settings (30 % warm-up
    from lr/25) spend the first hundred steps barely learning (benchmarks/bench_train.py).
    """
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=steps,
        pct_start=recipe.warm_up_fraction(steps),
        div_factor=recipe.DIV_FACTOR,
    )


class Diverged(Exception):
    """Training went wrong beyond repair: saving its weights would replace good ones with garbage."""


def check_divergence(model, loss, untrained_loss):
    """Raise Diverged if a weight or a batch-norm statistic is NaN, infinite or far beyond the
    order 1 of trained values (--lr 1e10 overflows the running variance while the loss stays
    finite; --lr 10 blows weights up to 1e16, which batch norm's rescaling hides from the loss
    but float32 steps can no longer move; a default run ends below 21), or if the loss is above
    twice the untrained net's."""
    for name, tensor in model.state_dict().items():
        largest = tensor.abs().max().item() if tensor.is_floating_point() else 0
        if not largest <= 1e6:  # trained values stay below about 20; NaN fails this too
            raise Diverged(f"{name} reached {largest:.3g}; trained values are of order 1")
    if not loss <= 2 * untrained_loss:
        raise Diverged(f"the loss is {loss:.3g}, more than twice the untrained net's {untrained_loss:.3g}")


def train(model, optimizer, data, config, device, autocast):
    """Adam on shuffled batches, validated at `evaluation_steps`.

    Returns the history (one entry per validation: `seconds` since training began, evaluation
    included, `train_seconds` without it, the mean training loss since the last entry) and the
    last validation's scores and predicted masks: the run's final result.
    """
    steps = total_steps(config, data)
    scheduler = make_scheduler(optimizer, config, steps)
    batches = training_batches(data, config)
    augmentation = torch.Generator().manual_seed(config.seed + recipe.AUGMENT_SEED)
    checkpoints_at = recipe.evaluation_steps(steps, config.eval_every)
    history, losses, untrained_loss, evaluating, start = [], [], None, 0.0, time.perf_counter()
    for step in tqdm(range(steps + 1), desc="training", unit="step", file=sys.stdout):
        if step > 0:
            images, masks, weights = (t.to(device) for t in next(batches))
            images, (masks, weights), _ = augment(images, [masks, weights], config, augmentation)
            losses.append(
                train_step(model, images, masks, weights, optimizer, scheduler, autocast, config.loss)
            )
            if not math.isfinite(losses[-1]):
                raise Diverged(f"the loss became {losses[-1]} at step {step}")
            untrained_loss = untrained_loss or losses[0]  # step 1's, measured before its update
        if step in checkpoints_at:
            began = time.perf_counter()
            loss, losses = (float(np.mean(losses)) if losses else None), []
            if step > 0:
                check_divergence(model, loss, untrained_loss)
            scores, preds = evaluate(model, data.val, device, autocast)
            evaluating += time.perf_counter() - began
            seconds = time.perf_counter() - start
            timing = {"seconds": round(seconds, 3), "train_seconds": round(seconds - evaluating, 3)}
            history.append({"step": step, **timing, "train_loss": loss} | scores)
            shown = "  -   " if loss is None else f"{loss:.4f}"
            tqdm.write(f"step {step:5d}  loss {shown}  {describe_scores(scores)}", file=sys.stdout)
    return history, scores, preds


# ----------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict_masks(model, images, device, autocast, batch_size=64):
    """Binary masks (N, 1, H, W) as NumPy: logit > 0 is probability > 0.5."""
    model.eval()
    masks = []
    for start in range(0, len(images), batch_size):
        with autocast():
            logits = model(images[start : start + batch_size].to(device))
        masks.append((logits > 0).cpu().numpy())
    model.train()
    return np.concatenate(masks).astype(np.float32)


def evaluate(model, held_out, device, autocast, prefix="val"):
    """Scores on a held-out set (images, masks, instances or None) and the predicted masks;
    object F1 too where instances are known. Your own images (a list) are scored whole."""
    if isinstance(held_out, list):
        return evaluate_whole_images(model, held_out, device, prefix)
    images, truth, instances = held_out
    preds = predict_masks(model, images, device, autocast)
    return segmentation_scores(preds, truth.numpy(), instances, prefix), preds


def evaluate_whole_images(model, annotated, device, prefix):
    """Each image segmented whole, tile by tile, exactly as --predict segments it (--tile and
    --margin at their defaults), then scored; the scores are means over the images, object F1
    among them if every mask held instance labels. Returns the scores and the (H, W) masks."""
    architecture = {"depth": len(model.encoder), "padding": "same"}  # training is in same padding
    model.eval()
    preds = [segment_image(model, architecture, a.image[None], device, TILE, MARGIN)[0] for a in annotated]
    model.train()
    labelled = all(a.labelled for a in annotated)
    per_image = [
        segmentation_scores(
            pred[None, None], a.mask[None, None], a.instances[None] if labelled else None, prefix
        )
        for pred, a in zip(preds, annotated, strict=True)
    ]
    return {key: float(np.mean([scores[key] for scores in per_image])) for key in per_image[0]}, preds


# ----------------------------------------------------------------------------- outputs


def describe_data(data, config):
    """What trains, in words, for the run's first line."""
    if isinstance(data, TileData):
        pixels = sum(a.image.size for a in data.train)
        return (
            f"tiles of {config.size}×{config.size} from {len(data.train)} images ({pixels:,} pixels; "
            f"{len(data.val)} held out), {total_steps(config, data)} steps"
        )
    return f"{config.train_size} images of {config.size}×{config.size}"


def augmentation_name(config):
    """--augment in words, σ included, for the summary and the figures."""
    if config.augment == "elastic":
        return f"flips and elastic deformation (σ {config.elastic_sigma:g} px)"
    return {"none": "no augmentation", "flips": "flips (90° turns and mirrors)"}[config.augment]


def loss_name(config):
    """The training loss in words, for the curves' legend."""
    names = {"bce": "BCE", "dice": "soft Dice loss", "bce+dice": "BCE + soft Dice"}
    return names[config.loss] + " (BCE weighted by the weight map, eq. 2)" * config.weight_map


def training_outputs(out, checkpoint, config):
    """Every file a training run writes, in the order it writes them: the checkpoint first, as it
    is what costs minutes to remake (if the disk fills up, the figures are what is missing)."""
    figures = [
        "metrics.json",
        "pytorch_unet_segmentation.png",
        "prediction_errors.png",
        "training_curves.png",
    ]
    figures += ["weight_map.png"] * config.weight_map
    figures += ["augmentation.png"] * (config.augment != "none")
    return [checkpoint, checkpoint.with_suffix(".npz"), *(out / name for name in figures)]


SHOWN, SHOWN_SIDE = 4, 256  # held-out images in the figures, and the largest side shown of your own


def figure_examples(data, preds):
    """(images, masks, predicted masks) (N, 1, H, W) and instances (N, H, W) or None for the
    figures: the first test circles, or the top-left corners of your own held-out images, cut
    to one size."""
    if isinstance(data, TileData):
        shown = list(zip(data.val, preds, strict=True))[:SHOWN]
        height = min(SHOWN_SIDE, *(a.image.shape[0] for a, _ in shown))
        width = min(SHOWN_SIDE, *(a.image.shape[1] for a, _ in shown))
        corner = np.s_[:height, :width]
        images, masks, preds = (
            np.stack([x[corner] for x in column])[:, None]
            for column in zip(*[(a.image, a.mask, p) for a, p in shown], strict=True)
        )
        labelled = all(a.labelled for a, _ in shown)
        return images, masks, preds, np.stack([a.instances[corner] for a, _ in shown]) if labelled else None
    images, masks, instances = data.test
    shown = slice(0, SHOWN)
    return (
        images.numpy()[shown],
        masks.numpy()[shown],
        preds[shown],
        None if instances is None else instances[shown],
    )


def save_outputs(args, config, step, model, optimizer, history, final, data, preds):
    """The checkpoint (.pt and .npz, one run_id), metrics.json, the figure the README shows, the
    errors, the curves, with --weight-map the map itself, and with --augment what it draws."""
    run_id, out = checkpoints.new_run_id(), args.out
    checkpoints.save(
        args.checkpoint,
        model_args=model_args(config),
        state=model.state_dict(),
        optimizer=optimizer.state_dict(),
        config=asdict(config),
        run_id=run_id,
        step=step,
    )
    save_json(
        out / "metrics.json", {"run_id": run_id, "config": asdict(config), "history": history, "final": final}
    )
    images, masks, preds, instances = figure_examples(data, preds)
    variant = "" if config.skip else " without skip connections"
    variant += ", touching circles" * config.touching + ", weight map" * config.weight_map
    variant += f", {config.augment} augmentation" * (config.augment != "none")
    variant += f", {config.loss} loss" * (config.loss != "bce")
    labels = [f"Dice {d:.3f}" for d in dice(preds, masks, per_image=True)]
    segmentation, errors = out / "pytorch_unet_segmentation.png", out / "prediction_errors.png"
    title = f"U-Net{variant}: {describe_scores(final)}"
    plotting.save_segmentation_figure(images, masks, preds, segmentation, title=title, row_labels=labels)
    plotting.save_error_figure(images, preds, masks, errors, instances)
    plotting.save_training_curves(history, out / "training_curves.png", loss=loss_name(config))
    if config.weight_map:
        train = first_training_example(data, config)
        plotting.save_weight_map_figure(*(t[0, 0].numpy() for t in train), out / "weight_map.png")
    if config.augment != "none":
        path = out / "augmentation.png"
        plotting.save_augmentation_figure(
            *augmentation_examples(data, config), path, title=augmentation_name(config)
        )


# ----------------------------------------------------------------------------- your own image


TILE, MARGIN = 128, 16  # --predict's tiles, and the output pixels each drops (same padding)


def segment_image(model, args, image, device, tile, margin):
    """Mask (H, W) of a (1, H, W) standardised image of any size: the trained net run on tiles of
    `tile` px placed on the 2**depth grid, `margin` output pixels dropped around each (common/
    tiling.py). Returns the mask and the distance between tile seams."""
    align = 2 ** args["depth"]

    @torch.inference_mode()
    def forward(window):  # (1, C, tile, tile) → (1, K, t, t)
        return model(torch.from_numpy(window).to(device)).float().cpu().numpy()

    logits = predict_tiled(image, forward, tile, align, margin)  # (K, H, W)
    return foreground(logits), kept_step(output_size(tile, args["depth"], args["padding"]), align, margin)


@dataclass
class Job:
    """One image to segment: its file, its pixels, and with --truth the true objects."""

    path: Path
    pixels: np.ndarray  # (H, W) in the file's own scale
    truth: dataset.Annotated | None = None


def predict(args, device, checkpoint, jobs):
    """Segment each image with a trained checkpoint and write its files into --out; with
    --truth, score the masks and draw where they are wrong."""
    model = UNet(**checkpoint.model_args).to(device).eval()
    model.load_state_dict({name: torch.from_numpy(value) for name, value in checkpoint.state.items()})
    exact = exact_margin(checkpoint.model_args["depth"]) if checkpoint.model_args["padding"] == "same" else 0
    for job in jobs:
        mask, step = segment_file(model, checkpoint, job, args, device)
        outputs = prediction_outputs(args, job.path)
        writes = {
            outputs[0]: png_writer(mask_pixels(mask)),
            outputs[1]: png_writer(plotting.overlay_pixels(job.pixels, mask, grid=step)),
        }
        if args.labels:  # 16-bit: up to 65,535 objects
            labels = label_components(mask[None])[0]
            if labels.max() > MAX_LABEL:
                cli.warn(f"{job.path}: {labels.max():,} objects; those past {MAX_LABEL:,} share its label")
            writes[outputs[2]] = png_writer(np.minimum(labels, MAX_LABEL).astype(np.uint16))
        atomic_write_all(writes)  # as one
        height, width = mask.shape
        print(f"{job.path}: {width}×{height} pixels, {mask.mean():.1%} foreground")
        if step:
            print(
                f"tiles of {args.tile} px every {step} px, margin {args.margin} px (seamless from {exact} px)"
            )
        if job.truth:
            print(describe_scores(score_against_truth(mask, job.truth, outputs[-1])))
        print("wrote " + ", ".join(map(str, outputs)))


def segment_file(model, checkpoint, job, args, device):
    """The mask (H, W) of one image file, and the distance between tile seams (None if none)."""
    if job.pixels.std(dtype=np.float64) < 1e-6:  # standardising would divide by ~0: noise of nothing
        cli.warn(f"{job.path} is uniform: there is nothing to segment, so the mask is all background")
        return np.zeros(job.pixels.shape, bool), None
    image = standardize(job.pixels[None, None])[0]  # (1, H, W)
    return segment_image(model, checkpoint.model_args, image, device, args.tile, args.margin)


def score_against_truth(mask, truth, errors_path):
    """--truth: Dice, IoU, boundary F1 and object F1 of the mask, and its error figure."""
    pred, true = mask[None, None], truth.mask[None, None]
    scores = segmentation_scores(pred, true, truth.instances[None], prefix="truth")
    image = truth.image[None, None]
    plotting.save_error_figure(
        image, pred.astype(np.float32), true.astype(np.float32), errors_path, truth.instances[None]
    )
    return scores


# ----------------------------------------------------------------------------- main


CHECKPOINT_HELP = "training: the .pt to write, an .npz beside it; --predict: the .pt or .npz to use"


def build_parser():
    parser = cli.ArgumentParser(
        description="Train a U-Net on synthetic circles: figures and metrics.json go into --out, the weights "
        "into --checkpoint. With --predict, segment an image with a trained checkpoint instead."
    )
    cli.add_options(parser, TrainConfig)  # the recipe; below, the files
    add = parser.add_argument
    add("--out", type=cli.writable_folder, help="output folder (default: assets; predictions with --predict)")
    add("--checkpoint", type=cli.file_path, default=Path("checkpoints/unet_circles.pt"), help=CHECKPOINT_HELP)
    add("--resume", type=cli.readable_file, help="start from this .pt's weights and Adam state")
    add(
        "--predict",
        type=cli.readable_file_or_folder,
        help=f"segment this image (≤ {MAX_PIXELS:,} pixels), or each image in this folder, instead",
    )
    add("--labels", action="store_true", help="--predict: also write each mask's objects as 16-bit labels")
    add("--truth", type=cli.readable_file_or_folder, help="--predict: score against this mask (or folder)")
    add("--overwrite", action="store_true", help="let --predict replace files already in --out")
    add("--tile", type=cli.whole_number(1, 4096), default=TILE, help="--predict: one tile's side in pixels")
    add("--margin", type=cli.whole_number(0, 1024), help="--predict: px dropped around a tile (default 16)")
    return parser


def check_training(parser, args, device):
    """(config, checkpoint to resume or None): every option checked before any work. The config
    records what the run uses: the device found for "auto", no mixed precision off CUDA."""
    config = cli.config_from(args, TrainConfig)
    own = config.images is not None
    config = replace(
        config,
        device=device.type,
        mixed_precision=config.mixed_precision and device.type == "cuda",
        augment=("elastic" if own else "none") if config.augment == "auto" else config.augment,
    )
    circles = (0, 0) if own else (config.train_size, 2 * config.val_size)  # training; validation and test
    memory = training_memory_problems(
        *circles, config.size, config.batch_size, config.base_channels, config.depth
    )
    outputs = training_outputs(args.out, args.checkpoint, config)
    needs_instances = "needs --touching or --images, whose masks give the objects the map is built from"
    unweighted_dice = "dice has no per-pixel terms for --weight-map to weigh; use --loss bce or bce+dice"
    cli.check_rules(
        parser,
        [  # (option, what is wrong or a false value), in the order a user should fix them
            *dataset.option_rules(config, TrainConfig()),
            *[(name, getattr(args, name[2:]) and "is for --predict") for name in ("--labels", "--truth")],
            ("--size", size_error(config.size, config.depth, "same")),
            *memory,
            (
                "--batch-size",
                config.norm == "batch"
                and batch_norm_problem(config.batch_size, config.size, config.depth, "same"),
            ),
            ("--weight-map", config.weight_map and not (config.touching or own) and needs_instances),
            ("--loss", config.loss == "dice" and config.weight_map and unweighted_dice),
            (
                "--elastic-sigma",
                config.augment != "elastic"
                and config.elastic_sigma != ELASTIC_SIGMA
                and "is for --augment elastic",
            ),
            ("--checkpoint", args.checkpoint.suffix != ".pt" and "give a .pt path; the .npz goes beside it"),
            ("--checkpoint", cli.first_refusal(outputs[:2])),
            ("--checkpoint", next(filter(None, map(foreign, outputs[:2])), None)),  # the user's own file?
            ("--out", cli.first_refusal(outputs[2:])),
        ],
    )
    resumed = None
    if args.resume:
        try:
            resumed = checkpoints.load(args.resume)
            checkpoints.check_resumable(resumed, model_args(config))
        except CheckpointError as error:
            parser.error(f"argument --resume: {error}")
    return config, resumed, read_own_data(parser, config) if own else None


def read_own_data(parser, config):
    """Your images and masks read, checked and split (common/dataset.py), and what should be
    known before minutes of training said; any refusal is one line and exit status 2."""
    try:
        train = dataset.read_folders(config.images, config.masks)
        if not config.val_images:  # the gap: no training tile's context reaches a held-out strip
            train, val = dataset.hold_out(train, config.val_fraction, exact_margin(config.depth), config.size)
    except DataError as error:
        parser.error(f"argument --images: {error}")
    if config.val_images:
        try:
            val = dataset.read_folders(config.val_images, config.val_masks)
        except DataError as error:
            parser.error(f"argument --val-images: {error}")
    cli.check_rules(parser, [("--size", dataset.problems(train, config.size))])
    for warning in dataset.warnings(train, config.batch_size, config.size, config.norm, config.weight_map):
        cli.warn(warning)
    data = tile_data(config, train, val)
    steps = total_steps(config, data)
    if config.steps is None and steps < FEW_STEPS:
        cli.warn(
            f"--epochs {config.epochs} make {steps} steps here ({steps_per_epoch(data, config)} an epoch), "
            f"too few: the worked example needs about {FEW_STEPS} (README, section 7); give --steps"
        )
    return data


def prediction_outputs(args, image):
    """What --predict writes for one image: its mask, overlay, labels (--labels), errors (--truth)."""
    names = ["mask", "overlay"] + ["labels"] * args.labels + ["errors"] * bool(args.truth)
    return [args.out / f"{image.stem}_{name}.png" for name in names]


def check_prediction(parser, args):
    """(checkpoint, the images) for --predict, each checked before any work."""
    images = dataset.image_files(args.predict) if args.predict.is_dir() else [args.predict]
    outputs = [path for image in images for path in prediction_outputs(args, image)]
    existing = next((path for path in outputs if os.path.lexists(path)), None)
    cli.check_rules(
        parser,
        [
            ("--resume", args.resume and "is for training; --predict uses --checkpoint"),
            *cli.unused_options(
                args, TrainConfig, "is for training; --checkpoint decides the network", "device"
            ),
            ("--out", existing and not args.overwrite and f"{existing} exists; --overwrite replaces it"),
            ("--out", cli.first_refusal(outputs)),
        ],
    )
    try:
        checkpoint = checkpoints.load(args.checkpoint)
    except CheckpointError as error:
        parser.error(f"argument --checkpoint: {error}")
    depth, padding = checkpoint.model_args["depth"], checkpoint.model_args["padding"]
    args.margin = (MARGIN if padding == "same" else 0) if args.margin is None else args.margin
    cli.check_rules(parser, tiling_problems(args.tile, args.margin, depth, padding))
    try:
        jobs = [Job(*read) for read in dataset.read_for_prediction(args.predict, args.truth)]
    except DataError as error:
        parser.error(f"argument --predict: {error}")
    return checkpoint, jobs


def run_training(args, device, config, resumed, data):
    """Model → data → training → outputs: the lesson's main line."""
    torch.manual_seed(config.seed)
    model = build_model(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if resumed:
        model.load_state_dict({name: torch.from_numpy(value) for name, value in resumed.state.items()})
        # Adam's moments carry over; its settings (rate, betas) are this run's recipe.
        fresh = optimizer.state_dict()["param_groups"]  # numbers the parameters as the saved one does
        optimizer.load_state_dict({"state": resumed.optimizer["state"], "param_groups": fresh})
    data = data or make_data(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"UNet(base_channels={config.base_channels}, depth={config.depth}, norm={config.norm}): "
        f"{n_params:,} parameters, "
        f"training on {device.type}, {describe_data(data, config)}, "
        f"{augmentation_name(config)}, loss {config.loss}"
        + (f", resuming {args.resume} at step {resumed.step}" if resumed else "")
    )
    autocast = autocast_for(config, device)
    try:
        history, _, _ = train(model, optimizer, data, config, device, autocast)
    except Diverged as error:
        sys.exit(
            f"01_pytorch.py: training diverged: {error}; nothing was saved. Try a lower --lr ({config.lr:g})."
        )
    if data.test is None:  # your own images: the held-out ones
        final, preds = evaluate(model, data.val, device, autocast)
    else:
        final, preds = evaluate(model, data.test, device, autocast, prefix="test")  # images no choice saw
    step = (resumed.step if resumed else 0) + total_steps(config, data)
    save_outputs(args, config, step, model, optimizer, history, final, data, preds)
    print(f"final: {describe_scores(final)}  ({history[-1]['seconds']:.1f} s of training)")
    print("wrote " + ", ".join(map(str, training_outputs(args.out, args.checkpoint, config))))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.out = args.out or Path("predictions" if args.predict else "assets")
    device = cli.torch_device(parser, args.device)
    if args.predict:
        predict(args, device, *check_prediction(parser, args))
    else:
        run_training(args, device, *check_training(parser, args, device))


if __name__ == "__main__":
    cli.run(main)
