"""The training recipe both scripts follow: the same held-out sets, the same one-cycle
schedule, validation at the same steps. 01_pytorch.py hands the schedule to PyTorch's
OneCycleLR; 00_scratch.py --train computes it itself, and a test holds the two equal."""

VAL_SEED = 10_000  # added to --seed: the validation set, never trained on
TEST_SEED = 30_000  # the test set, for the final scores only
AUGMENT_SEED = 40_000  # 01_pytorch.py's augmentation draws, apart from the batch order's
VAL_SIZE = 128  # images in each held-out set
DIV_FACTOR = 2  # the one-cycle schedule starts at lr/2


def warm_up_fraction(steps):
    """The share of the run spent rising to the peak rate: 5 %, but at least 1.5 steps (OneCycleLR
    divides by each phase's length, and a peak at exactly step 0, a run of 20 steps, would be a
    division by 0), and at most 75 % (a run of 1 or 2 steps)."""
    return min(0.75, max(0.05, 1.5 / steps))


def evaluation_steps(steps, every):
    """When to validate: the untrained net (step 0), then densely while it learns fastest
    (5, 10, 20, 40, … doubling below `every`), then every `every` steps, and at the end."""
    early = [0] + [5 * 2**k for k in range(20) if 5 * 2**k < every]
    return sorted({*early, *range(every, steps, every), steps} - {s for s in early if s > steps})
