"""Issue 10 features beyond the first slice: context managers, per-instance close, attributes,
protocol methods, handles for unpicklable arguments, re-entrant callbacks, batch, policies.
Every test runs on the same interpreter, CPython 3.9 and PyPy 3.9 (a missing one fails)."""
import gc
import os
import sys
import threading
from pathlib import Path

import pytest

from cloudpickle_rs.isolate import BatchError, RemoteError, isolate, method
from support.loaders import loader_python
from support.procs import child_pids

HERE = str(Path(__file__).resolve().parent)


def test_exit_sees_exception_and_can_suppress(R):
    r = R()
    with r as inner:
        assert inner is r  # __enter__ returned the instance itself: same proxy
        raise KeyError("swallowed")  # the child's __exit__ returns True for KeyError
    with pytest.raises(ValueError, match="propagated"):
        with r:
            raise ValueError("propagated")
    with r:
        pass
    assert r.exits == [("KeyError", "'swallowed'"), ("ValueError", "propagated"), None]


def test_instance_close_releases_instance_not_child(R):
    r = R([1])
    other = R([2])
    r.close()  # releases r in the child; the child keeps running
    with pytest.raises(ValueError, match="closed"):
        r.size
    assert other.size == 1
    assert method(other, "close")() == "target close"  # the target's own close()
    assert other.closed is True
    proc = R._isolate_session.proc
    assert proc.poll() is None
    R.close()  # the class's close stops the child
    assert proc.wait(timeout=5) == 0


def test_release_cannot_race_with_resend(R):
    r = R()
    sess = R._isolate_session
    for _ in range(50):
        a = r.ident(r)  # the child re-sends r's handle while earlier proxies are released
        assert a is r
    it_proxy = r.gen(3)  # a generator cannot be pickled: it comes back as a handle
    hid = object.__getattribute__(it_proxy, "_isolate_hid")
    del it_proxy
    gc.collect()
    assert hid not in sess.handles and any(h == hid for h, _ in sess.pending)
    again = r.ident(r)  # the release goes out in front of this call
    assert again is r and not sess.pending
    # a handle dropped and received again while its release is queued: counts keep it alive
    g = r.gen(2)
    hid = object.__getattribute__(g, "_isolate_hid")
    g2 = r.ident(g)
    assert g2 is g
    del g, g2
    gc.collect()
    g3 = r.gen(4)
    assert list(g3) == [0, 1, 4, 9]


def test_attributes_properties_protocols(R):
    r = R([3, 1, 2])
    assert r.kind == "resource"  # class attribute: a value
    assert r.size == 3  # property: a value
    assert r.items == [3, 1, 2]  # instance attribute: a value
    m = r.div
    assert m(6, 3) == 2.0  # a method: a method proxy
    assert len(r) == 3 and repr(r) == "Resource([3, 1, 2])"
    assert 1 in r and 7 not in r
    assert r[0] == 3 and r[-1] == 2
    assert list(r) == [3, 1, 2] and [x for x in r] == [3, 1, 2]
    assert list(r.gen(300)) == [i * i for i in range(300)]  # a remote generator, chunked
    r.items = [9]
    assert r.size == 1
    assert not hasattr(r, "missing") and getattr(r, "missing", 5) == 5
    with pytest.raises(AttributeError, match="missing"):
        r.missing
    g = r.gen(1)
    assert bool(g) is True and bool(r) is True  # truth is the child's: __len__ or True
    r.items = []
    assert bool(r) is False


def test_unpicklable_argument_goes_as_handle(R):
    r = R()
    lock = threading.Lock()
    gen = (i for i in range(3))
    assert r.call(lambda: 5) == 5  # a lambda goes by value
    assert r.ident(lock) is lock  # a lock goes as a parent handle and comes back as itself
    assert r.same(lock, lock) is True  # the same parent object twice: the same child proxy
    assert r.call(gen.__next__) == 0  # a bound method of a generator: called back in the parent
    assert r.ident(gen) is gen
    with pytest.raises(RemoteError) as info:
        r.call(lambda: 1 / 0)
    assert info.value.remote_type_name == "ZeroDivisionError"


def test_callbacks_three_levels(R):
    r = R([1, 2])
    seen = []
    lock = threading.Lock()  # unpicklable, so the callbacks below are parent handles

    def level3(x):
        with lock:  # the lock makes each level unpicklable: all three run in the parent
            seen.append(("3", x))
        return x * 10

    def level2(x):
        seen.append(("2", x))
        return r.call(level3, x + 1) + (0 if lock else 1)  # child again from inside a callback

    def level1(x):
        seen.append(("1", x))
        return r.call(level2, x + 1)

    # level1 closes over r (a proxy) and the lock, so it cannot go by value: a handle
    assert r.call(level1, 1) == 30
    assert seen == [("1", 1), ("2", 2), ("3", 3)]

    class Cb:
        def __init__(self):
            self.calls = 0

        def hit(self, n):
            self.calls += 1
            return n if n == 0 else r.call(self.hit, n - 1, _isolate_transport="reference")

    cb = Cb()
    assert r.call(cb.hit, 3, _isolate_transport="reference") == 0
    assert cb.calls == 4


def test_callback_error_reaches_child_and_back(R):
    r = R()
    lock = threading.Lock()

    def bad():
        with lock:
            raise LookupError("from the parent")

    with pytest.raises(RemoteError) as info:
        r.call(bad)
    assert "LookupError" in info.value.remote_message and "from the parent" in info.value.remote_message


def test_batch(R):
    r = R()
    assert r.div.batch([((6, 2), {}), ((1,), {"b": 4})]) == [3.0, 0.25]
    assert r.div.batch([]) == []
    with pytest.raises(BatchError) as info:
        r.div.batch([((4, 2), {}), ((1, 0), {}), ((9, 3), {})])
    assert info.value.results == [2.0] and info.value.index == 1
    assert info.value.remote_type_name == "ZeroDivisionError" and "a / b" in info.value.remote_traceback
    lock = threading.Lock()
    assert r.ident.batch([((lock,), {}), ((lock,), {})]) == [lock, lock]


def test_transport_reference_and_policies(python):
    before = child_pids()
    R = isolate("protected_pkg:Resource", python=python, path=[HERE], transport="reference",
                type_rules={tuple: "value"})
    try:
        r = R()
        data = [1, 2]
        assert r.same(data, data) is True  # handles keep identity
        assert r.ident(data) is data  # a parent handle comes back as the parent object
        assert r.ident((1, [2])) == (1, [2]) and r.ident((1, [2])) is not None
        assert R.policy_for(data) == ("reference", "session default transport='reference'")
        assert R.policy_for(5)[0] == "value" and "scalar" in R.policy_for(5)[1]
        assert R.policy_for((1,)) == ("value", "type_rules[builtins.tuple]")
        assert R.policy_for((1,), "reference") == ("reference", "per-call _isolate_transport='reference'")
        assert r.same(data, list(data), _isolate_transport="value") is False
        assert r.ident(data, _isolate_transport="value") == [1, 2]
    finally:
        R.close()
    V = isolate("protected_pkg:Resource", python=python, path=[HERE], type_rules={list: "reference"})
    try:
        v = V()
        lst, dct = [1], {"a": 1}
        assert v.ident(lst) is lst and v.ident(dct) is not dct and v.ident(dct) == dct
        assert V.policy_for(dct) == ("value", "session default transport='value'")
        assert V.policy_for(lst) == ("reference", "type_rules[builtins.list]")
        with pytest.raises(ValueError):
            v.ident(lst, _isolate_transport="bogus")
    finally:
        V.close()
    with pytest.raises(ValueError):
        isolate("protected_pkg:Resource", transport="bogus")
    assert child_pids() == before


def test_big_bytes_through_shared_memory(R, capfd):
    r = R()
    shmio = R._isolate_session.shmio
    child = R._isolate_session.proc.pid
    ours = lambda: sorted(n for n in os.listdir("/dev/shm") if n.startswith(("cprs_%d_" % os.getpid(), "cprs_%d_" % child)))  # noqa: E731
    big = os.urandom(10 << 20)
    out = r.ident(big)
    assert out == big and type(out) is bytes
    ba = bytearray(b"y" * (100 << 10))
    out2 = r.ident(ba)
    assert out2 == ba and type(out2) is bytearray
    small = b"z" * 1000
    assert r.ident(small) == small
    assert shmio.sent == [10 << 20, 100 << 10]  # parent -> child through shared memory, small by pipe
    assert shmio.received == [10 << 20, 100 << 10]  # child -> parent through shared memory
    assert len(ours()) == 2  # one reusable arena per side
    assert r.ident([big, big]) == [big, big]  # the second does not fit the arena: a one-off segment
    assert r.ident([ba, big, ba]) == [ba, big, ba]
    assert len(ours()) == 2  # one-off segments were unlinked by their receivers
    R.close()
    assert ours() == []  # arenas unlinked (other processes on the machine may use /dev/shm)
    err = capfd.readouterr().err
    assert "resource_tracker" not in err and "leaked" not in err


def test_shared_memory_of_a_killed_child_is_unlinked():
    R = isolate("protected_pkg:Resource", path=[HERE])
    child = R._isolate_session.proc.pid
    r = R()
    assert r.ident(b"k" * (1 << 20)) == b"k" * (1 << 20)
    assert [n for n in os.listdir("/dev/shm") if n.startswith("cprs_%d_" % child)]
    R._isolate_session.proc.kill()
    R._isolate_session.proc.wait()
    R.close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(("cprs_%d_" % child, "cprs_%d_" % os.getpid()))]


def test_share_key(python):
    before = child_pids()
    A = isolate("protected_pkg:Resource", python=python, path=[HERE], share_key="k1")
    B = isolate("protected_pkg:Counter", python=python, path=[HERE], share_key="k1")
    try:
        assert A._isolate_session is B._isolate_session
        proc = A._isolate_session.proc
        a, b = A([1]), B(2)
        assert a.ident(b) is b and b.add(1) == 3 and a.size == 1
        with pytest.raises(ValueError, match="share_key"):
            isolate("protected_pkg:Counter", python=python, path=[HERE], share_key="k1", transport="reference")
        other = "recv-3.9" if python is None else None
        with pytest.raises(ValueError, match="share_key"):
            isolate("protected_pkg:Counter", python=other and loader_python(other), path=[HERE], share_key="k1")
        C = isolate("protected_pkg:Counter", python=python, path=[HERE], share_key="k2")
        assert C._isolate_session is not A._isolate_session
        C.close()
        A.close()
        A.close()  # a second close of the same class does not count twice
        assert proc.poll() is None and b.add(1) == 4  # B still uses the child
        B.close()
        assert proc.wait(timeout=5) == 0
    finally:
        A.close()
        B.close()
    assert child_pids() == before


def test_remote_traceback_names_the_callers_line(R):
    r = R()

    def broken(x):
        return x["missing"]  # THIS LINE

    line = broken.__code__.co_firstlineno + 1
    with pytest.raises(RemoteError) as info:
        r.call(broken, {})  # by value (by source for 3.9 and PyPy)
    tb = info.value.remote_traceback
    assert info.value.remote_type_name == "KeyError"
    assert 'test_isolate_features.py", line %d' % line in tb, tb


MAIN_SCRIPT = """
import sys
from cloudpickle_rs.isolate import isolate

class MainStyle:  # a class of __main__: it travels by value (by source across versions)
    def __init__(self, v):
        self.v = v

    def twice(self):
        return self.v * 2

R = isolate("protected_pkg:Resource", python=sys.argv[2] if len(sys.argv) > 2 else None, path=[sys.argv[1]])
r = R()
obj = MainStyle(21)
assert r.call(obj.twice) == 42
back = r.ident(obj)
import platform, subprocess
here = repr((sys.version_info[:2], platform.python_implementation()))
there = subprocess.check_output([sys.argv[2], "-c", "import sys, platform; print(repr((sys.version_info[:2], platform.python_implementation())))"], text=True).strip() if len(sys.argv) > 2 else here
if there != here:  # another Python: the child's copy of a dynamic class comes back as a handle
    assert back is not obj and back.v == 21 and back.twice() == 42 and r.ident(back) is back
else:
    assert back is not obj and back.v == 21 and type(back) is MainStyle
assert r.call(lambda: type(obj).__name__) == "MainStyle"
R.close()
print("ok")
"""


def test_main_class_by_value(python, tmp_path):
    import subprocess

    script = tmp_path / "main_style.py"
    script.write_text(MAIN_SCRIPT)
    env = dict(os.environ, CLOUDPICKLE_RS_ISOLATE_FORBID="script")  # the child's pid differs
    cmd = [sys.executable, str(script), HERE] + ([str(python)] if python else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_threads_take_turns(R):
    r = R()
    errors, results = [], {}

    def work(k):
        try:
            results[k] = [r.ident((k, i)) for i in range(200)]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(results[k] == [(k, i) for i in range(200)] for k in range(4))


@pytest.mark.parametrize("env", ["recv-3.8", "recv-3.13"])
def test_oldest_and_newest(env):
    """The child program on the ends of the supported range: one pass over the main features."""
    before = child_pids()
    R = isolate("protected_pkg:Resource", python=loader_python(env), path=[HERE])
    try:
        r = R([1, 2])
        lock = threading.Lock()
        k = 3
        assert r.call(lambda x: x + k, 1) == 4 and r.ident(lock) is lock
        assert r.size == 2 and list(r) == [1, 2] and 2 in r and r[1] == 2 and len(r) == 2
        assert r.call(lambda: r.call(lambda: lock and 7)) == 7
        assert r.div.batch([((1, 2), {})]) == [0.5]
        with r:
            raise KeyError("x")
        big = os.urandom(1 << 20)
        assert r.ident(big) == big
    finally:
        R.close()
    assert child_pids() == before


def test_child_stops_when_the_class_is_collected():
    before = child_pids()
    R = isolate("protected_pkg:Resource", path=[HERE])
    r = R([1])
    assert r.size == 1
    proc = R._isolate_session.proc
    del R, r
    gc.collect()
    assert proc.wait(timeout=10) == 0
    assert child_pids() == before


def test_unloadable_messages_fail_one_call_not_the_session(python, tmp_path, monkeypatch):
    parent_dir, child_dir = tmp_path / "p", tmp_path / "c"
    parent_dir.mkdir()
    child_dir.mkdir()
    (parent_dir / "parent_only_mod.py").write_text("class P:\n    pass\n")
    (child_dir / "child_only.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(parent_dir))
    import parent_only_mod

    R = isolate("protected_pkg:Resource", python=python, path=[HERE, str(child_dir)])
    request_close = R.close
    r = R([1])
    with pytest.raises(RemoteError) as info:  # the child cannot import parent_only_mod
        r.ident(parent_only_mod.P())
    assert "cannot load the request" in info.value.remote_message
    assert r.size == 1
    from cloudpickle_rs.isolate import IsolateProtocolError

    with pytest.raises(IsolateProtocolError, match="child_only"):  # we cannot import child_only
        r.make_child_only()
    assert r.size == 1
    lock = threading.Lock()
    with pytest.raises(RemoteError) as info:  # a callback request we cannot load
        r.call_with_thing(lambda t: lock and t)
    assert "cannot load" in info.value.remote_message
    assert r.size == 1 and "child_only" not in sys.modules
    request_close()
