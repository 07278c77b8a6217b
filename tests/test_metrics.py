import numpy as np
import pytest

from common.metrics import boundary, boundary_f1, dice, foreground, iou


def square(size, top, left, side):
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_hand_computed_overlap():
    # pred covers 4 pixels, target 6, they share 2.
    pred = np.zeros((4, 4), dtype=bool)
    target = np.zeros((4, 4), dtype=bool)
    pred[0, :4] = True
    target[0, 2:4] = True
    target[1, :4] = True
    assert dice(pred, target) == pytest.approx(2 * 2 / (4 + 6))
    assert iou(pred, target) == pytest.approx(2 / 8)


def test_empty_masks_score_one_and_miss_scores_zero():
    empty = np.zeros((5, 5))
    full = np.ones((5, 5))
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert boundary_f1(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert iou(full, empty) == 0.0
    assert boundary_f1(empty, full) == 0.0


def test_batch_mean_and_per_image():
    target = np.stack([square(8, 0, 0, 4), square(8, 2, 2, 4)])[:, None]
    pred = np.stack([square(8, 0, 0, 4), square(8, 0, 0, 2)])[:, None]
    per = dice(pred, target, per_image=True)
    assert per.shape == (2,)
    # Image 2: pred is rows/cols 0-1, target rows/cols 2-5: no overlap.
    np.testing.assert_allclose(per, [1.0, 0.0])
    assert dice(pred, target) == pytest.approx(0.5)


def test_dice_iou_identity_per_image():
    rng = np.random.default_rng(0)
    pred = rng.random((30, 1, 16, 16)) > 0.5
    target = rng.random((30, 1, 16, 16)) > 0.4
    d = dice(pred, target, per_image=True)
    j = iou(pred, target, per_image=True)
    np.testing.assert_allclose(d, 2 * j / (1 + j))


def test_boundary_of_a_square_is_its_outline():
    outline = boundary(square(6, 1, 1, 4)[None].astype(bool))[0]
    expected = square(6, 1, 1, 4) - square(6, 2, 2, 2)
    np.testing.assert_array_equal(outline, expected)


def test_boundary_f1_shifted_square():
    target = square(12, 2, 2, 6)
    pred = square(12, 2, 3, 6)  # shifted one pixel right
    # Each outline is 20 px. The top and bottom rows overlap in 5 columns each; the side
    # columns never coincide. So 10 of 20 match both ways: precision = recall = F1 = 0.5.
    t_out = boundary(target[None].astype(bool))[0]
    p_out = boundary(pred[None].astype(bool))[0]
    shared = (t_out & p_out).sum()
    assert t_out.sum() == p_out.sum() == 20
    assert shared == 10
    assert boundary_f1(pred, target) == pytest.approx(0.5)
    assert boundary_f1(pred, target, tolerance=1) == 1.0


def test_rejects_other_shapes():
    with pytest.raises(ValueError, match="masks must be shaped"):
        dice(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))


def test_foreground_from_one_logit_or_two_classes():
    one = np.array([[[[-0.1, 0.0, 2.0]]]])  # (1, 1, 1, 3): the sign decides; 0 is probability 0.5, not object
    np.testing.assert_array_equal(foreground(one), [[[False, False, True]]])
    # Two classes (paper): the object is class 1 where its logit is the larger, whatever channel 0's sign.
    two = np.array([[[5.0, -1.0, 0.0]], [[6.0, -2.0, 1.0]]])  # (2, 1, 3)
    np.testing.assert_array_equal(foreground(two), [[True, False, True]])
