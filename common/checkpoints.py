"""Checkpoints are written, read and checked here, and nowhere else.

A checkpoint names its network by `model_args`, the UNet keyword arguments (as nanoGPT's
do), and its run by `run_id` and `step`. 01_pytorch.py writes two files with one stem:

    net.pt    torch.save of {model_args, state_dict, optimizer, config, run_id, step}:
              everything --resume needs
    net.npz   the same weights, one plain array per state_dict name, with model_args (as
              JSON), run_id and step: what 00_scratch.py reads, without torch or pickle

Nothing in a file is trusted before it is checked: only tensors and plain containers are
unpickled, no file larger than the largest network allowed is read, no .npz member is
decompressed before its declared size, shape and type are checked, and every problem is one
CheckpointError line naming the file and what is wrong with it. torch is imported only where
a .pt is touched, so that reading an .npz needs no torch.
"""

import contextlib
import io
import json
import math
import pickle
import re
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import warn
from common.files import atomic_write, atomic_write_all
from common.geometry import MAX_BASE_CHANNELS, MAX_DEPTH, NORMS, PADDINGS, is_trainable, parameter_shapes

MODEL_ARG_TYPES = {
    "in_channels": int,
    "out_channels": int,
    "base_channels": int,
    "depth": int,
    "padding": str,
    "norm": str,
    "skip": bool,
}
TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "a dict"}
PT_TYPES = {
    "model_args": dict,
    "state_dict": dict,
    "optimizer": dict,
    "config": dict,
    "run_id": str,
    "step": int,
}
NPZ_INFO = {"model_args": "U", "run_id": "U", "step": "i"}  # the members that are not weights: dtype kinds
INFO_MEMBER_BYTES = 64 * 1024
ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")  # Adam's state per parameter: its step count and two moments
OLD_FORMAT = (
    "is in an older checkpoint format (before model_args); retrain it with this version of 01_pytorch.py"
)


def _shown(value):
    """A value as a message shows it: a short scalar as written, anything else by its type (a
    crafted container can take minutes and gigabytes to print, a tensor several lines)."""
    text = repr(value) if isinstance(value, (bool, int, float, str)) else ""
    return text if text and len(text) <= 40 and "\n" not in text else f"a {type(value).__name__}"


def _quoted(name):
    """A weight's name from a file, as a message shows it: one line of at most 80 characters
    (a crafted name could hold a newline, or megabytes)."""
    text = str(name)
    return text if text.isprintable() and len(text) <= 80 else repr(text[:80]) + "…" * (len(text) > 80)


def _renamed(path, names, named):
    """{the name a weight has now: the name the file gives it}; two of the file's names for one
    weight (an earlier file holding both bn1 and norm1) are refused, not one silently dropped."""
    renamed = {}
    for name in names:
        now = named(name)
        if now in renamed:
            raise CheckpointError(f"{path} has both {_quoted(renamed[now])} and {_quoted(name)}")
        renamed[now] = name
    return renamed


def _largest_checkpoint_bytes():
    """The size of a .pt for the largest network the limits allow, in float64 (the widest
    weights accepted), with Adam's two moments per parameter, plus 1 MiB of names and headers."""
    largest = dict(in_channels=1, out_channels=2, base_channels=MAX_BASE_CHANNELS, depth=MAX_DEPTH)
    shapes = parameter_shapes(largest | dict(padding="same", norm="batch", skip=True))
    return sum(math.prod(shape) for shape in shapes.values()) * 8 * 3 + 2**20


LARGEST_CHECKPOINT_BYTES = _largest_checkpoint_bytes()


class CheckpointError(Exception):
    """One line for the user naming the file and what is wrong with it."""


@dataclass
class Checkpoint:
    """A checked checkpoint: `state` holds NumPy arrays named and shaped as
    `parameter_shapes(model_args)`, float32 (int64 for batch norm's step counts)."""

    path: Path
    model_args: dict
    state: dict
    run_id: str
    step: int
    optimizer: dict | None = None  # Adam's state_dict, from a .pt only
    config: dict | None = None  # the training recipe, from a .pt only


def new_run_id():
    """A name for one training run, so that files from different runs are told apart."""
    return uuid.uuid4().hex[:12]


# ----------------------------------------------------------------------------- writing


def save(path, *, model_args, state, optimizer, config, run_id, step):
    """`path` (a .pt, for --resume) and the .npz beside it (for 00_scratch.py), written as one:
    both are new or both as they were, never a .pt of one run beside the .npz of another.

    state: name → tensor or array, as `model.state_dict()` gives it.
    """
    import torch

    path = Path(path)
    tensors = {name: torch.as_tensor(value).detach().cpu() for name, value in state.items()}
    checkpoint = dict(
        model_args=model_args,
        state_dict=tensors,
        optimizer=optimizer,
        config=config,
        run_id=run_id,
        step=step,
    )
    arrays = {name: tensor.numpy() for name, tensor in tensors.items()}
    # Serialised in memory first: a signal or a full disk inside torch.save's own writer surfaces
    # as a RuntimeError from C++; writing the bytes from Python gives KeyboardInterrupt or OSError.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_all(
        {
            path: lambda file: file.write(buffer.getbuffer()),
            path.with_suffix(".npz"): _npz_writer(model_args, arrays, run_id, step),
        }
    )


def save_npz(path, *, model_args, state, run_id, step):
    """A lone .npz: the weights of a network trained without torch."""
    arrays = {name: np.asarray(value) for name, value in state.items()}
    atomic_write(path, _npz_writer(model_args, arrays, run_id, step))


def _npz_writer(model_args, arrays, run_id, step):
    def write(file):
        info = dict(model_args=np.array(json.dumps(model_args)), run_id=np.array(run_id))
        np.savez(file, **info, step=np.array(step, np.int64), **arrays)

    return write


# ----------------------------------------------------------------------------- reading


def load(path):
    """The checkpoint at `path`, a .pt or an .npz told apart by content, not name, checked
    through; CheckpointError for anything that is not a checkpoint of this project."""
    path = Path(path)
    _check_file(path)
    if _file_format(path) == "npz":
        return _load_npz(path)
    checkpoint = _load_pt(path)
    _warn_if_other_run(checkpoint)
    return checkpoint


def foreign(path):
    """Why an existing file at `path` must not be replaced by a checkpoint, or None: a file this
    project cannot read as one of its checkpoints may be the user's own data."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        _check_file(path)
        (_npz_run_only if _file_format(path) == "npz" else _load_pt)(path)
    except CheckpointError as error:
        return f"{error}; it is kept: move it, or choose another --checkpoint"
    return None


def _check_file(path):
    """Refuse what is not a file worth opening, without reading any of it."""
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise CheckpointError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty")
    if size > LARGEST_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path} is {size:,} bytes, more than a checkpoint of the largest network allowed can be "
            f"({LARGEST_CHECKPOINT_BYTES:,} bytes at depth {MAX_DEPTH}, base_channels {MAX_BASE_CHANNELS}); "
            "refused unread"
        )


def _file_format(path):
    """Whether the file is an "npz" or a "pt", judged from its first bytes and its zip directory."""
    with path.open("rb") as file:
        start = file.read(4)
    if start[:1] == b"\x80" and len(start) > 1:  # pickle's PROTO opcode, then the protocol
        raise CheckpointError(
            f"{path} is a plain pickle (protocol {start[1]}), not a checkpoint written by torch.save"
        )
    if start == b"PK\x03\x04":  # a zip archive: torch.save's format and .npz both are
        with _damaged_if_unreadable(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        if names and all(name.endswith(".npy") for name in names):
            return "npz"
        if any(re.fullmatch(r"[^/]+/data\.pkl", name) for name in names):
            return "pt"
    raise CheckpointError(f"{path} is not a checkpoint (neither torch.save's format nor an .npz archive)")


@contextlib.contextmanager
def _damaged_if_unreadable(path):
    """Turn what a damaged archive makes the readers raise into one CheckpointError."""
    try:
        yield
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is damaged or truncated ({error})") from None


def _load_pt(path):
    """A checked Checkpoint from a torch.save file.

    `weights_only=True` unpickles tensors and plain containers only: a file that asks for
    anything else (a function to call, say) is refused before any of it runs.
    """
    import torch

    with _damaged_if_unreadable(path), zipfile.ZipFile(path) as archive:  # what torch.load would inflate
        inflated = sum(info.file_size for info in archive.infolist())
    if inflated > LARGEST_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path} would inflate to {inflated:,} bytes, more than any checkpoint; refused unread"
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the errors below say more
            warnings.simplefilter("ignore")
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if not refused:
            raise CheckpointError(f"{path} is damaged or truncated (its pickle is unreadable)") from None
        raise CheckpointError(
            f"{path} was refused: loading it would call {refused.group(1)}, "
            "and this project never runs code from a file"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError):
        raise CheckpointError(f"{path} is damaged or truncated") from None
    _check_pt_contents(path, contents)
    model_args, named = _before_norm(contents["model_args"])
    _check_model_args(path, model_args)
    stored = contents["state_dict"]
    arrays = {now: _as_array(path, name, stored[name]) for now, name in _renamed(path, stored, named).items()}
    state = _checked_state(path, arrays, model_args)
    return Checkpoint(
        path,
        model_args,
        state,
        contents["run_id"],
        contents["step"],
        contents["optimizer"],
        contents["config"],
    )


def _check_pt_contents(path, contents):
    """The keys of a .pt and the type of each value."""
    import torch

    if not isinstance(contents, dict):
        raise CheckpointError(f"{path} holds a {type(contents).__name__}, not a checkpoint's dict")
    if "model_args" not in contents and {"state_dict", "config", "optimizer"} <= contents.keys():
        raise CheckpointError(f"{path} {OLD_FORMAT}")
    if contents.keys() != PT_TYPES.keys():
        raise CheckpointError(
            f"{path} is not a checkpoint of this project: it has {', '.join(map(str, contents))} "
            f"where {', '.join(PT_TYPES)} belong"
        )
    for key, kind in PT_TYPES.items():
        value = contents[key]
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (key == "step" and not 0 <= value < 2**53)
        ):
            wanted = "a count of steps" if key == "step" else TYPE_NAMES[kind]
            raise CheckpointError(f"{path} has a {key} of {_shown(value)}, not {wanted}")
    for name, value in contents["state_dict"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path} has a state_dict whose {_quoted(name)} is a {type(value).__name__}, not a tensor"
            )


def _as_array(path, name, tensor):
    """A tensor's values as a NumPy array, floats of any width (bfloat16 too) as float32."""
    if tensor.is_floating_point():
        tensor = tensor.float()
    try:
        return tensor.detach().numpy()
    except (TypeError, RuntimeError) as error:  # sparse, nested and other layouts NumPy cannot hold
        raise CheckpointError(f"{path} has {_quoted(name)} in a layout NumPy cannot hold ({error})") from None


def _load_npz(path):
    """A checked Checkpoint from an .npz: every member's header is checked before any of its
    data is read, and model_args before any weight."""
    with _damaged_if_unreadable(path):
        declared = _npz_declared(path)
        with np.load(path, allow_pickle=False) as archive:
            model_args, named = _parse_model_args(path, archive["model_args"])
            run_id, step = _npz_run(path, archive)
            stored = _renamed(path, [name for name in declared if name not in NPZ_INFO], named)
            _check_declared(
                path, {now: declared[name] for now, name in stored.items()}, parameter_shapes(model_args)
            )
            arrays = {now: archive[name] for now, name in stored.items()}
    return Checkpoint(path, model_args, _checked_state(path, arrays, model_args), run_id, step)


def _npz_declared(path):
    """Name → (shape, dtype) of every member of an .npz, from the members' headers alone;
    the members that are not weights are checked to be what they should."""
    with zipfile.ZipFile(path) as archive:
        declared = {
            info.filename.removesuffix(".npy"): _npy_header(path, archive, info)
            for info in archive.infolist()
        }
    if "model_args" not in declared:
        if "config" in declared:
            raise CheckpointError(f"{path} {OLD_FORMAT}")
        raise CheckpointError(f"{path} is an .npz archive but not a checkpoint: it lacks model_args")
    for name, kind in NPZ_INFO.items():
        shape, dtype = declared.get(name, (None, None))
        if shape != () or dtype.kind != kind or dtype.itemsize > INFO_MEMBER_BYTES:
            what = "an integer" if kind == "i" else "a string"
            raise CheckpointError(f"{path} lacks {name} as {what} of at most {INFO_MEMBER_BYTES:,} bytes")
    return declared


def _npy_header(path, archive, info):
    """(shape, dtype) an .npz member declares, read from its first bytes only.

    Its declared size must be the header plus exactly what the shape and dtype take: a member
    that declares more (a zip bomb) or less is refused before it is decompressed.
    """
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        needed = member.tell() + math.prod(shape) * dtype.itemsize
    if dtype.hasobject:
        raise CheckpointError(
            f"{path} holds Python objects that only pickle could load; refused, since unpickling can run code"
        )
    if info.file_size != needed:
        raise CheckpointError(
            f"{path} has a member {_quoted(name)} that declares {info.file_size:,} bytes where its shape "
            f"{shape} of {dtype} takes {needed:,}; refused without decompressing it"
        )
    return shape, dtype


def _parse_model_args(path, array):
    """(model_args, the weights' names as they read now) of an .npz: see `_before_norm`."""
    try:
        model_args, named = _before_norm(json.loads(str(array)))
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} has a model_args that is not JSON of a dict") from None
    _check_model_args(path, model_args)
    return model_args, named


def _before_norm(model_args):
    """(model_args, name → the name it has now): files written before group norm joined said
    batchnorm=true/false where norm="batch"/"none" stands now, and named the norms bn1, bn2
    where norm1, norm2 stand; they read as today's. Anything else is returned as it is."""
    if (
        not isinstance(model_args, dict)
        or type(model_args.get("batchnorm")) is not bool
        or "norm" in model_args
    ):
        return model_args, lambda name: name
    norm = "batch" if model_args["batchnorm"] else "none"
    model_args = {key: value for key, value in model_args.items() if key != "batchnorm"} | {"norm": norm}
    return (
        model_args,
        lambda name: re.sub(r"\.bn([12])\.", r".norm\1.", name) if isinstance(name, str) else name,
    )


def _npz_run(path, archive):
    """(run_id, step) of an .npz whose headers were checked."""
    step = int(archive["step"])
    if step < 0:
        raise CheckpointError(f"{path} has a step of {step}, not a count of training steps")
    return str(archive["run_id"]), step


def _npz_run_only(path):
    """(run_id, step) of an .npz, read with the same care as a whole one, and only those two."""
    _check_file(path)
    if _file_format(path) != "npz":
        raise CheckpointError(f"{path} is not an .npz archive")
    with _damaged_if_unreadable(path):
        _npz_declared(path)
        with np.load(path, allow_pickle=False) as archive:
            return _npz_run(path, archive)


def _warn_if_other_run(checkpoint):
    """Say so on stderr when the .npz beside a .pt is not from the same run and step: the two
    would give different networks to the two scripts."""
    pt, npz = checkpoint.path, checkpoint.path.with_suffix(".npz")
    if npz == pt or not npz.is_file():
        return
    try:
        run_id, step = _npz_run_only(npz)
    except CheckpointError as error:
        warn(f"{error}; {pt} is used")
        return
    if (run_id, step) != (checkpoint.run_id, checkpoint.step):
        warn(
            f"{pt} and {npz} come from different runs (run_id {checkpoint.run_id}, step "
            f"{checkpoint.step} vs run_id {run_id}, step {step}); {pt} is used"
        )


# ----------------------------------------------------------------------------- checking


def _check_model_args(path, model_args):
    """Exactly UNet's keyword arguments, each of its type, within the limits."""
    if not isinstance(model_args, dict):
        raise CheckpointError(f"{path} has a model_args that is a {type(model_args).__name__}, not a dict")
    missing = [name for name in MODEL_ARG_TYPES if name not in model_args]
    if missing:
        raise CheckpointError(f"{path} has a model_args that lacks {missing[0]}")
    extra = [name for name in model_args if name not in MODEL_ARG_TYPES]
    if extra:
        raise CheckpointError(f"{path} has a model_args with {_shown(extra[0])}, which UNet does not take")
    for name, kind in MODEL_ARG_TYPES.items():
        if type(model_args[name]) is not kind:  # not `isinstance`: True is an int to Python
            raise CheckpointError(
                f"{path} has model_args {name}={_shown(model_args[name])}, not {TYPE_NAMES[kind]}"
            )
    problem = _model_args_problem(model_args)
    if problem:
        raise CheckpointError(f"{path} has model_args {problem}")


def _model_args_problem(model_args):
    """Why typed model_args are outside what this project builds, or None."""
    in_channels, out_channels = model_args["in_channels"], model_args["out_channels"]
    if in_channels != 1:
        return (
            f"in_channels={in_channels}, but the project's images are grey; "
            f"this network expects {in_channels} channels"
        )
    if out_channels not in (1, 2):
        return (
            f"out_channels={out_channels}, where 1 (a logit per pixel) "
            "or 2 (the paper's two-class soft-max) are allowed"
        )
    for name, largest in (("depth", MAX_DEPTH), ("base_channels", MAX_BASE_CHANNELS)):
        if not 1 <= model_args[name] <= largest:
            return f"{name}={model_args[name]}, outside the allowed 1 to {largest}"
    for name, allowed in (("padding", PADDINGS), ("norm", NORMS)):
        if model_args[name] not in allowed:
            return f"{name}={_shown(model_args[name])}, not one of {', '.join(allowed)}"
    return None


def _check_declared(path, declared, expected):
    """Names and shapes (name → (shape, dtype) in `declared`) against `expected`, and dtypes:
    real numbers for weights, integers for batch norm's step counts."""
    problem = first_mismatch({name: shape for name, (shape, _) in declared.items()}, expected)
    if problem:
        raise CheckpointError(f"{path} does not fit its model_args: {problem}")
    for name, (_, dtype) in declared.items():
        counts = name.endswith("num_batches_tracked")
        if dtype.kind not in ("iu" if counts else "f"):
            raise CheckpointError(
                f"{path} has {name} of {dtype} where {'integers' if counts else 'real numbers'} belong"
            )


def _checked_state(path, arrays, model_args):
    """The weights in `parameter_shapes` order, as float32 (int64 for step counts), after the
    checks of `_check_declared` and one for NaN and infinity."""
    expected = parameter_shapes(model_args)
    _check_declared(path, {name: (array.shape, array.dtype) for name, array in arrays.items()}, expected)
    state = {}
    for name in expected:
        with np.errstate(over="ignore"):  # 1e300 in float64 is inf in float32: refused just below
            state[name] = arrays[name].astype(
                np.int64 if name.endswith("num_batches_tracked") else np.float32
            )
        if not np.isfinite(state[name]).all():
            raise CheckpointError(f"{path} has {name} holding NaN or infinite values")
    return state


def first_mismatch(found, expected):
    """The first way in which the weights `found` differ from the network's `expected` ones,
    as a phrase naming the key and both shapes, or None. Both map names to shapes."""
    for name, shape in expected.items():
        if name not in found:
            return f"it lacks {name} {tuple(shape)}"
        if tuple(found[name]) != tuple(shape):
            return f"{name} is {tuple(found[name])} where this network has {tuple(shape)}"
    extra = sorted(map(str, found.keys() - expected.keys()))
    return f"it has {_quoted(extra[0])}, which this network does not" if extra else None


def check_resumable(checkpoint, model_args):
    """CheckpointError unless training a UNet(**model_args) can go on from `checkpoint`: a .pt
    of the same network, whose Adam state fits its weights."""
    path = checkpoint.path
    if checkpoint.optimizer is None:
        raise CheckpointError(
            f"{path} holds weights only, no optimizer state; resume from the .pt written with it"
        )
    differences = [
        f"{name}={checkpoint.model_args.get(name)} (this run: {value})"
        for name, value in model_args.items()
        if checkpoint.model_args.get(name) != value
    ]
    if differences:
        raise CheckpointError(
            f"{path} was trained with {', '.join(differences)}; pass the same options to resume it"
        )
    problem = _adam_state_problem(checkpoint.optimizer, checkpoint.state)
    if problem:
        raise CheckpointError(f"{path} has an optimizer state that does not fit its weights: {problem}")


def _adam_state_problem(optimizer, state):
    """Why `optimizer` is not Adam's state for these weights, or None.

    Adam's state_dict numbers the parameters 0, 1, … in the order `model.parameters()` gives
    them, the state_dict's order without batch norm's buffers; a parameter not yet stepped has
    no entry. Each entry holds the step count and the two moments, shaped as the parameter.
    """
    import torch

    names = [name for name in state if is_trainable(name)]
    groups = optimizer.get("param_groups")
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)):
        return "its param_groups is not a list of one group"
    if groups[0].get("params") != list(range(len(names))):
        return f"its parameter group does not number the {len(names)} parameters 0 to {len(names) - 1}"
    moments = optimizer.get("state")
    if not isinstance(moments, dict) or not moments.keys() <= set(range(len(names))):
        return f"its state is not a dict from parameter numbers 0 to {len(names) - 1}"
    for index, entry in moments.items():
        name = names[index]
        if not (
            isinstance(entry, dict) and all(isinstance(entry.get(key), torch.Tensor) for key in ADAM_KEYS)
        ):
            return f"the entry for {name} lacks one of the tensors {', '.join(ADAM_KEYS)}"
        step = entry["step"]
        if step.numel() != 1 or not (torch.isfinite(step).all() and step.item() >= 0):
            return f"{name}'s step is not a count of steps"
        for key in ADAM_KEYS[1:]:
            if tuple(entry[key].shape) != state[name].shape:
                return f"{name}'s {key} is {tuple(entry[key].shape)} where {name} is {state[name].shape}"
            if not torch.isfinite(entry[key]).all():
                return f"{name}'s {key} holds NaN or infinite values"
        if (entry["exp_avg_sq"] < 0).any():
            return f"{name}'s exp_avg_sq, a mean of squares, is negative"
    return None
