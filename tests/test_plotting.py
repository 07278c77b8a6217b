import numpy as np
import pytest

from common.plotting import save_segmentation_figure

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


def test_training_curves_draw_the_history_on_log_axes(tmp_path, monkeypatch, pytorch_script):
    import common.plotting as plotting

    drawn = {}
    monkeypatch.setattr(plotting, "save_figure", lambda figure, path: drawn.update(figure=figure))
    history = [
        {"step": 0, "train_loss": None, "val_dice": 0.2, "val_boundary_f1": 0.01},
        {"step": 5, "train_loss": 0.5, "val_dice": 0.9, "val_boundary_f1": 0.5},
        {"step": 10, "train_loss": 0.1, "val_dice": 1.0, "val_boundary_f1": 0.99},
    ]
    config = pytorch_script.TrainConfig(touching=True, weight_map=True, loss="bce+dice")
    plotting.save_training_curves(history, tmp_path / "curves.png", loss=pytorch_script.loss_name(config))
    loss_ax, error_ax = drawn["figure"].axes
    (loss,) = loss_ax.lines
    np.testing.assert_array_equal(loss.get_xdata(), [5, 10])  # no training loss before step 0's update
    np.testing.assert_array_equal(loss.get_ydata(), [0.5, 0.1])
    assert loss.get_label() == "training BCE + soft Dice (BCE weighted by the weight map, eq. 2)"
    dice_error, boundary_error = error_ax.lines
    np.testing.assert_allclose(dice_error.get_ydata(), [0.8, 0.1, 1e-4])  # a perfect Dice, floored
    np.testing.assert_allclose(boundary_error.get_ydata(), [0.99, 0.5, 0.01])
    assert error_ax.get_yscale() == loss_ax.get_yscale() == "log"
    assert [line.get_label() for line in error_ax.lines] == ["1 − Dice", "1 − boundary F1"]


def painted(rgb, colour):
    """Pixels of an (H, W, 3) image that are exactly `colour` (up to float32 rounding)."""
    return np.all(np.abs(rgb - np.array(colour)) < 1e-6, axis=-1)


def test_the_error_figure_is_drawn_from_the_metrics(tmp_path, monkeypatch):
    """Its false-positive and false-negative pixels are the metrics' own, its titles their
    Dice; its objects are coloured by their fates."""
    import common.plotting as plotting
    from common.data import touching_circles
    from common.metrics import dice, dilate, object_fates

    images, masks, instances = touching_circles(3, seed=2)
    preds = np.roll(masks, 2, axis=-1)  # shifted 2 px: errors on both sides of every circle
    preds[1, 0] = dilate(masks[1:2, 0] > 0, 2)[0]  # grown by 2 px: circles 1-3 px apart merge
    drawn = {}
    monkeypatch.setattr(plotting, "save_figure", lambda figure, path: drawn.update(figure=figure))
    plotting.save_error_figure(images, preds, masks, tmp_path / "errors.png", instances)
    for i, ax in enumerate(drawn["figure"].axes[:3]):
        pred, truth = preds[i, 0] > 0, masks[i, 0] > 0
        rgb = ax.images[0].get_array()
        false_positives = painted(rgb, plotting.VERMILLION).sum()
        false_negatives = painted(rgb, plotting.BLUE).sum()
        assert (false_positives, false_negatives) == ((pred & ~truth).sum(), (~pred & truth).sum())
        true_positives = (pred & truth).sum()
        assert 2 * true_positives / (2 * true_positives + false_positives + false_negatives) == pytest.approx(
            dice(pred, truth)
        )
        assert ax.get_title().startswith(f"Dice {dice(pred, truth):.3f}")
    fates, spurious = object_fates(preds[1, 0], instances[1])
    rgb = drawn["figure"].axes[4].images[0].get_array()
    for fate in ("found", "merged", "missed"):
        expected = np.isin(instances[1], [label for label, f in fates.items() if f == fate]) & ~spurious
        np.testing.assert_array_equal(painted(rgb, plotting.FATE_COLOURS[fate]), expected)
    np.testing.assert_array_equal(painted(rgb, plotting.FATE_COLOURS["spurious"]), spurious)
    assert "merged" in fates.values()


def test_the_augmentation_lattice_bends_as_the_field_moved_the_pixels(tmp_path, monkeypatch):
    """Output pixel p took its value from p + field(p): under a constant shift dx = 3 the lattice's
    vertical lines, straight at multiples of 8 px before, are drawn 3 px to the left."""
    import common.plotting as plotting

    drawn = {}
    monkeypatch.setattr(plotting, "save_figure", lambda figure, path: drawn.setdefault("figure", figure))
    image = np.zeros((64, 64))
    field = np.zeros((1, 2, 64, 64))
    field[:, 1] = 3.0
    plotting.save_augmentation_figure(image, image, image[None], image[None], field, tmp_path / "a.png")
    original, draw = drawn["figure"].axes[0], drawn["figure"].axes[1]
    assert not original.collections  # no field, no lattice
    horizontal, vertical = (draw.collections[i].get_paths() for i in (0, 1))  # rows + dy, cols + dx
    lines = [path.vertices for path in vertical if len(path.vertices)]
    assert [set(line[:, 0]) for line in lines] == [{x} for x in range(5, 64, 8)]  # cols + 3 = 8, 16, …
    lines = [path.vertices for path in horizontal if len(path.vertices)]
    assert [set(line[:, 1]) for line in lines] == [{y} for y in range(0, 64, 8)]  # rows: unmoved
