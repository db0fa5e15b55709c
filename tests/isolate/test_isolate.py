import sys
from pathlib import Path

import pytest

import cloudpickle_rs
from cloudpickle_rs.isolate import ChildDiedError, ModuleLeakError, RemoteError, isolate
from support.procs import child_pids

HERE = str(Path(__file__).resolve().parent)


def test_calls_values_handles(Remote):
    c = Remote(5)
    assert c.add(2) == 7
    assert len(c) == 7
    k = 10
    assert c.apply(lambda x: x + k, 1) == 11  # a closure by value (by source across versions)
    assert c.echo(b"x" * (10 << 20)) == b"x" * (10 << 20)
    d = c.child()
    assert d.add(1) == 8 and c.echo(d) is d  # a handle back resolves to the same proxy


def test_remote_error(Remote):
    c = Remote()
    with pytest.raises(RemoteError) as info:
        c.fail()
    assert info.value.remote_type_name == "KeyError"
    assert "protected_pkg" in info.value.remote_traceback and "raise KeyError" in info.value.remote_traceback


def test_leak_and_died():
    import types

    sys.modules["protected_pkg"] = types.ModuleType("protected_pkg")
    try:
        with pytest.raises(ModuleLeakError):
            isolate("protected_pkg:Counter", path=[HERE])
    finally:
        del sys.modules["protected_pkg"]
    Remote = isolate("protected_pkg:Counter", path=[HERE])
    c = Remote()
    Remote._isolate_session.proc.kill()
    with pytest.raises(ChildDiedError):
        c.add(1)
    Remote.close()
    with pytest.raises(ValueError):
        isolate("nocolon")


def test_killed_mid_call():
    import threading

    before = child_pids()
    Remote = isolate("protected_pkg:Counter", path=[HERE])
    c = Remote()
    proc = Remote._isolate_session.proc
    killer = threading.Thread(target=proc.kill)  # the call below blocks forever in the child
    killer.start()
    with pytest.raises(ChildDiedError):
        c.block()
    killer.join()
    with pytest.raises(ChildDiedError):
        c.add(1)
    Remote.close()
    assert child_pids() == before
