"""Every command-line mistake: one line on stderr naming the option, exit status 2, nothing
written or changed. One table, run in-process on both scripts."""

import hashlib
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image


def snapshot(folder):
    """Every file and folder under `folder`, files with a hash of their contents and their mode."""
    return {
        str(path.relative_to(folder)): (
            path.is_dir() or hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mode,
        )
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def workspace(in_tmp, trained_run):
    """An empty folder with the things the cases point at: a plain file, a folder, read-only
    outputs, a text file named like a picture, and the tiny trained checkpoint."""
    (in_tmp / "a_file").write_text("keep me")
    (in_tmp / "a_folder").mkdir()
    (in_tmp / "folder.pt").mkdir()
    for name in ("readonly.pt", "readonly_out/metrics.json"):
        (in_tmp / name).parent.mkdir(exist_ok=True)
        (in_tmp / name).write_text("keep me")
        os.chmod(in_tmp / name, 0o444)
    (in_tmp / "notes.png").write_text("not a picture")
    np.savez(in_tmp / "data.npz", measurements=np.arange(3))  # the user's own data, not a checkpoint
    for name in ("net.pt", "net.npz"):
        (in_tmp / name).write_bytes((trained_run / name).read_bytes())
    return in_tmp


PYTORCH_CASES = [
    (["--epochs", "0"], ["argument --epochs", "whole number from 1 to 10,000, got '0'"]),
    (["--steps", "-3"], ["argument --steps", "got '-3'"]),
    (["--batch-size", "eight"], ["argument --batch-size", "'eight'"]),
    (["--lr", "0"], ["argument --lr", "finite number > 0"]),
    (["--lr", "inf"], ["argument --lr"]),
    (["--lr", "nan"], ["argument --lr"]),
    (["--lr", "-1e-3"], ["argument --lr"]),
    (["--size", "60"], ["argument --size", "nearest valid sizes: 56 or 64"]),
    (["--size", "2048"], ["argument --size", "from 1 to 1,024"]),
    (["--depth", "0"], ["argument --depth"]),
    (["--depth", "7"], ["argument --depth", "from 1 to 6"]),
    (["--depth", "4", "--size", "72"], ["argument --size", "64 or 80"]),
    (["--base-channels", "0"], ["argument --base-channels"]),
    (["--base-channels", "129"], ["argument --base-channels", "from 1 to 128"]),
    (["--train-size", "0"], ["argument --train-size"]),
    (["--train-size", "100001"], ["argument --train-size", "100,000"]),
    (["--train-size", "100000", "--size", "1024"], ["argument --train-size", "pixels"]),
    (["--seed", "-1"], ["argument --seed"]),
    (["--seed", str(2**32)], ["argument --seed", "from 0 to 4,294,967,295"]),
    (["--eval-every", "0"], ["argument --eval-every"]),
    (["--device", "tpu"], ["argument --device", "invalid choice"]),
    (["--schedule", "cosine"], ["argument --schedule"]),
    (["--colour"], ["unrecognized arguments: --colour"]),
    (["--augment", "twist"], ["argument --augment", "invalid choice"]),
    (["--elastic-sigma", "3"], ["argument --elastic-sigma: is for --augment elastic"]),
    (["--augment", "flips", "--elastic-sigma", "0"], ["argument --elastic-sigma: is for --augment elastic"]),
    (["--augment", "elastic", "--elastic-sigma", "-1"], ["argument --elastic-sigma", "from 0 to 64"]),
    (["--augment", "elastic", "--elastic-sigma", "nan"], ["argument --elastic-sigma", "'nan'"]),
    (["--loss", "focal"], ["argument --loss", "invalid choice"]),
    (["--loss", "dice", "--touching", "--weight-map"], ["argument --loss", "use --loss bce or bce+dice"]),
    (
        ["--batch-size", "1", "--size", "8", "--norm", "batch"],
        ["argument --batch-size", "one value per channel"],
    ),
    (["--weight-map"], ["argument --weight-map", "needs --touching"]),
    (["--checkpoint", "net2.npz"], ["argument --checkpoint", "give a .pt path"]),
    (["--checkpoint", "a_folder"], ["argument --checkpoint", "give a .pt path"]),
    (["--checkpoint", "folder.pt"], ["argument --checkpoint", "folder.pt is a folder"]),
    (["--checkpoint", "readonly.pt"], ["argument --checkpoint", "readonly.pt is read-only"]),
    (["--checkpoint", "a_file/net.pt"], ["argument --checkpoint", "a_file"]),
    (
        ["--checkpoint", "data.pt"],
        ["argument --checkpoint", "data.npz is an .npz archive but not a checkpoint"],
    ),
    (["--checkpoint", ""], ["argument --checkpoint", "'' is not a file name"]),
    (["--checkpoint", "n" * 250 + ".pt"], ["argument --checkpoint", "is longer than 240 bytes"]),
    (["--size", "1024", "--val-size", "10000", "--train-size", "1", "--batch-size", "1"], ["--train-size"]),
    (["--size", "1024", "--train-size", "64", "--batch-size", "64"], ["argument --batch-size", "a batch"]),
    (["--depth", "6", "--base-channels", "128"], ["argument --base-channels", "parameters"]),
    (["--steps", "²"], ["argument --steps", "expected a whole number"]),
    (["--out", "a_file"], ["argument --out", "a_file"]),
    (["--out", "a_file/sub"], ["argument --out"]),
    (["--out", "readonly_out"], ["argument --out", "metrics.json is read-only"]),
    (["--resume", "missing.pt"], ["argument --resume", "missing.pt"]),
    (["--resume", "notes.png"], ["argument --resume", "notes.png is not a checkpoint"]),
    (["--resume", "net.pt", "--depth", "2"], ["argument --resume", "depth=3 (this run: 2)"]),
    (["--resume", "net.npz"], ["argument --resume", "optimizer"]),
    (["--predict", "missing.png"], ["argument --predict", "missing.png"]),
    (["--predict", "notes.png", "--checkpoint", "net.pt"], ["argument --predict", "notes.png"]),
    (["--predict", "a_file", "--checkpoint", "missing.pt"], ["argument --checkpoint", "does not exist"]),
    (["--predict", "a_file", "--checkpoint", "notes.png"], ["argument --checkpoint", "is not a checkpoint"]),
    (["--predict", "a_file", "--checkpoint", "net.pt", "--tile", "100"], ["argument --tile", "96 or 104"]),
    (["--predict", "a_file", "--depth", "5"], ["argument --depth: is for training"]),
    (["--predict", "a_file", "--no-skip"], ["argument --no-skip: is for training"]),
    (["--predict", "a_file", "--augment", "flips"], ["argument --augment: is for training"]),
    (["--predict", "a_file", "--resume", "net.pt"], ["argument --resume: is for training"]),
    (
        ["--predict", "a_file", "--checkpoint", "net.pt", "--margin", "12"],
        ["argument --margin", "multiple of"],
    ),
    (["--predict", "a_file", "--checkpoint", "net.pt", "--tile", "64", "--margin", "32"], ["leaves nothing"]),
]
if not torch.cuda.is_available():  # asking for what is not there is an error, never a silent fall-back
    PYTORCH_CASES.append(
        (["--device", "cuda"], ["argument --device", "cuda is not available on this machine"])
    )

SCRATCH_CASES = [
    (["--size", "100"], ["argument --size", "96 or 104"]),
    (["--padding", "valid", "--depth", "4", "--size", "570"], ["argument --size", "556 or 572"]),
    (["--paper", "--size", "570"], ["argument --size", "556 or 572"]),
    (["--depth", "0"], ["argument --depth"]),
    (["--base-channels", "-8"], ["argument --base-channels"]),
    (["--base", "8"], ["unrecognized arguments: --base"]),
    (["--padding", "full"], ["argument --padding", "invalid choice"]),
    (["--seed", "x"], ["argument --seed"]),
    (["--figure", "arch.jpg"], ["argument --figure", "must end in .png or .pdf or .svg"]),
    (["--figure", "a_file/arch.png"], ["argument --figure", "a_file"]),
    (["--figure", "x" * 300 + ".png"], ["argument --figure", "longer than 240 bytes"]),
    (["--weights", "missing.npz"], ["argument --weights", "missing.npz"]),
    (["--weights", "notes.png"], ["argument --weights", "is not a checkpoint"]),
    (["--weights", "net.npz", "--paper"], ["argument --paper", "the --weights decide the network"]),
    (["--weights", "net.npz", "--depth", "2"], ["argument --weights", "depth=3"]),
    (["--weights", "net.npz", "--out", "a_file"], ["argument --out", "a_file"]),
    (["--weights", "net.npz", "--out", "readonly_out/sub/.."], []),
    (["--train", "--gradient-check"], ["argument --train", "two runs"]),
    (["--train", "--paper"], ["argument --paper", "takes ours"]),
    (["--train", "--weights", "net.npz"], ["argument --weights", "fresh weights"]),
    (["--train", "--figure", "arch.png"], ["argument --figure", "leave out --train"]),
    (["--steps", "10"], ["argument --steps: is for --train"]),
    (["--lr", "0.1"], ["argument --lr: is for --train"]),
    (["--checkpoint", "x.npz"], ["argument --checkpoint: is where --train writes"]),
    (["--train", "--checkpoint", "x.pt"], ["argument --checkpoint", "must end in .npz"]),
    (["--train", "--checkpoint", "data.npz"], ["argument --checkpoint", "data.npz"]),
    (["--train", "--checkpoint", "a_folder/../a_file/x.npz"], ["argument --checkpoint", "a_file"]),
    (["--train", "--batch-size", "1", "--size", "8"], ["argument --batch-size", "one value per channel"]),
    (["--train", "--steps", "0"], ["argument --steps"]),
    (["--train", "--out", "readonly_out/sub/.."], []),
    (["--train", "--train-size", "100000", "--size", "1024"], ["argument --train-size"]),
]


@pytest.mark.parametrize(
    "script, args, fragments",
    [("01_pytorch", *case) for case in PYTORCH_CASES] + [("00_scratch", *case) for case in SCRATCH_CASES],
)
def test_a_mistake_is_one_line_exit_2_and_nothing_written(script, args, fragments, workspace, capsys):
    module = __import__("importlib").import_module(script)
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as stopped:
        module.main(args)
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in stderr
    assert snapshot(workspace) == before


def test_predict_refuses_to_replace_a_mask_without_overwrite(workspace, capsys, pytorch_script):
    from common.images import save_grey_png

    save_grey_png(np.random.default_rng(0).random((40, 50)), workspace / "x.png")
    (workspace / "predictions").mkdir()
    (workspace / "predictions" / "x_mask.png").write_text("the ground truth, say")
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as stopped:
        pytorch_script.main(["--predict", "x.png", "--checkpoint", "net.pt"])
    assert stopped.value.code == 2
    assert "predictions/x_mask.png exists; --overwrite replaces it" in capsys.readouterr().err
    assert snapshot(workspace) == before
    pytorch_script.main(["--predict", "x.png", "--checkpoint", "net.pt", "--overwrite"])
    assert (workspace / "predictions" / "x_mask.png").read_bytes()[:4] == b"\x89PNG"


def test_an_image_over_the_pixel_limit_is_refused(workspace, capsys, pytorch_script, monkeypatch):
    from common import images

    images.save_grey_png(np.zeros((20, 30)), workspace / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 599)
    with pytest.raises(SystemExit) as stopped:
        pytorch_script.main(["--predict", "big.png", "--checkpoint", "net.pt"])
    assert stopped.value.code == 2
    assert (
        "argument --predict: big.png is 30×20 = 600 pixels; images up to 599 pixels"
        in capsys.readouterr().err
    )
    assert not (workspace / "predictions").exists()


def test_every_option_is_in_the_readme(pytorch_script, scratch):
    readme = open("README.md", encoding="utf-8").read()
    for module in (pytorch_script, scratch):
        flags = [flag for action in module.build_parser()._actions for flag in action.option_strings]
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", readme))  # every --flag the README names
        missing = [flag for flag in flags if flag not in ("-h", "--help") and flag not in named]
        assert not missing, f"{module.__name__}: {missing}"


def test_what_is_not_a_regular_file_or_a_dangling_link_is_refused(
    in_tmp, trained_run, pytorch_script, capsys
):
    """A FIFO would block its reader for ever; a dangling link in --out would be replaced, since
    it does not "exist" to a check that follows it."""
    os.mkfifo(in_tmp / "pipe.png")
    (in_tmp / "predictions").mkdir()
    os.symlink("nowhere", in_tmp / "predictions" / "x_mask.png")
    Image.new("L", (20, 20)).save(in_tmp / "x.png")
    for args, message in [
        (["--predict", "pipe.png"], "argument --predict: pipe.png is not a regular file"),
        (["--resume", "pipe.png"], "argument --resume: pipe.png is not a regular file"),
        (
            ["--predict", "x.png", "--checkpoint", str(trained_run / "net.pt")],
            "x_mask.png exists; --overwrite",
        ),
    ]:
        with pytest.raises(SystemExit) as stopped:
            pytorch_script.main(args)
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert os.readlink(in_tmp / "predictions" / "x_mask.png") == "nowhere"
