"""Every file the project writes goes through `atomic_write`, so an interrupted run never
leaves a half-written figure, JSON or checkpoint where a good one was."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write(path, write):
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it into place.

    `os.replace` within one folder is atomic: readers see the old file or the new one, never
    a mix. On any error (Ctrl-C included) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_json(path, data):
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode() + b"\n"))


def save_weights_npz(path, state, config):
    """Weights as plain arrays named by their `state_dict` keys, plus the network's keyword
    arguments as a JSON string: readable without torch and without pickle."""
    arrays = {name: np.asarray(value) for name, value in state.items()}
    atomic_write(path, lambda file: np.savez(file, config=np.array(json.dumps(config)), **arrays))


def load_weights_npz(path):
    """(params, config) from a file written by `save_weights_npz`; never unpickles."""
    with np.load(path, allow_pickle=False) as archive:
        params = {name: archive[name] for name in archive.files if name != "config"}
        config = json.loads(str(archive["config"]))
    return params, config
