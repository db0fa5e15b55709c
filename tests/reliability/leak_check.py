"""Leak check: many dumps of mixed payloads (about one in five raising), then RSS, tracemalloc,
reference counts and weak references.

    python leak_check.py [--dumps N] [--json]

Phases, each after a warm-up of a tenth of its dumps (caches, interned names, allocator arenas):
1. RSS: N dumps; resident set size sampled before and after (after gc.collect()).
2. tracemalloc: N/4 dumps with tracemalloc on; traced Python memory before and after.
3. Reference counts of every input and of the callables streams name, before phase 1 and after
   phase 2: must be equal.
4. Weak references to the inputs: dead once the inputs are dropped (and gc has run).
Prints a JSON summary; test_leaks.py runs this in a child process and applies the thresholds.
"""
import argparse
import collections
import copyreg
import gc
import io
import json
import os
import pickle
import sys
import threading
import time
import tracemalloc
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cloudpickle.cloudpickle as stock  # noqa: E402
import fuzz_objects as fo  # noqa: E402

import cloudpickle_rs  # noqa: E402


class Raises:
    def __reduce__(self):
        raise ValueError("refuses")


class Grows:
    def __init__(self, d):
        self.d = d

    def __reduce__(self):
        # the dict changes size during the walk (RuntimeError), and stays the same size over time
        if "toggle" in self.d:
            del self.d["toggle"]
        else:
            self.d["toggle"] = 0
        return (int, ())


class Hooks(cloudpickle_rs.Pickler):
    def persistent_id(self, obj):
        return "pid" if obj == "persist-me" else None

    def reducer_override(self, obj):
        if type(obj) is fo.ReduceEx:
            raise KeyError("override refuses")
        return super().reducer_override(obj)


class FailingFile:
    def write(self, data):
        raise OSError("disk full")


def make_payloads():
    """name -> (object, expected exception type or None)."""
    closure_target = [1, 2, 3]
    Dyn = fo.make_class("DynLeak", {"a": 1})
    dyn_instance = Dyn()
    dyn_instance.v = {"k": closure_target}
    plain = fo.Plain(a=[1, "two"], b={"x": (1.5, None)})
    deep = []
    x = deep
    for _ in range(3000):
        x.append([])
        x = x[0]
    growing = {"a": 1}
    growing["g"] = Grows(growing)
    slotted = fo.Slotted()
    slotted.a = "a"
    p = {
        "builtins": ({"ints": list(range(50)), "floats": [0.5, float("nan"), -0.0], "s": "text" * 20,
                      "b": b"\x00" * 300, "big": 10**40, "t": (None, True, "x")}, None),
        "many_small_dicts": ([{"i": i, "s": str(i)} for i in range(100)], None),
        "large_bytes": (b"L" * 150_000, None),
        "plain": (plain, None),
        "slotted": (slotted, None),
        "reduce_state": (fo.ReduceState(), None),
        "newargs_ex": (fo.NewArgsEx(1, y="y"), None),
        "lambda": (fo.make_lambda(closure_target), None),
        "closure": (fo.make_closure(plain, closure_target), None),
        "shared_cells": (list(fo.make_shared_cell(closure_target)), None),
        "recursive_fn": (fo.make_recursive(), None),
        "dyn_class": (Dyn, None),
        "dyn_instance": (dyn_instance, None),
        "partial": (fo.make_partial(fo.module_function, [plain], {"k": 1}), None),
        "ordered": (collections.OrderedDict(a=1, b=[2]), None),
        "persist": (["persist-me", 1], None),
        "lock": ([1, threading.Lock()], TypeError),
        "raises": ({"x": [Raises()]}, ValueError),
        "too_deep": (deep, RecursionError),
        "dict_grows": (growing, RuntimeError),
        "override_raises": ([fo.ReduceEx(1)], None),  # raises only through Hooks
    }
    return p


def make_dumpers(fresh_picklers="include"):
    long_lived = cloudpickle_rs.Pickler(io.BytesIO(), 5)
    long_lived_base = cloudpickle_rs.PicklerBase(io.BytesIO(), 4)

    def via_long_lived(obj, proto):
        long_lived.clear_memo()
        f = io.BytesIO()
        # swap the file through __init__ (keeps globals_ref): the same pickler, many dumps
        long_lived.__init__(f, proto)
        long_lived.dump(obj)
        return f.getvalue()

    def via_base(obj, proto):
        long_lived_base.clear_memo()
        long_lived_base.__init__(io.BytesIO(), proto)
        long_lived_base.dump(obj)

    def via_buffers(obj, proto):
        bufs = []
        return cloudpickle_rs.dumps([obj, pickle.PickleBuffer(b"abc" * 100)], 5, buffer_callback=bufs.append)

    reused = [
        ("dumps", lambda obj, proto: cloudpickle_rs.dumps(obj, proto)),
        ("dump", lambda obj, proto: cloudpickle_rs.dump(obj, io.BytesIO(), proto)),
        ("long_lived", via_long_lived),
        ("PicklerBase", via_base),
        ("buffers", via_buffers),
        ("failing_file", lambda obj, proto: cloudpickle_rs.dump(obj, FailingFile(), proto)),
    ]
    # A new Pickler per dump, measured apart (test_leaks.py::test_fresh_picklers_stay_flat): with
    # pyo3 0.25 each instance leaked its __dict__ and a reference to its class.
    fresh = [
        ("Pickler", lambda obj, proto: cloudpickle_rs.Pickler(io.BytesIO(), proto).dump(obj)),
        ("Hooks", lambda obj, proto: Hooks(io.BytesIO(), proto).dump(obj)),
        ("PicklerBase_fresh", lambda obj, proto: cloudpickle_rs.PicklerBase(io.BytesIO(), proto).dump(obj)),
    ]
    return {"exclude": reused, "include": reused + fresh, "only": fresh}[fresh_picklers], (long_lived, long_lived_base)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(payloads, dumpers, n, counter):
    items = list(payloads.items())
    for i in range(n):
        name, (obj, _) = items[i % len(items)]
        dname, dump = dumpers[(i // len(items)) % len(dumpers)]
        proto = (i // (len(items) * len(dumpers))) % 6
        try:
            dump(obj, proto)
            counter["ok"] += 1
        except Exception:  # noqa: BLE001 - raising dumps are part of the mix
            counter["raised"] += 1


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dumps", type=int, default=200_000)
    ap.add_argument("--fresh-picklers", choices=["include", "exclude", "only"], default="include",
                    help="dumps through a new Pickler instance each time")
    args = ap.parse_args(argv)
    n = args.dumps
    t0 = time.monotonic()
    payloads = make_payloads()
    dumpers, picklers = make_dumpers(args.fresh_picklers)
    tracked = [obj for obj, _ in payloads.values()] + [
        stock._make_function, stock._make_skeleton_class, stock._class_setstate, stock._function_setstate,
        stock._make_cell, stock._make_empty_cell, stock.subimport, copyreg._reconstructor, copyreg.__newobj__,
        fo.Plain, fo.ReduceState, fo.NewArgsEx, fo, pickle.PickleBuffer,
    ]
    classes = [cloudpickle_rs.Pickler, cloudpickle_rs.PicklerBase, Hooks]
    counter = collections.Counter()
    # warm-up, then the counts every later dump must leave unchanged
    run(payloads, dumpers, max(n // 10, 2000), counter)
    picklers[0].clear_memo()
    picklers[1].clear_memo()
    gc.collect()
    refs_before = [sys.getrefcount(o) for o in tracked]
    class_refs_before = [sys.getrefcount(c) for c in classes]

    # 1. RSS
    rss_start = rss_bytes()
    samples = []
    step = max(n // 10, 1)
    for k in range(10):
        run(payloads, dumpers, step, counter)
        gc.collect()
        samples.append(rss_bytes())
    rss_end = samples[-1]

    # 2. tracemalloc
    m = max(n // 4, 1000)
    tracemalloc.start()
    run(payloads, dumpers, m // 10, counter)
    gc.collect()
    traced_start, _ = tracemalloc.get_traced_memory()
    snap0 = tracemalloc.take_snapshot()
    run(payloads, dumpers, m, counter)
    gc.collect()
    traced_end, _ = tracemalloc.get_traced_memory()
    top = []
    if traced_end - traced_start > 16 * 1024:
        snap1 = tracemalloc.take_snapshot()
        top = [str(s) for s in snap1.compare_to(snap0, "lineno")[:5]]
    tracemalloc.stop()

    # 3. reference counts
    picklers[0].clear_memo()
    picklers[1].clear_memo()
    gc.collect()
    refs_after = [sys.getrefcount(o) for o in tracked]
    changed = [(repr(o)[:60], b, a) for o, b, a in zip(tracked, refs_before, refs_after) if a != b]
    class_refs_after = [sys.getrefcount(c) for c in classes]
    class_changed = [(c.__name__, b, a) for c, b, a in zip(classes, class_refs_before, class_refs_after) if a != b]

    # 4. weak references: every input (or the object holding it) must be freed
    weak = []
    for name, (obj, _) in payloads.items():
        try:
            weak.append((name, weakref.ref(obj)))
        except TypeError:
            pass
    del tracked, obj, refs_before, refs_after, classes
    payloads.clear()
    del dumpers, picklers
    gc.collect()
    alive = [name for name, w in weak if w() is not None]

    result = {
        "dumps": counter["ok"] + counter["raised"], "ok": counter["ok"], "raised": counter["raised"],
        "rss_start": rss_start, "rss_end": rss_end, "rss_growth": rss_end - rss_start,
        "rss_samples": samples, "rss_dumps": 10 * step,
        "traced_start": traced_start, "traced_end": traced_end, "traced_growth": traced_end - traced_start,
        "traced_dumps": m, "traced_top": top,
        "refcount_changes": changed, "pickler_class_refcount_changes": class_changed, "weakrefs_checked": len(weak), "alive_after_del": alive,
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
