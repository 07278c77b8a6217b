"""00_scratch.py: every layer against a hand-computed case, the whole net against PyTorch."""

import itertools

import numpy as np
import pytest
import torch

from common.geometry import output_size


def test_conv2d_by_hand(scratch):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0, 1, 1] = 1.0  # identity kernel
    w[0, 0, 0, 0] = 2.0  # plus twice the top-left neighbour
    b = np.array([0.5], np.float32)
    valid = scratch.conv2d(x, w, b, "valid")
    # out[i, j] = x[i+1, j+1] + 2·x[i, j] + 0.5
    np.testing.assert_array_equal(valid[0, 0], [[5 + 0 + 0.5, 6 + 2 + 0.5], [9 + 8 + 0.5, 10 + 10 + 0.5]])
    same = scratch.conv2d(x, w, b, "same")
    assert same.shape == (1, 1, 4, 4)
    assert same[0, 0, 0, 0] == 0 + 0.5  # the top-left neighbour is the zero border
    assert same[0, 0, 1, 1] == 5 + 0 + 0.5


def test_conv2d_bands_match_one_big_product(scratch, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 20, 17)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    whole = scratch.conv2d(x, w, None, "same")
    monkeypatch.setattr(
        scratch, "COLUMN_BUFFER_BYTES", 4 * (27 + 5) * 19 * 3
    )  # 3 rows of 19 columns a band, last band 2
    np.testing.assert_allclose(scratch.conv2d(x, w, None, "same"), whole, atol=1e-5)


def test_max_pool_relu_crop_by_hand(scratch):
    x = np.array([[1, 2, 5, 0], [3, -4, 1, 1], [0, 0, -1, -2], [0, 7, -3, -4]], np.float32)[None, None]
    np.testing.assert_array_equal(scratch.max_pool2x2(x)[0, 0], [[3, 5], [7, -1]])
    np.testing.assert_array_equal(scratch.relu(x.copy())[0, 0, 1], [3, 0, 1, 1])
    np.testing.assert_array_equal(scratch.center_crop(x, 2, 2)[0, 0], [[-4, 1], [0, -1]])


def test_up_conv_by_hand(scratch):
    x = np.array([[1, 2]], np.float32).reshape(1, 1, 1, 2)
    w = np.array([[1, 10], [100, 1000]], np.float32).reshape(1, 1, 2, 2)
    out = scratch.up_conv2x2(x, w, np.array([0.5], np.float32))
    # each input pixel paints the kernel, scaled by its value, onto its own 2×2 patch
    np.testing.assert_array_equal(out[0, 0], [[1.5, 10.5, 2.5, 20.5], [100.5, 1000.5, 200.5, 2000.5]])


def test_batch_norm_and_activations_by_hand(scratch):
    x = np.array([1.0, 3.0], np.float32).reshape(1, 2, 1, 1)
    out = scratch.batch_norm(
        x.copy(),
        weight=np.array([2.0, 1.0]),
        bias=np.array([0.0, 1.0]),
        running_mean=np.array([1.0, 1.0]),
        running_var=np.array([4.0, 1.0]),
        eps=0.0,
    )
    np.testing.assert_allclose(out.ravel(), [0.0, 3.0])  # (1-1)/2·2+0, (3-1)/1·1+1
    np.testing.assert_allclose(scratch.sigmoid(np.array([0.0, -1000.0, 1000.0])), [0.5, 0.0, 1.0])
    probs = scratch.softmax(np.array([0.0, np.log(3.0)]).reshape(1, 2, 1, 1))
    np.testing.assert_allclose(probs.ravel(), [0.25, 0.75])


def randomized(net):
    """Non-trivial batch-norm statistics, so that the test exercises them."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_forward_equals_pytorch(scratch, pytorch_script, padding, norm, depth):
    # The smallest input the net can take, plus one more step of 2**depth.
    smallest = next(s for s in itertools.count(2) if output_size(s, depth, padding))
    size = smallest + 2**depth
    torch.manual_seed(depth)
    net = randomized(
        pytorch_script.UNet(
            in_channels=2, out_channels=3, base_channels=4, depth=depth, padding=padding, norm=norm
        )
    )
    params = {name: value.numpy() for name, value in net.state_dict().items()}
    x = torch.randn(2, 2, size, size)
    with torch.no_grad():
        expected = net(x).numpy()
    got = scratch.unet_forward(x.numpy(), params, padding=padding)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


def test_init_params_has_the_state_dict_keys_and_shapes(scratch, pytorch_script):
    for norm in ("batch", "none"):
        net = pytorch_script.UNet(in_channels=1, out_channels=2, base_channels=4, depth=3, norm=norm)
        expected = {name: tuple(value.shape) for name, value in net.state_dict().items()}
        params = scratch.init_params(1, 2, 4, 3, norm)
        assert {name: value.shape for name, value in params.items()} == expected


def test_init_params_uses_the_papers_std(scratch):
    params = scratch.init_params(1, 1, 64, 2, norm="none", seed=0)
    w = params["encoder.1.conv2.weight"]  # 128 channels in, 3×3: N = 1152
    assert w.std() == pytest.approx(np.sqrt(2 / 1152), rel=0.02)


def test_paper_run_prints_the_papers_shapes_and_parameters_within_100_columns(scratch, capsys, monkeypatch):
    """Paper, Fig. 1: 572 → 570 → 568, … 28×28×1024 at the bottom, 388×388×2 out; one run of
    `--paper` (a zero image would do: the shapes do not depend on the values)."""
    traces, original = [], scratch.Trace
    monkeypatch.setattr(
        scratch, "Trace", lambda *args, **kw: traces.append(original(*args, **kw)) or traces[-1]
    )
    scratch.main(["--paper"])
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 100
    assert "388, 388" in printed and "31,030,658 parameters" in printed
    (trace,) = traces
    convs = [row["shape_out"] for row in trace.rows if row["op"].startswith("conv 3×3")]
    assert convs[:4] == [(64, 570, 570), (64, 568, 568), (128, 282, 282), (128, 280, 280)]
    assert convs[8:10] == [(1024, 30, 30), (1024, 28, 28)]
    assert convs[-2:] == [(64, 390, 390), (64, 388, 388)]
    concat = next(row for row in trace.rows if row["op"] == "concat")
    assert concat["note"] == "crop(enc4 (512, 64, 64) → (512, 56, 56)) + up (512, 56, 56) → (1024, 56, 56)"
    assert sum(row["params"] for row in trace.rows) == 31_030_658  # = sum of the torch net's parameters


def test_paper_options_can_be_overridden(scratch, capsys):
    """--paper sets the paper's network; an explicit option changes that part of it only."""
    scratch.main(["--paper", "--base-channels", "4", "--size", "188"])
    printed = capsys.readouterr().out
    assert "depth 4, base 4 channels, valid padding, one 188×188 circle image" in printed
    assert "(2, 4, 4): class probabilities" in printed  # still two classes, valid padding: 188 → 4


def test_default_run_prints_the_trace(scratch, tmp_path, capsys):
    scratch.main(["--figure", str(tmp_path / "arch.pdf")])
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("dec1   concat") and "enc1 (8, 64, 64) + up (8, 64, 64) → (16, 64, 64)" in line
        for line in lines
    )
    assert "total: 121,033 parameters" in "\n".join(lines)  # the torch net's count for base 8, depth 3
    assert max(len(line) for line in lines) <= 100
    assert (tmp_path / "arch.pdf").read_bytes()[:5] == b"%PDF-"  # the format the name asks for


def test_no_skip_weights_run_without_skips_in_numpy_too(scratch, pytorch_script):
    torch.manual_seed(0)
    net = randomized(pytorch_script.UNet(base_channels=4, depth=2, skip=False))
    params = {name: value.numpy() for name, value in net.state_dict().items()}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = net(x).numpy()
    assert np.abs(scratch.unet_forward(x.numpy(), params, skip=False) - expected).max() <= 1e-4
    assert np.abs(scratch.unet_forward(x.numpy(), params) - expected).max() > 1e-2


def test_the_paper_figure_shows_each_crop_from_the_trace(scratch, monkeypatch, tmp_path):
    """Paper, Fig. 1: the skips crop 568 → 392, 280 → 200, 136 → 104 and 64 → 56: 88, 40, 16
    and 4 px a side, as the figure must say."""
    import common.plotting as plotting

    drawn = {}
    monkeypatch.setattr(plotting, "save_figure", lambda figure, path: drawn.update(figure=figure))
    params = scratch.init_params(1, 2, 1, 4, norm="none")  # one channel: the sizes are the paper's
    trace = scratch.Trace(echo=False)
    scratch.unet_forward(np.zeros((1, 1, 572, 572), np.float32), params, padding="valid", trace=trace)
    plotting.save_architecture_figure(trace.rows, tmp_path / "paper.png")
    texts = [text.get_text() for text in drawn["figure"].axes[0].texts]
    assert [text for text in texts if text.startswith("crop")] == [f"crop {px} px" for px in (4, 16, 40, 88)]
    assert "572²" not in texts and "570²" in texts and texts.count("388²") == 2
