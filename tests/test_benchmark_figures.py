"""The benchmarks' figures show what they say they show: the weight-map comparison picks the
test image the map helps most and draws its map and both predictions; the tiling figure's
differences are those of the two tilings against one whole pass."""

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.data import touching_circles
from common.metrics import object_f1
from common.tiling import predict_tiled
from common.weight_map import weight_map


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib Figure a benchmark would save, kept instead of written."""
    figures = []
    for name in ("bench_weight_map", "bench_tiling"):
        module = importlib.import_module(f"benchmarks.{name}")
        monkeypatch.setattr(module, "save_figure", lambda figure, path: figures.append(figure))
    return figures


def test_box_sum_by_brute_force():
    bench = importlib.import_module("benchmarks.bench_weight_map")
    values = np.random.default_rng(0).random((9, 7))
    padded = np.pad(values, 2)
    expected = [[padded[y : y + 4, x : x + 4].sum() for x in range(7)] for y in range(9)]
    np.testing.assert_allclose(bench.box_sum(values, 2), expected)


def test_the_weight_map_figure_shows_the_image_the_map_helps_most(drawn, tmp_path):
    bench = importlib.import_module("benchmarks.bench_weight_map")
    images, masks, instances = touching_circles(3, seed=4)
    plain = masks.copy()
    plain[2, 0, :, 20:44] = 1  # a band across image 2 merges its circles: the map's gain is there
    data = SimpleNamespace(test=(torch.from_numpy(images), torch.from_numpy(masks), instances))
    bench.save_comparison(
        {False: (None, plain, data, None), True: (None, masks, None, None)}, tmp_path / "w.png"
    )
    assert object_f1(plain[2, 0], instances[2]) < 1 == object_f1(masks[2, 0], instances[2])
    weights, without, with_map, _ = drawn[0].axes[:4]
    np.testing.assert_allclose(weights.images[0].get_array(), weight_map(instances[2]))
    np.testing.assert_array_equal(without.images[0].get_array(), plain[2, 0] > 0)
    np.testing.assert_array_equal(with_map.images[0].get_array(), masks[2, 0] > 0)


def test_the_tiling_figure_shows_both_tilings_against_one_pass(drawn, tmp_path, pytorch_script):
    bench = importlib.import_module("benchmarks.bench_tiling")
    torch.manual_seed(0)
    net = pytorch_script.UNet(base_channels=2, depth=2).eval()

    @torch.inference_mode()
    def forward(window):
        return net(torch.from_numpy(window)).numpy()

    image = (
        np.random.default_rng(0).standard_normal((1, 320, 320)).astype(np.float32)
    )  # the figure shows its top-left 256²
    whole = forward(image[None])[0]
    bench.save_seams(image, whole, forward, 4, 2, tmp_path / "s.png")
    on_grid, off_grid = (ax.images[0].get_array() for ax in drawn[0].axes[:2])
    expected_on = np.abs(predict_tiled(image, forward, 128, 4, 24) - whole)[0, :256, :256]
    expected_off = np.abs(predict_tiled(image, forward, 128, 1, 26) - whole)[0, :256, :256]
    np.testing.assert_allclose(on_grid, np.maximum(expected_on, 1e-7))
    np.testing.assert_allclose(off_grid, np.maximum(expected_off, 1e-7))
    inner = (slice(bench.BORDER, None), slice(bench.BORDER, None))
    assert expected_off[inner].max() > 1e-3 > expected_on[inner].max()
