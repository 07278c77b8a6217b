import numpy as np

from common.plotting import save_segmentation_figure, save_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_segmentation_figure_is_a_png_with_one_row_per_image(tmp_path):
    rng = np.random.default_rng(0)
    masks = (rng.random((2, 1, 16, 16)) > 0.5).astype(np.float32)
    path = tmp_path / "two.png"
    save_segmentation_figure(masks, masks, masks, path, title="Dice 1.000")
    width2, height2 = png_size(path)
    save_segmentation_figure(
        np.repeat(masks, 2, 0), np.repeat(masks, 2, 0), np.repeat(masks, 2, 0), tmp_path / "four.png"
    )
    width4, height4 = png_size(tmp_path / "four.png")
    assert width2 > 2 * 250  # three 3-inch columns at 100 dpi, less tight margins
    assert height4 > 1.7 * height2  # rows stack downwards


def test_training_curves_png(tmp_path):
    history = [{"step": s, "train_loss": 1 / s, "val_dice": 1 - 1 / s} for s in (1, 10, 20)]
    save_training_curves(history, tmp_path / "curves.png")
    width, height = png_size(tmp_path / "curves.png")
    assert width > height > 200
