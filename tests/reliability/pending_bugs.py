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
