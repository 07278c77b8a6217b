"""Segmentation scores on binary masks, in NumPy, shared by both scripts.

Every function takes `pred` and `target` shaped (N, 1, H, W) or (H, W), with any values
where nonzero means "object", and returns the mean over images, or the per-image scores
with `per_image=True`. Two empty masks agree perfectly and score 1.0.
"""

import numpy as np
from scipy import ndimage


def _as_images(mask):
    """(N, 1, H, W) or (H, W) → (N, H, W) bool."""
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return mask[None] != 0
    if mask.ndim == 4 and mask.shape[1] == 1:
        return mask[:, 0] != 0
    raise ValueError(f"masks must be shaped (N, 1, H, W) or (H, W), got {mask.shape}")


def _overlap_ratio(numerator, denominator):
    """numerator / denominator per image, 1.0 where both are zero (two empty masks agree)."""
    safe = np.maximum(denominator, 1)
    return np.where(denominator == 0, 1.0, numerator / safe)


def _reduce(scores, per_image):
    return scores if per_image else float(scores.mean())


def foreground(logits):
    """Binary mask (..., H, W) from logits (..., K, H, W): with one output channel, logit > 0
    (probability > 0.5); with the paper's two, the more likely class, class 1 being the object."""
    if logits.shape[-3] == 1:
        return logits[..., 0, :, :] > 0
    return logits.argmax(axis=-3) == 1


SCORE_NAMES = {"dice": "Dice", "iou": "IoU", "boundary_f1": "boundary F1", "object_f1": "object F1"}


def describe_scores(scores):
    """ "val Dice 0.9930  IoU 0.9861 …": scores keyed `<set>_<score>`, as the scripts print them."""
    held_out = next(iter(scores)).split("_", 1)[0]
    named = (f"{SCORE_NAMES[key.split('_', 1)[1]]} {value:.4f}" for key, value in scores.items())
    return f"{held_out} " + "  ".join(named)


def dice(pred, target, per_image=False):
    """Dice = 2|P ∩ T| / (|P| + |T|): the overlap the paper's successors usually report."""
    p, t = _as_images(pred), _as_images(target)
    intersection = (p & t).sum(axis=(1, 2))
    total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
    return _reduce(_overlap_ratio(2 * intersection, total), per_image)


def iou(pred, target, per_image=False):
    """IoU = |P ∩ T| / |P ∪ T| (Jaccard) of the pixels: not the ISBI challenge's IoU over matched cells."""
    p, t = _as_images(pred), _as_images(target)
    intersection = (p & t).sum(axis=(1, 2))
    union = (p | t).sum(axis=(1, 2))
    return _reduce(_overlap_ratio(intersection, union), per_image)


def boundary(mask):
    """Pixels of the object that have a 4-neighbour outside it (image borders count as outside).

    Inputs:
    - mask: (N, H, W) bool
    Returns:
    - (N, H, W) bool, the one-pixel-thick outline of every object
    """
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return mask & ~interior


def dilate(mask, radius):
    """Grow (N, H, W) bool masks by a disc of `radius` pixels: one shifted OR per offset."""
    if radius == 0:
        return mask
    height, width = mask.shape[1:]
    padded = np.pad(mask, ((0, 0), (radius, radius), (radius, radius)))
    grown = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                grown |= padded[:, radius + dy : radius + dy + height, radius + dx : radius + dx + width]
    return grown


def boundary_f1(pred, target, tolerance=0, per_image=False):
    """F1 of outline pixels: a predicted outline pixel counts if a true one lies within
    `tolerance` pixels, and the other way round for recall.

    Dice barely moves when edges blur, because edges are few pixels; this score is all
    edges, which is what skip connections are for. At 64×64 a 1-px tolerance already
    forgives most blur, so the default is 0 (exact outline pixels).
    """
    p, t = boundary(_as_images(pred)), boundary(_as_images(target))
    p_count, t_count = p.sum(axis=(1, 2)), t.sum(axis=(1, 2))
    precision = _overlap_ratio((p & dilate(t, tolerance)).sum(axis=(1, 2)), p_count)
    recall = _overlap_ratio((t & dilate(p, tolerance)).sum(axis=(1, 2)), t_count)
    # An empty outline has precision (or recall) 1 by the rule above, so two empty masks score 1
    # and one empty against one not scores 0.
    both = precision + recall
    f1 = np.where(both == 0, 0.0, 2 * precision * recall / np.maximum(both, 1e-12))
    return _reduce(f1, per_image)


# 4-neighbours within an image, never across the images of a batch: (image, row, column)
FOUR_NEIGHBOURS = np.zeros((3, 3, 3), bool)
FOUR_NEIGHBOURS[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def label_components(mask):
    """Connected components (4-neighbour) of (N, H, W) bool masks: 0 for background, and for
    each object a label of its own, unique within the batch.

    scipy.ndimage.label does it in one raster scan with union-find. (A vectorised NumPy
    version, each pixel taking its neighbours' smallest label until nothing changes, needs as
    many passes as the longest path inside an object: 10 s for the noisy predictions of a
    half-trained net on 256 images, against 0.03 s here.)
    """
    return ndimage.label(mask, structure=FOUR_NEIGHBOURS)[0]


def match_objects(found, truth, threshold=0.5):
    """One image's predicted components matched one-to-one to its true objects at IoU ≥
    `threshold`, greedily, best pair first: the matching `object_f1` and `object_fates` share.

    Inputs:
    - found: (H, W) int, the predicted mask's connected components (0 = background)
    - truth: (H, W) int, the true objects (0 = background)
    Returns:
    - found_ids: (F,) the component labels; true_ids: (T,) the object labels
    - overlap: (F, T) pixels shared by each pair
    - pairs: list of (row, col) indices into found_ids and true_ids, the matches
    """
    found_ids, found_index = np.unique(found, return_inverse=True)
    true_ids, true_index = np.unique(truth, return_inverse=True)
    # Overlap in pixels of every (found, true) pair, background (id 0) included.
    overlap = np.zeros((len(found_ids), len(true_ids)))
    np.add.at(overlap, (found_index.ravel(), true_index.ravel()), 1)
    areas_found, areas_true = overlap.sum(axis=1), overlap.sum(axis=0)
    if found_ids[0] == 0:
        found_ids, overlap, areas_found = found_ids[1:], overlap[1:], areas_found[1:]
    if true_ids[0] == 0:
        true_ids, overlap, areas_true = true_ids[1:], overlap[:, 1:], areas_true[1:]
    ious = overlap / np.maximum(areas_found[:, None] + areas_true[None, :] - overlap, 1)
    pairs = []
    while ious.size and ious.max() >= threshold:
        row, col = np.unravel_index(ious.argmax(), ious.shape)
        ious[row, :], ious[:, col] = 0, 0
        pairs.append((row, col))
    return found_ids, true_ids, overlap, pairs


def object_f1(pred, instances, per_image=False, threshold=0.5):
    """F1 over objects: the predicted mask's connected components (4-connected) matched
    one-to-one to the true objects at IoU ≥ `threshold`. A blob that merges two touching
    circles matches at most one of them (the larger, if it covers over half of the union).

    Inputs:
    - pred: (N, 1, H, W) or (H, W) binary mask
    - instances: (N, H, W) or (H, W) int, 0 = background, k = k-th true object
    """
    pred = _as_images(pred)
    instances = np.asarray(instances).reshape(pred.shape)
    scores = np.empty(len(pred))
    for i, (found, truth) in enumerate(zip(label_components(pred), instances, strict=True)):
        found_ids, true_ids, _, pairs = match_objects(found, truth, threshold)
        total = len(found_ids) + len(true_ids)
        scores[i] = 1.0 if total == 0 else 2 * len(pairs) / total
    return _reduce(scores, per_image)


FATES = ("found", "merged", "missed")


def object_fates(pred, truth, threshold=0.5):
    """What became of each true object in one image, on `object_f1`'s matching:

    - found: matched to a predicted component (a true positive);
    - merged: unmatched, and most of its pixels lie in one predicted component that also
      overlaps another true object: the net joined it to a neighbour;
    - missed: every other unmatched object (not found, or found too small or too large);
    and which predicted components matched nothing (spurious: false positives).

    Inputs:
    - pred: (H, W) binary mask
    - truth: (H, W) int, 0 = background, k = k-th true object
    Returns:
    - fates: {true label: "found" | "merged" | "missed"}
    - spurious: (H, W) bool, the pixels of the unmatched predicted components
    """
    found = label_components(_as_images(pred))[0]
    found_ids, true_ids, overlap, pairs = match_objects(found, truth, threshold)
    matched_rows, matched_cols = {row for row, _ in pairs}, {col for _, col in pairs}
    crowded = (overlap > 0).sum(axis=1) >= 2  # components that touch two or more true objects
    fates = {}
    for col, label in enumerate(true_ids):
        area = (truth == label).sum()
        best = overlap[:, col].argmax() if len(found_ids) else None  # the component holding most of it
        merged = best is not None and crowded[best] and 2 * overlap[best, col] > area
        fates[label] = "found" if col in matched_cols else "merged" if merged else "missed"
    spurious_ids = [label for row, label in enumerate(found_ids) if row not in matched_rows]
    return fates, np.isin(found, spurious_ids)


def segmentation_scores(preds, truth, instances=None, prefix="val"):
    """The scores both scripts report on a held-out set, keyed `<prefix>_<score>`: Dice, IoU,
    boundary F1, and object F1 where instance labels are known."""
    scores = {"dice": dice(preds, truth), "iou": iou(preds, truth), "boundary_f1": boundary_f1(preds, truth)}
    if instances is not None:
        scores["object_f1"] = object_f1(preds, instances)
    return {f"{prefix}_{name}": value for name, value in scores.items()}
