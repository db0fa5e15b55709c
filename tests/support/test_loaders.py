"""Self-test of the loader environments (tests/support/loaders.py).

The pickles here are written by STOCK cloudpickle (the one in .venv), not by cloudpickle_rs: this
checks the harness itself, independently of our package.  Loading them proves each environment
has a working stock cloudpickle, runs isolated, and reports results and failures faithfully.
"""
import pickle
import sys

import cloudpickle as stock_cloudpickle
import pytest

from support import loaders


def _dynamic_objects():
    """A lambda, a closure and a class defined locally, so cloudpickle pickles them by value."""
    scale = 3

    def make_adder(k):
        def add(x):
            return x + k * scale

        return add

    class Counter:
        start = 10

        def __init__(self, step):
            self.step = step

        def advance(self, n):
            return self.start + self.step * n

        @classmethod
        def kind(cls):
            return cls.__name__

    return {
        "square": lambda x: x * x,
        "adder": make_adder(5),
        "Counter": Counter,
        "counter": Counter(7),
    }


CHECK_DYNAMIC = """
import sys
Counter = obj["Counter"]
result = {
    "square": obj["square"](4),
    "adder": obj["adder"](1),
    "closure_cells": len(obj["adder"].__closure__),
    "advance": obj["counter"].advance(2),
    "kind": Counter.kind(),
    "isinstance": isinstance(obj["counter"], Counter),
    "cloudpickle_in_modules": "cloudpickle" in sys.modules,
}
"""

EXPECTED_DYNAMIC = {
    "square": 16,
    "adder": 16,
    "closure_cells": 2,
    "advance": 24,
    "kind": "Counter",
    "isinstance": True,
    "cloudpickle_in_modules": True,
}


@pytest.mark.parametrize("name,version", [("stock-cp312", "3.1.2"), ("stock-cp300", "3.0.0")])
def test_stock_bytecode_pickle_loads_in_cpython_loaders(name, version):
    data = stock_cloudpickle.dumps(_dynamic_objects(), protocol=5)
    res = loaders.run_in(name, data, CHECK_DYNAMIC)
    assert res.value == EXPECTED_DYNAMIC
    assert res.meta["implementation"] == "CPython"
    assert res.meta["python_version"].startswith("%d.%d." % sys.version_info[:2])  # the sender's
    assert res.meta["cloudpickle_rs_importable"] is False
    # the stream itself imported cloudpickle (its reconstructors), nothing did before
    assert res.meta["cloudpickle_imported_before_loads"] is False
    assert res.meta["cloudpickle_imported_by_loads"] is True
    assert res.meta["cloudpickle_version"] == version


def test_fixtures(stock_cp312, stock_cp300, pypy39):
    assert stock_cp312.stamp["cloudpickle_version"] == "3.1.2"
    assert stock_cp300.stamp["cloudpickle_version"] == "3.0.0"
    assert pypy39.stamp["implementation"] == "PyPy"
    assert pypy39.stamp["python_version"].startswith("3.9.")
    assert pypy39.stamp["cloudpickle_version"] == "3.1.2"
    assert stock_cp312.load(pickle.dumps([1, 2]), "result = sum(obj)") == 3


PLAIN = {"ints": [1, 2, 3], "float": 2.5, "text": "héllo", "nested": (None, True, b"\x00\xff"),
         "set": frozenset({4, 5})}

CHECK_PLAIN = """
import sys
result = {"keys": sorted(obj), "sum": sum(obj["ints"]), "bytes": list(obj["nested"][2]),
          "set": sorted(obj["set"]), "impl": sys.implementation.name}
"""


def test_plain_data_loads_in_pypy(pypy39):
    data = stock_cloudpickle.dumps(PLAIN, protocol=5)
    res = pypy39.run(data, CHECK_PLAIN)
    assert res.value == {"keys": sorted(PLAIN), "sum": 6, "bytes": [0, 255], "set": [4, 5],
                         "impl": "pypy"}
    assert res.meta["python_version"].startswith("3.9.")
    assert res.meta["cloudpickle_rs_importable"] is False


def test_control_bytecode_pickle_from_311_fails_on_pypy(pypy39):
    """Documented control: a stock (bytecode) stream made on CPython 3.11 does not load on PyPy
    3.9, because it calls CodeType with 3.11's constructor arguments.  This is why by_source
    exists.  If this ever starts passing, the cross-interpreter by_source tests lose their point.
    """
    data = stock_cloudpickle.dumps(_dynamic_objects()["square"], protocol=5)
    if sys.version_info < (3, 11):
        # PyPy 3.9 implements CPython 3.9's code constructor and bytecode, and 3.10's constructor
        # takes the same arguments: this small function's stream from a CPython 3.9 or 3.10
        # sender loads there (by luck on 3.10: nothing guarantees bytecode across versions).
        assert pypy39.load(data, "result = obj(3)") == 9
        return
    with pytest.raises(loaders.LoaderError) as info:
        pypy39.load(data, "result = obj(3)")
    err = info.value
    assert err.phase == "loads", err
    assert err.exc_type in ("TypeError", "ValueError"), err
    assert err.stderr  # the child's traceback is carried


def test_out_of_band_buffers(stock_cp312):
    buffers = []
    payload = bytearray(b"abc" * 1000)
    data = pickle.dumps(pickle.PickleBuffer(payload), protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1
    value = stock_cp312.load(data, "result = [len(obj), bytes(obj[:3]).decode()]",
                             buffers=[b.raw() for b in buffers])
    assert value == [3000, "abc"]


def test_check_failure_is_reported(stock_cp312):
    with pytest.raises(loaders.LoaderError) as info:
        stock_cp312.load(pickle.dumps(1), "assert obj == 2, 'obj is %r' % obj")
    assert info.value.phase == "check"
    assert info.value.exc_type == "AssertionError"
    assert "obj is 1" in info.value.stderr


def test_loads_failure_is_reported(stock_cp312):
    # a global that does not exist in the loader
    data = b"ccloudpickle_rs\nX\n."  # GLOBAL cloudpickle_rs.X
    with pytest.raises(loaders.LoaderError) as info:
        stock_cp312.load(data)
    assert info.value.phase == "loads"
    assert info.value.exc_type == "ModuleNotFoundError"


def test_child_is_isolated(stock_cp312, monkeypatch, tmp_path):
    # Neither PYTHONPATH nor the parent's cwd leaks into the loader.
    (tmp_path / "cloudpickle_rs.py").write_text("X = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    res = stock_cp312.run(pickle.dumps(None), "import sys, os\n"
                          "result = [p for p in sys.path if p in ('', os.getcwd())]")
    assert res.value == []
    assert res.meta["cloudpickle_rs_importable"] is False
    assert str(tmp_path) not in sys.executable


def test_timeout_is_reported(stock_cp312):
    with pytest.raises(loaders.LoaderError) as info:
        stock_cp312.load(pickle.dumps(None), "import time; time.sleep(30)", timeout=2)
    assert info.value.phase == "timeout"


def test_unknown_env():
    with pytest.raises(KeyError):
        loaders.loader_python("no-such-env")
