"""01_pytorch.py: the network's shapes, a short training run and everything it writes."""

import contextlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from common import checkpoints
from common.data import circle_image, standardize
from common.images import read_image, save_grey_png

from conftest import TINY


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("padding, size, out", [("same", 64, 64), ("valid", None, None)])
def test_shapes(pytorch_script, depth, padding, size, out):
    if padding == "valid":  # each level trims 4 px before its pool, and 4 more after its up-conv
        size, out = {1: (30, 14), 2: (44, 4), 3: (92, 4), 4: (188, 4)}[depth]
    net = pytorch_script.UNet(base_channels=4, depth=depth, padding=padding)
    with torch.no_grad():
        assert net(torch.zeros(2, 1, size, size)).shape == (2, 1, out, out)


def test_paper_network(pytorch_script):
    net = pytorch_script.UNet(out_channels=2, base_channels=64, depth=4, padding="valid", norm="none")
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_no_skip_keeps_the_weights_but_changes_the_output(pytorch_script):
    torch.manual_seed(0)
    with_skip = pytorch_script.UNet(base_channels=4, depth=2).eval()
    without = pytorch_script.UNet(base_channels=4, depth=2, skip=False).eval()
    without.load_state_dict(with_skip.state_dict())  # same keys and shapes
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(with_skip(x), without(x), atol=1e-3)


def test_short_run_lowers_the_loss_and_writes_its_outputs(trained_run):
    metrics = json.loads((trained_run / "out" / "metrics.json").read_text())
    assert set(metrics) == {"run_id", "config", "history", "final"}
    # From the untrained net, densely early, then every --eval-every; --steps 30 overrides --epochs 1.
    assert [entry["step"] for entry in metrics["history"]] == [0, 5, 10, 20, 30]
    scores = {"val_dice", "val_iou", "val_boundary_f1"}
    for entry in metrics["history"]:
        assert set(entry) == {"step", "seconds", "train_seconds", "train_loss"} | scores
        assert 0 <= entry["train_seconds"] <= entry["seconds"]
    first, *_, last = metrics["history"]
    assert first["train_loss"] is None  # the untrained net: nothing trained yet
    assert last["train_loss"] < 0.8 * metrics["history"][1]["train_loss"]
    assert last["val_dice"] > first["val_dice"]
    # The final scores are the test set's, a seed of its own that no choice of this project saw.
    assert set(metrics["final"]) == {"test_dice", "test_iou", "test_boundary_f1"}
    assert 0.5 < metrics["final"]["test_dice"] <= 1 and metrics["final"]["test_dice"] != last["val_dice"]
    assert metrics["config"]["steps"] == 30 and metrics["config"]["seed"] == 3
    assert metrics["config"]["device"] == "cpu" and metrics["config"]["mixed_precision"] is False  # as used
    for figure in ("pytorch_unet_segmentation.png", "training_curves.png"):
        assert (trained_run / "out" / figure).read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_history(trained_run, pytorch_script, tmp_path):
    pytorch_script.main([*TINY, "--out", str(tmp_path), "--checkpoint", str(tmp_path / "net.pt")])
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (trained_run / "out", tmp_path))
    for entry_a, entry_b in zip(a["history"], b["history"], strict=True):
        for timing in ("seconds", "train_seconds"):  # wall time is the one thing that varies
            entry_a.pop(timing), entry_b.pop(timing)
        assert entry_a == entry_b
    assert a["final"] == b["final"] and a["run_id"] != b["run_id"]


def test_the_pt_and_the_npz_hold_the_same_run(trained_run, pytorch_script):
    from_torch, from_numpy = (checkpoints.load(trained_run / name) for name in ("net.pt", "net.npz"))
    metrics = json.loads((trained_run / "out" / "metrics.json").read_text())
    assert from_torch.run_id == from_numpy.run_id == metrics["run_id"]
    assert from_torch.step == from_numpy.step == 30
    assert from_torch.model_args == from_numpy.model_args
    assert from_torch.config == metrics["config"] and from_numpy.config is None
    for name, value in from_torch.state.items():
        np.testing.assert_array_equal(from_numpy.state[name], value)
    net = pytorch_script.UNet(**from_numpy.model_args)
    net.load_state_dict({name: torch.from_numpy(value) for name, value in from_numpy.state.items()})


def test_numpy_runs_the_trained_weights_like_torch(trained_run, scratch, pytorch_script, tmp_path, capsys):
    checkpoint = checkpoints.load(trained_run / "net.npz")
    net = pytorch_script.UNet(**checkpoint.model_args).eval()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in checkpoint.state.items()})
    images = np.random.default_rng(1).standard_normal((4, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        torch_masks = net(torch.from_numpy(images)).numpy() > 0
    numpy_masks = scratch.unet_forward(images, checkpoint.state, padding="same") > 0
    assert (torch_masks == numpy_masks).mean() >= 0.999

    scratch.main(["--weights", str(trained_run / "net.npz"), "--out", str(tmp_path)])
    assert "Dice of the NumPy forward pass against the ground truth: 0." in capsys.readouterr().out
    assert (tmp_path / "numpy_forward_segmentation.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_from_the_saved_weights_and_counts_steps(
    trained_run, pytorch_script, tmp_path, capsys
):
    args = ["--steps", "4", "--train-size", "32", "--batch-size", "8", "--seed", "3"]
    paths = ["--out", str(tmp_path), "--checkpoint", str(tmp_path / "n.pt")]
    pytorch_script.main([*args, "--resume", str(trained_run / "net.pt"), *paths])
    assert f"resuming {trained_run / 'net.pt'} at step 30" in capsys.readouterr().out
    before, after = checkpoints.load(trained_run / "net.pt"), checkpoints.load(tmp_path / "n.pt")
    assert after.step == 34
    first_before, first_after = before.state["encoder.0.conv1.weight"], after.state["encoder.0.conv1.weight"]
    # Four more steps move the weights a little from where they were, not from a fresh start.
    assert 0 < np.abs(first_after - first_before).max() < 0.5 * np.abs(first_before).max()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_end_to_end(tmp_path):
    """The README's `make demo`, with a short training and every file written to tmp_path."""
    result = subprocess.run(
        [
            "make",
            "demo",
            f"PY={sys.executable}",
            "INSTALLED=",
            f"OUT={tmp_path}",
            f"CHECKPOINT={tmp_path}/net.pt",
            "TRAIN_ARGS=" + " ".join([*TINY, "--steps", "10", "--val-size", "16"]),  # a shorter TINY
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "unet_architecture.png",
        "pytorch_unet_segmentation.png",
        "training_curves.png",
        "metrics.json",
        "net.pt",
        "net.npz",
        "numpy_forward_segmentation.png",
    ):
        assert (tmp_path / name).stat().st_size > 0


def predict(pytorch_script, image, checkpoint, folder, capsys):
    """--predict on an (H, W) image in [0, 1]: (the mask read back, what was printed, what was warned)."""
    save_grey_png(image, folder / "photo.png")
    out = folder / "predicted"
    pytorch_script.main(
        ["--predict", str(folder / "photo.png"), "--checkpoint", str(checkpoint), "--out", str(out)]
    )
    mask = np.asarray(Image.open(out / "photo_mask.png"))
    assert (out / "photo_overlay.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    return mask, captured.out, captured.err


def test_predict_segments_an_image_of_any_size_into_out(trained_run, pytorch_script, tmp_path, capsys):
    image = circle_image(301, 12, seed=4)[:, :259]
    mask, printed, _ = predict(pytorch_script, image, trained_run / "net.pt", tmp_path, capsys)
    assert "259×301 pixels" in printed
    assert mask.shape == (301, 259) and set(np.unique(mask)) <= {0, 255}  # 8-bit grey, not RGBA
    assert not (tmp_path / "photo_mask.png").exists()  # never beside the image


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (3, 3)])
def test_predict_takes_the_tiniest_images(trained_run, pytorch_script, tmp_path, capsys, shape):
    image = np.random.default_rng(0).random(shape)
    mask, _, _ = predict(pytorch_script, image, trained_run / "net.npz", tmp_path, capsys)
    assert mask.shape == shape


def test_a_uniform_image_is_all_background_with_a_warning(trained_run, pytorch_script, tmp_path, capsys):
    mask, _, warned = predict(
        pytorch_script, np.full((50, 60), 0.3), trained_run / "net.pt", tmp_path, capsys
    )
    assert not mask.any()
    assert "photo.png is uniform: there is nothing to segment, so the mask is all background" in warned


def test_a_two_class_checkpoint_is_read_by_argmax(pytorch_script, tmp_path, capsys):
    """The paper's two output channels: the object is where class 1's logit is the larger."""
    torch.manual_seed(0)
    args = dict(
        in_channels=1, out_channels=2, base_channels=2, depth=1, padding="same", norm="none", skip=True
    )
    net = pytorch_script.UNet(**args).eval()
    checkpoints.save_npz(tmp_path / "two.npz", model_args=args, state=net.state_dict(), run_id="r", step=0)
    image = circle_image(64, 3, seed=1)
    mask, _, _ = predict(pytorch_script, image, tmp_path / "two.npz", tmp_path, capsys)
    with torch.no_grad():
        pixels = read_image(tmp_path / "photo.png")  # as --predict read it: 8-bit
        logits = net(torch.from_numpy(standardize(pixels)[None, None]))[0]
    inner = (slice(12, -12), slice(12, -12))  # the tiles see the image mirrored past its border
    expected = (logits.argmax(0) == 1).numpy()[inner]
    assert not np.array_equal(expected, (logits[0] > 0).numpy()[inner])  # channel 0's sign would differ
    np.testing.assert_array_equal((mask == 255)[inner], expected)


def test_touching_with_weight_map_scores_objects(tmp_path, pytorch_script):
    pytorch_script.main(
        [*TINY, "--steps", "10", "--val-size", "16", "--touching", "--weight-map"]
        + ["--out", str(tmp_path), "--checkpoint", str(tmp_path / "n.pt")]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["touching"] and metrics["config"]["weight_map"]
    assert 0.0 <= metrics["final"]["test_object_f1"] <= 1.0
    assert (tmp_path / "weight_map.png").read_bytes()[:4] == b"\x89PNG"


def test_weight_map_weighs_the_loss(pytorch_script):
    """With weights of 1 the loss is plain BCE; doubling every weight doubles it."""
    torch.manual_seed(0)
    net = pytorch_script.UNet(base_channels=4, depth=2)
    images, masks = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    losses = []
    for scale in (1.0, 2.0):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # measure, do not move
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
        weights = torch.full_like(masks, scale)
        losses.append(
            pytorch_script.train_step(
                net, images, masks, weights, optimizer, scheduler, contextlib.nullcontext
            )
        )
    with torch.no_grad():
        plain = torch.nn.functional.binary_cross_entropy_with_logits(net(images), masks).item()
    assert losses[0] == pytest.approx(plain, rel=1e-6)
    assert losses[1] == pytest.approx(2 * plain, rel=1e-6)


def test_group_norm_standardises_groups_of_channels_within_each_image(pytorch_script):
    layer = pytorch_script.normalisation("group", 8)
    assert pytorch_script.normalisation("group", 6).num_groups == 3  # groups of gcd(6, 4) = 2 channels
    x = torch.randn(3, 8, 5, 5) * 4 + 2
    with torch.no_grad():
        y = layer(x)  # scale 1, shift 0 when fresh
        groups = x.reshape(3, 2, 4 * 25)  # image, group of 4 channels, its values
        by_hand = (groups - groups.mean(-1, keepdim=True)) / torch.sqrt(
            groups.var(-1, unbiased=False, keepdim=True) + 1e-5
        )
        torch.testing.assert_close(y, by_hand.reshape(x.shape))
        torch.testing.assert_close(layer(x[1:2]), y[1:2])  # the rest of the batch plays no part


def test_a_group_norm_run_predicts_and_the_numpy_net_refuses_it(pytorch_script, scratch, in_tmp, capsys):
    pytorch_script.main(
        ["--norm", "group", "--steps", "2", "--train-size", "4", "--val-size", "2", "--batch-size", "2"]
        + ["--size", "32", "--base-channels", "4", "--depth", "2", "--checkpoint", "g.pt", "--out", "out"]
    )
    assert "depth=2, norm=group)" in capsys.readouterr().out
    checkpoint = checkpoints.load("g.pt")
    assert checkpoint.model_args["norm"] == "group" and checkpoint.config["norm"] == "group"
    assert "encoder.0.norm1.weight" in checkpoint.state and not any("running" in n for n in checkpoint.state)
    mask, _, warned = predict(pytorch_script, circle_image(40, 3, seed=2), in_tmp / "g.pt", in_tmp, capsys)
    assert mask.shape == (40, 40) and warned == ""
    with pytest.raises(SystemExit) as stopped:
        scratch.main(["--weights", "g.npz"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1
    assert "argument --weights: g.npz has group norm, which this NumPy network lacks" in err
