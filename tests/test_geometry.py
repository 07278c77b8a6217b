import pytest

from common.geometry import nearest_valid_sizes, output_size, size_error


def test_paper_sizes():
    # Paper, Fig. 1: 572×572 in, 388×388 out, four poolings, unpadded 3×3 convolutions.
    assert output_size(572, 4, "valid") == 388


@pytest.mark.parametrize(
    "size, depth, padding, nearest",
    [
        (570, 4, "valid", (556, 572)),
        (100, 3, "same", (96, 104)),
        (65, 4, "same", (64, 80)),
    ],
)
def test_invalid_sizes_name_their_neighbours(size, depth, padding, nearest):
    assert output_size(size, depth, padding) is None
    assert nearest_valid_sizes(size, depth, padding) == nearest
    assert f"{nearest[0]} or {nearest[1]}" in size_error(size, depth, padding)


def test_same_padding_keeps_the_size():
    assert output_size(64, 4, "same") == 64
    assert size_error(64, 4, "same") is None


def test_too_small_for_valid_padding():
    assert output_size(12, 1, "valid") is None  # 12 → 8 → 4 → 0: nothing left
    below, above = nearest_valid_sizes(12, 1, "valid")
    assert below is None and output_size(above, 1, "valid") > 0
