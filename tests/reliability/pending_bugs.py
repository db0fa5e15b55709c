"""Reproducers of known bugs, kept out of the collected suite until the Rust side is fixed.

pytest does not collect this file on its own (it is not ``test_*.py``); run it explicitly:

    .venv/bin/python -m pytest tests/reliability/pending_bugs.py -v

Each test fails today and passes once its bug is fixed; then move it (or its case) into the
collected tests. Hostile cases defined here run in a child process like test_hostile.py's.
"""
import io
import os
import pickle
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostile_cases as hc  # noqa: E402
from hostile_cases import PENDING, case  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ----- bug: wrong exception types ----------------------------------------------------------------


@case(registry=PENDING)
def picklebuffer_non_contiguous(m):
    """_pickle.c raises PicklingError; ours raises BufferError."""
    return m.dumps(pickle.PickleBuffer(memoryview(b"abcdef")[::2]), protocol=5)


# ----- bug: a small thread stack refuses even shallow objects ----------------------------------


@case(registry=PENDING)
def shallow_in_thread_256KiB_stack(m):
    """The native-stack red zone is a fixed 256 KiB: in a thread whose whole stack is 256 KiB
    (threading.stack_size(262144); musl's default is 128 KiB), ``dumps([[1]])`` raises
    PicklingRecursionError while pickle and cloudpickle succeed."""
    return hc._run_in_thread(lambda: m.dumps([[1, [2, {"a": (3,)}]]]), 256 * 1024)


@case(registry=PENDING)
def shallow_in_thread_128KiB_stack(m):
    return hc._run_in_thread(lambda: m.dumps([[1, [2, {"a": (3,)}]]]), 128 * 1024)


PENDING_CASES = [(name, fam) for name, c in PENDING.items() for fam in c.families]


@pytest.mark.parametrize("name,family", PENDING_CASES)
def test_pending_hostile(name, family):
    import test_hostile

    c = PENDING[name]
    ours, refs, _ = test_hostile.run_case(name, c.timeout)
    test_hostile.check_outcome(name, c, family, ours[family], refs.get(family) if c.ref else None)


# ----- bugs: Pickler instances leak (pyo3 0.25.1 #[pyclass(dict)] / heap-type dealloc) -----------


def test_pickler_instances_release_their_class():
    """Every Pickler/PicklerBase instance (and instance of a Python subclass) leaves one reference
    to its class behind when it is freed (upstream PyO3/pyo3#6223, fixed by #6224): a class made
    at run time is never freed once instantiated."""
    import gc
    import weakref

    import cloudpickle_rs

    for cls in (cloudpickle_rs.Pickler, cloudpickle_rs.PicklerBase):
        cls(io.BytesIO())  # warm-up
        gc.collect()
        before = sys.getrefcount(cls)
        for _ in range(100):
            cls(io.BytesIO())
        gc.collect()
        assert sys.getrefcount(cls) == before, f"{cls.__name__}: +{sys.getrefcount(cls) - before} references"

    def instantiate_subclass():
        Sub = type("Sub", (cloudpickle_rs.Pickler,), {})
        Sub(io.BytesIO())
        return weakref.ref(Sub)

    refs = [instantiate_subclass() for _ in range(10)]
    gc.collect()
    assert sum(r() is not None for r in refs) == 0, "classes kept alive by their (freed) instances"


def test_fresh_pickler_dump_does_not_leak_memory():
    """``Pickler(f).dump(obj)`` with a new Pickler each time leaks 64 bytes per instance: the
    instance ``__dict__`` (created by the dump's ``lookup_attr(obj, "__dict__")`` in
    ``instance_hooks``, or by any attribute set on the instance) is emptied but never freed when
    the instance dies (upstream PyO3/pyo3#5953, fixed by #6198; on 3.11/3.12 also #6234)."""
    import gc
    import tracemalloc

    import cloudpickle_rs

    def once():
        cloudpickle_rs.Pickler(io.BytesIO()).dump([1])

    for _ in range(500):
        once()
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for _ in range(10_000):
        once()
    gc.collect()
    growth = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    assert growth < 16 * 1024, f"{growth} bytes for 10 000 fresh Pickler dumps ({growth / 10_000:.0f} B each)"


def test_fresh_picklers_in_leak_check_stay_flat():
    """leak_check.py with a new Pickler per dump (the mix test_leaks.py runs without them)."""
    import test_leaks

    r, _ = test_leaks._leak_check(20_000, fresh="only")
    assert r["traced_growth"] <= test_leaks.TRACED_LIMIT, r["traced_top"]
    assert r["pickler_class_refcount_changes"] == []


def test_cycle_through_instance_dict_is_collected():
    """The Pickler's ``__traverse__`` visits its own fields but not the instance ``__dict__``, so a
    cycle through an attribute is never collected: ``p.me = p``, a dispatch_table holding a
    reducer that refers to the pickler, or a subclass storing one of its bound methods."""
    import gc
    import weakref

    import cloudpickle_rs

    class Sub(cloudpickle_rs.Pickler):
        def persistent_id(self, obj):
            return None

    def self_attribute():
        p = cloudpickle_rs.PicklerBase(io.BytesIO())
        p.me = p
        return weakref.ref(p)

    def dispatch_table():
        p = cloudpickle_rs.Pickler(io.BytesIO())
        p.dispatch_table = {hc.Custom: lambda o, p=p: (hc.Custom, ())}
        p.dump(hc.Custom())
        return weakref.ref(p)

    def bound_method():
        p = Sub(io.BytesIO())
        p.pid = p.persistent_id
        p.dump([1])
        return weakref.ref(p)

    refs = {f.__name__: f() for f in (self_attribute, dispatch_table, bound_method)}
    gc.collect()
    alive = [name for name, r in refs.items() if r() is not None]
    assert alive == [], f"still alive after gc.collect(): {alive}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
