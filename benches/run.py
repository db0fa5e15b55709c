#!/usr/bin/env python
"""Benchmark harness: cloudpickle_rs vs pickle (C) vs cloudpickle 3.1 (vs dill if installed).

A measuring tool, not a test: it prints medians and ratios and never asserts on timings.
See benches/README.md.  `make bench` runs `.venv/bin/python benches/run.py`.

    python benches/run.py [--quick] [--only NAME[,NAME]] [--competitors NAME[,NAME]]
                          [--rounds N] [--json PATH] [--list]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import io
import json
import os
import pickle
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import payloads as P  # noqa: E402

PROTOCOL = 5  # every competitor gets the same protocol (pickle's own default on 3.11 is 4)
ALL_COMPETITORS = ("ours", "pickle", "cloudpickle", "dill")
MIN_MEASUREMENT = 0.05  # seconds; shorter payloads are repeated within one measurement (quick: 0.02)
VARIANT_BUDGET = 10.0   # wall seconds per (payload, column) before a slow one stops sampling (quick: 1.5)
MIN_SAMPLES = 3         # ... but never fewer samples than this (quick: 1)
# Timed quantity: CPU time of this process (all threads), not wall time.  This 2-core machine is
# shared with other jobs; wall time there swings 2-4x when we get descheduled, CPU time does not.
# Wall-clock medians are kept too (detail table, JSON).  --wall switches the primary clock.
CLOCK = time.process_time
FATAL = (KeyboardInterrupt, SystemExit)


# =========================================================================== competitors

class Competitor:
    def __init__(self, name, module=None, dumps=None, why=None):
        self.name, self.module, self.dumps, self.why = name, module, dumps, why

    @property
    def available(self):
        return self.dumps is not None

    @property
    def version(self):
        if self.module is None:
            return None
        v = getattr(self.module, "__version__", None)
        if v is None:
            try:
                from importlib.metadata import version

                v = version({"ours": "cloudpickle-rs"}.get(self.name, self.name))
            except Exception:  # noqa: BLE001
                pass
        return v


def load_competitors(wanted):
    comps = {}
    for name in ALL_COMPETITORS:
        if name not in wanted:
            continue
        if name == "pickle":
            comps[name] = Competitor(name, pickle, pickle.dumps)
            continue
        modname = {"ours": "cloudpickle_rs"}.get(name, name)
        try:
            mod = __import__(modname)
            comps[name] = Competitor(name, mod, mod.dumps)
        except FATAL:
            raise
        except BaseException as e:  # noqa: BLE001 - pyo3 panics are BaseException
            if name == "dill":
                continue  # optional: skip silently
            comps[name] = Competitor(name, why="%s: %s" % (type(e).__name__, e))
    return comps


# =========================================================================== benchmarks

class Bench:
    """One payload.  `variants` are the columns it is measured for."""

    def __init__(self, name, label, group, build, *, calls=1, oob=False, competitors=None,
                 by_source=False, check="eq"):
        self.name, self.label, self.group, self.build = name, label, group, build
        self.calls = calls            # dumps calls per measurement; times are reported per call
        self.oob = oob                # protocol 5 with buffer_callback=list.append
        self.competitors = competitors or ("ours", "pickle", "cloudpickle", "dill")
        self.by_source = by_source    # also measure ours with by_source=True
        self.check = check            # "eq": loads(dumps(x)) == x; "byvalue": loads w/o bench_dynamic


def _np_eq(a, b):
    import numpy as np

    return np.array_equal(a, b)


def _dyn():
    return P.load_dynamic_module()


CLOUD = ("ours", "cloudpickle", "dill")
BENCHES = [
    Bench("ints", "(a) list of 1M ints", "foundation", P.ints),
    Bench("str_float", "(b) dict of 100k str->float", "foundation", P.str_float),
    Bench("small_dicts", "(c) list of 100k small dicts", "foundation", P.small_dicts),
    Bench("namespaces", "(d1) 100k SimpleNamespace", "foundation", P.namespaces),
    Bench("datetimes", "(d2) 100k datetime", "foundation", P.datetimes),
    Bench("numpy_inband", "(e) 100 MB float64 ndarray, in-band", "numpy", P.numpy_array),
    Bench("numpy_oob", "(e) 100 MB float64 ndarray, out-of-band", "numpy", P.numpy_array, oob=True),
    Bench("small_calls", "(f) small dict, 10k calls (per call)", "foundation", P.small_dict,
          calls=P.N_CALLS),
    Bench("functions", "1000 dynamic functions", "cloud", lambda: P.functions(_dyn()),
          competitors=CLOUD, by_source=True, check="byvalue"),
    Bench("closures", "1000 closures", "cloud", lambda: P.closures(_dyn()),
          competitors=CLOUD, by_source=True, check="byvalue"),
    Bench("lambda_calls", "one lambda, 10k calls (per call)", "cloud", lambda: P.a_lambda(_dyn()),
          calls=P.N_CALLS, competitors=CLOUD, by_source=True, check="byvalue"),
    Bench("class_instances", "class w/ 20 methods + 1000 instances", "cloud",
          lambda: P.class_instances(_dyn()), competitors=CLOUD, by_source=True, check="byvalue"),
    Bench("task_graph", "task list: 10k tuples over 20 closures", "cloud",
          lambda: P.task_graph(_dyn()), competitors=CLOUD, by_source=True, check="byvalue"),
]
EXTRA = ("cloud_loads", "cold_start", "numpy_memory", "import_time", "engine_jobs")
GROUPS = {
    "foundation": [b.name for b in BENCHES if b.group in ("foundation", "numpy")] + ["numpy_memory"],
    "cloud": [b.name for b in BENCHES if b.group == "cloud"] + ["cloud_loads", "cold_start"],
    "numpy": ["numpy_inband", "numpy_oob", "numpy_memory"],
    "engines": ["engine_jobs"],
}


class ByReference(Exception):
    pass


class _RefusingUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == P.DYNAMIC_MODULE or module.startswith(P.DYNAMIC_MODULE + "."):
            raise ByReference("%s.%s" % (module, name))
        return super().find_class(module, name)


def check_output(bench, obj, data, buffers):
    """Validity of the measured call (not a timing assertion).  Returns None or an error cell."""
    try:
        if bench.check == "byvalue":
            # The stream must not import bench_dynamic: hide it while loading.
            saved = sys.modules.pop(P.DYNAMIC_MODULE, None)
            try:
                _RefusingUnpickler(io.BytesIO(data), buffers=buffers).load()
            finally:
                if saved is not None:
                    sys.modules[P.DYNAMIC_MODULE] = saved
            return None
        back = pickle.loads(data, buffers=buffers)
        same = _np_eq(back, obj) if bench.group == "numpy" else back == obj
        return None if same else "error: round trip differs"
    except ByReference:
        return "error: pickled by reference"
    except ModuleNotFoundError as e:
        if P.DYNAMIC_MODULE in str(e):
            return "error: pickled by reference"
        return "error: %s on loads" % type(e).__name__
    except Exception as e:  # noqa: BLE001
        return "error: %s on loads" % type(e).__name__


def make_call(dumps, obj, kwargs, n, oob):
    """A zero-argument callable doing one measurement's work: n dumps calls."""
    if oob:
        def run_oob():
            for _ in range(n):
                bufs = []
                dumps(obj, protocol=PROTOCOL, buffer_callback=bufs.append, **kwargs)
        return run_oob
    if n == 1:
        return lambda: dumps(obj, protocol=PROTOCOL, **kwargs)

    def run_many():
        for _ in range(n):
            dumps(obj, protocol=PROTOCOL, **kwargs)
    return run_many


def repeats_for(first_seconds, calls):
    """Calls per measurement: the payload's own count, raised so one measurement lasts about
    MIN_MEASUREMENT seconds (a 10 µs call timed alone is mostly timer and scheduler noise)."""
    if first_seconds is None or first_seconds <= 0:
        return calls
    per_call = first_seconds / calls
    return max(calls, min(100_000, int(MIN_MEASUREMENT / per_call) + 1))


def timeit_once(fn):
    """(CPU seconds of this process, wall seconds) of one fn() call."""
    c0, w0 = CLOCK(), time.perf_counter()
    fn()
    c1, w1 = CLOCK(), time.perf_counter()
    gc.collect()  # garbage of this call is not charged to the next one
    return c1 - c0, w1 - w0


def sample_round_robin(cells, active, rounds, warmup):
    """Time every active (column, calls, fn) `warmup + rounds` times, round-robin: within a round
    each column runs once, in an order shuffled each round (seeded: runs repeat), so no column
    always runs first or right after the same neighbour (a rotation would keep every column's
    predecessor, and a column after a cache-hungry one would always pay for it); machine noise
    hits all columns alike.  Samples are seconds
    per call.  A column slower than the budget (dill's pure-Python pickler takes seconds per
    call) stops after MIN_SAMPLES samples once it has used VARIANT_BUDGET seconds, so an optional
    slow competitor cannot blow the run time; its sample count shows in the detail table."""
    spent = {column: 0.0 for column, _, _ in active}
    rng = random.Random(20261207)
    for r in range(warmup + rounds):
        order = list(active)
        rng.shuffle(order)
        for column, n, fn in order:
            c = cells[column]
            if c["status"] != "ok":
                continue
            if spent[column] > VARIANT_BUDGET and len(c["samples"]) >= MIN_SAMPLES:
                continue
            if r < warmup and (c.get("first_call") or 0) > 0.25:
                continue  # a slow call's probe call was warm-up enough
            try:
                t, w = timeit_once(fn)
            except FATAL:
                raise
            except BaseException as e:  # noqa: BLE001 - pyo3 panics are BaseException
                c["status"] = "error: %s" % type(e).__name__
                continue
            spent[column] += w
            if r >= warmup:
                c["samples"].append(t / n)
                c.setdefault("wall_samples", []).append(w / n)
    for c in cells.values():
        if c["status"] == "ok" and c["samples"]:
            c["median"] = statistics.median(c["samples"])
            c["min"] = min(c["samples"])
            c["wall_median"] = statistics.median(c["wall_samples"])
            q = statistics.quantiles(c["samples"], n=4) if len(c["samples"]) >= 2 else [c["median"]] * 3
            c["spread"] = (q[2] - q[0]) / c["median"] if c["median"] else 0.0


def variants_for(bench, comps):
    """[(column, competitor, dumps kwargs)]"""
    out = []
    for name in bench.competitors:
        if name in comps:
            out.append((name, comps[name], {}))
    if bench.by_source and "ours" in comps:
        out.append(("ours_src", comps["ours"], {"by_source": True}))
        recv = bench_receiver(comps["ours"])
        if recv is not None:
            out.append(("ours_recv", comps["ours"], {"receiver": recv}))
    return out


_RECEIVER = []


def bench_receiver(ours):
    """receiver= as a remote-code service would set it: this Python (bytecode loads), numpy
    installed, NDIF's deny list: every check of the walk on (catalogue, imports, deny)."""
    if not _RECEIVER:
        cls = getattr(ours.module, "Receiver", None) if ours.available else None
        _RECEIVER.append(None if cls is None else
                         cls(python=sys.version_info[:2], modules=["numpy"], deny=cls.NDIF_DENY))
    return _RECEIVER[0]


def column_kwargs(column, ours):
    if column == "ours_src":
        return {"by_source": True}
    if column == "ours_recv":
        return {"receiver": bench_receiver(ours)}
    return {}


def first_call(bench, column, comp, kwargs, obj):
    """Probe call (not a sample): output size, validity, cold time.
    Returns (cell, size, oob_bytes, seconds)."""
    if not comp.available:
        return "n/a", None, None, None
    if (bench.name, column) in CRASHED:
        return CRASHED[bench.name, column], None, None, None
    bufs = []
    t0 = time.perf_counter()
    try:
        if bench.oob:
            data = comp.dumps(obj, protocol=PROTOCOL, buffer_callback=bufs.append, **kwargs)
        else:
            data = comp.dumps(obj, protocol=PROTOCOL, **kwargs)
    except (NotImplementedError, TypeError) as e:
        if column == "ours_src":
            return "n/a (%s)" % type(e).__name__, None, None, None
        return "error: %s" % type(e).__name__, None, None, None
    except FATAL:
        raise
    except BaseException as e:  # noqa: BLE001 - pyo3 panics are BaseException
        return "error: %s" % type(e).__name__, None, None, None
    seconds = time.perf_counter() - t0
    size = len(data)
    oob_bytes = sum(memoryview(b).nbytes for b in bufs) if bufs else 0
    cell = check_output(bench, obj, data, bufs if bench.oob else None)
    del data, bufs
    return cell, size, oob_bytes, seconds


CRASHED = {}  # (payload, column) -> "error: crashed (SIG...)", filled by preflight()


def run_bench(bench, comps, rounds, warmup, log):
    t_start = time.perf_counter()
    obj = bench.build()
    gc.collect()
    gc.freeze()  # the payload's containers are not re-scanned by the collections between calls
    cells = {}
    active = []
    for column, comp, kwargs in variants_for(bench, comps):
        cell, size, oob_bytes, first = first_call(bench, column, comp, kwargs, obj)
        n = bench.calls
        if bench.calls == 1:
            # Calls per measurement from a warm call: the first one pays for cold caches (source
            # extraction, a receiver's catalogue), and a column given fewer calls per measurement
            # than its neighbour would pay the cold start of each measurement more often.
            warm = first
            if cell is None and first is not None and MIN_MEASUREMENT / 50 < first < 1.0:
                warm, _ = timeit_once(make_call(comp.dumps, obj, kwargs, 1, bench.oob))
            n = repeats_for(warm, 1)
        cells[column] = {"status": cell or "ok", "size": size, "oob_bytes": oob_bytes,
                         "first_call": first, "calls_per_sample": n, "samples": []}
        if cell is None:
            active.append((column, n, make_call(comp.dumps, obj, kwargs, n, bench.oob)))
    sample_round_robin(cells, active, rounds, warmup)
    del obj, active
    gc.unfreeze()
    gc.collect()
    log("  %-16s %5.1fs" % (bench.name, time.perf_counter() - t_start))
    return {"name": bench.name, "label": bench.label, "group": bench.group, "calls": bench.calls,
            "cells": cells}


def _loads_n(data, n):
    def run():
        for _ in range(n):
            pickle.loads(data)
    return run


LOADS_PAYLOADS = ("functions", "closures", "class_instances", "task_graph")


def run_loads(comps, rounds, warmup, log):
    """pickle.loads of the cloud payloads as written by ours (bytecode, by_source) and
    cloudpickle, in this process after dumping (as a worker that received them would, minus the
    transport).  One entry per payload, each timed round-robin like the dumps."""
    out = []
    builders = {b.name: b for b in BENCHES}
    for name in LOADS_PAYLOADS:
        t_start = time.perf_counter()
        obj = builders[name].build()
        streams = [("ours", "ours", {}), ("ours_src", "ours", {"by_source": True}),
                   ("cloudpickle", "cloudpickle", {})]
        cells, active = {}, []
        for column, cname, kwargs in streams:
            comp = comps.get(cname)
            cell, data = None, None
            if comp is None or not comp.available:
                cell = "n/a"
            elif (name, column) in CRASHED:
                cell = CRASHED[name, column]
            else:
                try:
                    data = comp.dumps(obj, protocol=PROTOCOL, **kwargs)
                    pickle.loads(data)  # the first loads (warm-up)
                    warm, _ = timeit_once(_loads_n(data, 1))
                except (NotImplementedError, TypeError) as e:
                    cell = ("n/a (%s)" if column == "ours_src" else "error: %s") % type(e).__name__
                except FATAL:
                    raise
                except BaseException as e:  # noqa: BLE001 - pyo3 panics are BaseException
                    cell = "error: %s" % type(e).__name__
            cells[column] = {"status": cell or "ok", "size": len(data) if data else None, "samples": []}
            if cell is None:
                n = repeats_for(warm, 1)
                cells[column].update(first_call=warm, calls_per_sample=n)
                active.append((column, n, _loads_n(data, n)))
        del obj
        gc.collect()
        sample_round_robin(cells, active, rounds, warmup)
        log("  %-16s %5.1fs" % ("loads " + name, time.perf_counter() - t_start))
        out.append({"name": name, "label": builders[name].label, "cells": cells})
    return out


COLD_LOADS = ("functions", "class_instances")
COLD_WRITERS = (("cloudpickle", "cloudpickle", {}), ("ours", "ours", {}), ("ours_src", "ours", {"by_source": True}))


def run_cold(comps, repeats, log):
    """First calls in a fresh interpreter (benches/cold_child.py), median of `repeats` processes
    per cell, cells interleaved: the first dumps of 200 functions of a file no cache has seen
    (parse, rebuild and check for by_source), and the first pickle.loads of a stream in a
    process that has only imported cloudpickle (a worker's first task: by_source compiles
    every factory text there; later loads of the same functions reuse the compiled code)."""
    import tempfile

    t_start = time.perf_counter()
    child = os.path.join(HERE, "cold_child.py")
    jobs = []  # (row, column, argv)
    for column, cname, _ in COLD_WRITERS:
        if comps.get(cname) and comps[cname].available:
            jobs.append(("first_dumps", column, ["dumps", column]))
    folder = tempfile.mkdtemp(prefix="cloudpickle_rs_bench_cold_")
    builders = {b.name: b for b in BENCHES}
    sizes = {}
    for name in COLD_LOADS:
        obj = builders[name].build()
        for column, cname, kwargs in COLD_WRITERS:
            comp = comps.get(cname)
            if comp is None or not comp.available:
                continue
            path = os.path.join(folder, "%s-%s.pkl" % (name, column))
            data = comp.dumps(obj, protocol=PROTOCOL, **kwargs)
            with open(path, "wb") as f:
                f.write(data)
            sizes[name, column] = len(data)
            jobs.append(("loads_" + name, column, ["loads", path]))
        del obj
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    samples = {(row, column): [] for row, column, _ in jobs}
    errors = {}
    for r in range(repeats):
        k = r % len(jobs)
        for row, column, argv in jobs[k:] + jobs[:k]:
            p = subprocess.run([sys.executable, child] + argv, cwd=HERE, env=env,
                               capture_output=True, text=True)
            if p.returncode != 0:
                errors[row, column] = "error: " + (p.stderr.strip().splitlines() or ["?"])[-1][:80]
                continue
            samples[row, column].append(float(p.stdout.strip().splitlines()[-1]))
    rows = {}
    for (row, column), vals in samples.items():
        cell = {"samples": vals, "status": errors.get((row, column), "ok") if not vals else "ok"}
        if vals:
            cell["median"] = statistics.median(vals)
        if row.startswith("loads_"):
            cell["size"] = sizes.get((row[len("loads_"):], column))
        rows.setdefault(row, {})[column] = cell
    log("  %-16s %5.1fs" % ("cold_start", time.perf_counter() - t_start))
    return {"repeats": repeats, "fresh_functions": 200, "rows": rows}


# --------------------------------------------------------------------------- crash isolation

def _signal_name(returncode):
    import signal

    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return "exit %d" % returncode


def preflight_child(pairs):
    """Runs in a subprocess: one call of ours per "payload:column", announcing each first."""
    pairs = [tuple(p.split(":")) for p in pairs.split(",")]
    ours = load_competitors({"ours"})["ours"]
    reg = getattr(ours.module, "register_pickle_by_value", None)
    P.load_dynamic_module(register_with=[reg] if reg else [])
    for bench in BENCHES:
        columns = [c for n, c in pairs if n == bench.name]
        if not columns:
            continue
        obj = bench.build()
        for column in columns:
            kwargs = column_kwargs(column, ours)
            print("START %s %s" % (bench.name, column), flush=True)
            try:
                bufs = []
                if bench.oob:
                    ours.dumps(obj, protocol=PROTOCOL, buffer_callback=bufs.append, **kwargs)
                else:
                    ours.dumps(obj, protocol=PROTOCOL, **kwargs)
            except BaseException:  # noqa: BLE001 - only crashes matter here
                pass
            print("END %s %s" % (bench.name, column), flush=True)


def preflight(selected, comps, log):
    """A native crash (segfault, abort) in the extension under construction would kill the whole
    harness.  Call ours once per (payload, column) in a subprocess first; a pair that kills it is
    reported as "error: crashed (SIGSEGV)" and never called in this process."""
    if "ours" not in comps or not comps["ours"].available:
        return {}
    t_start = time.perf_counter()
    wanted = set(selected) | (set(LOADS_PAYLOADS) if "cloud_loads" in selected else set())
    todo = [(b.name, col) for b in BENCHES if b.name in wanted and "ours" in b.competitors
            for col in (("ours", "ours_src", "ours_recv") if b.by_source else ("ours",))]
    crashed = {}
    while todo:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_preflight",
                               ",".join("%s:%s" % p for p in todo)], capture_output=True, text=True)
        if proc.returncode == 0:
            break
        lines = proc.stdout.splitlines()
        started = [tuple(x.split()[1:3]) for x in lines if x.startswith("START ")]
        ended = {tuple(x.split()[1:3]) for x in lines if x.startswith("END ")}
        bad = next((pair for pair in started if pair not in ended), None)
        if bad is None or bad not in todo:
            log("note: crash pre-check failed outside any payload (%s): %s"
                % (_signal_name(proc.returncode), (proc.stderr.strip().splitlines() or [""])[-1]))
            break
        crashed[bad] = "error: crashed (%s)" % _signal_name(proc.returncode)
        log("note: ours crashed (%s) on %s %s: not run in this process"
            % (_signal_name(proc.returncode), *bad))
        todo = todo[todo.index(bad) + 1:]
    log("  %-16s %5.1fs" % ("crash pre-check", time.perf_counter() - t_start))
    return crashed


# --------------------------------------------------------------------------- numpy peak memory

def _proc_status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def memprobe(spec):
    """Runs in a fresh subprocess: peak RSS growth of one dumps of the 100 MB array."""
    comp_name, mode = spec.split(":")
    import tracemalloc

    import numpy as np

    comp = load_competitors({comp_name})[comp_name]
    arr = P.numpy_array()
    gc.collect()
    out = {"competitor": comp_name, "mode": mode, "array_bytes": arr.nbytes}
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        out["hwm_reset"] = True
    except OSError:
        out["hwm_reset"] = False
    rss0, hwm0 = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
    tracemalloc.start()
    bufs = []
    t0 = time.perf_counter()
    try:
        if mode == "oob":
            data = comp.dumps(arr, protocol=PROTOCOL, buffer_callback=bufs.append)
        else:
            data = comp.dumps(arr, protocol=PROTOCOL)
    except FATAL:
        raise
    except BaseException as e:  # noqa: BLE001 - pyo3 panics are BaseException
        print(json.dumps(dict(out, status="error: %s" % type(e).__name__)))
        return
    out["seconds"] = time.perf_counter() - t0
    out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hwm1 = _proc_status_kb("VmHWM")
    out["rss_before"] = rss0 * 1024
    out["peak_rss_growth"] = (hwm1 - max(hwm0, rss0)) * 1024
    out["stream_bytes"] = len(data)
    out["oob_bytes"] = sum(memoryview(b).nbytes for b in bufs)
    # zero copy: the out-of-band buffer is the array's own memory
    out["oob_shares_array_memory"] = bool(bufs) and all(
        np.shares_memory(np.frombuffer(b.raw(), dtype=np.uint8), arr) for b in bufs)
    out["status"] = "ok"
    print(json.dumps(out))


def run_memory(comps, log):
    t_start = time.perf_counter()
    rows = []
    for mode in ("inband", "oob"):
        for name, comp in comps.items():
            if not comp.available:
                rows.append({"competitor": name, "mode": mode, "status": "n/a"})
                continue
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_memprobe",
                                   "%s:%s" % (name, mode)], capture_output=True, text=True)
            try:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                if proc.returncode < 0:
                    status = "error: crashed (%s)" % _signal_name(proc.returncode)
                else:
                    status = "error: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:60]
                rows.append({"competitor": name, "mode": mode, "status": status})
    log("  %-16s %5.1fs" % ("numpy_memory", time.perf_counter() - t_start))
    return rows


# --------------------------------------------------------------------------- import time

def _importtime_us(stderr, module):
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$", line)
        if m and m.group(4) == module and len(m.group(3)) <= 1:
            return int(m.group(2))
    return None


def run_engines(rounds, log):
    """The engine rows (benches/engine_*.py), each in its engine's environment (.venvs/spark,
    .venvs/beam, built on first use as for the integration tests): driver-side serialization of
    a realistic job, ours against the engine's default pickler, alternating in one process."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                    "tests", "integrations"))
    import integ_env

    out = {}
    for engine in ("spark", "beam"):
        t_start = time.perf_counter()
        try:
            py = integ_env.ensure(engine)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_%s.py" % engine)
            proc = subprocess.run([str(py), script, str(rounds)], env=integ_env.script_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
            line = [x for x in proc.stdout.splitlines() if x.startswith("ENGINE-RESULT: ")]
            if proc.returncode or not line:
                out[engine] = {"status": "error: exit %s: %s" % (proc.returncode, proc.stderr[-400:])}
            else:
                out[engine] = dict(json.loads(line[0][len("ENGINE-RESULT: "):]), status="ok")
        except Exception as e:  # noqa: BLE001 - reported in the table, not lost
            out[engine] = {"status": "error: %s: %s" % (type(e).__name__, e)}
        log("  %-16s %5.1fs" % ("%s_job" % engine, time.perf_counter() - t_start))
    return out


def run_imports(comps, repeats, log):
    t_start = time.perf_counter()
    modules = [("pickle", "pickle")] + [
        (name, {"ours": "cloudpickle_rs"}.get(name, name))
        for name, c in comps.items() if name != "pickle" and c.available]
    wall = {m: [] for _, m in modules}
    wall["(bare python)"] = []
    cumul = {m: [] for _, m in modules}
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="0")
    for r in range(repeats + 1):  # first repetition warms the OS caches and .pyc files; dropped
        order = [m for _, m in modules] + ["(bare python)"]
        k = r % len(order)
        for m in order[k:] + order[:k]:
            code = "pass" if m == "(bare python)" else "import " + m
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t = time.perf_counter() - t0
            if r:
                wall[m].append(t)
            if m != "(bare python)":
                p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=REPO,
                                   env=env, capture_output=True, text=True)
                us = _importtime_us(p.stderr, m)
                if r and us is not None:
                    cumul[m].append(us * 1e-6)
    base = statistics.median(wall["(bare python)"])
    rows = []
    for column, m in modules:
        rows.append({"column": column, "module": m,
                     "importtime_median": statistics.median(cumul[m]) if cumul[m] else None,
                     "wall_minus_bare_median": statistics.median(wall[m]) - base,
                     "samples": len(wall[m])})
    for name, c in comps.items():
        if not c.available:
            rows.append({"column": name, "module": {"ours": "cloudpickle_rs"}.get(name, name),
                         "status": "n/a", "samples": 0})
    log("  %-16s %5.1fs" % ("import_time", time.perf_counter() - t_start))
    return {"bare_python_median": base, "rows": rows}


# =========================================================================== machine facts

def _elf_section_names(blob):
    """Section names of a 64-bit little-endian ELF file (empty set if it is not one)."""
    import struct

    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        return set()
    (shoff,) = struct.unpack_from("<Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", blob, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]
    return {blob[strtab + h[0]:blob.index(b"\0", strtab + h[0])].decode("latin-1") for h in headers}


def _native_build(module):
    """Which cargo profile built the extension: the dev profile emits DWARF (a .debug_info
    section), this workspace's release profile does not."""
    native = getattr(module, "_native", None)
    path = getattr(native, "__file__", None)
    if not path:
        return "?"
    try:
        with open(path, "rb") as f:
            blob = f.read()
        names = _elf_section_names(blob)
    except Exception:  # noqa: BLE001
        return path
    if not names:
        kind = "unknown profile"
    elif ".debug_info" in names:
        kind = "dev profile (.debug_info section): NOT representative"
    else:
        kind = "release (no .debug_info section)"
    mtime = _dt.datetime.fromtimestamp(os.path.getmtime(path), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "%s, %s, %.1f MB, built %s" % (kind, path, len(blob) / 1e6, mtime)


def machine_facts(comps):
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def git(*args):
        try:
            return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    dirty = git("status", "--porcelain", "--untracked-files=no")
    facts = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": "%s %s" % (platform.python_implementation(), platform.python_version()),
        "platform": platform.platform(),
        "git_commit": (git("rev-parse", "--short=12", "HEAD") or "?") + (" (dirty)" if dirty else ""),
    }
    try:
        import numpy
        facts["numpy"] = numpy.__version__
    except ImportError:
        facts["numpy"] = None
    for name, c in comps.items():
        if name == "pickle":
            continue
        facts[name] = (c.version or "installed") if c.available else "n/a (%s)" % c.why
        if name == "ours" and c.available:
            facts["ours_build"] = _native_build(c.module)
    return facts


# =========================================================================== formatting

def fmt_time(s):
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            return ("%.3g %s" % (v, unit)) if v < 100 else ("%.0f %s" % (v, unit))
    return "?"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return "%.2f" % r if r >= 0.1 else "%.3f" % r


def fmt_bytes(n):
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return "%.1f %s" % (n / scale, unit)
    return "%d B" % n


def cell_text(c):
    if c is None:
        return "—"
    if c["status"] != "ok":
        return c["status"]
    return fmt_time(c.get("median"))


def ratio(a, b):
    if not a or not b or a["status"] != "ok" or b["status"] != "ok" or "median" not in a or "median" not in b:
        return None
    return a["median"] / b["median"]


def size_ratio(a, b):
    if not a or not b or a["status"] != "ok" or b["status"] != "ok" or not a["size"] or not b["size"]:
        return None
    return a["size"] / b["size"]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def report(results, loads, memory, imports, facts, comps, args, wall, engines=None, cold=None):
    out = []
    has_dill = "dill" in comps
    out.append("## cloudpickle_rs benchmarks\n")
    out.append("Times are medians of %d rounds (warm-up excluded) of %s per dumps call, competitors "
               "alternated round-robin within each round; protocol %d for all. Ratios < 1 mean ours is "
               "faster (ours/pickle = median(ours) / median(pickle), same run). `—` = not applicable "
               "(pickle cannot pickle dynamic functions by value).\n"
               % (args.rounds, "wall-clock time" if args.wall else "process CPU time", PROTOCOL))
    if "NOT representative" in str(facts.get("ours_build", "")):
        out.append("Note: cloudpickle_rs is a dev-profile (unoptimised) build; `make bench` builds "
                   "release first.\n")
    load = facts.get("loadavg_start", (0,))[0]
    if load > 0.5 * (facts.get("cpus_usable") or 1):
        out.append("Note: load average %.1f on %s CPUs at start: other jobs were running; compare "
                   "ratios, not absolute times, and see IQR/median in the detail table.\n"
                   % (load, facts.get("cpus_usable")))
    if results:
        header = ["payload", "ours", "pickle", "cloudpickle"] + (["dill"] if has_dill else []) + \
                 ["ours/pickle", "ours/cloudpickle", "size ours/cp"]
        rows = []
        for res in results:
            c = res["cells"]
            row = [res["label"], cell_text(c.get("ours")), cell_text(c.get("pickle")),
                   cell_text(c.get("cloudpickle"))]
            if has_dill:
                row.append(cell_text(c.get("dill")))
            row += [fmt_ratio(ratio(c.get("ours"), c.get("pickle"))) if "pickle" in c else "—",
                    fmt_ratio(ratio(c.get("ours"), c.get("cloudpickle"))),
                    fmt_ratio(size_ratio(c.get("ours"), c.get("cloudpickle")))]
            rows.append(row)
        out.append("### dumps\n")
        out.append(table(header, rows) + "\n")

        src_rows = []
        for res in results:
            c = res["cells"]
            if "ours_src" not in c:
                continue
            src_rows.append([res["label"], cell_text(c.get("ours")), cell_text(c.get("ours_src")),
                             fmt_ratio(ratio(c.get("ours_src"), c.get("ours"))),
                             fmt_ratio(ratio(c.get("ours_src"), c.get("cloudpickle"))),
                             fmt_ratio(size_ratio(c.get("ours_src"), c.get("ours"))),
                             fmt_ratio(size_ratio(c.get("ours_src"), c.get("cloudpickle"))),
                             fmt_time((c.get("ours_src") or {}).get("first_call"))])
        if src_rows:
            out.append("### by_source=True (ours)\n")
            out.append(table(["payload", "ours bytecode", "ours by_source", "by_source/bytecode",
                              "by_source/cloudpickle", "size by_source/bytecode",
                              "size by_source/cp", "by_source first call (cold, wall)"], src_rows) + "\n")

        recv_rows = []
        for res in results:
            c = res["cells"]
            if "ours_recv" not in c:
                continue
            recv_rows.append([res["label"], cell_text(c.get("ours")), cell_text(c.get("ours_recv")),
                              fmt_ratio(ratio(c.get("ours_recv"), c.get("ours"))),
                              fmt_ratio(size_ratio(c.get("ours_recv"), c.get("ours")))])
        if recv_rows:
            out.append("### receiver= (ours, bytecode; Receiver(python=this, modules=['numpy'], "
                       "deny=NDIF_DENY))\n")
            out.append(table(["payload", "ours", "ours + receiver", "receiver/without",
                              "size receiver/without"], recv_rows) + "\n")

    if loads:
        rows = []
        for res in loads:
            c = res["cells"]

            def size(col):
                return c[col]["size"] if c.get(col) and c[col].get("size") else None
            src_size = (fmt_ratio(size("ours_src") / size("ours")) if size("ours_src") and size("ours")
                        else "n/a")
            rows.append([res["label"], cell_text(c.get("ours")), cell_text(c.get("ours_src")),
                         cell_text(c.get("cloudpickle")),
                         fmt_ratio(ratio(c.get("ours"), c.get("cloudpickle"))),
                         fmt_ratio(ratio(c.get("ours_src"), c.get("cloudpickle"))), src_size])
        out.append("### pickle.loads of the cloud payloads, by writer (in the dumping process)\n")
        out.append(table(["payload", "our bytecode stream", "our by_source stream",
                          "cloudpickle's stream", "bytecode / cloudpickle's", "by_source / cloudpickle's",
                          "size by_source / bytecode"], rows) + "\n")

    if cold:
        rows = []
        builders = {b.name: b for b in BENCHES}
        labels = {"first_dumps": "first dumps of %d functions of a fresh file" % cold["fresh_functions"]}
        for name in COLD_LOADS:
            labels["loads_" + name] = "first loads: " + builders[name].label
        for row, label in labels.items():
            c = cold["rows"].get(row, {})

            def med(col):
                x = c.get(col, {})
                return x.get("median")

            def shown(col):
                x = c.get(col)
                if not x:
                    return "n/a"
                return fmt_time(x["median"]) if x.get("median") is not None else x.get("status", "n/a")
            base = med("cloudpickle")
            rows.append([label, shown("cloudpickle"), shown("ours"), shown("ours_src"),
                         fmt_ratio(med("ours") / base) if base and med("ours") else "n/a",
                         fmt_ratio(med("ours_src") / base) if base and med("ours_src") else "n/a"])
        out.append("### First call in a fresh process (median of %d processes each)\n" % cold["repeats"])
        out.append(table(["what", "cloudpickle", "ours (bytecode)", "ours (by_source)",
                          "bytecode / cloudpickle", "by_source / cloudpickle"], rows) + "\n")

    if engines:
        rows = []
        jobs = {"spark": ("Spark %s: parallelize 20k rows into 2,000 partitions, map(closure)",
                          "pyspark", "pyspark_version"),
                "beam": ("Beam %s: to_runner_api() of a 50-step pipeline (Map closures, __main__ DoFns)",
                         "beam", "beam_version")}
        for engine, (label, default, version) in jobs.items():
            e = engines.get(engine, {})
            if e.get("status") == "ok":
                rows.append([label % e[version], fmt_time(e[default]["median"]), fmt_time(e["ours"]["median"]),
                             fmt_ratio(e["ratio"]), str(e["ours"]["dumps_calls"])])
            else:
                rows.append([engine, e.get("status", "n/a"), "", "", ""])
        out.append("### Engines: driver-side serialization of one job (time inside the engine's dumps)\n")
        out.append(table(["job", "engine's default pickler", "ours (integration)", "ours / default",
                          "dumps calls"], rows) + "\n")

    if memory:
        rows = []
        for m in memory:
            if m.get("status") != "ok":
                rows.append([m["mode"], m["competitor"], m.get("status"), "", "", "", "", ""])
                continue
            zc = "yes" if m["oob_shares_array_memory"] else ("—" if m["mode"] == "inband" else "NO")
            rows.append([m["mode"], m["competitor"], fmt_time(m["seconds"]),
                         fmt_bytes(m["peak_rss_growth"]), fmt_bytes(m["tracemalloc_peak"]),
                         fmt_bytes(m["stream_bytes"]), fmt_bytes(m["oob_bytes"]), zc])
        out.append("### 100 MB ndarray, protocol 5: peak memory of one dumps (fresh subprocess each)\n")
        out.append(table(["mode", "competitor", "time (1 call)", "peak RSS growth",
                          "tracemalloc peak", "stream", "out-of-band buffers",
                          "buffer is the array's memory"], rows) + "\n")
        out.append("Peak RSS growth = VmHWM after the call minus RSS before it (VmHWM reset via "
                   "/proc/self/clear_refs); tracemalloc does not see memory a native extension "
                   "allocates outside Python's allocators.\n")

    if imports:
        rows = []
        base = imports["rows"][0]
        for r in imports["rows"]:
            if r.get("status") == "n/a":
                rows.append(["import " + r["module"], "n/a", "n/a", "n/a"])
                continue
            rows.append(["import " + r["module"], fmt_time(r["importtime_median"]),
                         fmt_time(r["wall_minus_bare_median"]),
                         "%+.1f ms" % ((r["wall_minus_bare_median"] - base["wall_minus_bare_median"]) * 1e3)])
        out.append("### import time (fresh interpreter, median of %d)\n" % imports["rows"][0]["samples"])
        out.append(table(["statement", "-X importtime cumulative", "wall - bare python",
                          "wall vs import pickle"], rows) + "\n")
        out.append("bare `python -c pass`: %s\n" % fmt_time(imports["bare_python_median"]))

    if results:
        rows = []
        for res in results:
            for column, c in res["cells"].items():
                rows.append([res["name"], column, cell_text(c),
                             fmt_time(c.get("min")) if c["status"] == "ok" else "",
                             "%.0f%%" % (100 * c["spread"]) if "spread" in c else "",
                             fmt_time(c.get("wall_median")) if "wall_median" in c else "",
                             fmt_time(c.get("first_call")) if c.get("first_call") else "",
                             fmt_bytes(c["size"]) if c["size"] is not None else "",
                             "%d x %d" % (len(c["samples"]), c["calls_per_sample"]) if c["samples"] else ""])
        out.append("<details><summary>per (payload, competitor): median, min, output size</summary>\n")
        out.append(table(["payload", "column", "median", "min", "IQR/median", "wall median",
                          "first call (cold)", "output size", "rounds x calls"], rows))
        out.append("\nAll times are per dumps call; a sample times `calls` consecutive calls (>= %g ms "
                   "per sample); `ours_src` = ours with by_source=True.\n</details>\n"
                   % (MIN_MEASUREMENT * 1e3))

    out.append("### machine\n")
    facts = dict(facts, loadavg_end=os.getloadavg(), harness_wall_seconds=round(wall, 1),
                 mode="quick" if args.quick else "full")
    for k, v in facts.items():
        if isinstance(v, tuple):
            v = " ".join("%.2f" % x for x in v)
        out.append("- %s: %s" % (k, v))
    return "\n".join(out), facts


# =========================================================================== main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (< 1 minute)")
    ap.add_argument("--only", help="comma-separated payload names or groups (see --list)")
    ap.add_argument("--competitors", help="comma-separated subset of: " + ",".join(ALL_COMPETITORS))
    ap.add_argument("--rounds", type=int, help="timed rounds per payload (default 21, quick 5)")
    ap.add_argument("--json", metavar="PATH", help="also write all results and samples as JSON")
    ap.add_argument("--list", action="store_true", help="list payload names and groups")
    ap.add_argument("--wall", action="store_true", help="time with the wall clock instead of process CPU time")
    ap.add_argument("--_memprobe", help=argparse.SUPPRESS)
    ap.add_argument("--_preflight", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._memprobe:
        memprobe(args._memprobe)
        return 0
    if args._preflight:
        preflight_child(args._preflight)
        return 0

    names = [b.name for b in BENCHES] + list(EXTRA)
    if args.list:
        print("payloads:", ", ".join(names))
        for g, members in GROUPS.items():
            print("group %s: %s" % (g, ", ".join(members)))
        return 0
    selected = names
    if args.only:
        selected = []
        for n in args.only.split(","):
            n = n.strip()
            if n in GROUPS:
                selected += GROUPS[n]
            elif n in names:
                selected.append(n)
            else:
                ap.error("unknown payload %r; known: %s; groups: %s" % (n, ", ".join(names), ", ".join(GROUPS)))
    wanted = set(ALL_COMPETITORS)
    if args.competitors:
        wanted = {c.strip() for c in args.competitors.split(",")}
        unknown = wanted - set(ALL_COMPETITORS)
        if unknown:
            ap.error("unknown competitor(s) %s" % ", ".join(sorted(unknown)))
    if args.rounds is None:
        args.rounds = 5 if args.quick else 21
    warmup = 1
    global VARIANT_BUDGET, MIN_SAMPLES, MIN_MEASUREMENT, CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    if args.quick:
        VARIANT_BUDGET, MIN_SAMPLES, MIN_MEASUREMENT = 1.5, 1, 0.02
    import_repeats = 3 if args.quick else 9

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    comps = load_competitors(wanted)
    facts = machine_facts(comps)
    for name, c in comps.items():
        if not c.available:
            log("note: %s not available (%s): its cells are n/a" % (name, c.why))

    # Register the dynamic module by value with every pickler that has the API.
    registrars = []
    for name in ("cloudpickle", "ours"):
        c = comps.get(name)
        if c and c.available:
            reg = getattr(c.module, "register_pickle_by_value", None)
            if reg is None:
                log("note: %s has no register_pickle_by_value; its cloud-set streams are checked "
                    "for by-value pickling" % name)
            else:
                registrars.append(reg)
    try:
        P.load_dynamic_module(register_with=registrars)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        log("note: registering the dynamic module failed; see above")

    CRASHED.update(preflight(selected, comps, log))
    log("running %d rounds (+%d warm-up) per payload; competitors: %s"
        % (args.rounds, warmup, ", ".join(comps)))
    gc.collect()
    gc.disable()  # as timeit does; run_bench collects explicitly between calls (untimed)
    results = []
    for bench in BENCHES:
        if bench.name not in selected:
            continue
        try:
            results.append(run_bench(bench, comps, args.rounds, warmup, log))
        except Exception:  # noqa: BLE001 - a harness bug in one payload must not lose the others
            traceback.print_exc()
    loads = run_loads(comps, args.rounds, warmup, log) if "cloud_loads" in selected else None
    gc.enable()
    cold = run_cold(comps, 3 if args.quick else 11, log) if "cold_start" in selected else None
    memory = run_memory(comps, log) if "numpy_memory" in selected else None
    imports = run_imports(comps, import_repeats, log) if "import_time" in selected else None
    engines = run_engines(args.rounds, log) if "engine_jobs" in selected else None

    wall = time.perf_counter() - t0
    text, facts = report(results, loads, memory, imports, facts, comps, args, wall, engines, cold)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "config": {"rounds": args.rounds, "warmup": warmup,
                                                  "protocol": PROTOCOL, "selected": selected},
                       "dumps": results, "loads": loads, "numpy_memory": memory,
                       "imports": imports, "engines": engines, "cold_start": cold}, f, indent=1,
                      default=str)
        log("wrote %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
