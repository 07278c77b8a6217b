"""00_scratch.py's backward pass against torch.autograd: every layer, then the whole network
(same weights, float64), then training itself (same weights, same batches, 20 steps)."""

import importlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import checkpoints

RTOL = 1e-6  # the bound for float64 gradients; they agree far more closely


def error(ours, reference, floor=1e-12):
    """Largest difference relative to the reference's largest value, or to `floor` if that is
    larger: a gradient that is 0 in exact arithmetic (an up-convolution's bias before batch norm,
    which subtracts every constant) is rounding noise of order 1e-17 in both."""
    reference = reference.detach().numpy() if isinstance(reference, torch.Tensor) else reference
    return np.abs(ours - reference).max() / max(np.abs(reference).max(), floor)


def tensors(rng, *shapes):
    """float64 arrays and the same values as torch leaves that keep their gradient."""
    arrays = [rng.standard_normal(shape) for shape in shapes]
    return arrays, [torch.tensor(a, requires_grad=True) for a in arrays]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("k", [3, 1])
def test_conv2d_backward_is_autograd(scratch, rng, padding, k):
    (x, w, b), (xt, wt, bt) = tensors(rng, (3, 4, 9, 11), (5, 4, k, k), (5,))
    out = F.conv2d(xt, wt, bt, padding=k // 2 if padding == "same" else 0)
    dout = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(dout))
    assert error(scratch.conv2d(x, w, b, padding), out) < RTOL
    dx, dw, db = scratch.conv2d_backward(dout, x, w, padding)
    assert max(error(dx, xt.grad), error(dw, wt.grad), error(db, bt.grad)) < RTOL


def test_conv2d_backward_in_bands_equals_one_band(scratch, rng, monkeypatch):
    """Large images are cut into bands of rows (the paper's 572² tiles): the result is the same."""
    x, w = rng.standard_normal((2, 3, 20, 13)), rng.standard_normal((4, 3, 3, 3))
    dout = rng.standard_normal((2, 4, 20, 13))
    whole = scratch.conv2d(x, w), *scratch.conv2d_backward(dout, x, w)
    monkeypatch.setattr(scratch, "COLUMN_BUFFER_BYTES", 3 * (27 + 4) * 15 * 8)  # 3 rows of 15 columns a band
    banded = scratch.conv2d(x, w), *scratch.conv2d_backward(dout, x, w)
    for ours, reference in zip(banded, whole, strict=True):
        assert error(ours, reference) < 1e-12


def test_relu_backward_is_autograd(scratch, rng):
    (x,), (xt,) = tensors(rng, (2, 3, 5, 5))
    out = F.relu(xt)
    dout = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(dout))
    assert error(scratch.relu_backward(dout, scratch.relu(x.copy())), xt.grad) < RTOL


def test_batch_norm_train_and_backward_are_pytorchs(scratch, rng):
    (x, weight, bias), (xt, wt, bt) = tensors(rng, (4, 3, 6, 5), (3,), (3,))
    x, xt = x * 3 + 2, (xt * 3 + 2).detach().requires_grad_()
    running_mean, running_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    out = F.batch_norm(xt, running_mean, running_var, wt, bt, training=True, momentum=0.1)
    dout = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(dout))
    ours, x_hat, mean, var = scratch.batch_norm_train(x, weight, bias)
    assert error(ours, out) < RTOL
    dx, dweight, dbias = scratch.batch_norm_train_backward(dout, x_hat, weight, var)
    assert max(error(dx, xt.grad), error(dweight, wt.grad), error(dbias, bt.grad)) < RTOL
    # PyTorch averages the unbiased variance into its running variance: the update the loop makes
    n = x.size // 3
    assert error(0.9 * 1 + 0.1 * var * n / (n - 1), running_var) < RTOL
    assert error(0.1 * mean, running_mean) < RTOL


def test_max_pool_backward_is_autograd_ties_included(scratch, rng):
    """Ties go to the first maximum in reading order, as PyTorch's CPU kernel sends them: checked on
    windows with two, three and four equal maxima (ReLU's zeros make these common)."""
    x = rng.integers(0, 3, size=(2, 3, 8, 10)).astype(np.float64)  # values 0, 1, 2: many ties
    x[0, 0] = 0.0
    xt = torch.tensor(x, requires_grad=True)
    out = F.max_pool2d(xt, 2)
    dout = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(dout))
    assert error(scratch.max_pool2x2(x), out) == 0
    dx = scratch.max_pool2x2_backward(dout, x)
    assert error(dx, xt.grad) == 0
    assert (dx[0, 0, 0::2, 0::2] == dout[0, 0]).all()  # all-zero windows: the top-left pixel


def test_up_conv_backward_is_autograd(scratch, rng):
    (x, w, b), (xt, wt, bt) = tensors(rng, (2, 6, 4, 5), (6, 3, 2, 2), (3,))
    out = F.conv_transpose2d(xt, wt, bt, stride=2)
    dout = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(dout))
    assert error(scratch.up_conv2x2(x, w, b), out) < RTOL
    dx, dw, db = scratch.up_conv2x2_backward(dout, x, w)
    assert max(error(dx, xt.grad), error(dw, wt.grad), error(db, bt.grad)) < RTOL


def test_center_crop_and_concat_backward_are_autograd(scratch, rng):
    """The crop's gradient is zero-padded back; the concatenation's splits by channel."""
    (skip, up), (skip_t, up_t) = tensors(rng, (2, 3, 12, 12), (2, 5, 8, 8))
    joined = torch.cat([skip_t[..., 2:10, 2:10], up_t], dim=1)
    dout = rng.standard_normal(joined.shape)
    joined.backward(torch.from_numpy(dout))
    assert error(scratch.concat(scratch.center_crop(skip, 8, 8), up), joined) == 0
    dcropped, dup = scratch.concat_backward(dout, 3)
    dskip = scratch.center_crop_backward(dcropped, 12, 12)
    assert error(dskip, skip_t.grad) == 0 and error(dup, up_t.grad) == 0
    assert (dskip[..., :2, :] == 0).all()


@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_is_pytorchs_and_stable(scratch, rng, weighted):
    (logits,), (logits_t,) = tensors(rng, (2, 1, 6, 6))
    logits[0, 0, 0, :3] = logits_t.data[0, 0, 0, :3] = torch.tensor([-800.0, 800.0, 0.0])
    masks = (rng.random(logits.shape) > 0.5).astype(np.float64)
    weights = rng.random(logits.shape) + 0.5 if weighted else None
    loss_t = F.binary_cross_entropy_with_logits(
        logits_t, torch.from_numpy(masks), weight=None if weights is None else torch.from_numpy(weights)
    )
    loss_t.backward()
    loss, dlogits = scratch.bce_with_logits(logits, masks, weights)
    assert np.isfinite(loss) and abs(loss - loss_t.item()) / loss_t.item() < RTOL
    assert error(dlogits, logits_t.grad) < RTOL


# ----------------------------------------------------------------------------- the whole network


def randomised_unet(pytorch_script, padding, norm, skip=True):
    """A tiny float64 UNet whose batch-norm weights and biases are not at their identity start."""
    torch.manual_seed(1)
    net = pytorch_script.UNet(base_channels=4, depth=2, padding=padding, norm=norm, skip=skip)
    net = net.double().train()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if ".norm" in name or name.endswith("bias"):
                parameter.uniform_(0.5, 1.5) if name.endswith("weight") else parameter.uniform_(-0.3, 0.3)
    return net


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradients_are_autograds(scratch, pytorch_script, padding, norm, weighted):
    net = randomised_unet(pytorch_script, padding, norm)
    rng = np.random.default_rng(2)
    images = rng.standard_normal((3, 1, 44 if padding == "valid" else 16, 16 if padding == "same" else 44))
    params = {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}
    before = {name: value.copy() for name, value in params.items()}
    logits = net(torch.from_numpy(images))
    masks = (rng.random(logits.shape) > 0.6).astype(np.float64)
    weights = rng.random(logits.shape) * 3 + 1 if weighted else None
    loss_t = F.binary_cross_entropy_with_logits(
        logits, torch.from_numpy(masks), weight=None if weights is None else torch.from_numpy(weights)
    )
    loss_t.backward()

    loss, grads, batch_stats = scratch.loss_and_gradients(
        params, images, masks, padding=padding, weight_map=weights
    )
    assert abs(loss - loss_t.item()) / loss_t.item() < RTOL
    assert set(grads) == {name for name, _ in net.named_parameters()}
    floor = 1e-6 * max(parameter.grad.abs().max().item() for parameter in net.parameters())
    for name, parameter in net.named_parameters():
        assert grads[name].shape == parameter.shape
        assert error(grads[name], parameter.grad, floor) < RTOL, name
    assert all((params[name] == value).all() for name, value in before.items())  # left as it was
    # the running statistics, moved as PyTorch moved them during its forward pass
    scratch.update_running_stats(params, batch_stats)
    for name, value in net.state_dict().items():
        assert error(params[name], value) < RTOL, name


def test_without_skips_the_encoder_gets_only_the_long_path(scratch, pytorch_script):
    net = randomised_unet(pytorch_script, "same", "batch", skip=False)
    images = np.random.default_rng(3).standard_normal((2, 1, 16, 16))
    params = {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}
    logits = net(torch.from_numpy(images))
    masks = (logits.detach().numpy() > 0).astype(np.float64)[:, :, ::-1]
    F.binary_cross_entropy_with_logits(logits, torch.from_numpy(masks.copy())).backward()
    _, grads, _ = scratch.loss_and_gradients(params, images, masks, skip=False)
    for name, parameter in net.named_parameters():
        assert error(grads[name], parameter.grad) < RTOL, name


def test_the_skip_carries_gradient_to_the_encoder(scratch):
    """unet_backward reports, per encoder level, the gradient that arrives by the skip and from below;
    they add up to what the level's last ReLU passes back."""
    params = {k: v.astype(np.float64) for k, v in scratch.init_params(base_channels=4, depth=2).items()}
    images = np.random.default_rng(4).standard_normal((2, 1, 16, 16))
    cache, paths = {}, []
    logits = scratch.unet_forward(images, params, cache=cache)
    _, dlogits = scratch.bce_with_logits(logits, (images > 0).astype(np.float64))
    scratch.unet_backward(dlogits, params, cache, paths=paths)
    assert sorted(level for level, _, _ in paths) == [0, 1]
    assert all(by_skip > 0 and from_below > 0 for _, by_skip, from_below in paths)


def test_the_network_computes_in_the_dtype_it_is_given(scratch):
    params = scratch.init_params(base_channels=4, depth=2)
    images = np.random.default_rng(0).standard_normal((1, 1, 16, 16))
    assert scratch.unet_forward(images.astype(np.float32), params).dtype == np.float32
    as64 = {name: value.astype(np.float64) for name, value in params.items()}
    assert scratch.unet_forward(images, as64).dtype == np.float64


def test_gradient_check_agrees_in_float64(scratch):
    params = {k: v.astype(np.float64) for k, v in scratch.init_params(base_channels=4, depth=2).items()}
    images = np.random.default_rng(5).standard_normal((2, 1, 16, 16))
    masks = (images > 0.3).astype(np.float64)
    errors = scratch.gradient_check(params, images, masks, entries=2)
    assert len(errors) == 36 and max(errors.values()) < 1e-4  # kinks of ReLU aside, about 1e-8


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("steps", [1, 2, 3, 20, 77])
def test_one_cycle_is_onecyclelr(scratch, pytorch_script, steps):
    """Learning rate and Adam's β1 at every step, as 01_pytorch.py's scheduler sets them."""
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01)
    config = pytorch_script.TrainConfig(lr=0.01)
    scheduler = pytorch_script.make_scheduler(optimizer, config, steps)
    for step in range(steps):
        lr, beta1 = scratch.one_cycle(step, steps, 0.01)
        assert lr == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        assert beta1 == pytest.approx(optimizer.param_groups[0]["betas"][0], rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert lr == pytest.approx(0.01 / 2 / 1e4) or steps < 3


def test_training_follows_pytorch_step_for_step(pytorch_script):
    """Same weights, same batches (index lists), 20 steps of Adam with one-cycle, float64: the
    losses agree to 1e-4 relative, and so do the weights at the end (benchmarks/bench_parity.py
    runs the same comparison on the default network and draws it)."""
    bench = importlib.import_module("benchmarks.bench_parity")
    steps, rng = 20, np.random.default_rng(6)
    images = rng.standard_normal((12, 1, 16, 16))
    masks = (images > 0.5).astype(np.float64)
    batches = [rng.choice(12, size=4, replace=False) for _ in range(steps)]
    net = randomised_unet(pytorch_script, "same", "batch")
    numpy_losses, torch_losses, params = bench.train_side_by_side(net, images, masks, batches, 0.01)
    assert np.allclose(numpy_losses, torch_losses, rtol=1e-4, atol=0)
    assert numpy_losses[-1] < 0.8 * numpy_losses[0]  # it learned
    for name, value in net.state_dict().items():
        assert error(params[name], value) < 1e-4, name


def test_the_parity_figure_draws_both_losses(monkeypatch, tmp_path):
    bench = importlib.import_module("benchmarks.bench_parity")
    drawn = []
    monkeypatch.setattr(bench, "save_figure", lambda figure, path: drawn.append(figure))
    ours, theirs = np.array([0.7, 0.5, 0.3]), np.array([0.7, 0.5001, 0.3])
    bench.save_parity_figure(ours, theirs, tmp_path / "p.png")
    loss_ax, difference_ax = drawn[0].axes
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), theirs)
    np.testing.assert_array_equal(loss_ax.lines[1].get_ydata(), ours)
    np.testing.assert_allclose(difference_ax.lines[0].get_ydata()[1], 1e-4 / 0.5001)


TINY_NUMPY = ["--size", "16", "--depth", "2", "--base-channels", "4", "--train-size", "8"]
TINY_NUMPY += ["--batch-size", "4", "--steps", "6", "--seed", "1"]


def test_train_writes_what_both_scripts_read_and_repeats_exactly(scratch, pytorch_script, in_tmp, capsys):
    scratch.main(["--train", *TINY_NUMPY, "--out", "a", "--checkpoint", "a/net.npz"])
    assert "final: test Dice" in capsys.readouterr().out
    scratch.main(["--train", *TINY_NUMPY, "--out", "b", "--checkpoint", "b/net.npz"])
    metrics = json.loads((in_tmp / "a" / "numpy_metrics.json").read_text())
    assert set(metrics) == {"run_id", "config", "history", "final"}
    assert metrics["config"]["steps"] == 6 and metrics["config"]["base_channels"] == 4
    assert [entry["step"] for entry in metrics["history"]] == [0, 5, 6]
    assert {"val_dice", "test_dice", "test_boundary_f1"} <= set(metrics["final"])
    for name in ("numpy_unet_segmentation.png", "numpy_training_curves.png"):
        assert (in_tmp / "a" / name).read_bytes()[:4] == b"\x89PNG"
    first, second = (checkpoints.load(in_tmp / run / "net.npz") for run in "ab")
    assert first.model_args == second.model_args and first.model_args["depth"] == 2
    assert all((first.state[name] == second.state[name]).all() for name in first.state)  # the same seed
    losses = [entry["train_loss"] for entry in metrics["history"][1:]]
    again = json.loads((in_tmp / "b" / "numpy_metrics.json").read_text())
    assert losses == [entry["train_loss"] for entry in again["history"][1:]]

    scratch.main(["--weights", "a/net.npz", "--size", "16", "--out", "a"])  # NumPy runs its own weights
    pytorch_script.main(["--predict", "a/numpy_unet_segmentation.png", "--checkpoint", "a/net.npz"])
    assert (in_tmp / "predictions" / "numpy_unet_segmentation_mask.png").exists()


def test_gradient_check_command_prints_small_errors(scratch, capsys):
    scratch.main(["--gradient-check", "--size", "16", "--depth", "2", "--base-channels", "4"])
    out = capsys.readouterr().out
    largest = [line for line in out.splitlines() if line.startswith("largest")][0].split()
    assert float(largest[1]) < 1e-4 and float(largest[2]) > float(largest[1])  # float32: far worse
    assert "by the skip" in out


def test_train_with_valid_padding_crops_the_masks_and_records_it(scratch, in_tmp):
    tiny = ["--size", "44", "--depth", "2", "--base-channels", "4", "--train-size", "4", "--batch-size", "4"]
    scratch.main(
        ["--train", *tiny, "--steps", "2", "--padding", "valid", "--out", ".", "--checkpoint", "v.npz"]
    )
    assert checkpoints.load(in_tmp / "v.npz").model_args["padding"] == "valid"
    assert json.loads((in_tmp / "numpy_metrics.json").read_text())["config"]["padding"] == "valid"


def test_gradient_check_of_weights_without_skips_checks_that_network(scratch, in_tmp, capsys):
    params = scratch.init_params(1, 1, base_channels=4, depth=2, seed=0)
    model_args = dict(in_channels=1, out_channels=1, base_channels=4, depth=2, padding="same")
    model_args |= dict(norm="batch", skip=False)
    checkpoints.save_npz(in_tmp / "no_skip.npz", model_args=model_args, state=params, run_id="r", step=0)
    scratch.main(["--gradient-check", "--weights", "no_skip.npz", "--size", "16"])
    out = capsys.readouterr().out
    largest = [line for line in out.splitlines() if line.startswith("largest")][0].split()
    assert float(largest[1]) < 1e-4 and "without skips" in out
