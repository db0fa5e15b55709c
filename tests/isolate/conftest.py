"""What the isolate tests share: the interpreters each runs on and the leak-checked proxy classes."""
import os
import sys
from pathlib import Path

import pytest

from cloudpickle_rs.isolate import isolate
from support.loaders import loader_python
from support.procs import child_pids

HERE = str(Path(__file__).resolve().parent)
# protected_pkg raises if it is ever imported in this process: the isolation contract's tripwire.
os.environ["CLOUDPICKLE_RS_ISOLATE_FORBID"] = str(os.getpid())


@pytest.fixture(params=["same", "recv-3.9", "pypy39"], scope="module")  # 3.8 / 3.13: test_oldest_and_newest
def python(request):
    """The child's interpreter: None (this one) or a path (a missing interpreter fails)."""
    return None if request.param == "same" else loader_python(request.param)


def _leak_checked(target, python):
    before = child_pids()
    cls = isolate(target, python=python, path=[HERE])
    yield cls
    cls.close()
    assert child_pids() == before
    assert "protected_pkg" not in sys.modules


@pytest.fixture
def Remote(python):
    """protected_pkg.Counter in a child; closed after the test, no process left behind."""
    yield from _leak_checked("protected_pkg:Counter", python)


@pytest.fixture
def R(python):
    """protected_pkg.Resource in a child; closed after the test, no process left behind."""
    yield from _leak_checked("protected_pkg:Resource", python)
