"""Leaks (issue 6): memory and references stay flat over many dumps, some of them raising; inputs
are freed; Pickler instances caught in reference cycles are collected; a subset runs under
PYTHONMALLOC=debug.

CI size: LEAK_DUMPS (default 20 000) dumps in leak_check.py; RELIABILITY_LONG=1 runs 200 000.
Thresholds (after a warm-up of a tenth of the dumps): RSS may grow by at most 1 MiB plus 8 bytes
per dump (a leak of one small object per dump is 32+ bytes); traced Python memory by at most
64 KiB in total; reference counts of inputs and reconstructors must not change at all.
"""
import gc
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import weakref

import pytest

import cloudpickle_rs
import fuzz_objects as fo

HERE = os.path.dirname(os.path.abspath(__file__))
LONG = os.environ.get("RELIABILITY_LONG") == "1"
DUMPS = int(os.environ.get("LEAK_DUMPS", "200000" if LONG else "20000"))
RSS_SLACK = 1 << 20
RSS_PER_DUMP = 8
TRACED_LIMIT = 64 * 1024


def _leak_check(dumps, fresh="exclude", env=None, timeout=1800):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "leak_check.py"), "--dumps", str(dumps),
                           "--fresh-picklers", fresh], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=HERE)
    assert proc.returncode == 0, f"leak_check exited {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def test_many_dumps_stay_flat():
    r, _ = _leak_check(DUMPS)
    print(json.dumps({k: v for k, v in r.items() if k != "rss_samples"}))
    assert r["raised"] > r["dumps"] // 10, "the mix must include raising dumps"
    assert r["rss_growth"] <= RSS_SLACK + RSS_PER_DUMP * r["rss_dumps"], r["rss_samples"]
    assert r["traced_growth"] <= TRACED_LIMIT, r["traced_top"]
    assert r["refcount_changes"] == []
    assert r["pickler_class_refcount_changes"] == []
    assert r["alive_after_del"] == [] and r["weakrefs_checked"] >= 8


# ----- references, in process --------------------------------------------------------------------


class Boom:
    def __reduce__(self):
        raise ValueError("boom")


def _payloads():
    lst = [1, 2]
    return [
        {"a": lst, "b": (lst, "s")},
        fo.Plain(x=lst),
        fo.make_closure(lst, {"k": lst}),
        fo.make_class("DynRef", {"v": 1}),
        [lst, threading.Lock()],  # raises TypeError
        {"x": [Boom()]},  # raises ValueError
    ]


APIS = {
    "dumps": lambda o, p: cloudpickle_rs.dumps(o, p),
    "dump": lambda o, p: cloudpickle_rs.dump(o, io.BytesIO(), p),
    "Pickler": lambda o, p: cloudpickle_rs.Pickler(io.BytesIO(), p).dump(o),
    "PicklerBase": lambda o, p: cloudpickle_rs.PicklerBase(io.BytesIO(), p).dump(o),
}


@pytest.mark.parametrize("api", sorted(APIS))
def test_refcounts_of_inputs_unchanged(api):
    dump = APIS[api]
    objs = _payloads()
    parts = [x for o in objs for x in ([o] + (list(o.values()) if isinstance(o, dict) else []))]
    for o in objs:  # warm-up: caches, interned names
        for p in range(6):
            try:
                dump(o, p)
            except Exception:  # noqa: BLE001
                pass
    gc.collect()
    before = [sys.getrefcount(x) for x in parts]
    for _ in range(50):
        for o in objs:
            for p in range(6):
                try:
                    dump(o, p)
                except Exception:  # noqa: BLE001
                    pass
    gc.collect()
    after = [sys.getrefcount(x) for x in parts]
    assert before == after


@pytest.mark.parametrize("api", sorted(APIS))
def test_inputs_freed_after_dumps_and_errors(api):
    dump = APIS[api]
    objs = _payloads()
    refs = [weakref.ref(o) for o in objs if not isinstance(o, (dict, list))]
    refs += [weakref.ref(b) for b in objs[5]["x"]]
    errors = []
    for o in objs:
        for p in range(6):
            try:
                dump(o, p)
            except Exception as e:  # noqa: BLE001
                # a kept exception must not keep the object alive (its traceback does keep the
                # frames of a raising __reduce__ alive, as in Python: drop those)
                errors.append(_without_tracebacks(e))
    del objs, o
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    assert errors


def _without_tracebacks(e):
    x = e
    while x is not None:
        x.__traceback__ = None
        x = x.__cause__ or x.__context__
    return e


# ----- Pickler instances in reference cycles ----------------------------------------------------


class Holder:
    pass


def _cycles():
    """(name, build) pairs; build() -> (pickler, [objects that must die with it])."""

    def self_attribute():
        p = cloudpickle_rs.Pickler(io.BytesIO())
        p.me = p
        return p, []

    def through_file():
        f = io.BytesIO()
        p = cloudpickle_rs.Pickler(f)
        f.pickler = p  # BytesIO has a __dict__
        return p, [f]

    def through_memo():
        p = cloudpickle_rs.Pickler(io.BytesIO())
        h = Holder()
        p.dump([h])
        h.pickler = p  # the memo holds h, h holds the pickler
        return p, [h]

    def through_buffer_callback():
        box = []
        p = cloudpickle_rs.Pickler(io.BytesIO(), 5, buffer_callback=lambda b: box)
        box.append(p)
        p.dump(pickle.PickleBuffer(b"x"))
        return p, []

    def through_pickle_by_reference():
        box = []
        p = cloudpickle_rs.Pickler(io.BytesIO(), pickle_by_reference=lambda o: box is None)
        box.append(p)
        p.dump(fo.make_lambda(1))
        return p, []

    def through_dispatch_table():
        p = cloudpickle_rs.Pickler(io.BytesIO())
        p.dispatch_table = {Holder: lambda o, p=p: (Holder, ())}
        p.dump(Holder())
        return p, []

    def subclass_hooks():
        class Sub(cloudpickle_rs.Pickler):
            def persistent_id(self, obj):
                return None

        p = Sub(io.BytesIO())
        p.pid = p.persistent_id  # bound method: the instance refers to itself
        p.dump([1, fo.make_lambda(2)])
        return p, []

    def base_through_memo():
        p = cloudpickle_rs.PicklerBase(io.BytesIO())
        h = Holder()
        p.dump([h])
        h.pickler = p
        return p, [h]

    def base_self_attribute():
        p = cloudpickle_rs.PicklerBase(io.BytesIO())
        p.me = p
        return p, []

    # The cycles through the instance __dict__ (self_attribute, through_dispatch_table,
    # subclass_hooks, base_self_attribute) were never collected with pyo3 0.25 (PyO3/pyo3#6206).
    return [(f.__name__, f) for f in (self_attribute, through_file, through_memo, through_buffer_callback,
                                      through_pickle_by_reference, through_dispatch_table, subclass_hooks,
                                      base_through_memo, base_self_attribute)]


@pytest.mark.parametrize("name,build", _cycles())
def test_picklers_in_reference_cycles_are_collected(name, build):
    p, others = build()
    refs = [weakref.ref(p)] + [weakref.ref(o) for o in others]
    del p, others
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs), f"{name}: still alive after gc"


def test_pickler_instances_release_their_class():
    """A freed Pickler/PicklerBase instance (or instance of a Python subclass) leaves no reference
    to its class behind, so a class made at run time is freed (leaked with pyo3 0.25:
    PyO3/pyo3#6223, fixed by #6224)."""
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


def test_fresh_picklers_stay_flat():
    """leak_check.py with a new Pickler per dump (test_many_dumps_stay_flat runs without them)."""
    r, _ = _leak_check(DUMPS, fresh="only")
    assert r["traced_growth"] <= TRACED_LIMIT, r["traced_top"]
    assert r["pickler_class_refcount_changes"] == []


def test_pickler_traverses_what_it_holds():
    """gc.get_referents sees the objects a Pickler holds (GC support, not only refcounts)."""
    f = io.BytesIO()
    h = Holder()
    p = cloudpickle_rs.Pickler(f, 5, buffer_callback=print)
    p.dump([h])
    refs = gc.get_referents(p)
    assert any(r is h for r in refs), "memo entries are traversed"
    assert print in refs, "buffer_callback is traversed"


_GC_DURING_CONSTRUCTION = """
import gc, io
import cloudpickle_rs
classes = [cloudpickle_rs.PicklerBase, cloudpickle_rs.Pickler]
classes += [type("Sub", (c,), {}) for c in classes]
gc.set_threshold(1)
keep = []
for cls in classes:
    for _ in range(50):
        keep.append([dict() for _ in range(100)])  # dict freelist empty: each new dict may collect
        keep.append(cls(io.BytesIO()))
print("done")
"""


def test_gc_while_a_pickler_is_being_made():
    """A collection that runs while a Pickler instance is being allocated (on 3.11/3.12,
    object.__new__ allocates its __dict__ before pyo3 writes the Rust fields) traverses it
    without crashing."""
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _GC_DURING_CONSTRUCTION],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"


# ----- PYTHONMALLOC=debug -----------------------------------------------------------------------


DEBUG_HOSTILE = ["reduce_returns_seven_tuple", "hook_GetStateRaises", "list_cleared_during_walk",
                 "dict_grows_during_walk", "set_grows_during_walk", "attr_GetattrRecurses",
                 "persistent_id_raises", "reducer_override_raises", "reducer_override_calls_dump",
                 "file_write_raises_on_large", "deep_list", "deep_reduce_chain", "huge_int_binary_protocols",
                 "unpicklable_frame", "reduce_calls_dumps_nested", "picklebuffer_released"]


def test_subset_under_pythonmalloc_debug():
    env = dict(os.environ, PYTHONMALLOC="debug", PYTHONFAULTHANDLER="1")
    r, proc = _leak_check(3000, "include", env=env)
    assert "Debug memory block" not in proc.stderr and "Fatal Python error" not in proc.stderr
    fuzz = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_harness.py"), "child", "500000", "400",
                           os.devnull], capture_output=True, text=True, env=env, cwd=HERE, timeout=600)
    assert fuzz.returncode == 0, fuzz.stdout[-2000:] + fuzz.stderr[-3000:]
    assert '"done": 400' in fuzz.stdout and '"seed"' not in fuzz.stdout, fuzz.stdout[-2000:]
    for name in DEBUG_HOSTILE:
        out = subprocess.run([sys.executable, os.path.join(HERE, "hostile_runner.py"), name],
                             capture_output=True, text=True, env=env, cwd=HERE, timeout=300)
        assert "OURS-DONE" in out.stdout, f"{name} under PYTHONMALLOC=debug:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"
        assert "Debug memory block" not in out.stderr and "Fatal Python error" not in out.stderr, out.stderr[-3000:]


def test_fresh_pickler_dump_does_not_leak_memory():
    """``Pickler(f).dump(obj)`` with a new Pickler each time must not leak. It leaked 64 bytes per
    instance while the dump created the instance ``__dict__``, which pyo3 0.25 empties but never
    frees (PyO3/pyo3#5953); the dump no longer creates it."""
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
