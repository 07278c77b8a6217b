"""Figures, drawn headless: `matplotlib.figure.Figure` needs no display and no pyplot state."""

import io

import numpy as np
from matplotlib.figure import Figure

from common.files import atomic_write

COLUMNS = ("Input", "Ground truth", "Predicted mask")


def save_figure(figure, path):
    """Render to memory, then write atomically: a failed render never touches `path`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write(path, lambda file: file.write(buffer.getvalue()))


def save_segmentation_figure(images, masks, preds, path, *, title=None, row_labels=None):
    """N rows of Input | Ground truth | Predicted mask.

    Inputs:
    - images: (N, 1, H, W) network inputs
    - masks, preds: (N, 1, H, W) binary masks
    - title: a line above the grid, e.g. the scores
    - row_labels: N strings drawn left of each row, e.g. per-image Dice
    """
    rows = len(images)
    figure = Figure(figsize=(3 * len(COLUMNS), 3 * rows))
    axes = figure.subplots(rows, len(COLUMNS), squeeze=False)
    for row in range(rows):
        panels = (images[row, 0], masks[row, 0], preds[row, 0])
        for column, (panel, name) in enumerate(zip(panels, COLUMNS)):
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


def save_training_curves(history, path):
    """Training loss and validation Dice against optimizer step.

    Inputs:
    - history: list of dicts with keys `step`, `train_loss`, `val_dice`
    """
    steps = np.array([entry["step"] for entry in history])
    figure = Figure(figsize=(10, 3.5))
    loss_ax, dice_ax = figure.subplots(1, 2)
    loss_ax.plot(steps, [entry["train_loss"] for entry in history], marker=".")
    loss_ax.set(xlabel="step", ylabel="training loss (BCE)", yscale="log", title="Loss")
    dice_ax.plot(steps, [entry["val_dice"] for entry in history], marker=".", color="tab:green")
    dice_ax.set(xlabel="step", ylabel="validation Dice", ylim=(0, 1), title="Validation Dice")
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    save_figure(figure, path)
