import math

import pytest

from common.geometry import is_trainable, nearest_valid_sizes, output_size, parameter_shapes, size_error

NETWORKS = [
    dict(in_channels=1, out_channels=1, base_channels=8, depth=3, padding="same", batchnorm=True, skip=True),
    dict(
        in_channels=1, out_channels=2, base_channels=4, depth=1, padding="valid", batchnorm=False, skip=True
    ),
    dict(in_channels=3, out_channels=2, base_channels=2, depth=5, padding="same", batchnorm=True, skip=False),
]


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


@pytest.mark.parametrize("model_args", NETWORKS)
def test_parameter_shapes_are_those_of_the_pytorch_unet(pytorch_script, model_args):
    model = pytorch_script.UNet(**model_args)
    shapes = parameter_shapes(model_args)
    assert list(shapes.items()) == [(name, tuple(value.shape)) for name, value in model.state_dict().items()]
    # Adam numbers parameters in this order, batch norm's buffers left out.
    assert [name for name in shapes if is_trainable(name)] == [name for name, _ in model.named_parameters()]


@pytest.mark.parametrize("model_args", NETWORKS)
def test_parameter_shapes_are_those_of_the_numpy_unet(scratch, model_args):
    params = scratch.init_params(
        in_channels=model_args["in_channels"],
        out_channels=model_args["out_channels"],
        base_channels=model_args["base_channels"],
        depth=model_args["depth"],
        batchnorm=model_args["batchnorm"],
    )
    assert [(name, value.shape) for name, value in params.items()] == list(
        parameter_shapes(model_args).items()
    )


def test_the_papers_network_has_the_papers_parameter_count():
    paper = dict(
        in_channels=1, out_channels=2, base_channels=64, depth=4, padding="valid", batchnorm=False, skip=True
    )
    assert sum(math.prod(shape) for shape in parameter_shapes(paper).values()) == 31_030_658
