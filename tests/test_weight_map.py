"""The weight map (paper, eq. 2), touching circles, connected components and object F1."""

import numpy as np
import pytest

from common.data import touching_circles
from common.metrics import FATES, label_components, object_f1, object_fates
from common.weight_map import class_balance, weight_map


def test_weight_map_by_hand():
    # Two one-pixel objects at x = 0 and x = 4 in a 1×5 image. At x = 2 both are 2 px away:
    # w = w_c + 10·exp(−(2 + 2)² / (2·5²)); background is 3/5 of the image, so w_c = 0.5 / 0.6.
    instances = np.array([[1, 0, 0, 0, 2]])
    w = weight_map(instances, w0=10.0, sigma=5.0)
    assert w[0, 2] == pytest.approx(0.5 / 0.6 + 10 * np.exp(-16 / 50), rel=1e-6)
    # The objects themselves get the class weight only, 0.5 / 0.4 each.
    assert w[0, 0] == pytest.approx(0.5 / 0.4, rel=1e-6)


def test_weight_map_two_discs_against_brute_force_distances():
    yy, xx = np.mgrid[0:32, 0:40] + 0.5
    instances = np.zeros((32, 40), int)
    instances[(yy - 16) ** 2 + (xx - 12) ** 2 <= 36] = 1
    instances[(yy - 16) ** 2 + (xx - 26) ** 2 <= 36] = 2  # edges 2 px apart at y = 16
    points = np.stack([yy - 0.5, xx - 0.5], axis=-1)
    distances = []
    for label in (1, 2):  # distance to the nearest pixel of each object, by brute force
        pixels = np.argwhere(instances == label)
        distances.append(np.sqrt(((points[:, :, None, :] - pixels) ** 2).sum(-1)).min(-1))
    d1, d2 = np.sort(distances, axis=0)
    expected = class_balance(instances > 0) + 10 * np.exp(-((d1 + d2) ** 2) / 50) * (instances == 0)
    w = weight_map(instances)
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    gap = w[16, 19]  # the background pixel between the discs
    assert gap > 8 and w[0, 0] < 1.5  # the gap (d1 = 1, d2 = 2) weighs many times a far pixel


def test_weight_map_of_a_crowded_image_equals_every_pixel_to_every_object():
    """Each object's distances computed in its own grown box give the map that measuring every
    pixel against every object pixel gives, with clusters where the second-nearest object is
    not the second-nearest box."""
    _, _, instances = touching_circles(3, 64, seed=5)
    offsets = np.cumsum([0] + [labels.max() for labels in instances[:-1]])
    instances = np.concatenate(
        [np.where(labels > 0, labels + offset, 0) for labels, offset in zip(instances, offsets, strict=True)],
        axis=1,
    )  # (64, 192): three images side by side, each object its own label
    points = np.argwhere(np.ones(instances.shape, bool))[:, None, :]  # (HW, 1, 2)
    distances = []
    for label in range(1, instances.max() + 1):
        pixels = np.argwhere(instances == label)[None]  # (1, P, 2)
        distances.append(np.sqrt(((points - pixels) ** 2).sum(-1)).min(-1).reshape(instances.shape))
    assert len(distances) >= 6
    d1, d2 = np.sort(distances, axis=0)[:2]
    expected = class_balance(instances > 0) + 10 * np.exp(-((d1 + d2) ** 2) / 50) * (instances == 0)
    np.testing.assert_allclose(weight_map(instances), expected, rtol=1e-6, atol=1e-7)


def test_class_balance_gives_each_class_half_the_weight():
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = True
    w = class_balance(mask)
    assert w[mask].sum() == pytest.approx(8) and w[~mask].sum() == pytest.approx(8)
    assert np.all(class_balance(np.zeros((3, 3), bool)) == 1)


def test_label_components_uses_4_neighbours():
    mask = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]], bool)[None]
    labels = label_components(mask)[0]
    assert labels[0, 0] == labels[0, 1] == labels[1, 1] != 0
    assert labels[1, 3] == labels[2, 3] == labels[2, 2] != 0
    assert labels[2, 2] != labels[1, 1]  # touching only diagonally: two objects
    assert (labels == 0).sum() == 6


def blobs(shape, *boxes):
    """An int image with box k (top, left, bottom, right) labelled k."""
    image = np.zeros(shape, int)
    for label, (top, left, bottom, right) in enumerate(boxes, start=1):
        image[top:bottom, left:right] = label
    return image


def test_object_f1_hand_cases():
    truth = blobs((10, 20), (2, 2, 8, 8), (2, 10, 8, 16))  # two 6×6 squares, 2 px apart
    assert object_f1(truth > 0, truth) == 1.0
    merged = truth > 0
    merged[2:8, 8:10] = True  # the gap filled: one blob, IoU 36/84 with each square
    assert object_f1(merged, truth) == 0.0
    missed = truth == 1  # one found, one missed: 2·1 / (1 + 2)
    assert object_f1(missed, truth) == pytest.approx(2 / 3)
    split = truth > 0
    split[:, 4:6] = False  # the first square cut in two halves of IoU 1/3: 3 found, 1 matched
    assert object_f1(split, truth) == pytest.approx(2 * 1 / (3 + 2))
    extra = truth > 0
    extra[0, 19] = True  # a false positive of one pixel
    assert object_f1(extra, truth) == pytest.approx(2 * 2 / (3 + 2))
    assert object_f1(np.zeros((4, 4)), np.zeros((4, 4), int)) == 1.0


def test_touching_circles_are_separate_but_close():
    images, masks, instances = touching_circles(30, seed=1)
    assert images.shape == masks.shape == (30, 1, 64, 64) and instances.shape == (30, 64, 64)
    np.testing.assert_array_equal(masks[:, 0] > 0, instances > 0)
    counts = instances.max(axis=(1, 2))
    assert counts.min() >= 2  # at least a pair to separate
    components = label_components(masks[:, 0] > 0)
    # No two circles share a 4-neighbour: each is a connected component of its own ...
    assert [len(np.unique(c)) - 1 for c in components] == list(counts)
    # ... yet every circle has a neighbour within a few pixels.
    for labels in instances[:5]:
        for label in range(1, labels.max() + 1):
            own, others = np.argwhere(labels == label), np.argwhere((labels != label) & (labels > 0))
            gap = np.sqrt(((own[:, None] - others[None]) ** 2).sum(-1)).min()
            assert gap <= 5


def test_object_fates_by_hand():
    truth = blobs((10, 30), (2, 2, 8, 8), (2, 10, 8, 16), (2, 22, 8, 28))  # three 6×6 squares
    pred = truth > 0
    pred[2:8, 8:10] = True  # the first two joined into one blob: IoU 36/84 with each, no match
    pred[2:8, 22:28] = False  # the third not found at all
    pred[0, 29] = True  # one stray pixel
    fates, spurious = object_fates(pred, truth)
    assert fates == {1: "merged", 2: "merged", 3: "missed"}
    assert spurious.sum() == 6 * 14 + 1  # the merged blob and the stray pixel matched nothing
    grown = truth > 0
    grown[2:8, 8:10] = True
    grown[2:8, 16:22] = True  # all three joined: still merged
    assert set(object_fates(grown, truth)[0].values()) == {"merged"}


def test_fates_reproduce_object_f1s_counts():
    """found = true positives, merged + missed = false negatives, spurious components = false
    positives: 2·TP / (2·TP + FP + FN) is object F1, image by image."""
    _, masks, instances = touching_circles(40, seed=5)
    rng = np.random.default_rng(0)
    tally = dict.fromkeys((*FATES, "spurious"), 0)
    for mask, truth in zip(masks[:, 0] > 0, instances, strict=True):
        pred = mask.copy()
        pred[:, rng.integers(10, 54)] = True  # a line through the image merges circles it crosses
        pred[rng.random(pred.shape) < 0.002] = True  # and specks: spurious components
        pred[truth == truth.max()] = rng.random() < 0.5  # and half the time one circle is missed
        fates, spurious = object_fates(pred, truth)
        counts = {fate: list(fates.values()).count(fate) for fate in FATES}
        false_positives = len(np.unique(label_components(spurious[None])[0])) - 1
        f1 = (
            2
            * counts["found"]
            / (2 * counts["found"] + counts["merged"] + counts["missed"] + false_positives)
        )
        assert f1 == pytest.approx(object_f1(pred, truth))
        assert counts["merged"] + counts["found"] + counts["missed"] == truth.max()
        tally = {fate: tally[fate] + counts.get(fate, false_positives) for fate in tally}
    assert min(tally.values()) > 0, tally  # every fate occurred


def test_the_separation_term_alone():
    """balanced=False drops w_c: far from the gap every pixel weighs 1, in the gap 1 + the term."""
    instances = np.array([[1, 0, 0, 0, 2]])
    w = weight_map(instances, balanced=False)
    assert w[0, 0] == 1.0 and w[0, 2] == pytest.approx(1 + 10 * np.exp(-16 / 50), rel=1e-6)


def flood_fill_components(mask):
    """Brute force: each unvisited object pixel starts a component, grown through 4-neighbours."""
    components, seen = [], np.zeros_like(mask)
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, members = [start], set()
        while stack:
            y, x = stack.pop()
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                members.add((y, x))
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
        components.append(frozenset(members))
    return set(components)


def test_label_components_match_a_flood_fill_and_stay_within_their_image():
    masks = np.random.default_rng(0).random((3, 12, 15)) > 0.45  # near percolation: winding objects
    masks[:, -1], masks[:, 0] = True, True  # an object on the last row of one image and the first of the next
    labels = label_components(masks)
    for image, found in zip(masks, labels, strict=True):
        ours = {frozenset(map(tuple, np.argwhere(found == k))) for k in np.unique(found[found > 0])}
        assert ours == flood_fill_components(image)
    assert not set(np.unique(labels[0])[1:]) & set(np.unique(labels[1])[1:])
