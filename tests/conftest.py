import importlib
import os
import shutil

import pytest

# A short training run: enough for the loss to fall and every output to be written. One epoch
# of 64 images is 8 steps: --steps 30 overrides it.
TINY = [
    "--epochs",
    "1",
    "--steps",
    "30",
    "--train-size",
    "64",
    "--batch-size",
    "8",
    "--eval-every",
    "10",
    "--seed",
    "3",
]


@pytest.fixture(scope="session")
def scratch():
    """00_scratch.py as a module (its name starts with a digit, so no plain import)."""
    return importlib.import_module("00_scratch")


@pytest.fixture(scope="session")
def pytorch_script():
    return importlib.import_module("01_pytorch")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, pytorch_script):
    """One tiny training, shared by every test that needs a trained net: its folder holds
    out/ (figures, metrics.json) and net.pt with net.npz. Tests copy what they change."""
    folder = tmp_path_factory.mktemp("trained")
    pytorch_script.main([*TINY, "--out", str(folder / "out"), "--checkpoint", str(folder / "net.pt")])
    return folder


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so that a test sees every file a command writes (default paths too)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy(source, folder):
    """A copy of `source` in `folder`, with its mode: what a test may tamper with."""
    return shutil.copy2(source, folder / os.path.basename(source))
