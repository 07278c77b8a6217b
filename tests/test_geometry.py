import math

import numpy as np
import pytest

from common.geometry import (
    is_trainable,
    nearest_valid_sizes,
    output_size,
    parameter_shapes,
    receptive_fields,
    size_error,
)

NETWORKS = [
    dict(in_channels=1, out_channels=1, base_channels=8, depth=3, padding="same", norm="batch", skip=True),
    dict(in_channels=1, out_channels=2, base_channels=4, depth=1, padding="valid", norm="none", skip=True),
    dict(in_channels=3, out_channels=2, base_channels=2, depth=5, padding="same", norm="batch", skip=False),
    dict(in_channels=1, out_channels=1, base_channels=6, depth=2, padding="valid", norm="group", skip=True),
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
        norm=model_args["norm"],
    )
    assert [(name, value.shape) for name, value in params.items()] == list(
        parameter_shapes(model_args).items()
    )


def test_the_papers_network_has_the_papers_parameter_count():
    paper = dict(
        in_channels=1, out_channels=2, base_channels=64, depth=4, padding="valid", norm="none", skip=True
    )
    assert sum(math.prod(shape) for shape in parameter_shapes(paper).values()) == 31_030_658


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_receptive_fields_against_autograd(pytorch_script, monkeypatch, padding, depth):
    """The inputs one output pixel depends on, found by autograd in a thin net (one channel)
    whose weights are all 1 on an input of ones: every path adds, nothing cancels, and with
    average pooling in place of max-pooling every pixel of a window passes its gradient on."""
    import torch

    monkeypatch.setattr(pytorch_script, "max_pool2x2", lambda x: torch.nn.functional.avg_pool2d(x, 2))
    net = pytorch_script.UNet(base_channels=1, depth=depth, padding=padding, norm="none").double()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(1.0)
    size = (
        16 * 2**depth
        if padding == "same"
        else next(s for s in range(8, 1000) if (output_size(s, depth, padding) or 0) >= 2**depth)
    )
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = net(x)
    row0 = size // 2 if padding == "same" else 0  # away from the zero border; a multiple of 2**depth
    spans = []
    for phase in range(2**depth):
        (gradient,) = torch.autograd.grad(out[0, 0, row0 + phase, out.shape[-1] // 2], x, retain_graph=True)
        rows = np.flatnonzero(gradient[0, 0].abs().sum(axis=1).numpy())
        spans.append(rows.max() - rows.min() + 1)
    assert spans == receptive_fields(depth, padding, size)
