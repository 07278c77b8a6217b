import numpy as np

from common.data import standardize, synthetic_circles


def test_shapes_dtypes_and_binary_masks():
    images, masks = synthetic_circles(12, size=48, seed=3)
    assert images.shape == masks.shape == (12, 1, 48, 48)
    assert images.dtype == masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 1.0}


def test_images_are_standardised_per_image():
    images, _ = synthetic_circles(20, seed=1)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-4)


def test_same_seed_same_arrays_other_seed_different():
    a = synthetic_circles(5, seed=7)
    b = synthetic_circles(5, seed=7)
    c = synthetic_circles(5, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_circles_are_brighter_than_background():
    images, masks = synthetic_circles(50, seed=2, noise=0.0)
    inside = images[masks == 1].mean()
    outside = images[masks == 0].mean()
    assert inside > outside + 1.0


def test_radius_knob_controls_circle_area():
    _, small = synthetic_circles(40, seed=0, circles=(1, 1), radius=(0.1, 0.1))
    _, large = synthetic_circles(40, seed=0, circles=(1, 1), radius=(0.2, 0.2))
    # One circle of radius 0.1·64 = 6.4 px covers about π·6.4² ≈ 129 px (less where it leaves the image).
    assert 100 < small.sum(axis=(1, 2, 3)).mean() <= 135
    assert large.sum() > 3.5 * small.sum()


def test_circle_count_knob():
    _, one = synthetic_circles(30, seed=4, circles=(1, 1))
    _, four = synthetic_circles(30, seed=4, circles=(4, 4))
    assert four.sum() > 2 * one.sum()


def test_standardize_by_hand():
    image = np.array([[1.0, 3.0], [1.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(standardize(image), [[-1, 1], [-1, 1]])


def test_draws_larger_than_one_chunk_are_reproducible_and_filled():
    a = synthetic_circles(300, size=16, seed=5)
    b = synthetic_circles(300, size=16, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1][256:].sum(axis=(1, 2, 3)) > 0).all()  # the second chunk holds circles too
