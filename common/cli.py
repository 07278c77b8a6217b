"""Command-line conventions both scripts share: a mistake is one line on stderr, exit 2."""

import argparse
import math


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors as one line (`prog: error: …`) instead of a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _whole_number(text, smallest):
    value = int(text) if text.lstrip("+").isdigit() else -1
    if value < smallest:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ {smallest}, got {text!r}")
    return value


def positive_int(text):
    return _whole_number(text, 1)


def non_negative_int(text):
    return _whole_number(text, 0)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value
