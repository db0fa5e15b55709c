"""Integration script (run as __main__ by tests/integrations/test_integ_dask.py).

Ships lambdas, closures and a __main__ class to real Dask workers and prints, as one
``INTEG-RESULT: <json>`` line, what came back plus the audit report of every process (driver,
scheduler, each worker): dumps counted through cloudpickle_rs and dumps made by stock cloudpickle.

    dask_app.py local  [--uncovered worker] [--by-source false|true|auto] [--workload full|basic]
    dask_app.py deploy [--uncovered scheduler|worker|none] [--by-source ...] [--workload ...]

``--workload basic`` leaves out the results that workers pickle by value (a returned __main__
instance, a returned lambda).

``local``: LocalCluster(processes=True, 2 workers, 1 thread each) with the integration as worker
preload (the scheduler runs in this process).  ``deploy``: a separate ``dask scheduler`` and
``dask worker`` started here on 127.0.0.1 with ``--preload``.  Every wait has a timeout and the
cluster is closed in ``finally``.
"""
import argparse
import faulthandler
import json
import os
import subprocess
import sys
import tempfile
import time

OURS = "cloudpickle_rs.integrations.dask"
AUDIT = "cloudpickle_rs.integrations.audit"
T = 60  # seconds, every wait

# Spawned LocalCluster workers import this file again as __mp_main__: everything that must
# happen only in the driver (arguments, installing the integration) is under the main guard.
from cloudpickle_rs.integrations import audit  # noqa: E402  (watch stock dumps everywhere)

import dask  # noqa: E402
from dask.base import tokenize  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402


class Point:
    """A class defined in __main__: travels by value."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None


def make_adder(n):
    def add(x):
        return x + n
    return add


def make_point(x):
    return Point(x, -x)


def make_multiplier(k):
    return lambda y: y * k


def workload(client):
    out = {}
    out["lambda"] = client.submit(lambda x: x + 1, 41, pure=False).result(timeout=T)
    out["closure"] = client.submit(make_adder(10), 5, pure=False).result(timeout=T)
    out["method"] = client.submit(lambda p: p.norm1(), Point(3, -4), pure=False).result(timeout=T)
    if args.workload == "full":  # results that workers pickle by value
        pt = client.submit(make_point, 7, pure=False).result(timeout=T)
        out["instance_is_main_class"] = type(pt) is Point
        out["instance"] = [pt.x, pt.y]
        f = client.submit(make_multiplier, 6, pure=False).result(timeout=T)
        out["returned_lambda"] = f(7)
    futs = client.map(make_adder(100), range(4), pure=False)
    out["map"] = [x.result(timeout=T) for x in futs]
    total = dask.delayed(lambda xs: sum(xs))([dask.delayed(make_adder(1))(i) for i in range(3)])
    out["delayed"] = total.compute(timeout=T) if hasattr(total, "compute") else None
    out["token_deterministic"] = tokenize(Point(1, 2)) == tokenize(Point(1, 2))
    if args.receiver != "none":  # a task the receiver denies is refused on the client
        marker = os.path.join(tempfile.mkdtemp(prefix="dask-recv-"), "ran")

        def shell(cmd):
            return os.system(cmd)

        try:
            client.submit(shell, f"touch {marker}", pure=False).result(timeout=T)
            out["refused"] = None
        except Exception as e:
            # distributed logs ours ("Failed to serialize") and raises TypeError("Could not
            # serialize object ...") to the caller
            out["refused"] = [type(e).__name__, str(e)[:200]]
        out["task_ran"] = os.path.exists(marker)
    return out


def source_registered():
    """In a worker: did a stream register this script's lines in linecache (by_source loads do,
    with no mtime; bytecode loads do not)?"""
    import linecache

    entry = linecache.cache.get(__file__)
    return entry is not None and entry[1] is None


def gather_reports(client):
    workers = client.run(audit.report)  # {address: report}; audit.report pickles by reference
    for addr, flag in client.run(source_registered).items():
        workers[addr]["source_registered"] = flag
    try:
        sched = client.run_on_scheduler(audit.report)
    except Exception as e:  # scheduler without the audit module
        sched = {"error": repr(e)}
    return {"driver": audit.report(), "scheduler": sched, "workers": list(workers.values())}


def run_local():
    worker_preload = [AUDIT] if args.uncovered == "worker" else [OURS, AUDIT]
    cluster = client = None
    try:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               preload=worker_preload, timeout=T)
        client = Client(cluster, timeout=T)
        client.wait_for_workers(2, timeout=T)
        results = workload(client)
        return {"results": results, "reports": gather_reports(client)}
    finally:
        if client is not None:
            client.close(timeout=20)
        if cluster is not None:
            cluster.close(timeout=20)


def run_deploy():
    tmp = tempfile.mkdtemp(prefix="dask-deploy-")
    sched_file = os.path.join(tmp, "scheduler.json")
    py = sys.executable
    s_pre = [AUDIT] if args.uncovered == "scheduler" else [OURS, AUDIT]
    w_pre = [AUDIT] if args.uncovered == "worker" else [OURS, AUDIT]
    pre = lambda mods: [a for m in mods for a in ("--preload", m)]  # noqa: E731
    procs = []
    client = None
    try:
        procs.append(subprocess.Popen(
            [py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", sched_file, *pre(s_pre)],
            stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + T
        while not os.path.exists(sched_file):
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.2)
        procs.append(subprocess.Popen(
            [py, "-m", "distributed.cli.dask_worker", "--scheduler-file", sched_file,
             "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
             *pre(w_pre)], stdin=subprocess.DEVNULL))
        client = Client(scheduler_file=sched_file, timeout=T)
        client.wait_for_workers(1, timeout=T)
        results = workload(client)
        return {"results": results, "reports": gather_reports(client)}
    finally:
        if client is not None:
            try:
                client.shutdown()  # stops scheduler and workers
            except Exception:
                pass
            client.close(timeout=20)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


if __name__ == "__main__":
    faulthandler.dump_traceback_later(150, exit=True)  # a hang ends the script, with stacks
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["local", "deploy"])
    p.add_argument("--uncovered", choices=["scheduler", "worker", "none"], default="none")
    p.add_argument("--by-source", default="false")
    p.add_argument("--workload", choices=["full", "basic"], default="full")
    p.add_argument("--receiver", choices=["none", "ndif"], default="none")
    args = p.parse_args()
    BY_SOURCE = {"false": False, "true": True, "auto": "auto"}[args.by_source]
    from cloudpickle_rs.integrations import dask as cprs_dask

    receiver = None
    if args.receiver == "ndif":
        import cloudpickle_rs

        # the workers have the audit preload; dask, distributed and toolz are added by install
        receiver = cloudpickle_rs.Receiver(modules=["audit"], deny=cloudpickle_rs.Receiver.NDIF_DENY)
    cprs_dask.install(by_source=BY_SOURCE, receiver=receiver)
    out = run_local() if args.mode == "local" else run_deploy()
    print("INTEG-RESULT: " + json.dumps(out, default=repr), flush=True)
    faulthandler.cancel_dump_traceback_later()
