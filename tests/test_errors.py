"""Bad input, faults and untrusted files: one clear line, exit status 2, nothing lost, no code run.

Every case runs the real script in a subprocess and checks the exit status, that stderr is one
line naming the problem with no traceback, and that no file was created or changed.
"""

import hashlib
import io
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

QUICK = ["--steps", "4", "--train-size", "32", "--batch-size", "8", "--eval-every", "2"]


def snapshot(folder):
    """Every file under `folder` with a hash of its contents."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run(script, *args, cwd):
    return subprocess.run(
        [sys.executable, os.path.abspath(script), *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def assert_refused(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint (.pt and .npz) to load, resume and tamper with."""
    folder = tmp_path_factory.mktemp("trained")
    result = run(
        "01_pytorch.py", *QUICK, "--out", folder / "out", "--checkpoint", folder / "net.pt", cwd=folder
    )
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--epochs", "0"], ["argument --epochs", "whole number ≥ 1"]),
        (["--steps", "-3"], ["argument --steps"]),
        (["--batch-size", "eight"], ["argument --batch-size", "'eight'"]),
        (["--lr", "0"], ["argument --lr", "finite number > 0"]),
        (["--lr", "inf"], ["argument --lr"]),
        (["--lr", "-1e-3"], ["argument --lr"]),
        (["--size", "60"], ["argument --size", "nearest valid sizes: 56 or 64"]),
        (["--depth", "0"], ["argument --depth"]),
        (["--depth", "4", "--size", "72"], ["argument --size", "64 or 80"]),
        (["--base-channels", "0"], ["argument --base-channels"]),
        (["--train-size", "0"], ["argument --train-size"]),
        (["--seed", "-1"], ["argument --seed", "whole number ≥ 0"]),
        (["--eval-every", "0"], ["argument --eval-every"]),
        (["--device", "tpu"], ["argument --device", "invalid choice"]),
        (["--schedule", "cosine"], ["argument --schedule"]),
        (["--colour"], ["unrecognized arguments: --colour"]),
        (["--checkpoint", "net.npz"], ["argument --checkpoint", "give a .pt path"]),
    ],
)
def test_pytorch_bad_arguments(tmp_path, args, fragments):
    result = run("01_pytorch.py", *args, cwd=tmp_path)
    assert_refused(result, *fragments)
    assert snapshot(tmp_path) == {}  # not even the default assets/ folder


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--size", "100"], ["argument --size", "96 or 104"]),
        (["--padding", "valid", "--depth", "4", "--size", "570"], ["556 or 572"]),
        (["--depth", "0"], ["argument --depth"]),
        (["--base", "-8"], ["argument --base"]),
        (["--padding", "full"], ["argument --padding", "invalid choice"]),
        (["--seed", "x"], ["argument --seed"]),
    ],
)
def test_scratch_bad_arguments(tmp_path, args, fragments):
    assert_refused(run("00_scratch.py", *args, cwd=tmp_path), *fragments)
    assert snapshot(tmp_path) == {}


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("keep me")
    before = snapshot(tmp_path)
    started = time.perf_counter()
    for script, args, option in [
        ("01_pytorch.py", ["--out", tmp_path / "a_file"], "--out"),
        ("01_pytorch.py", ["--out", tmp_path / "a_file" / "sub"], "--out"),
        (
            "01_pytorch.py",
            ["--out", tmp_path / "o", "--checkpoint", tmp_path / "a_file" / "net.pt"],
            "--checkpoint",
        ),
        ("01_pytorch.py", ["--out", tmp_path / "o", "--checkpoint", tmp_path], "--checkpoint"),
        ("00_scratch.py", ["--figure", tmp_path / "a_file" / "arch.png"], "--figure"),
        ("00_scratch.py", ["--weights", tmp_path / "w.npz", "--out", tmp_path / "a_file"], "--weights"),
    ]:
        assert_refused(run(script, *args, cwd=tmp_path), f"argument {option}")
    assert snapshot(tmp_path) == before
    assert time.perf_counter() - started < 60  # six refusals, no training


def tampered(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return path


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(marker, as_torch_file):
    if as_torch_file:  # a zip archive, as torch.save writes it
        buffer = io.BytesIO()
        torch.save({"state_dict": RunsCode(marker)}, buffer)
        return buffer.getvalue()
    return pickle.dumps({"state_dict": RunsCode(marker)}, protocol=5)  # a bare pickle


def test_resume_refuses_bad_checkpoints(trained, tmp_path):
    good = (trained / "net.pt").read_bytes()
    marker = tmp_path / "code_ran"
    cases = [
        (tmp_path / "missing.pt", "does not exist"),
        (
            tampered(tmp_path, "random.pt", np.random.default_rng(0).bytes(4096)),
            "is not a PyTorch checkpoint",
        ),
        (tampered(tmp_path, "truncated.pt", good[: len(good) // 2]), "damaged or truncated"),
        (
            tampered(tmp_path, "evil.pt", evil_checkpoint(marker, True)),
            "refused: loading it would call posix.system",
        ),
        (tampered(tmp_path, "evil.pkl", evil_checkpoint(marker, False)), "is not a PyTorch checkpoint"),
    ]
    out = tmp_path / "out"
    for path, message in cases:
        before = snapshot(tmp_path)
        result = run(
            "01_pytorch.py",
            *QUICK,
            "--resume",
            path,
            "--out",
            out,
            "--checkpoint",
            out / "n.pt",
            cwd=tmp_path,
        )
        assert_refused(result, "argument --resume", message)
        assert snapshot(tmp_path) == before
    assert not marker.exists()  # the pickle's command never ran


def test_resume_from_another_architecture_names_the_difference(trained, tmp_path):
    result = run(
        "01_pytorch.py",
        *QUICK,
        "--depth",
        "2",
        "--resume",
        trained / "net.pt",
        "--out",
        tmp_path,
        cwd=tmp_path,
    )
    assert_refused(result, "argument --resume", "was trained with depth=3 (this run: 2)")

    checkpoint = torch.load(trained / "net.pt", weights_only=True)
    checkpoint["state_dict"]["encoder.0.conv1.weight"] = torch.zeros(4, 1, 3, 3)
    torch.save(checkpoint, tmp_path / "reshaped.pt")
    result = run(
        "01_pytorch.py", *QUICK, "--resume", tmp_path / "reshaped.pt", "--out", tmp_path / "o", cwd=tmp_path
    )
    assert_refused(result, "encoder.0.conv1.weight is (4, 1, 3, 3) where this network has (8, 1, 3, 3)")


def test_resume_continues_from_the_saved_weights(trained, tmp_path):
    out = tmp_path / "out"
    result = run(
        "01_pytorch.py",
        *QUICK,
        "--resume",
        trained / "net.pt",
        "--out",
        out,
        "--checkpoint",
        out / "n.pt",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"resuming {trained / 'net.pt'}" in result.stdout
    first_before = torch.load(trained / "net.pt", weights_only=True)["state_dict"]["encoder.0.conv1.weight"]
    first_after = torch.load(out / "n.pt", weights_only=True)["state_dict"]["encoder.0.conv1.weight"]
    # Four more steps move the weights a little from where they were, not from a fresh start.
    assert 0 < (first_after - first_before).abs().max() < 0.5 * first_before.abs().max()


def test_weights_refuses_bad_npz_files(trained, tmp_path):
    good = (trained / "net.npz").read_bytes()
    objects = tmp_path / "objects.npz"
    np.savez(objects, config=np.array('{"depth": 3}'), weights=np.array([{"a": 1}], dtype=object))
    with zipfile.ZipFile(tmp_path / "noconfig.npz", "w") as archive:
        archive.writestr("head.weight.npy", b"")
    cases = [
        (tmp_path / "missing.npz", "does not exist"),
        (tampered(tmp_path, "random.npz", np.random.default_rng(0).bytes(4096)), "is not an .npz archive"),
        (tampered(tmp_path, "truncated.npz", good[: len(good) // 2]), "damaged or truncated"),
        (objects, "only pickle could load; refused"),
        (tmp_path / "noconfig.npz", "has no 'config' entry"),
    ]
    for path, message in cases:
        before = snapshot(tmp_path)
        assert_refused(
            run("00_scratch.py", "--weights", path, "--out", tmp_path / "o", cwd=tmp_path), message
        )
        assert snapshot(tmp_path) == before


def test_weights_from_another_architecture(trained, tmp_path):
    params = dict(np.load(trained / "net.npz", allow_pickle=False))
    params["decoder.0.conv1.weight"] = np.zeros((32, 32, 3, 3), np.float32)
    np.savez(tmp_path / "reshaped.npz", **params)
    result = run(
        "00_scratch.py", "--weights", tmp_path / "reshaped.npz", "--out", tmp_path / "o", cwd=tmp_path
    )
    assert_refused(result, "decoder.0.conv1.weight is (32, 32, 3, 3) where this network has (32, 64, 3, 3)")


def test_ctrl_c_stops_quickly_and_keeps_every_file_whole(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("pytorch_unet_segmentation.png", "metrics.json", "training_curves.png"):
        (out / name).write_bytes((trained / "out" / name).read_bytes())
    (tmp_path / "net.pt").write_bytes((trained / "net.pt").read_bytes())
    before = snapshot(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath("01_pytorch.py"),
            "--steps",
            "100000",
            "--out",
            out,
            "--checkpoint",
            tmp_path / "net.pt",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # so that the first line arrives while it trains
    )
    for line in process.stdout:  # wait until training has begun
        if line.startswith("UNet("):
            break
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    started = time.perf_counter()
    _, stderr = process.communicate(timeout=30)
    assert time.perf_counter() - started < 5
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        "01_pytorch.py: interrupted; files written before now are whole, none half-written"
    )
    assert "Traceback" not in stderr
    assert snapshot(tmp_path) == before


def test_a_diverging_loss_stops_the_run(pytorch_script, monkeypatch, tmp_path, capsys):
    losses = iter([0.7, 0.6, float("nan")])
    monkeypatch.setattr(pytorch_script, "train_step", lambda *args: next(losses))
    with pytest.raises(SystemExit) as stopped:
        pytorch_script.main([*QUICK, "--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "n.pt")])
    assert stopped.value.code == (
        "01_pytorch.py: the loss became nan at step 3; nothing was saved. Try a lower --lr (this run: 0.01)."
    )
    assert snapshot(tmp_path) == {}


def test_predict_refuses_what_it_cannot_read(trained, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    cases = [
        (["--predict", tmp_path / "missing.png", "--checkpoint", trained / "net.pt"], "argument --predict"),
        (["--predict", tmp_path / "notes.png", "--checkpoint", trained / "net.pt"], "cannot read"),
        (
            ["--predict", tmp_path / "notes.png", "--checkpoint", tmp_path / "none.pt"],
            "argument --checkpoint",
        ),
    ]
    for args, message in cases:
        before = snapshot(tmp_path)
        assert_refused(run("01_pytorch.py", *args, cwd=tmp_path), message)
        assert snapshot(tmp_path) == before


def test_weight_map_needs_touching(tmp_path):
    assert_refused(
        run("01_pytorch.py", "--weight-map", cwd=tmp_path), "argument --weight-map: needs --touching"
    )
    assert snapshot(tmp_path) == {}
