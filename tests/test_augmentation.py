"""The paper's augmentation (Sec. 3.1) and the loss options, against what each must preserve:
a zero field changes nothing, image and mask stay aligned, an integer field shifts exactly,
the flips are the square's eight symmetries; soft Dice on hand-computed cases."""

import json

import numpy as np
import pytest
import torch

from common import checkpoints
from common.data import synthetic_circles
from tests.conftest import TINY


def circle_batch(n=4, size=64, seed=0):
    """(n, 1, H, W) float64 images in [0, 1] and their (n, 1, H, W) float masks."""
    images, masks = synthetic_circles(n=n, size=size, seed=seed)
    return torch.from_numpy(images).double(), torch.from_numpy(masks).double()


def test_a_zero_field_gives_the_batch_back(pytorch_script):
    images, masks = circle_batch()
    _, field = pytorch_script.elastic_displacements(4, 64, 64, 0.0, torch.Generator().manual_seed(0))
    assert not field.any()
    torch.testing.assert_close(
        pytorch_script.warp(images.float(), field, "bicubic"), images.float(), atol=1e-5, rtol=0
    )
    assert torch.equal(pytorch_script.warp(masks, field, "nearest"), masks)


def test_image_and_mask_stay_aligned_under_one_field(pytorch_script):
    """A binary image and its mask through the same deformation: bicubic image thresholded at 0.5
    against the nearest-neighbour mask. Bicubic reads a 4×4 patch of source pixels, so the two
    may differ only within two pixels of the mask's edge, and on few pixels."""
    _, masks = circle_batch(n=8, seed=1)
    _, field = pytorch_script.elastic_displacements(8, 64, 64, 4.0, torch.Generator().manual_seed(1))
    image = pytorch_script.warp(masks, field, "bicubic") > 0.5
    mask = pytorch_script.warp(masks, field, "nearest") > 0.5
    assert (mask != (masks > 0.5)).double().mean() > 0.03  # the field moved the circles
    differ = (image != mask).numpy()[:, 0]
    assert 0 < differ.mean() <= 0.01
    padded = np.pad(mask.numpy()[:, 0], ((0, 0), (2, 2), (2, 2)), mode="edge")
    window = [padded[:, 2 + dy : 66 + dy, 2 + dx : 66 + dx] for dy in range(-2, 3) for dx in range(-2, 3)]
    near_an_edge = np.any(window, axis=0) & ~np.all(window, axis=0)  # both classes in the 5×5
    assert near_an_edge[differ].all()


@pytest.mark.parametrize("dy, dx", [(3, -2), (-5, 0)])
def test_the_same_integer_displacement_at_every_node_shifts_exactly(pytorch_script, dy, dx):
    images, masks = circle_batch(n=2, seed=2)
    nodes = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    nodes[:, 0], nodes[:, 1] = dy, dx
    field = pytorch_script.displacement_field(nodes, 64, 64)
    inside = (slice(None), slice(None), slice(5, -5), slice(5, -5))  # away from the mirrored border
    source = (slice(None), slice(None), slice(5 + dy, 59 + dy), slice(5 + dx, 59 + dx))
    torch.testing.assert_close(
        pytorch_script.warp(images, field, "bicubic")[inside], images[source], atol=1e-5, rtol=0
    )
    assert torch.equal(pytorch_script.warp(masks, field, "nearest")[inside], masks[source])


def test_the_grid_nodes_have_standard_deviation_sigma_and_the_field_passes_through_them(pytorch_script):
    nodes, field = pytorch_script.elastic_displacements(2000, 33, 33, 2.5, torch.Generator().manual_seed(3))
    assert nodes.std().item() == pytest.approx(2.5, rel=0.1)
    assert abs(nodes.mean().item()) < 0.1
    corners_and_centre = field[:, :, ::16, ::16]  # 33 px: nodes at pixels 0, 16, 32
    torch.testing.assert_close(corners_and_centre, nodes, atol=1e-12, rtol=0)


def test_flips_are_the_eight_symmetries_applied_alike_to_every_tensor(pytorch_script):
    pattern = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(200, 1, 1, 1)  # no symmetry of its own
    images, doubled = pytorch_script.random_flips([pattern, 2 * pattern], torch.Generator().manual_seed(4))
    assert torch.equal(doubled, 2 * images)
    square = pattern[0, 0]
    symmetries = {
        tuple(
            torch.rot90(square, turn).flip(-1).flatten().tolist()
            if mirror
            else torch.rot90(square, turn).flatten().tolist()
        )
        for turn in range(4)
        for mirror in (0, 1)
    }
    drawn = {tuple(image[0].flatten().tolist()) for image in images}
    assert drawn == symmetries  # each of the eight, and nothing else


def test_augment_none_leaves_the_batch_alone_and_elastic_moves_masks_with_images(pytorch_script):
    images, masks = circle_batch(n=4, seed=5)
    weights = 1 + masks
    none = pytorch_script.TrainConfig(augment="none")
    out_images, (out_masks, out_weights), field = pytorch_script.augment(
        images, [masks, weights], none, torch.Generator().manual_seed(0)
    )
    assert field is None and torch.equal(out_images, images) and torch.equal(out_masks, masks)
    elastic = pytorch_script.TrainConfig(augment="elastic", elastic_sigma=3.0)
    out_images, (out_masks, out_weights), field = pytorch_script.augment(
        masks,
        [masks, weights],
        elastic,
        torch.Generator().manual_seed(0),  # the mask as its own image
    )
    assert field.shape == (4, 2, 64, 64)
    assert torch.equal(out_weights, 1 + out_masks)  # the weight map follows the mask pixel for pixel
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert ((out_images > 0.5) != (out_masks > 0.5)).double().mean() < 0.02


# ----------------------------------------------------------------------------- the losses


def test_soft_dice_loss_on_hand_computed_cases(pytorch_script):
    empty = torch.zeros(1, 1, 4, 5)
    # an empty prediction of an empty mask: (0 + 1) / (0 + 0 + 1) = 1, loss 0
    assert pytorch_script.soft_dice_loss(torch.full_like(empty, -1e4), empty).item() == pytest.approx(0.0)
    # p = 0.5 everywhere on an empty mask of N = 20 pixels: 1 − 1 / (0.5·20 + 1)
    assert pytorch_script.soft_dice_loss(empty, empty).item() == pytest.approx(1 - 1 / 11)
    # one foreground pixel predicted with p = 0.5 (logit 0), the rest certain background:
    # (2·0.5 + 1) / (0.5 + 1 + 1) = 0.8
    mask, logits = empty.clone(), torch.full_like(empty, -1e4)
    mask[0, 0, 1, 2], logits[0, 0, 1, 2] = 1.0, 0.0
    assert pytorch_script.soft_dice_loss(logits, mask).item() == pytest.approx(0.2)


def test_bce_plus_dice_is_their_sum_and_the_weight_map_weighs_only_bce(pytorch_script):
    generator = torch.Generator().manual_seed(6)
    logits, masks = (
        torch.randn(2, 1, 8, 8, generator=generator),
        (torch.rand(2, 1, 8, 8, generator=generator) > 0.5).float(),
    )
    weights = 1 + torch.rand(2, 1, 8, 8, generator=generator)
    loss = pytorch_script.segmentation_loss
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks, weight=weights)
    dice = pytorch_script.soft_dice_loss(logits, masks)
    assert loss(logits, masks, weights, "bce").item() == pytest.approx(bce.item())
    assert loss(logits, masks, weights, "dice").item() == pytest.approx(dice.item())
    assert loss(logits, masks, weights, "bce+dice").item() == pytest.approx(bce.item() + dice.item())
    assert loss(logits, masks, 2 * weights, "bce+dice").item() == pytest.approx(2 * bce.item() + dice.item())


# ----------------------------------------------------------------------------- training with them


def test_one_image_trains_at_batch_eight_with_elastic_and_dice_and_says_so(pytorch_script, tmp_path, capsys):
    args = [*TINY, "--train-size", "1", "--steps", "6", "--eval-every", "3", "--val-size", "8"]
    args += ["--augment", "elastic", "--elastic-sigma", "3", "--loss", "bce+dice"]
    pytorch_script.main([*args, "--out", str(tmp_path), "--checkpoint", str(tmp_path / "n.pt")])
    printed = capsys.readouterr().out
    assert "1 images of 64×64, flips and elastic deformation (σ 3 px), loss bce+dice" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["config"]["augment"], metrics["config"]["elastic_sigma"]) == ("elastic", 3.0)
    assert metrics["config"]["loss"] == "bce+dice" and metrics["config"]["train_size"] == 1
    assert checkpoints.load(tmp_path / "n.pt").config["augment"] == "elastic"
    assert (tmp_path / "augmentation.png").read_bytes()[:4] == b"\x89PNG"

    # A warm restart with other options is allowed, and the new run records what it used.
    pytorch_script.main(
        [
            *args[:-6],
            "--resume",
            str(tmp_path / "n.pt"),
            "--augment",
            "flips",
            "--loss",
            "dice",
            "--out",
            str(tmp_path / "again"),
            "--checkpoint",
            str(tmp_path / "again.pt"),
        ]
    )
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert (metrics["config"]["augment"], metrics["config"]["loss"]) == ("flips", "dice")


def test_an_epoch_is_the_whole_batches_of_the_set_and_at_least_one(pytorch_script):
    def steps(**recipe):
        config = pytorch_script.TrainConfig(batch_size=16, epochs=3, val_size=1, **recipe)
        return pytorch_script.total_steps(config, pytorch_script.make_data(config))

    assert steps(train_size=1) == 3
    assert steps(train_size=40) == 6
    generator = torch.Generator().manual_seed(0)
    batches = pytorch_script.shuffled_batches(3, 8, generator)
    drawn = torch.cat([next(batches) for _ in range(10)])
    assert len(drawn) == 80 and set(drawn.tolist()) == {0, 1, 2}  # with replacement, all of them
