"""The synthetic nuclei: each property the module promises, measured on the arrays by means
independent of how they were drawn, and the example data set as Pillow reads it back."""

import hashlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from common.cells import EXAMPLE, NEAR, TOUCHING, kept_pixels, main, synthetic_cells, write_example
from common.files import WriteError

SEEDS = range(4)


@pytest.fixture(scope="module")
def drawn():
    """(image, labels) of a 256×512 image, the example's training size, for a few seeds."""
    return [synthetic_cells(256, 512, seed=seed) for seed in SEEDS]


def neighbour_pairs(labels, reach, chessboard=True):
    """Pairs (a, b) of different cells with pixels within `reach` of each other: chessboard
    distance, or with `chessboard=False` taxicab (reach 1: a shared border, 4-neighbours)."""
    height, width = labels.shape
    pairs = set()
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy, dx) == (0, 0) or (not chessboard and abs(dy) + abs(dx) > reach):
                continue
            a = labels[max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)]
            b = labels[max(0, -dy) : height + min(0, -dy), max(0, -dx) : width + min(0, -dx)]
            different = (a > 0) & (b > 0) & (a != b)
            pairs |= {
                (min(p), max(p)) for p in zip(a[different].tolist(), b[different].tolist(), strict=True)
            }
    return pairs


def crowded_cells(labels, reach):
    """Cells with another cell within `reach` px (chessboard): the largest and the smallest
    label in some pixel's (2·reach + 1)² neighbourhood differ from its own."""
    size = 2 * reach + 1
    largest = ndimage.maximum_filter(labels, size)
    smallest = ndimage.minimum_filter(np.where(labels == 0, labels.max() + 1, labels), size)
    crowded = (labels > 0) & ((largest > labels) | (smallest < labels))
    return set(np.unique(labels[crowded]).tolist())


def cells_in(pairs):
    return {cell for pair in pairs for cell in pair}


def seam(labels):
    """Pixels of a cell with a 4-neighbour in another cell."""
    padded = np.pad(labels, 1)
    neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    return np.logical_or.reduce([(n > 0) & (labels > 0) & (n != labels) for n in neighbours])


def fill_of_enclosing_circle(mask):
    """A shape's area over that of the circle about its centroid through its farthest pixel
    (+ half a pixel): about 0.93 for a digitised disc, 1/aspect for an ellipse."""
    ys, xs = np.nonzero(mask)
    radius = np.hypot(ys - ys.mean(), xs - xs.mean()).max() + 0.5
    return mask.sum() / (np.pi * radius**2)


def test_same_seed_same_arrays_other_seed_different():
    a, b, c = (synthetic_cells(128, 192, seed=seed) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert not np.array_equal(a[0], c[0])


def test_labels_are_consecutive_and_image_in_the_unit_range(drawn):
    for image, labels in drawn:
        assert image.shape == labels.shape == (256, 512)
        assert labels.dtype == np.uint16 and image.dtype == np.float32
        np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
        assert 0 <= image.min() and image.max() <= 1


def test_each_cell_is_one_whole_piece_of_nucleus_size(drawn):
    """A cell drawn over another would lose pixels to it: be cut in two, or shrink below half
    of the smallest nominal area (a disc of diameter 18: 254 px)."""
    for _, labels in drawn:
        areas = np.bincount(labels.ravel())[1:]
        assert areas.min() >= 254 / 2
        assert np.sqrt(4 * areas.max() / np.pi) < 36 * 1.2  # equivalent diameter, stretch and wobble
        for cell, box in enumerate(ndimage.find_objects(labels), start=1):
            assert ndimage.label(labels[box] == cell)[1] == 1


def test_cell_count_and_foreground_as_stated(drawn):
    for _, labels in drawn:
        assert 45 <= labels.max() <= 60
        assert 0.20 <= (labels > 0).mean() <= 0.35


def test_cell_count_scales_with_area():
    _, labels = synthetic_cells(512, 512, seed=0)
    assert 2 * 45 <= labels.max() <= 2 * 60


def test_many_cells_touch_others_are_near_or_alone(drawn):
    for _, labels in drawn:
        cells = labels.max()
        touching = neighbour_pairs(labels, 1, chessboard=False)
        near = neighbour_pairs(labels, 3) - touching  # 1-3 px of background between them
        assert len(cells_in(touching)) >= 0.3 * cells
        assert len(near) >= 5
        assert cells - len(crowded_cells(labels, 5)) >= 0.1 * cells  # nothing within 5 px
        assert crowded_cells(labels, 3) == cells_in(neighbour_pairs(labels, 3))  # the two measures agree


def test_cells_are_irregular_and_some_elongated(drawn):
    yy, xx = np.mgrid[-12:13, -12:13]
    assert fill_of_enclosing_circle(yy**2 + xx**2 <= 10.3**2) > 0.9  # the measure on a disc
    fills, aspects = [], []
    for _, labels in drawn:
        for cell, box in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[box] == cell
            fills.append(fill_of_enclosing_circle(mask))
            small, large = np.linalg.eigvalsh(np.cov(np.nonzero(mask)))
            aspects.append(np.sqrt(large / small))
    assert np.median(fills) < 0.8
    assert np.mean(np.array(aspects) > 1.4) >= 0.1


def test_cells_brighter_than_background_some_faint(drawn):
    for image, labels in drawn:
        background = image[labels == 0].mean()
        means = ndimage.mean(image, labels, np.arange(1, labels.max() + 1))
        assert means.min() > background + 0.1  # the faintest is still visible
        assert means.min() < 0.5 * means.max()


def test_touching_cells_show_only_a_faint_seam(drawn):
    """The shared border is darker than the two cells' insides, but much nearer to them than
    to the background: a seam, not a gap."""
    for image, labels in drawn:
        touching = np.isin(labels, list(cells_in(neighbour_pairs(labels, 1, chessboard=False))))
        inside = image[ndimage.binary_erosion(labels > 0, iterations=3) & touching].mean()
        background = image[labels == 0].mean()
        border = image[seam(labels)].mean()
        assert border < 0.9 * inside
        assert border > background + 0.5 * (inside - background)


def test_a_new_cell_takes_only_free_pixels_or_keeps_its_distance():
    """By hand, in a 14×14 window: a 10×10 candidate (100 px) beside pixels another cell holds."""
    candidate = np.zeros((14, 14), bool)
    candidate[2:12, 2:12] = True

    def held(*where):
        taken = np.zeros((14, 14), bool)
        taken[where] = True
        return taken

    assert kept_pixels(candidate, held(slice(None), slice(9, None)), TOUCHING, 100) is None  # 30 % clipped
    taken = held(slice(None), slice(11, None))  # 10 % clipped: the two share a border
    np.testing.assert_array_equal(kept_pixels(candidate, taken, TOUCHING, 100), candidate & ~taken)
    assert kept_pixels(candidate, taken, NEAR, 100) is None  # a cell set apart may not touch
    assert kept_pixels(candidate, held(12, 12), NEAR, 100) is None  # nor be a diagonal neighbour
    far = held(0, slice(None))  # 2 px away: 1 px of background between
    np.testing.assert_array_equal(kept_pixels(candidate, far, NEAR, 100), candidate)
    assert kept_pixels(candidate, far, NEAR, 201) is None  # under half its nominal area (cut by the edge)
    assert kept_pixels(candidate, held(6, slice(None)), TOUCHING, 100) is None  # 10 %, but cut in two


def test_more_cells_than_uint16_labels_hold_are_refused():
    with pytest.raises(ValueError, match="uint16"):
        synthetic_cells(64, 64, cells=(3e6, 3e6))


# ----------------------------------------------------------------------------- the example data set


def snapshot(folder):
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read(path):
    with Image.open(path) as image:
        return image.mode, image.format, getattr(image, "n_frames", 1), np.asarray(image)


def test_example_files_read_back_exactly(tmp_path):
    written = write_example(tmp_path)
    expected = {name for image, mask, _ in EXAMPLE for name in (image, mask)}
    assert set(snapshot(tmp_path)) == expected  # those files and nothing else
    for index, (image_path, mask_path, labels) in enumerate(written):
        image, drawn_labels = synthetic_cells(*labels.shape, seed=index)
        np.testing.assert_array_equal(labels, drawn_labels)
        mode, format, pages, pixels = read(image_path)
        if image_path.suffix == ".png":
            assert (mode, format, pages, pixels.dtype) == ("L", "PNG", 1, np.uint8)
            np.testing.assert_array_equal(pixels, np.round(image * 255))
        else:
            assert (mode, format, pages, pixels.dtype) == ("I;16", "TIFF", 1, np.uint16)
            assert 100 <= pixels.min() and 2000 < pixels.max() <= 100 + 4095  # a 12-bit camera's counts
        mode, format, pages, pixels = read(mask_path)
        assert (mode, pages, pixels.dtype) == ("I;16", 1, np.uint16)
        assert format == {".png": "PNG", ".tif": "TIFF"}[mask_path.suffix]
        np.testing.assert_array_equal(pixels, labels)
    assert [labels.shape for _, _, labels in written] == [(256, 512), (256, 256), (256, 256)]


def test_command_says_what_it_wrote_and_refuses_to_write_again(tmp_path, capsys):
    main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == [
        str(tmp_path / name) for image, mask, _ in EXAMPLE for name in (image, mask)
    ]
    assert out[-1].startswith("3 images, ") and "% of pixels inside a cell" in out[-1]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{tmp_path / EXAMPLE[0][0]} exists; remove it or choose another folder" in err
    assert snapshot(tmp_path) == before


def test_one_existing_file_stops_everything(tmp_path, capsys):
    """The user's own mask where the example would put one: kept, and no other file written."""
    theirs = tmp_path / EXAMPLE[2][1]
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"the user's mask")
    with pytest.raises(WriteError, match="exists"):
        write_example(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path)])
    assert stopped.value.code == 2
    assert snapshot(tmp_path) == {EXAMPLE[2][1]: hashlib.sha256(b"the user's mask").hexdigest()}


def test_seed_option_draws_other_images(tmp_path, capsys):
    main([str(tmp_path), "--seed", "1"])
    _, _, _, labels = read(tmp_path / EXAMPLE[0][1])
    np.testing.assert_array_equal(labels, synthetic_cells(256, 512, seed=len(EXAMPLE))[1])


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["a", "--seed", "-1"]])
def test_bad_arguments_are_one_line_and_exit_2(argv, in_tmp, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not any(in_tmp.iterdir())
