"""U-Net in PyTorch: train it on synthetic circles and look at what it learned.

Read top to bottom: the network's parts → the network → data, one training step, evaluation
and the training loop → the outputs (figure, curves, metrics.json, checkpoint) → segmenting
an image of any size, tile by tile → main().

    python 01_pytorch.py                         # about 40 seconds on 2 CPU cores
    python 01_pytorch.py --no-skip               # the same net with its skip connections cut
    python 01_pytorch.py --touching --weight-map # touching circles, the paper's weight map
    python 01_pytorch.py --predict picture.png   # segment your own image with the trained net
"""

import functools
import math
import pickle
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.cli import ArgumentParser, non_negative_int, positive_float, positive_int
from common.data import standardize, synthetic_circles, touching_circles
from common.files import (
    CheckpointError,
    atomic_write,
    first_mismatch,
    save_json,
    save_weights_npz,
    unwritable_reason,
)
from common.geometry import nearest_valid_sizes, output_size, size_error
from common.metrics import boundary_f1, dice, iou, object_f1
from common.plotting import (
    save_grey_png,
    save_overlay,
    save_segmentation_figure,
    save_training_curves,
    save_weight_map_figure,
)
from common.tiling import kept_step, predict_tiled
from common.weights import weight_map

# ----------------------------------------------------------------------------- the network


class DoubleConv(nn.Module):
    """(3×3 conv => [BN] => ReLU) × 2 — paper, Fig. 1, the blue arrows of every level."""

    def __init__(self, in_channels, out_channels, padding, batchnorm):
        super().__init__()
        pad = 1 if padding == "same" else 0
        # A convolution's bias is redundant right before batch norm, which subtracts the mean.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


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
    UNet(out_channels=2, base_channels=64, depth=4, padding="valid", batchnorm=False) is
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
        batchnorm=True,
        skip=True,
    ):
        super().__init__()
        self.skip = skip
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, padding, batchnorm)
            for c_in, c_out in zip([in_channels] + channels[:-2], channels[:-1], strict=True)
        )
        self.bottleneck = DoubleConv(channels[-2], channels[-1], padding, batchnorm)
        # Up-convolution (paper: "a 2×2 convolution that halves the number of feature channels").
        self.up_convs = nn.ModuleList(
            nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2) for c in reversed(channels[1:])
        )
        self.decoder = nn.ModuleList(
            DoubleConv(c, c // 2, padding, batchnorm) for c in reversed(channels[1:])
        )
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


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Everything that decides a run; saved in metrics.json so a result names its recipe."""

    epochs: int = 10
    steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-2
    schedule: str = "one-cycle"
    size: int = 64
    depth: int = 3
    base_channels: int = 8
    train_size: int = 1000
    val_size: int = 128
    seed: int = 0
    eval_every: int = 100
    device: str = "auto"
    skip: bool = True
    channels_last: bool = True
    mixed_precision: bool = True
    touching: bool = False
    weight_map: bool = False


def model_kwargs(config):
    """The UNet keyword arguments a config implies: what a checkpoint needs to rebuild it."""
    return dict(
        in_channels=1,
        out_channels=1,
        base_channels=config.base_channels,
        depth=config.depth,
        padding="same",
        batchnorm=True,
        skip=config.skip,
    )


@dataclass
class CircleData:
    """Training and validation tensors (N, 1, H, W); the validation instance labels with
    --touching, for object F1; per-pixel loss weights, all 1 unless --weight-map."""

    train_images: torch.Tensor
    train_masks: torch.Tensor
    train_weights: torch.Tensor
    val_images: torch.Tensor
    val_masks: torch.Tensor
    val_instances: np.ndarray | None


def make_data(config):
    """The training set and a validation set from another seed: images the net never trains on."""
    val_seed = config.seed + 10_000
    if config.touching:
        train_images, train_masks, train_instances = touching_circles(
            config.train_size, config.size, seed=config.seed
        )
        val_images, val_masks, val_instances = touching_circles(config.val_size, config.size, seed=val_seed)
    else:
        train_images, train_masks = synthetic_circles(config.train_size, config.size, seed=config.seed)
        val_images, val_masks = synthetic_circles(config.val_size, config.size, seed=val_seed)
        val_instances = None
    if config.weight_map:
        train_weights = np.stack([weight_map(instances) for instances in train_instances])[:, None]
    else:
        train_weights = np.ones_like(train_masks)
    tensors = map(torch.from_numpy, (train_images, train_masks, train_weights, val_images, val_masks))
    return CircleData(*tensors, val_instances)


def build_model(config, device):
    """The configured UNet on `device`, in the memory layout that trains fastest there.

    channels_last (NHWC) lets oneDNN on the CPU and tensor cores on CUDA run convolutions
    without reordering: 1.5× more training steps per second on 2 CPU cores (README).
    """
    model = UNet(**model_kwargs(config)).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast_for(config, device):
    """A context for the forward pass: bf16 autocast on CUDA (tensor cores, and bf16 keeps
    fp32's range, so no loss scaling), plain fp32 elsewhere."""
    enabled = config.mixed_precision and device.type == "cuda"
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=enabled)


def pick_device(name):
    """The torch device for --device, or a one-line reason why it is not available here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), None
        if torch.backends.mps.is_available():
            return torch.device("mps"), None
        return torch.device("cpu"), None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        return None, f"argument --device: {name} is not available on this machine; use cpu or auto"
    return torch.device(name), None


def shuffled_batches(n, batch_size, generator):
    """Index batches without end, reshuffled every epoch; an epoch's last, smaller batch is dropped."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def train_step(model, images, masks, weights, optimizer, scheduler, autocast):
    """One optimizer step on per-pixel binary cross-entropy of the logits (numerically
    safer than a sigmoid followed by BCE), each pixel's term times its weight (all 1 unless
    --weight-map), returning the batch loss."""
    with autocast():
        loss = F.binary_cross_entropy_with_logits(model(images), masks, weight=weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


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


def evaluate(model, data, device, autocast):
    """Validation scores and the predicted masks; object F1 too where instances are known."""
    preds = predict_masks(model, data.val_images, device, autocast)
    truth = data.val_masks.numpy()
    scores = {
        "val_dice": dice(preds, truth),
        "val_iou": iou(preds, truth),
        "val_boundary_f1": boundary_f1(preds, truth),
    }
    if data.val_instances is not None:
        scores["val_object_f1"] = object_f1(preds, data.val_instances)
    return scores, preds


def make_scheduler(optimizer, config, total_steps):
    """One-cycle by default: a short warm-up from lr/2, then cosine annealing to ~0.

    Annealing lets the net, with batch norm, take a peak rate ten times Adam's usual 1e-3:
    it learns fast early and settles late. PyTorch's usual one-cycle settings (30 % warm-up
    from lr/25) spend the first hundred steps barely learning (benchmarks/bench_train.py).
    """
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.05, div_factor=2
    )


class Diverged(Exception):
    """The loss became NaN or infinite: every later step would train on garbage."""


def train(model, optimizer, data, config, device, autocast):
    """Adam on shuffled batches; validates every `eval_every` steps and after the last one.

    Returns the history: one entry per validation, `seconds` counted from the first step.
    """
    total_steps = config.epochs * (len(data.train_images) // config.batch_size)
    if config.steps is not None:
        total_steps = min(total_steps, config.steps)
    scheduler = make_scheduler(optimizer, config, total_steps)
    batches = shuffled_batches(
        len(data.train_images), config.batch_size, torch.Generator().manual_seed(config.seed)
    )

    history, losses = [], []
    start = time.perf_counter()
    for step in tqdm(range(1, total_steps + 1), desc="training", unit="step", file=sys.stdout):
        index = next(batches)
        images, masks, weights = (
            t[index].to(device) for t in (data.train_images, data.train_masks, data.train_weights)
        )
        loss = train_step(model, images, masks, weights, optimizer, scheduler, autocast)
        if not math.isfinite(loss):
            raise Diverged(f"the loss became {loss} at step {step}")
        losses.append(loss)
        if step % config.eval_every == 0 or step == total_steps:
            scores, _ = evaluate(model, data, device, autocast)
            history.append(
                {
                    "step": step,
                    "seconds": round(time.perf_counter() - start, 3),
                    "train_loss": float(np.mean(losses)),
                    "val_dice": scores["val_dice"],
                    "val_iou": scores["val_iou"],
                }
            )
            losses = []
            tqdm.write(
                f"step {step:5d}  loss {history[-1]['train_loss']:.4f}  val Dice {scores['val_dice']:.4f}  "
                f"IoU {scores['val_iou']:.4f}  boundary F1 {scores['val_boundary_f1']:.4f}",
                file=sys.stdout,
            )
    return history


# ----------------------------------------------------------------------------- outputs


def save_checkpoint(model, optimizer, kwargs, path):
    """`.pt` for PyTorch — weights, the UNet keyword arguments, and Adam's moments for --resume —
    and a same-stem `.npz` with the same weights under the same keys for 00_scratch.py, which
    runs the trained net without torch."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    checkpoint = {"state_dict": state, "config": kwargs, "optimizer": optimizer.state_dict()}
    atomic_write(path, lambda file: torch.save(checkpoint, file))
    save_weights_npz(Path(path).with_suffix(".npz"), state, kwargs)


def load_checkpoint(path, kwargs=None):
    """A checkpoint of this script for a UNet(**kwargs) — for the network its own config
    describes when kwargs is None — or CheckpointError saying why not.

    `weights_only=True` unpickles tensors and plain containers only: a file that asks for
    anything else (a function to call, say) is refused before any of it runs.
    """
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error below says more
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused:
            raise CheckpointError(
                f"{path} was refused: loading it would call {refused.group(1)}, and this script never "
                "runs code from a file"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint") from None
    except (RuntimeError, OSError, EOFError, ValueError):
        raise CheckpointError(f"{path} is damaged or truncated") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "config", "optimizer"} <= checkpoint.keys():
        raise CheckpointError(
            f"{path} was not written by 01_pytorch.py (it lacks state_dict, config or optimizer)"
        )
    if kwargs is None:
        kwargs = checkpoint["config"]
    if checkpoint["config"] != kwargs:
        differences = ", ".join(
            f"{name}={checkpoint['config'].get(name)} (this run: {value})"
            for name, value in kwargs.items()
            if checkpoint["config"].get(name) != value
        )
        raise CheckpointError(f"{path} was trained with {differences}; pass the same options to resume it")
    try:
        expected = {name: tuple(value.shape) for name, value in UNet(**kwargs).state_dict().items()}
    except (TypeError, ValueError, IndexError) as error:
        raise CheckpointError(f"{path} has a config no UNet can take ({error})") from None
    problem = first_mismatch(
        {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items()}, expected
    )
    if problem:
        raise CheckpointError(f"{path} does not fit this network: {problem}")
    return checkpoint


def save_outputs(out, config, history, final, data, preds):
    """The figure the README shows, the curves, metrics.json, and with --weight-map the map."""
    images, masks = data.val_images.numpy(), data.val_masks.numpy()
    rows = slice(0, 4)
    variant = "" if config.skip else " without skip connections"
    if config.touching:
        variant += ", touching circles" + (", weight map" if config.weight_map else "")
    scores = f"validation Dice {final['val_dice']:.3f}, boundary F1 {final['val_boundary_f1']:.3f}"
    if "val_object_f1" in final:
        scores += f", object F1 {final['val_object_f1']:.3f}"
    per_image = dice(preds[rows], masks[rows], per_image=True)
    save_segmentation_figure(
        images[rows],
        masks[rows],
        preds[rows],
        out / "pytorch_unet_segmentation.png",
        title=f"U-Net{variant}: {scores}",
        row_labels=[f"Dice {d:.3f}" for d in per_image],
    )
    save_training_curves(history, out / "training_curves.png")
    if config.weight_map:
        save_weight_map_figure(
            data.train_images[0, 0].numpy(),
            data.train_masks[0, 0].numpy(),
            data.train_weights[0, 0].numpy(),
            out / "weight_map.png",
        )
    save_json(out / "metrics.json", {"config": asdict(config), "history": history, "final": final})


# ----------------------------------------------------------------------------- your own image

TILE = 128  # input side of one tile
# Context dropped around each tile of a same-padding net, whose tiles see zeros past their
# edges: with 16 px, the trained net's mask of a 1024×1024 image agrees with a whole-image
# pass on 99.9998 % of pixels, in about the same time (README, "Any image size").
MARGIN = 16


def read_grayscale(path):
    """(1, H, W) float32 from a PNG or JPEG, standardised as the training images are."""
    pixels = matplotlib.image.imread(path)  # (H, W), (H, W, 3) or (H, W, 4)
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=-1)  # grey, ignoring any alpha channel
    return standardize(pixels.astype(np.float32))[None]


def segment_image(model, kwargs, image, device):
    """Mask (H, W) of an image of any size: the trained net run tile by tile (common/tiling.py).

    Returns the mask and the distance between tile seams, for drawing the grid."""
    depth, padding = kwargs["depth"], kwargs["padding"]
    tile = TILE if output_size(TILE, depth, padding) else nearest_valid_sizes(TILE, depth, padding)[1]
    margin = MARGIN if padding == "same" else 0  # a valid net's tiles are exact already

    @torch.inference_mode()
    def forward(window):  # (1, C, tile, tile) → (1, K, t, t)
        return model(torch.from_numpy(window).to(device)).float().cpu().numpy()

    logits = predict_tiled(image, forward, tile, 2**depth, margin)  # (1, H, W)
    return logits[0] > 0, kept_step(output_size(tile, depth, padding), 2**depth, margin)


def predict(image_path, checkpoint, image, device):
    """Segment one image with a trained checkpoint; save the mask and an overlay beside it."""
    kwargs = checkpoint["config"]
    model = UNet(**kwargs).to(device).eval()
    model.load_state_dict(checkpoint["state_dict"])
    mask, step = segment_image(model, kwargs, image, device)
    stem = image_path.with_suffix("")
    save_grey_png(mask, f"{stem}_mask.png")
    save_overlay(image[0], mask, f"{stem}_overlay.png", grid=step)
    print(
        f"{image_path}: {image.shape[2]}×{image.shape[1]} pixels, {mask.mean():.1%} foreground, "
        f"tiles of {TILE} px placed every {step} px; wrote {stem}_mask.png and {stem}_overlay.png"
    )


# ----------------------------------------------------------------------------- main


def build_parser():
    defaults = TrainConfig()
    parser = ArgumentParser(description="Train a U-Net on synthetic circles and save its figures.")
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.epochs,
        help="passes over the training set (default %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="stop after this many optimizer steps, whatever --epochs says",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="images per optimizer step (default %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=defaults.lr,
        help="peak learning rate of the one-cycle schedule (default %(default)s)",
    )
    parser.add_argument(
        "--schedule",
        choices=("one-cycle", "constant"),
        default=defaults.schedule,
        help="learning-rate schedule; constant is the untuned baseline (default %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=positive_int,
        default=defaults.size,
        help="image side in pixels, a multiple of 2**depth (default %(default)s)",
    )
    parser.add_argument(
        "--depth",
        type=positive_int,
        default=defaults.depth,
        help="number of 2×2 max-pool steps (default %(default)s)",
    )
    parser.add_argument(
        "--base-channels",
        type=positive_int,
        default=defaults.base_channels,
        help="channels of the first level; each level doubles them (default %(default)s)",
    )
    parser.add_argument(
        "--train-size",
        type=positive_int,
        default=defaults.train_size,
        help="training images (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=defaults.seed,
        help="seeds the data, the weights and the batch order (default %(default)s)",
    )
    parser.add_argument(
        "--eval-every",
        type=positive_int,
        default=defaults.eval_every,
        help="validate every this many steps, and always at the end (default %(default)s)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        default="auto",
        help="where to train; auto picks cuda, then mps, then cpu",
    )
    parser.add_argument(
        "--no-skip",
        action="store_true",
        help="cut the skip connections (the decoder gets zeros) to see what they do",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("assets"),
        help="folder for the figures and metrics.json (default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("checkpoints/unet_circles.pt"),
        help="where to save the weights; a .npz with the same stem goes beside it",
    )
    parser.add_argument(
        "--touching",
        action="store_true",
        help="train on clusters of circles 1-3 px apart and score object F1 (a merged pair is two misses)",
    )
    parser.add_argument(
        "--weight-map",
        action="store_true",
        help="weight each pixel's loss by the paper's eq. 2, which stresses the gaps between circles",
    )
    parser.add_argument(
        "--predict",
        type=Path,
        help="segment this PNG/JPEG (any size) with the --checkpoint network instead of training",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        help="start from this checkpoint's weights and optimizer state (same network options)",
    )
    return parser


def check_training(args, parser):
    """(config, device, checkpoint to resume or None): every option checked before any work."""
    config = TrainConfig(
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        size=args.size,
        depth=args.depth,
        base_channels=args.base_channels,
        train_size=args.train_size,
        seed=args.seed,
        eval_every=args.eval_every,
        device=args.device,
        skip=not args.no_skip,
        touching=args.touching,
        weight_map=args.weight_map,
    )
    if config.weight_map and not config.touching:
        parser.error(
            "argument --weight-map: needs --touching, whose circles have the instance labels it is built from"
        )
    problem = size_error(config.size, config.depth, "same")
    if problem:
        parser.error(f"argument --size: {problem}")
    if config.batch_size > config.train_size:
        parser.error(
            f"argument --batch-size: {config.batch_size} is more than --train-size {config.train_size}"
        )
    device, problem = pick_device(config.device)
    if problem:
        parser.error(problem)
    if args.checkpoint.suffix == ".npz":
        parser.error("argument --checkpoint: give a .pt path; the .npz is written beside it")
    for option, folder in (("--out", args.out), ("--checkpoint", args.checkpoint.parent)):
        problem = unwritable_reason(folder)
        if problem:
            parser.error(f"argument {option}: {problem}")
    if args.checkpoint.is_dir():
        parser.error(f"argument --checkpoint: {args.checkpoint} is a folder; give a file name ending in .pt")
    resumed = None
    if args.resume:
        try:
            resumed = load_checkpoint(args.resume, model_kwargs(config))
        except CheckpointError as error:
            parser.error(f"argument --resume: {error}")
    return config, device, resumed


def check_prediction(args, parser):
    """(checkpoint, image, device) for --predict, each checked before any work."""
    device, problem = pick_device(args.device)
    if problem:
        parser.error(problem)
    try:
        checkpoint = load_checkpoint(args.checkpoint)
    except CheckpointError as error:
        parser.error(f"argument --checkpoint: {error}")
    try:
        image = read_grayscale(args.predict)
    except (OSError, ValueError, SyntaxError) as error:
        parser.error(f"argument --predict: cannot read {args.predict} as an image ({error})")
    problem = unwritable_reason(args.predict.parent)
    if problem:
        parser.error(f"argument --predict: the mask goes beside the image, but {problem}")
    return checkpoint, image, device


def run_training(paths, config, device, resumed):
    """Data → model → training → outputs: the lesson's main line."""
    torch.manual_seed(config.seed)
    data = make_data(config)

    model = build_model(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if resumed:
        model.load_state_dict(resumed["state_dict"])
        optimizer.load_state_dict(resumed["optimizer"])
    autocast = autocast_for(config, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"UNet(base_channels={config.base_channels}, depth={config.depth}): {n_params:,} parameters, "
        f"training on {device.type}, {config.train_size} images of {config.size}×{config.size}"
        + (f", resuming {paths.resume}" if resumed else "")
    )

    try:
        history = train(model, optimizer, data, config, device, autocast)
    except Diverged as error:
        sys.exit(f"01_pytorch.py: {error}; nothing was saved. Try a lower --lr (this run: {config.lr}).")
    final, preds = evaluate(model, data, device, autocast)
    save_outputs(paths.out, config, history, final, data, preds)
    save_checkpoint(model, optimizer, model_kwargs(config), paths.checkpoint)
    objects = f"  object F1 {final['val_object_f1']:.4f}" if "val_object_f1" in final else ""
    print(
        f"final: val Dice {final['val_dice']:.4f}  IoU {final['val_iou']:.4f}  "
        f"boundary F1 {final['val_boundary_f1']:.4f}{objects}  ({history[-1]['seconds']:.1f} s of training)"
    )
    print(
        f"wrote {paths.out / 'pytorch_unet_segmentation.png'}, {paths.out / 'training_curves.png'}, "
        f"{paths.out / 'metrics.json'}, {paths.checkpoint} and {paths.checkpoint.with_suffix('.npz')}"
    )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.predict:
        predict(args.predict, *check_prediction(args, parser))
    else:
        run_training(args, *check_training(args, parser))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Every write is atomic, so whatever was on disk before is still whole.
        print(
            "01_pytorch.py: interrupted; files written before now are whole, none half-written",
            file=sys.stderr,
        )
        sys.exit(130)  # the shell's convention for a program ended by Ctrl-C (128 + SIGINT)
