"""Figures, drawn headless: `matplotlib.figure.Figure` needs no display and no pyplot state.
The overlay of a predicted mask is the exception: a raster drawn in NumPy, whatever the image's size."""

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from common.files import atomic_write
from common.metrics import FATES, boundary, dice, label_components, object_fates

COLUMNS = ("Input", "Ground truth", "Predicted mask")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def figure_format(path):
    """The format the path's suffix names ("png", "pdf" or "svg"); ValueError for any other
    suffix, so that a command line can refuse a bad name before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise ValueError(f"{path}: a figure's name must end in one of {', '.join(FIGURE_SUFFIXES)}")
    return suffix[1:]


def save_figure(figure, path):
    """Render to memory in the format the suffix names, then write atomically: a failed
    render never touches `path`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=figure_format(path), dpi=100, bbox_inches="tight")
    atomic_write(path, lambda file: file.write(buffer.getvalue()))


def save_segmentation_figure(images, masks, preds, path, *, title=None, row_labels=None, columns=COLUMNS):
    """N rows of Input | Ground truth | Predicted mask (| more predictions, to compare).

    Inputs:
    - images: (N, 1, H, W) network inputs
    - masks: (N, 1, H, W) binary masks
    - preds: (N, 1, H, W) binary masks, or a list of such arrays, one per extra column
    - title: a line above the grid, e.g. the scores
    - row_labels: N strings drawn left of each row, e.g. per-image Dice
    - columns: the column titles
    """
    predictions = preds if isinstance(preds, list) else [preds]
    rows = len(images)
    figure = Figure(figsize=(3 * len(columns), 3 * rows))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for row in range(rows):
        panels = [images[row, 0], masks[row, 0], *(pred[row, 0] for pred in predictions)]
        for column, (panel, name) in enumerate(zip(panels, columns, strict=True)):
            ax = axes[row, column]
            ax.imshow(panel, cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=14)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=11)
    if title:
        figure.suptitle(title, fontsize=13)
    save_figure(figure, path)


# Okabe & Ito's colour-blind-safe palette (RGB in [0, 1]).
VERMILLION, BLUE, GREEN, ORANGE, SKY, PURPLE = (
    (0.835, 0.369, 0.0),
    (0.0, 0.447, 0.698),
    (0.0, 0.620, 0.451),
    (0.902, 0.624, 0.0),
    (0.337, 0.706, 0.914),
    (0.800, 0.475, 0.655),
)
FATE_COLOURS = {"found": GREEN, "merged": ORANGE, "missed": SKY, "spurious": PURPLE}


def _grey_rgb(image):
    """(H, W) → (H, W, 3) in [0, 1], min..max, dimmed so that colours stand out on it."""
    low, high = image.min(), image.max()
    grey = (image - low) / (high - low) if high > low else np.full(image.shape, 0.5)
    return np.repeat(0.15 + 0.6 * grey[..., None], 3, axis=-1)


def error_image(image, pred, truth):
    """The input in grey, pixels predicted right lightened, false positives in vermillion and
    false negatives in blue: where the net is wrong, and which way."""
    pred, truth = pred != 0, truth != 0
    rgb = _grey_rgb(image)
    rgb[pred & truth] = 0.5 * rgb[pred & truth] + 0.5
    rgb[pred & ~truth] = VERMILLION
    rgb[~pred & truth] = BLUE
    return rgb


def fate_image(image, truth, fates, spurious):
    """The input in grey, each true object coloured by its fate (object_fates) and every
    unmatched predicted component, the spurious ones, in purple over it."""
    rgb = _grey_rgb(image)
    for label, fate in fates.items():
        rgb[truth == label] = FATE_COLOURS[fate]
    rgb[spurious] = FATE_COLOURS["spurious"]
    return rgb


def save_error_figure(images, preds, masks, path, instances=None):
    """prediction_errors.png: per image, false positives and false negatives over the input,
    with its Dice; with instance labels, a second row of what became of each object.

    Inputs:
    - images, preds, masks: (N, 1, H, W)
    - instances: (N, H, W) int or None
    """
    rows = 1 if instances is None else 2
    figure = Figure(figsize=(3.2 * len(images), 3.4 * rows + 0.6))
    axes = figure.subplots(rows, len(images), squeeze=False)
    for i, (image, pred, truth) in enumerate(
        zip(images[:, 0], preds[:, 0] > 0, masks[:, 0] > 0, strict=True)
    ):
        score = dice(pred, truth)
        axes[0, i].imshow(error_image(image, pred, truth), interpolation="nearest")
        axes[0, i].set_title(
            f"Dice {score:.3f}\nFP {(pred & ~truth).sum()} px, FN {(~pred & truth).sum()} px"
        )
        if instances is not None:
            fates, spurious = object_fates(pred, instances[i])
            axes[1, i].imshow(fate_image(image, instances[i], fates, spurious), interpolation="nearest")
            counts = [f"{list(fates.values()).count(fate)} {fate}" for fate in FATES]
            axes[1, i].set_title(
                ", ".join(counts) + f"\n{len(np.unique(label_components(spurious[None]))) - 1} spurious"
            )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    colours = {"false positive": VERMILLION, "false negative": BLUE}
    if instances is not None:
        colours |= {f"object {fate}": FATE_COLOURS[fate] for fate in FATES} | {"spurious component": PURPLE}
    handles = [Patch(color=colour, label=name) for name, colour in colours.items()]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=10)
    save_figure(figure, path)


ERROR_FLOOR = 1e-4  # a perfect score would be log(0): errors are drawn at least this large
CURVES = {"val_dice": "1 − Dice", "val_boundary_f1": "1 − boundary F1", "val_object_f1": "1 − object F1"}


def save_training_curves(history, path, loss="BCE"):
    """Training loss and validation errors against optimizer step, both on log axes, so that
    the last tenths of a percent stay visible; the step axis is linear up to 10 (step 0 is the
    untrained net) and logarithmic beyond, where learning slows.

    Inputs:
    - history: list of dicts with `step`, `train_loss` (None at step 0) and validation scores
      (`val_dice`, `val_boundary_f1`, and `val_object_f1` if present)
    - loss: the training loss in words, for the legend (whether the weight map weighted it, say)
    """
    steps = np.array([entry["step"] for entry in history])
    trained = [(entry["step"], entry["train_loss"]) for entry in history if entry["train_loss"] is not None]
    figure = Figure(figsize=(11, 3.8))
    loss_ax, error_ax = figure.subplots(1, 2)
    label = f"training {loss}"
    if trained:
        loss_ax.plot(*zip(*trained, strict=True), marker=".", label=label)
    loss_ax.set(ylabel="mean loss since the previous point", yscale="log", title="Loss")
    for key, name in CURVES.items():
        if key in history[0]:
            errors = np.maximum(1 - np.array([entry[key] for entry in history]), ERROR_FLOOR)
            error_ax.plot(steps, errors, marker=".", label=name)
    error_ax.set(ylabel=f"validation error (floored at {ERROR_FLOOR:g})", yscale="log", title="Validation")
    for ax in (loss_ax, error_ax):
        ax.set_xscale("symlog", linthresh=10)
        ax.set(xlabel="step", xlim=(0, None))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=9)
    save_figure(figure, path)


GRID_LINES = 8  # lattice lines drawn across an elastically deformed image, each way


def save_augmentation_figure(image, mask, images, masks, field, path, title=""):
    """One training image and its mask, then as augmentation drew them: images above, masks
    below. With an elastic displacement field, the lattice that was straight before the
    deformation is drawn over each draw, bent as the deformation bent it: output pixel p took
    its value from p + field(p), so a lattice line sits where rows + dy (or columns + dx) is a
    multiple of the lattice's spacing.

    Inputs:
    - image, mask: (H, W)
    - images, masks: (D, H, W), the D draws
    - field: (D, 2, H, W) displacements (dy, dx) in pixels, or None
    """
    draws = len(images)
    figure = Figure(figsize=(2.4 * (draws + 1), 5.2))
    axes = figure.subplots(2, draws + 1, squeeze=False)
    height, width = image.shape
    rows, cols = np.mgrid[0:height, 0:width]
    spacing = max(height, width) / GRID_LINES
    for column, (shown, truth) in enumerate(zip([image, *images], [mask, *masks], strict=True)):
        axes[0, column].imshow(shown, cmap="gray", interpolation="nearest")
        axes[1, column].imshow(truth, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        axes[0, column].set_title("original" if column == 0 else f"draw {column}", fontsize=11)
        if field is not None and column > 0:
            dy, dx = np.asarray(field[column - 1])
            for ax in axes[:, column]:
                for source in (rows + dy, cols + dx):
                    levels = np.arange(0, max(height, width) + spacing, spacing)
                    ax.contour(source, levels=levels, colors="gold", linewidths=0.6)
        for ax in axes[:, column]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=11)
    axes[1, 0].set_ylabel("mask", fontsize=11)
    figure.suptitle(title, fontsize=12)
    save_figure(figure, path)


LEVEL_GAP = 1.6  # vertical distance between levels of the U


def _draw_map(ax, x, level, channels, side, biggest, color):
    """One feature map as a box: width ∝ log₂ channels, height ∝ side. Returns its right edge."""
    width, height = 0.12 * math.log2(channels + 1), 0.25 + side / biggest
    y = -LEVEL_GAP * level
    ax.add_patch(Rectangle((x, y - height / 2), width, height, color=color, alpha=0.6))
    ax.text(x + width / 2, y + height / 2 + 0.05, str(channels), ha="center", fontsize=8)
    ax.text(x, y - height / 2 - 0.18, f"{side}²", fontsize=7, color="dimgray")
    return x + width


def _draw_crop(ax, x, y, width, encoded, side, biggest):
    """The encoder map a skip copies, drawn around its cropped centre as a dashed outline, and
    the border cut away: (encoded − side) / 2 pixels on each side (paper, Fig. 1, "copy and crop")."""
    height = 0.25 + encoded / biggest
    ax.add_patch(Rectangle((x, y - height / 2), width, height, fill=False, ls="--", ec="gray", lw=0.8))
    ax.text(x + width, y - height / 2 - 0.4, f"crop {(encoded - side) // 2} px", fontsize=7)


def _level(stage, depth):
    """Row of the U for a trace stage: enc1/dec1/head on top (0), bottom at `depth`."""
    if stage == "bottom":
        return depth
    if stage == "head":
        return 0
    return int(stage[3:]) - 1  # encN, decN


def _arrow(ax, start, end, color, **style):
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color=color, **style))


def save_architecture_figure(rows, path):
    """The U drawn from a traced forward pass, as in the paper's Fig. 1: a box per feature
    map, black arrows for 3×3 convolutions, red for max-pool, green for up-conv, and grey for
    the skip connections that copy (and crop) encoder maps into the decoder.

    Inputs:
    - rows: the trace of `00_scratch.unet_forward`, dicts with `stage`, `op`, `shape_in` and
      `shape_out` as (C, H, W); stages are enc1…encD, bottom, dec1…decD, head
    """
    depth = sum(1 for row in rows if row["op"].startswith("max-pool"))
    biggest = max(row["shape_out"][1] for row in rows)
    figure = Figure(figsize=(14, 1.6 * depth + 3))
    ax = figure.subplots()
    x, last, skips = 0.0, None, {}
    for row in rows:
        stage, op, (channels, side, _) = row["stage"], row["op"], row["shape_out"]
        level = _level(stage, depth)
        y = -LEVEL_GAP * level
        if op.startswith("conv"):
            if last is not None:
                _arrow(ax, last, (x, y), "black", lw=0.8)
            right = _draw_map(ax, x, level, channels, side, biggest, "tab:blue")
            skips[stage] = (right, y, side)  # the last is the encoder map a skip copies
            last, x = (right, y), right + 0.35
        elif op.startswith("max-pool"):
            _arrow(ax, last, (x, y - LEVEL_GAP), "tab:red", lw=2)
            last = (x, y - LEVEL_GAP)
        elif op.startswith("up-conv"):
            _arrow(ax, last, (x, y), "tab:green", lw=2)
            last = (x, y)
        elif op == "concat":
            skip_channels = channels // 2
            *start, encoded = skips[stage.replace("dec", "enc")]
            if encoded != side:
                _draw_crop(ax, x, y, 0.12 * math.log2(skip_channels + 1), encoded, side, biggest)
            right = _draw_map(ax, x, level, skip_channels, side, biggest, "lightgray")
            _arrow(ax, start, (x, y), "gray", ls="--", lw=1.2)
            right = _draw_map(ax, right, level, channels - skip_channels, side, biggest, "tab:green")
            last, x = (right, y), right + 0.35
    ax.set_xlim(-0.5, x + 1)
    ax.set_ylim(-LEVEL_GAP * depth - 1.2, 1.2)
    ax.axis("off")
    ax.set_title(
        "U-Net: boxes are feature maps (channels above, side below)\nBlack: 3×3 conv; red: max-pool "
        "2×2; green: up-conv 2×2; grey: copy (dashed: the part cropped away)",
        fontsize=11,
    )
    save_figure(figure, path)


DISPLAY_MAX = 2000  # the overlay's largest side, in pixels
RED, YELLOW = (255, 0, 0), (255, 255, 0)


def _display_stride(shape):
    """The smallest whole step that shows an (H, W) image within DISPLAY_MAX a side."""
    return math.ceil(max(shape) / DISPLAY_MAX)


def _grey_levels(image):
    """(H, W) floats → uint8, min..max spread over 0..255; a constant image is mid-grey."""
    low, high = image.min(), image.max()
    if high == low:
        return np.full(image.shape, 128, dtype=np.uint8)
    return np.round((image - low) / (high - low) * 255).astype(np.uint8)


def _any_in_blocks(mask, stride):
    """(H, W) bool → (⌈H/stride⌉, ⌈W/stride⌉): True where any pixel of the block is, so a
    one-pixel line survives being shown smaller."""
    height, width = mask.shape
    padded = np.pad(mask, ((0, -height % stride), (0, -width % stride)))
    rows, columns = padded.shape[0] // stride, padded.shape[1] // stride
    return padded.reshape(rows, stride, columns, stride).any(axis=(1, 3))


def overlay_pixels(image, mask, grid=None):
    """The image in grey with the mask's outline in red, and the seams between tiles every
    `grid` pixels in yellow: where one tile's prediction meets the next, as (h, w, 3) uint8.

    Drawn pixel for pixel, not through matplotlib, so any size works (1×1, 1×N, 30000×2);
    an image over DISPLAY_MAX a side is shown every `stride` pixels, its outline found at
    full size first. The mask itself is saved at full size (`common.images.mask_pixels`).

    Inputs:
    - image: (H, W) floats, any scale
    - mask: (H, W), nonzero is object
    - grid: the distance between tile seams, or None for no seams
    """
    stride = _display_stride(image.shape)
    shown = _grey_levels(image[::stride, ::stride])
    rgb = np.repeat(shown[..., None], 3, axis=-1)  # (H/stride, W/stride, 3)
    if grid:
        height, width = image.shape
        rgb[np.arange(grid, height, grid) // stride] = YELLOW  # first row of each new tile
        rgb[:, np.arange(grid, width, grid) // stride] = YELLOW
    outline = boundary(np.asarray(mask)[None] != 0)[0]
    rgb[_any_in_blocks(outline, stride)] = RED
    return rgb


def save_weight_map_figure(image, mask, weights, path):
    """Image | Mask | Weight map (paper, Fig. 3d): the map glows in the gaps between circles."""
    figure = Figure(figsize=(12, 4))
    axes = figure.subplots(1, 3)
    for ax, panel, name in zip(axes, (image, mask), ("Input", "Ground truth"), strict=False):
        ax.imshow(panel, cmap="gray", interpolation="nearest")
        ax.set_title(name, fontsize=14)
    shown = axes[2].imshow(weights, cmap="magma", interpolation="nearest")
    axes[2].set_title("Weight map (eq. 2)", fontsize=14)
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(figure, path)
