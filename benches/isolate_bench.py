#!/usr/bin/env python
"""Benchmark of cloudpickle_rs.isolate (issue 10): a measuring tool, not a test; it prints medians
and never asserts on timings. `make bench` runs it after benches/run.py.

    python benches/isolate_bench.py [--python PATH] [--quick] [--json PATH]

Rows (wall-clock medians; the work spans two processes, so CPU time of one would mislead):
cold start + first call, a tiny call round trip, 10 000 small calls one by one and batched,
a 10 MB bytes round trip vs a local copy, a callback-heavy loop (1 000 child -> parent calls).
Columns: in-process (the same work on a local object), isolate, InterpreterPoolExecutor
(cloudpickle_rs.integrations.executor, one worker of the same interpreter) where it applies.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

from cloudpickle_rs.isolate import isolate  # noqa: E402

clock = time.perf_counter


def median_of(fn, repeats):
    vals = []
    for _ in range(repeats):
        t = clock()
        fn()
        vals.append(clock() - t)
    return statistics.median(vals)


def fmt(seconds):
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return "%.1f µs" % (seconds * 1e6)
    if seconds < 1:
        return "%.2f ms" % (seconds * 1e3)
    return "%.2f s" % seconds


def local_worker():
    # the in-process baseline: the same class, loaded from its file without importing it by name
    ns = {}
    with open(os.path.join(HERE, "isolate_target.py")) as f:
        exec(compile(f.read(), "isolate_target.py", "exec"), ns)
    return ns["Worker"](), ns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=None, help="the child interpreter (default: this one)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    opts = ap.parse_args()
    q = opts.quick
    python = opts.python or sys.executable
    foreign = True if opts.python and os.path.abspath(opts.python) != os.path.abspath(sys.executable) else None
    rows = []
    local, ns = local_worker()

    # cold start + first call
    def cold_isolate():
        R = isolate("isolate_target:Worker", python=python, path=[HERE])
        R().tiny(1)
        R.close()

    from cloudpickle_rs.integrations.executor import InterpreterPoolExecutor

    def cold_pool():
        with InterpreterPoolExecutor(python, max_workers=1, by_source=foreign) as ex:
            ex.submit(ns["tiny"], 1).result()

    def cold_local():
        local_worker()[0].tiny(1)

    n = 3 if q else 7
    rows.append(("cold start + first call", median_of(cold_local, n), median_of(cold_isolate, n), median_of(cold_pool, n)))

    R = isolate("isolate_target:Worker", python=python, path=[HERE])
    w = R()
    pool = InterpreterPoolExecutor(python, max_workers=1, by_source=foreign)
    try:
        calls = 500 if q else 3000
        per = []
        for i in range(calls):
            t = clock()
            w.tiny(i)
            per.append(clock() - t)
        tiny_iso = statistics.median(per)
        per = []
        for i in range(calls // 5):
            t = clock()
            pool.submit(ns["tiny"], i).result()
            per.append(clock() - t)
        tiny_pool = statistics.median(per)
        per = []
        for i in range(calls):
            t = clock()
            local.tiny(i)
            per.append(clock() - t)
        rows.append(("tiny call round trip", statistics.median(per), tiny_iso, tiny_pool))

        N = 10000
        reps = 2 if q else 5

        def one_by_one():
            for i in range(N):
                w.tiny(i)

        def batched():
            w.tiny.batch([((i,), {}) for i in range(N)])

        def local_loop():
            for i in range(N):
                local.tiny(i)

        def pool_map():
            list(pool.map(ns["tiny"], range(N)))

        loc = median_of(local_loop, reps)
        rows.append(("10 000 small calls, one by one", loc, median_of(one_by_one, reps), median_of(pool_map, 1 if q else 3)))
        rows.append(("10 000 small calls, batched", loc, median_of(batched, reps), None))

        big = os.urandom(10 << 20)
        reps = 5 if q else 15
        rt = median_of(lambda: w.echo(big), reps)
        copy = median_of(lambda: bytearray(big), reps)
        pool_rt = median_of(lambda: pool.submit(ns["echo"], big).result(), 3 if q else 7)
        rows.append(("10 MB bytes round trip", copy, rt, pool_rt))

        lock = threading.Lock()

        def cb(i):  # the lock makes it unpicklable: a parent handle, each call a round trip
            return i if lock else 0

        M = 1000
        rows.append(("callback loop, 1 000 child->parent calls", median_of(lambda: local.loop(cb, M), reps),
                     median_of(lambda: w.loop(cb, M), 3 if q else 7), None))
    finally:
        pool.shutdown()
        R.close()

    print("isolate benchmark (wall-clock medians), child: %s" % python)
    print("%-42s %12s %12s %10s %14s" % ("", "in-process", "isolate", "ratio", "interp. pool"))
    for name, loc, iso, pl in rows:
        print("%-42s %12s %12s %9.1fx %14s" % (name, fmt(loc), fmt(iso), iso / loc if loc else float("nan"), fmt(pl)))
    print("targets: tiny call < 100 µs (%s); 10 MB round trip < 3x a local copy (%.1fx)" % (
        fmt(rows[1][2]), rows[4][2] / rows[4][1]))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump([dict(name=r[0], in_process=r[1], isolate=r[2], pool=r[3]) for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
