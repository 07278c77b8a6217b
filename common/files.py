"""Every file the project writes goes through `atomic_write`, so an interrupted run never
leaves a half-written figure, JSON or checkpoint where a good one was."""

import json
import os
import tempfile
import zipfile
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
        os.chmod(temporary, new_file_mode())  # mkstemp makes it private (0600); give it the usual mode
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def new_file_mode():
    """The permissions `open()` would give a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_json(path, data):
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode() + b"\n"))


def save_weights_npz(path, state, config):
    """Weights as plain arrays named by their `state_dict` keys, plus the network's keyword
    arguments as a JSON string: readable without torch and without pickle."""
    arrays = {name: np.asarray(value) for name, value in state.items()}
    atomic_write(path, lambda file: np.savez(file, config=np.array(json.dumps(config)), **arrays))


class CheckpointError(Exception):
    """A weights file that cannot be used; its message is one line for the user."""


NPZ_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive


def load_weights_npz(path):
    """(params, config) from a file written by `save_weights_npz`.

    Never unpickles: a file that would need pickle is refused, since unpickling can run code.
    Raises CheckpointError naming what is wrong with the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            if file.read(4) != NPZ_MAGIC:
                raise CheckpointError(f"{path} is not an .npz archive")
        with np.load(path, allow_pickle=False) as archive:
            if "config" not in archive.files:
                raise CheckpointError(f"{path} has no 'config' entry: it was not written by 01_pytorch.py")
            params = {name: archive[name] for name in archive.files if name != "config"}
            config = json.loads(str(archive["config"]))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except ValueError as error:  # numpy refuses object arrays, json refuses a bad config
        if "allow_pickle" in str(error):
            raise CheckpointError(
                f"{path} holds Python objects that only pickle could load; "
                "refused, since unpickling can run code"
            ) from None
        raise CheckpointError(f"{path} has an unreadable config: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is damaged or truncated ({error})") from None
    return params, config


def first_mismatch(found, expected):
    """The first way in which the weights `found` differ from the network's `expected` ones,
    as a phrase naming the key and both shapes, or None. Both map names to shapes."""
    for name, shape in expected.items():
        if name not in found:
            return f"it lacks {name} {tuple(shape)}"
        if tuple(found[name]) != tuple(shape):
            return f"{name} is {tuple(found[name])} where this network has {tuple(shape)}"
    extra = sorted(found.keys() - expected.keys())
    return f"it has {extra[0]}, which this network does not" if extra else None


def unwritable_reason(folder):
    """Why files cannot be written into `folder`, or None if they can.

    Tries for real (creates the missing folders and a temporary file), then removes what it
    created: checked before a long run, so that a bad --out fails in a second, not in minutes.
    """
    folder = Path(folder)
    created = []
    try:
        for missing in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
            missing.mkdir()
            created.append(missing)
        if not folder.is_dir():
            return f"{folder} is not a folder"
        tempfile.TemporaryFile(dir=folder).close()
        return None
    except OSError as error:
        return f"cannot write into {folder}: {error.strerror or error}"
    finally:
        for made in reversed(created):
            made.rmdir()
