"""Segmentation scores on binary masks, in NumPy, shared by both scripts.

Every function takes `pred` and `target` shaped (N, 1, H, W) or (H, W), with any values
where nonzero means "object", and returns the mean over images, or the per-image scores
with `per_image=True`. Two empty masks agree perfectly and score 1.0.
"""

import numpy as np


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


def dice(pred, target, per_image=False):
    """Dice = 2|P ∩ T| / (|P| + |T|): the overlap the paper's successors usually report."""
    p, t = _as_images(pred), _as_images(target)
    intersection = (p & t).sum(axis=(1, 2))
    total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
    return _reduce(_overlap_ratio(2 * intersection, total), per_image)


def iou(pred, target, per_image=False):
    """IoU = |P ∩ T| / |P ∪ T| (Jaccard); the paper's ISBI cell-tracking score."""
    p, t = _as_images(pred), _as_images(target)
    intersection = (p & t).sum(axis=(1, 2))
    union = (p | t).sum(axis=(1, 2))
    return _reduce(_overlap_ratio(intersection, union), per_image)


def pixel_accuracy(pred, target, per_image=False):
    """Fraction of pixels labelled correctly; high even for a net that misses small objects."""
    p, t = _as_images(pred), _as_images(target)
    return _reduce((p == t).mean(axis=(1, 2)), per_image)


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
