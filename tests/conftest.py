import importlib

import pytest


@pytest.fixture(scope="session")
def scratch():
    """00_scratch.py as a module (its name starts with a digit, so no plain import)."""
    return importlib.import_module("00_scratch")


@pytest.fixture(scope="session")
def pytorch_script():
    return importlib.import_module("01_pytorch")
