"""01_pytorch.py: the network's shapes, a short training run and everything it writes."""

import contextlib
import json
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

from common.files import load_weights_npz

TINY = ["--steps", "30", "--train-size", "64", "--batch-size", "8", "--eval-every", "10", "--seed", "3"]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("padding, size, out", [("same", 64, 64), ("valid", None, None)])
def test_shapes(pytorch_script, depth, padding, size, out):
    if padding == "valid":  # each level trims 4 px before its pool, and 4 more after its up-conv
        size, out = {1: (30, 14), 2: (44, 4), 3: (92, 4), 4: (188, 4)}[depth]
    net = pytorch_script.UNet(base_channels=4, depth=depth, padding=padding)
    with torch.no_grad():
        assert net(torch.zeros(2, 1, size, size)).shape == (2, 1, out, out)


def test_paper_network(pytorch_script):
    net = pytorch_script.UNet(out_channels=2, base_channels=64, depth=4, padding="valid", batchnorm=False)
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, pytorch_script):
    """Two short trainings with the same seed, written to separate folders."""
    runs = []
    for name in ("a", "b"):
        folder = tmp_path_factory.mktemp(name)
        pytorch_script.main([*TINY, "--out", str(folder), "--checkpoint", str(folder / "ckpt" / "net.pt")])
        runs.append(folder)
    return runs


def test_short_run_lowers_the_loss_and_writes_its_outputs(tiny_run):
    folder = tiny_run[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"config", "history", "final"}
    assert [entry["step"] for entry in metrics["history"]] == [10, 20, 30]
    for entry in metrics["history"]:
        assert set(entry) == {"step", "seconds", "train_loss", "val_dice", "val_iou"}
    assert metrics["history"][-1]["train_loss"] < 0.8 * metrics["history"][0]["train_loss"]
    assert set(metrics["final"]) == {"val_dice", "val_iou", "val_boundary_f1"}
    assert metrics["config"]["steps"] == 30 and metrics["config"]["seed"] == 3
    for figure in ("pytorch_unet_segmentation.png", "training_curves.png"):
        assert (folder / figure).read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_history(tiny_run):
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in tiny_run)
    for entry_a, entry_b in zip(a["history"], b["history"], strict=True):
        entry_a.pop("seconds"), entry_b.pop("seconds")  # wall time is the one thing that varies
        assert entry_a == entry_b
    assert a["final"] == b["final"]


def test_npz_equals_the_state_dict(tiny_run, pytorch_script):
    checkpoint = torch.load(tiny_run[0] / "ckpt" / "net.pt", weights_only=True)
    params, config = load_weights_npz(tiny_run[0] / "ckpt" / "net.npz")
    assert config == checkpoint["config"]
    assert params.keys() == checkpoint["state_dict"].keys()
    for name, tensor in checkpoint["state_dict"].items():
        np.testing.assert_array_equal(params[name], tensor.numpy())
    net = pytorch_script.UNet(**config)
    net.load_state_dict(checkpoint["state_dict"])  # the config rebuilds the same network


def test_numpy_runs_the_trained_weights_like_torch(tiny_run, scratch, pytorch_script, tmp_path):
    params, config = load_weights_npz(tiny_run[0] / "ckpt" / "net.npz")
    net = pytorch_script.UNet(**config).eval()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in params.items()})
    images = np.random.default_rng(1).standard_normal((4, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        torch_masks = net(torch.from_numpy(images)).numpy() > 0
    numpy_masks = scratch.unet_forward(images, params, padding=config["padding"]) > 0
    assert (torch_masks == numpy_masks).mean() >= 0.999

    result = subprocess.run(
        [
            sys.executable,
            "00_scratch.py",
            "--weights",
            str(tiny_run[0] / "ckpt" / "net.npz"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Dice of the NumPy forward pass against the ground truth: 0." in result.stdout
    assert (tmp_path / "numpy_unet_segmentation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "60"], "argument --size: size 60 does not fit a depth-3 U-Net with same padding"),
        (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
        (["--steps", "0"], "argument --steps: expected a whole number ≥ 1, got '0'"),
        (
            ["--batch-size", "64", "--train-size", "32"],
            "argument --batch-size: 64 is more than --train-size 32",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "01_pytorch.py", *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"01_pytorch.py: error: {message}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_said_not_silently_replaced(tmp_path):
    result = subprocess.run(
        [sys.executable, "01_pytorch.py", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "cuda is not available on this machine" in result.stderr


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
            "TRAIN_ARGS=" + " ".join(TINY),
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
        "numpy_unet_segmentation.png",
    ):
        assert (tmp_path / name).stat().st_size > 0


def test_predict_segments_an_image_of_any_size(tiny_run, tmp_path):
    from common.data import circle_image
    from common.plotting import save_grey_png

    image_path = tmp_path / "photo.png"
    save_grey_png(circle_image(301, 12, seed=4)[:, :259], image_path)  # 259 wide, 301 high
    result = subprocess.run(
        [
            sys.executable,
            "01_pytorch.py",
            "--predict",
            str(image_path),
            "--checkpoint",
            str(tiny_run[0] / "ckpt" / "net.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "259×301 pixels" in result.stdout
    mask = matplotlib.image.imread(tmp_path / "photo_mask.png")
    assert mask.shape[:2] == (301, 259)
    assert (tmp_path / "photo_overlay.png").read_bytes()[:4] == b"\x89PNG"


def test_touching_with_weight_map_scores_objects(tmp_path, pytorch_script):
    pytorch_script.main(
        [*TINY, "--touching", "--weight-map", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "n.pt")]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["touching"] and metrics["config"]["weight_map"]
    assert 0.0 <= metrics["final"]["val_object_f1"] <= 1.0
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
