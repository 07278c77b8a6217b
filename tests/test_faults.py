"""Faults during a run: Ctrl-C and SIGTERM, a diverging net, a full disk. Whatever happens,
the files a user already has stay whole and keep their permissions."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_signal_stops_quickly_and_keeps_every_file_whole(trained_run, tmp_path):
    """Ctrl-C (exit status 130) and SIGTERM (143), each sent to its own run; the two run side by side."""
    runs = {}
    for stop, status in [(signal.SIGINT, 130), (signal.SIGTERM, 143)]:
        folder = tmp_path / stop.name
        folder.mkdir()
        for name in ("net.pt", "net.npz"):
            (folder / name).write_bytes((trained_run / name).read_bytes())
        before = {path.name: digest(path) for path in folder.iterdir()}
        process = subprocess.Popen(
            [sys.executable, os.path.abspath("01_pytorch.py"), "--steps", "100000"]
            + ["--out", "out", "--checkpoint", "net.pt"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # so that the first line arrives while it trains
        )
        runs[stop] = (process, status, folder, before)
    for process, *_ in runs.values():
        for line in process.stdout:  # wait until training has begun
            if line.startswith("UNet("):
                break
    time.sleep(1)
    for stop, (process, status, folder, before) in runs.items():
        process.send_signal(stop)
        started = time.perf_counter()
        _, stderr = process.communicate(timeout=30)
        assert time.perf_counter() - started < 10
        assert process.returncode == status
        assert stderr.strip().splitlines()[-1] == (
            "01_pytorch.py: interrupted; files written before now are whole, none half-written"
        )
        assert "Traceback" not in stderr
        assert {path.name: digest(path) for path in folder.iterdir()} == before  # no out/, no .tmp


def test_a_nan_loss_stops_the_run_at_once(pytorch_script, monkeypatch, in_tmp):
    losses = iter([0.7, 0.6, float("nan")])
    monkeypatch.setattr(pytorch_script, "train_step", lambda *args: next(losses))
    with pytest.raises(SystemExit) as stopped:
        pytorch_script.main(TINY)
    assert stopped.value.code == (
        "01_pytorch.py: training diverged: the loss became nan at step 3; nothing was saved. "
        "Try a lower --lr (0.01)."
    )
    assert list(in_tmp.iterdir()) == []


def test_divergence_is_seen_in_the_weights_and_in_the_loss(pytorch_script):
    model = pytorch_script.UNet(base_channels=2, depth=1)
    diverged = pytorch_script.Diverged
    pytorch_script.check_divergence(model, loss=1.3, untrained_loss=0.7)  # worse, but not diverged
    with pytest.raises(diverged, match="the loss is 2.9, more than twice the untrained net's 0.7"):
        pytorch_script.check_divergence(model, loss=2.9, untrained_loss=0.7)
    with torch.no_grad():
        model.encoder[0].conv1.weight[0, 0, 0, 0] = 1.1e16  # --lr 10: batch norm hides it from the loss
    with pytest.raises(diverged, match="encoder.0.conv1.weight reached 1.1e[+]16"):
        pytorch_script.check_divergence(model, loss=0.1, untrained_loss=0.7)
    with torch.no_grad():
        model.encoder[0].conv1.weight[0, 0, 0, 0] = 0.5
        model.encoder[0].norm2.running_var[1] = float("inf")  # --lr 1e10, while the loss stays finite
    with pytest.raises(diverged, match="encoder.0.norm2.running_var reached inf"):
        pytorch_script.check_divergence(model, loss=0.1, untrained_loss=0.7)


def test_a_huge_learning_rate_saves_nothing_and_keeps_the_good_checkpoint(
    pytorch_script, trained_run, in_tmp
):
    for name in ("net.pt", "net.npz"):
        (in_tmp / name).write_bytes((trained_run / name).read_bytes())
    before = {path.name: digest(path) for path in in_tmp.iterdir()}
    with pytest.raises(SystemExit) as stopped:
        pytorch_script.main([*TINY, "--lr", "1e10", "--checkpoint", "net.pt"])
    assert "training diverged" in stopped.value.code and "nothing was saved" in stopped.value.code
    assert {path.name: digest(path) for path in in_tmp.iterdir()} == before


@pytest.mark.parametrize("steps", range(1, 61))
def test_the_one_cycle_schedule_takes_any_number_of_steps(pytorch_script, steps):
    """OneCycleLR divides by each phase's length: 5 % of 20 steps once made a warm-up of 0."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = pytorch_script.make_scheduler(optimizer, pytorch_script.TrainConfig(), steps)
    used = []
    for _ in range(steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert (
        0 <= min(used) == used[-1] and max(used) <= 0.01 + 1e-12
    )  # annealed to the end, never past the peak
    if steps >= 3:
        assert max(used) > used[0] == 0.005  # a warm-up from lr/2


def test_a_full_disk_keeps_the_old_files_whole_and_the_checkpoint_comes_first(
    pytorch_script, trained_run, in_tmp, monkeypatch, capsys
):
    """The figures fail to write (ENOSPC): the checkpoint and metrics.json, written first, are
    new; the old figure is whole; metrics.json keeps its private mode; one line, exit 1."""
    from common import cli, files

    (in_tmp / "out").mkdir()
    old_figure = in_tmp / "out" / "training_curves.png"
    old_figure.write_bytes(b"the old figure")
    (in_tmp / "out" / "metrics.json").write_text("{}")
    os.chmod(in_tmp / "out" / "metrics.json", 0o600)
    write_temporary = files.write_temporary

    def disk_full_for_figures(path, write):
        if path.suffix == ".png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_temporary(path, write)

    monkeypatch.setattr(files, "write_temporary", disk_full_for_figures)
    with pytest.raises(SystemExit) as stopped:
        cli.run(pytorch_script.main, [*TINY, "--out", "out", "--checkpoint", "net.pt"])
    assert stopped.value.code.endswith("out/pytorch_unet_segmentation.png: No space left on device")
    assert old_figure.read_bytes() == b"the old figure"
    assert json.loads((in_tmp / "out" / "metrics.json").read_text())["history"]
    assert (in_tmp / "out" / "metrics.json").stat().st_mode & 0o777 == 0o600
    assert torch.load(in_tmp / "net.pt", weights_only=True)["step"] == 30
    assert not [path for path in in_tmp.rglob("*") if path.name.endswith(".tmp")]


def test_predict_writes_its_mask_and_overlay_as_one(pytorch_script, trained_run, in_tmp, monkeypatch):
    """A full disk while writing the overlay leaves no mask either: the next run need not be told
    --overwrite for a mask whose overlay never came."""
    from PIL import Image

    from common import cli, files

    Image.new("L", (40, 30), 90).save(in_tmp / "x.png")
    write_temporary = files.write_temporary

    def disk_full_for_overlays(path, write):
        if path.name.endswith("_overlay.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_temporary(path, write)

    monkeypatch.setattr(files, "write_temporary", disk_full_for_overlays)
    with pytest.raises(SystemExit) as stopped:
        cli.run(pytorch_script.main, ["--predict", "x.png", "--checkpoint", str(trained_run / "net.pt")])
    assert stopped.value.code.endswith("x_overlay.png: No space left on device")
    assert sorted(path.name for path in (in_tmp / "predictions").iterdir()) == []
