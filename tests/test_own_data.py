"""Training on your own image and mask files: pairing by name, the masks' two kinds, the
held-out strip of a single image, random tiles, what is refused and warned, and --predict on a
folder with --labels and --truth. Tiny nets, a few steps, in-process."""

import json

import numpy as np
import pytest
from PIL import Image
from test_cli import snapshot

from common import dataset
from common.cells import synthetic_cells
from common.dataset import DataError
from common.metrics import label_components

# A tiny net and a few steps: enough for every output to be written.
FEW = ["--size", "32", "--batch-size", "4", "--steps", "4", "--eval-every", "2", "--base-channels", "4"]
FEW += ["--depth", "2"]


def save(pixels, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def cells(height, width, seed):
    """(8-bit image, 16-bit image, 16-bit labels) of synthetic nuclei."""
    image, labels = synthetic_cells(height, width, seed=seed)
    return (image * 255).astype(np.uint8), (image * 4095).astype(np.uint16), labels.astype(np.uint16)


@pytest.fixture
def pairs(tmp_path):
    """images/: a.png (8-bit) with masks/a_mask.png (binary 0/255), b.tif (16-bit) with
    masks/b.tif (instance labels): both formats, both kinds of mask, both ways of naming."""
    a8, _, a_labels = cells(64, 96, seed=1)
    _, b16, b_labels = cells(64, 64, seed=2)
    save(a8, tmp_path / "images" / "a.png")
    save(np.where(a_labels > 0, 255, 0).astype(np.uint8), tmp_path / "masks" / "a_mask.png")
    save(b16, tmp_path / "images" / "b.tif")
    save(b_labels, tmp_path / "masks" / "b.tif")
    return tmp_path


def test_pairs_are_matched_by_name_whatever_the_extension(pairs):
    found = dataset.pair_files(pairs / "images", pairs / "masks")
    assert [(image.name, mask.name) for image, mask in found] == [("a.png", "a_mask.png"), ("b.tif", "b.tif")]


def test_one_folder_for_both_takes_the_mask_files_as_masks(tmp_path):
    save(np.zeros((4, 4), np.uint8), tmp_path / "x.png")
    save(np.zeros((4, 4), np.uint8), tmp_path / "x_mask.png")
    assert dataset.pair_files(tmp_path, tmp_path) == [(tmp_path / "x.png", tmp_path / "x_mask.png")]


@pytest.mark.parametrize(
    "files, message",
    [
        (["images/a.png", "masks/a.png", "masks/a_mask.png"], "a.png could pair with"),
        (["images/a.png", "masks/b.png"], "images/a.png has no mask in"),
        (["images/a.png", "masks/a.png", "masks/c.png"], "masks/c.png is a mask without an image"),
        (["images/a.png", "images/a.tif", "masks/a.png"], "share a name; keep one"),
        (["images/notes.txt", "masks/a.png"], "holds no image files"),
    ],
)
def test_what_cannot_be_paired_is_refused_naming_the_file(tmp_path, files, message):
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        if name.endswith(".txt"):
            path.write_text("not an image")
        else:
            Image.new("L", (4, 4)).save(path)
    with pytest.raises(DataError, match=message):
        dataset.pair_files(tmp_path / "images", tmp_path / "masks")


def test_touching_objects_are_parted_by_background_where_they_meet():
    labels = np.array([[1, 1, 2, 2, 0, 3]])
    np.testing.assert_array_equal(dataset.separate_touching(labels), [[1, 0, 0, 2, 0, 3]])


def test_a_single_image_holds_out_its_last_columns_and_keeps_a_gap(pairs):
    (one,) = dataset.read_folders(pairs / "images", pairs / "masks")[:1]
    train, val = dataset.hold_out([one], 0.2, gap=24, size=32)
    assert val[0].image.shape == (64, 19) and train[0].image.shape == (64, 96 - 19 - 24)
    np.testing.assert_array_equal(val[0].image, one.image[:, -19:])
    assert not val[0].labelled  # a binary mask: its objects are its connected components


def test_random_tiles_cut_image_mask_and_weights_at_the_same_place(pytorch_script):
    """Each pixel of the images holds its own address (image, row, column), so a tile tells
    where it was cut, and its mask and weights must be cut there too."""
    shapes = [(40, 70), (36, 36)]
    annotated = []
    for k, (height, width) in enumerate(shapes):
        rows, cols = np.mgrid[0:height, 0:width]
        address = (k * 10_000 + rows * 100 + cols).astype(np.float32)
        annotated.append(dataset.Annotated(f"{k}", address, ((rows + cols) % 3 == 0).astype(np.int32), False))
    weights = [a.image * 0.5 for a in annotated]
    data = pytorch_script.TileData(annotated, weights, [])
    images, masks, weights = pytorch_script.random_tiles(data, 32, 400, pytorch_script.torch.Generator())
    assert images.shape == masks.shape == weights.shape == (400, 1, 32, 32)
    corners = set()
    for image, mask, weight in zip(
        images[:, 0].numpy(), masks[:, 0].numpy(), weights[:, 0].numpy(), strict=True
    ):
        k, top, left = int(image[0, 0]) // 10_000, int(image[0, 0]) % 10_000 // 100, int(image[0, 0]) % 100
        window = np.s_[top : top + 32, left : left + 32]
        assert np.array_equal(image, annotated[k].image[window])
        assert np.array_equal(mask, annotated[k].mask[window]) and np.array_equal(weight, image * 0.5)
        corners.add((k, top, left))
    # both images are cut, in proportion to their places: 9 × 39 = 351 against 5 × 5 = 25
    share = sum(k == 1 for k, _, _ in corners) / len(corners)
    assert 0 < share < 0.2 and len(corners) > 150


def test_an_epoch_of_tiles_covers_the_training_pixels_once(pytorch_script, pairs):
    annotated = dataset.read_folders(pairs / "images", pairs / "masks")
    config = pytorch_script.TrainConfig(size=32, batch_size=4)
    data = pytorch_script.tile_data(config, annotated, [])
    tiles = (64 * 96 + 64 * 64) / 32**2  # 10 tiles of 32² hold the 10,240 pixels
    assert pytorch_script.steps_per_epoch(data, config) == np.ceil(tiles / 4) == 3


def test_training_from_files_writes_what_a_circle_run_writes(pytorch_script, pairs, capsys):
    out = pairs / "out"
    images, masks = str(pairs / "images"), str(pairs / "masks")
    args = ["--images", images, "--masks", masks, *FEW, "--out", str(out), "--checkpoint", str(out / "n.pt")]
    pytorch_script.main([*args, "--weight-map"])
    printed = capsys.readouterr()
    assert "tiles of 32×32 from 1 images" in printed.out and "flips and elastic deformation" in printed.out
    assert "binary masks: the weight map takes their connected components" in printed.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["images"] == images and metrics["config"]["augment"] == "elastic"
    assert set(metrics["final"]) == {"val_dice", "val_iou", "val_boundary_f1", "val_object_f1"}  # b: labels
    assert {"augmentation.png", "weight_map.png", "prediction_errors.png"} <= {p.name for p in out.iterdir()}


def test_one_large_image_trains_with_its_strip_held_out(pytorch_script, tmp_path, capsys):
    image, _, labels = cells(64, 192, seed=3)
    save(image, tmp_path / "big" / "big.png")
    save(labels, tmp_path / "big_masks" / "big.png")
    out = tmp_path / "out"
    pytorch_script.main(
        ["--images", str(tmp_path / "big"), "--masks", str(tmp_path / "big_masks"), *FEW, "--out", str(out)]
        + ["--checkpoint", str(out / "n.pt"), "--augment", "none"]
    )
    # 64 × 130: 192 columns less 38 held out (20 %) and a gap of 24 (depth 2: `exact_margin`)
    assert "tiles of 32×32 from 1 images (8,320 pixels; 1 held out)" in capsys.readouterr().out
    assert "val_object_f1" in json.loads((out / "metrics.json").read_text())["final"]


@pytest.mark.parametrize(
    "change, args, fragments",
    [
        (None, ["--touching"], ["argument --touching", "your images have their own objects"]),
        (None, ["--train-size", "8"], ["argument --train-size", "every image in the folder trains"]),
        (None, ["--val-images", "images"], ["argument --val-images", "and --val-masks go together"]),
        (None, ["--size", "128"], ["argument --size", "smaller than the 128-px tiles"]),
        ("jpeg", [], ["argument --images", "is a JPEG (lossy"]),
        ("unpaired", [], ["argument --images", "c_mask.png is a mask without an image"]),
        ("wrong size", [], ["argument --images", "is 96×64 but its mask", "is 64×64"]),
        (
            "one image",
            [],
            ["argument --images", "a.png is 96 px wide: without its last 19 columns", "29 are left"],
        ),
    ],
)
def test_own_data_mistakes_are_one_line_before_any_training(
    pytorch_script, pairs, monkeypatch, capsys, change, args, fragments
):
    monkeypatch.chdir(pairs)
    if change == "jpeg":
        (pairs / "masks" / "a_mask.png").unlink()
        Image.new("L", (96, 64)).save(pairs / "masks" / "a_mask.jpg")
    if change == "unpaired":
        Image.new("L", (4, 4)).save(pairs / "masks" / "c_mask.png")
    if change == "one image":  # 96 columns less 19 held out and a gap of 48 (depth 3) leave 29
        (pairs / "images" / "b.tif").unlink()
        (pairs / "masks" / "b.tif").unlink()
    if change == "wrong size":
        Image.new("L", (64, 64)).save(pairs / "masks" / "a_mask.png")
    before = snapshot(pairs)
    with pytest.raises(SystemExit) as stopped:
        pytorch_script.main(["--images", "images", "--masks", "masks", *args])
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2 and stderr.count("\n") == 1, stderr
    assert all(fragment in stderr for fragment in fragments), stderr
    assert snapshot(pairs) == before


def test_an_empty_mask_and_rare_objects_are_warned_with_the_number(pytorch_script, tmp_path, capsys):
    image, _, labels = cells(64, 96, seed=4)
    save(image, tmp_path / "images" / "a.png")
    save(np.zeros_like(image), tmp_path / "masks" / "a.png")
    out = tmp_path / "out"
    pytorch_script.main(
        ["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), *FEW, "--out", str(out)]
        + ["--checkpoint", str(out / "n.pt"), "--steps", "1", "--norm", "batch"]
    )
    err = capsys.readouterr().err
    assert "a batch of 4 tiles of 32² is 4,096 pixels: batch norm's statistics are noisy below 65,536" in err
    assert "the mask of" in err and "is all background" in err
    assert "objects are 0.00% of the training pixels" in err and "--weight-map or --loss bce+dice" in err


def test_too_few_steps_from_epochs_and_no_batch_norm_warning_under_group_norm(pytorch_script, pairs, capsys):
    # One image of 64×96: 19 columns held out and a gap of 24 (depth 2) leave 53 columns, 4 tiles of 32².
    (pairs / "images" / "b.tif").unlink()
    (pairs / "masks" / "b.tif").unlink()
    at = FEW.index("--steps")
    few = FEW[:at] + FEW[at + 2 :]  # the run's length from --epochs
    out = pairs / "out"
    pytorch_script.main(
        ["--images", str(pairs / "images"), "--masks", str(pairs / "masks"), *few, "--epochs", "2"]
        + ["--norm", "group", "--out", str(out), "--checkpoint", str(out / "n.pt")]
    )
    err = capsys.readouterr().err
    assert "--epochs 2 make 2 steps here (1 an epoch), too few: the worked example needs about 300" in err
    assert "batch norm" not in err
    assert json.loads((out / "metrics.json").read_text())["history"][-1]["step"] == 2


def test_predict_a_folder_with_labels_and_truth(pytorch_script, pairs, trained_run, capsys):
    out = pairs / "predicted"
    pytorch_script.main(
        ["--predict", str(pairs / "images"), "--truth", str(pairs / "masks"), "--labels", "--out", str(out)]
        + ["--checkpoint", str(trained_run / "net.pt")]
    )
    printed = capsys.readouterr().out
    assert printed.count("truth Dice") == 2 and "object F1" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}_{kind}.png" for stem in "ab" for kind in ("errors", "labels", "mask", "overlay")
    ]
    mask = np.asarray(Image.open(out / "b_mask.png")) > 0
    labels = np.asarray(Image.open(out / "b_labels.png"))
    assert labels.dtype == np.uint16 and np.array_equal(labels > 0, mask)
    assert labels.max() == label_components(mask[None])[0].max()  # one label per connected component
