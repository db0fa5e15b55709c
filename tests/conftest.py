"""Shared pytest fixtures for cloudpickle-rs.

Loader environments (see tests/support/loaders.py): interpreters with stock cloudpickle and NOT
cloudpickle_rs, built on demand under .venvs/.  A fixture that cannot build its environment
raises, so the test errors (fails); it never skips.
"""
import sys
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support import loaders as _loaders  # noqa: E402


def pytest_report_header(config):
    import cloudpickle_rs._native as native

    return f"cloudpickle_rs._native: {native.__file__}"


def pytest_sessionstart(session):
    # tools/versions.py runs the suite on each version's installed wheel: prove that is what the
    # tests import (not a dev build left in python/ by `maturin develop`).
    import os

    if os.environ.get("CLOUDPICKLE_RS_EXPECT_INSTALLED") == "1":
        import cloudpickle_rs._native as native

        if "site-packages" not in native.__file__:
            raise pytest.UsageError(f"cloudpickle_rs comes from {native.__file__}, not a wheel")


class Loader:
    """One loader environment: ``loader.load(data, "result = obj(2)")`` -> JSON-able value."""

    def __init__(self, name):
        self.name = name
        self.python = _loaders.loader_python(name)  # builds it if needed; raises on failure
        self.stamp = _loaders.ensure_env(name)

    def load(self, pickle_bytes, check_source="", timeout=60, buffers=None):
        return _loaders.load_in(self.name, pickle_bytes, check_source, timeout, buffers)

    def run(self, pickle_bytes, check_source="", timeout=60, buffers=None):
        return _loaders.run_in(self.name, pickle_bytes, check_source, timeout, buffers)

    def __repr__(self):
        return f"Loader({self.name!r}, {self.python})"


@pytest.fixture(scope="session")
def loader_factory():
    """``loader_factory("stock-cp312")`` -> :class:`Loader` (cached per session)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Loader(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def stock_cp312(loader_factory):
    return loader_factory("stock-cp312")


@pytest.fixture(scope="session")
def stock_cp300(loader_factory):
    return loader_factory("stock-cp300")


@pytest.fixture(scope="session")
def pypy39(loader_factory):
    return loader_factory("pypy39")


@pytest.fixture(scope="session", params=["stock-cp312", "stock-cp300"])
def cpython_loader(request, loader_factory):
    """Each CPython 3.11 loader in turn (stock cloudpickle 3.1.2, then 3.0.0)."""
    return loader_factory(request.param)


@pytest.fixture(scope="session", params=["stock-cp312", "stock-cp300", "pypy39"])
def any_loader(request, loader_factory):
    """Every loader in turn, PyPy 3.9 included (for streams that carry no bytecode)."""
    return loader_factory(request.param)
