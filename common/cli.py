"""Command-line plumbing both scripts share.

- Each option is written once, as a dataclass field made by `option(...)`: its name is the
  flag (`batch_size` → `--batch-size`), its default, its check and its help sit on one line,
  and `add_options`/`config_from` turn the fields into argparse options and back.
- Each value is checked on its own by its argparse `type=` function, so a bad value fails in
  the parser; checks that involve several options are one table per script (`check_rules`).
- A mistake is one line on stderr and exit status 2; Ctrl-C, SIGTERM and a failed write are
  one line too (`run`), never a traceback.
"""

import argparse
import dataclasses
import math
import os
import signal
import sys
from pathlib import Path

from common.files import WriteError, replace_refusal, unwritable_reason
from common.geometry import MAX_BASE_CHANNELS, MAX_DEPTH, MAX_SIZE

SEED_LIMIT = 2**32  # NumPy and torch seed generators from this range


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown for options that take a value; a flag's "(default: False)" says nothing."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors as one line (`prog: error: …`) instead of a usage block, and no
    abbreviated options: `--base` must not quietly mean `--base-channels`."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------- one value each


def whole_number(smallest, largest):
    """An argparse type: a whole number in [smallest, largest], the range named when refused."""

    def check(text):
        value = int(text) if text.strip().lstrip("+").isdecimal() else None
        if value is None or not smallest <= value <= largest:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {smallest} to {largest:,}, got {text!r}"
            )
        return value

    check.limits = f"{smallest} to {largest:,}"  # for --help
    return check


def number_in(smallest, largest):
    """An argparse type: a finite number in [smallest, largest], the range named when refused."""

    def check(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not smallest <= value <= largest:  # NaN fails this too
            raise argparse.ArgumentTypeError(
                f"expected a number from {smallest:g} to {largest:g}, got {text!r}"
            )
        return value

    check.limits = f"{smallest:g} to {largest:g}"  # for --help
    return check


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def readable_file(text):
    """An existing regular file this process can open: checked now, not after minutes of work
    (and not a FIFO, whose opening would wait for a writer for ever)."""
    path = Path(text)
    if path.exists() and not path.is_dir() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a regular file")
    try:
        with path.open("rb"):
            pass
    except IsADirectoryError:
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file") from None
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}") from None
    return path


def readable_folder(text):
    """An existing folder whose files can be listed, as its path's text (a config records it)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path} is not a folder" if path.exists() else f"{path} does not exist"
        )
    try:
        next(path.iterdir(), None)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot list {path}: {error.strerror}") from None
    return text


def readable_file_or_folder(text):
    """A readable file, or a folder of them (each image in it)."""
    return Path(readable_folder(text)) if Path(text).is_dir() else readable_file(text)


def writable_folder(text):
    """A folder that exists or can be created, and that files can be written into."""
    problem = unwritable_reason(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def file_path(text):
    """A path whose last part is a file name the system can take, temporary names included
    (`.NAME.xxxxxxxx.tmp` beside it, see common/files.py): checked before any work."""
    path = Path(text)
    if not text or text.endswith("/") or path.name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
    if len(os.fsencode(path.name)) > MAX_NAME_BYTES:
        raise argparse.ArgumentTypeError(f"{path.name[:20]}… is longer than {MAX_NAME_BYTES} bytes")
    return path


MAX_NAME_BYTES = 240  # file systems take 255, less what the temporary name adds


def output_file(*suffixes):
    """An argparse type: a file to write, with one of `suffixes`, that may be created or replaced."""

    def check(text):
        path = file_path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{path} must end in {' or '.join(suffixes)}")
        problem = replace_refusal(path)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return path

    return check


# ----------------------------------------------------------------------------- options as fields


def option(default, type=None, help="", choices=None):
    """A dataclass field that is also a command-line option. A bool becomes a flag that flips
    its default (`skip: bool = option(True, …)` → `--no-skip`)."""
    return dataclasses.field(default=default, metadata=dict(type=type, help=help, choices=choices))


def flag_name(field):
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def add_options(parser, config_class):
    """One argparse option per field of `config_class`, whose `dest` is the field's name."""
    for field in dataclasses.fields(config_class):
        spec = field.metadata
        if isinstance(field.default, bool):
            action = "store_false" if field.default else "store_true"
            parser.add_argument(flag_name(field), dest=field.name, action=action, help=spec["help"])
        else:
            limits = getattr(spec["type"], "limits", None)
            parser.add_argument(
                flag_name(field),
                dest=field.name,
                type=spec["type"],
                choices=spec["choices"],
                default=field.default,
                help=f"{spec['help']}; {limits}" if limits else spec["help"],
            )


def config_from(args, config_class):
    return config_class(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)}
    )


def size_option(default=64):
    return option(default, whole_number(1, MAX_SIZE), "image side in pixels, a size the network can take")


def depth_option(default=3):
    return option(default, whole_number(1, MAX_DEPTH), "number of 2×2 max-pool steps (levels below the top)")


def base_channels_option(default=8):
    return option(
        default, whole_number(1, MAX_BASE_CHANNELS), "channels of the first level; each level doubles them"
    )


def seed_option(default=0, seeds="the data, the weights and the batch order"):
    return option(default, whole_number(0, SEED_LIMIT - 1), f"seeds {seeds}")


# The training options both scripts take (01_pytorch.py, and 00_scratch.py --train).


def steps_option(default=None, help="optimizer steps; overrides --epochs"):
    return option(default, whole_number(1, 1_000_000), help)


def batch_size_option(default=16):
    return option(default, whole_number(1, 4096), "images per optimizer step")


def lr_option(default=1e-2):
    return option(default, positive_float, "peak learning rate of the one-cycle schedule")


def train_size_option(default=1000):
    return option(default, whole_number(1, 100_000), "training images")


# ----------------------------------------------------------------------------- several at once


def check_rules(parser, rules):
    """Stop at the first broken rule: `rules` are (option, problem or None) pairs, in the order
    a user should fix them."""
    for name, problem in rules:
        if problem:
            parser.error(f"argument {name}: {problem}")


def unused_options(args, config_class, why, *kept):
    """(option, why) for the first field of `config_class` other than `kept` that was given a
    value other than its default: an option the chosen mode would silently ignore."""
    given = [
        f
        for f in dataclasses.fields(config_class)
        if f.name not in kept and getattr(args, f.name) != f.default
    ]
    return [(flag_name(given[0]), why)] if given else []


def first_refusal(paths):
    """Why the first of `paths` that cannot be written or replaced cannot, or None."""
    return next(filter(None, map(replace_refusal, paths)), None)


def torch_device(parser, name):
    """The torch device for --device ("auto": cuda, else mps, else cpu). One asked for by name
    and missing is an error, never a silent fall-back to the CPU."""
    import torch  # here, so that 00_scratch.py, which imports this module, stays torch-free

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        name = next((device for device in ("cuda", "mps") if available[device]), "cpu")
    unavailable = f"{name} is not available on this machine; use cpu or auto"
    check_rules(parser, [("--device", not available[name] and unavailable)])
    return torch.device(name)


# ----------------------------------------------------------------------------- faults


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` and atomic write cleans up the same way."""


def stop_once(signum, frame):
    """The first Ctrl-C or SIGTERM stops the run; later ones are ignored, so that the clean-up
    they would interrupt (removing temporaries, exiting) finishes and says one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def run(main, argv=None):
    """main(argv), with what a user can cause while it runs turned into one line on stderr:
    Ctrl-C (exit 130) or SIGTERM (143) — every write is atomic, so what was on disk stays
    whole — and a write that failed (a full disk, say: exit 1), whose old file stays whole."""
    prog = Path(sys.argv[0]).name
    previous = {signum: signal.signal(signum, stop_once) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        main(argv)
    except KeyboardInterrupt as interrupt:
        print(f"{prog}: interrupted; files written before now are whole, none half-written", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT))
    except WriteError as error:
        sys.exit(f"{prog}: {error}")
    finally:
        if signal.getsignal(signal.SIGINT) is stop_once:  # not stopped: the caller's handlers again
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def warn(message):
    """One line on stderr for what the user should know but need not fix."""
    print(f"{Path(sys.argv[0]).name}: warning: {message}", file=sys.stderr)
