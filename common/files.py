"""Every file the project writes goes through `atomic_write_all`, so an interrupted or failed
run never leaves a half-written figure, JSON or checkpoint where a good one was, nor a
checkpoint's .pt from one run beside the .npz of another."""

import contextlib
import json
import os
import signal
import stat
import tempfile
from pathlib import Path


class WriteError(Exception):
    """A file that could not be written; its message is one line for the user."""


def atomic_write(path, write):
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it into place."""
    atomic_write_all({path: write})


def atomic_write_all(writes):
    """Write several files as one: each `write(binary_file)` fills a temporary file beside its
    path, and only once every one is written and flushed to disk are they renamed into place.

    `os.replace` within one folder is atomic: readers see the old file or the new one, never a
    mix. Ctrl-C and SIGTERM wait until every rename is done, so that no set of files is left
    half renamed. On any error before the renames (Ctrl-C, a full disk) every temporary file is
    removed and every target is as it was. Raises WriteError, before writing anything, if a
    target is refused (see `replace_refusal`), and for an OSError while writing.
    """
    targets = {Path(path): write for path, write in writes.items()}
    for path in targets:
        problem = replace_refusal(path)
        if problem:
            raise WriteError(problem)
    temporaries = []
    try:
        for path, write in targets.items():
            temporaries.append(write_temporary(path, write))
        with interrupts_deferred():
            for path, temporary in zip(targets, temporaries, strict=True):
                os.replace(temporary, path)
    except BaseException as error:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteError(f"could not write {path}: {error.strerror or error}") from error
        raise


def write_temporary(path, write):
    """A temporary file `.<name>.<random>.tmp` beside `path`, filled by `write` and on disk.

    It gets the mode `path` has, or a new file's usual mode (mkstemp makes it private, 0600),
    so that replacing a file never changes who may read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        try:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), stat.S_IMODE(path.stat().st_mode) if path.exists() else new_file_mode())
        except BaseException:
            os.unlink(name)
            raise
    return Path(name)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold SIGINT (Ctrl-C) and SIGTERM until the block is done, then deliver them.

    Blocking them with `signal.pthread_sigmask` would not do: it blocks them for this thread
    only, and the kernel hands them to one of torch's worker threads instead. Python runs
    signal handlers in the main thread, so the handlers set here catch them wherever they land.
    """
    received = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: received.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def replace_refusal(path):
    """Why `path` must not be created or replaced, as a phrase, or None if it may.

    Read-only is judged from the mode bits, not `os.access`: as root, `os.access` says every
    file is writable, and a file someone marked read-only should stay as it is.
    """
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder"
    if path.exists() and not stat.S_IMODE(path.stat().st_mode) & 0o222:
        return f"{path} is read-only"
    return unwritable_reason(path.parent)


def new_file_mode():
    """The permissions `open()` would give a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_json(path, data):
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode() + b"\n"))


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
