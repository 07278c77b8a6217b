"""Overlap-tile inference: any image size, and for a valid-padding net, seamless to 1e-4."""

import numpy as np
import pytest
import torch

from common.geometry import exact_margin
from common.tiling import predict_tiled


@pytest.fixture(scope="module")
def valid_net(pytorch_script):
    torch.manual_seed(0)
    return pytorch_script.UNet(base_channels=4, depth=2, padding="valid", norm="none").eval()


def torch_forward(net):
    def forward(tile):
        with torch.inference_mode():
            return net(torch.from_numpy(tile)).numpy()

    return forward


def test_valid_net_is_seamless_whatever_the_tile_size(valid_net):
    image = np.random.default_rng(0).standard_normal((1, 301, 259)).astype(np.float32)
    forward = torch_forward(valid_net)
    # 44 → 4 output pixels per tile (many seams); 60 → 20; 340 → one tile covers the image.
    small, medium, whole = (predict_tiled(image, forward, tile, align=4) for tile in (44, 60, 340))
    assert small.shape == (1, 301, 259)
    assert np.abs(small - whole).max() <= 1e-4
    assert np.abs(medium - whole).max() <= 1e-4


def test_numpy_forward_tiles_like_torch(valid_net, scratch):
    params = {name: value.numpy() for name, value in valid_net.state_dict().items()}
    image = np.random.default_rng(1).standard_normal((1, 70, 97)).astype(np.float32)
    by_numpy = predict_tiled(image, lambda tile: scratch.unet_forward(tile, params, padding="valid"), 60, 4)
    by_torch = predict_tiled(image, torch_forward(valid_net), 44, 4)
    assert np.abs(by_numpy - by_torch).max() <= 1e-4


def test_tiles_start_on_multiples_of_align(valid_net):
    """A margin of 4 (a multiple of 2**depth) keeps every tile in the pooling grid's phase: no
    seams. A margin of 2, allowed by pretending align = 2, shifts the grid by 2 px: seams."""
    image = np.random.default_rng(2).standard_normal((1, 64, 64)).astype(np.float32)
    forward = torch_forward(valid_net)
    whole = predict_tiled(image, forward, 120, align=4)  # one tile covers the image
    aligned = predict_tiled(image, forward, 60, align=4, margin=4)
    misaligned = predict_tiled(image, forward, 60, align=2, margin=2)
    assert np.abs(aligned - whole).max() <= 1e-4
    assert np.abs(misaligned - whole).max() > 1e-2
    with pytest.raises(ValueError, match="margin 2 is not a multiple of 4"):
        predict_tiled(image, forward, 60, align=4, margin=2)


def test_same_padding_margin_hides_the_seams(pytorch_script):
    """A same-padding net sees zeros past each tile's edge. Dropping the exact margin (48 px at
    depth 3: the field's reach, rounded up to a multiple of 8) leaves every kept pixel the context
    of a whole pass; 40 px leaves some pixels' fields reaching past the tile."""
    torch.manual_seed(0)
    net = pytorch_script.UNet(base_channels=4, depth=3, padding="same").eval()
    image = np.random.default_rng(3).standard_normal((1, 256, 256)).astype(np.float32)
    forward = torch_forward(net)
    whole = forward(image[None])[0]  # one pass over the whole image
    inner = (slice(None), slice(64, -64), slice(64, -64))  # away from the image's own border

    def seam_error(tile, margin):
        tiled = predict_tiled(image, forward, tile, align=8, margin=margin)
        return np.abs(tiled - whole)[inner].max() / np.abs(whole).max()

    assert exact_margin(3) == 48
    assert seam_error(64, 0) > 0.1
    assert seam_error(128, 40) > 1e-3
    assert seam_error(128, 48) < 1e-4


def test_a_tile_too_small_for_its_margin():
    with pytest.raises(ValueError, match="keeps no output"):
        predict_tiled(np.zeros((1, 10, 10), np.float32), lambda tile: tile, tile=16, align=8, margin=8)
