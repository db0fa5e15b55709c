"""Integration script (run as __main__ by tests/integrations/test_integ_loky.py).

    loky_app.py env          # LOKY_PICKLER=cloudpickle_rs set by the caller; loky and joblib
    loky_app.py set          # loky.set_loky_pickler("cloudpickle_rs")
    loky_app.py integration  # cloudpickle_rs.integrations.loky.install() (counting pickler)
    loky_app.py receiver     # install(receiver=...): the workload passes, a denied task is refused
    loky_app.py negative     # loky's default pickler (stock cloudpickle): the audit must fire

A reusable loky executor (2 workers, audit enabled in each by the initializer) runs lambdas,
closures and a __main__ class, returns an instance and a lambda, and ships a type that only the
executor's ``job_reducers`` can pickle.  Prints one ``INTEG-RESULT: <json>`` line.
"""
import faulthandler
import json
import os
import sys

T = 60
# LOKY_APP_WORKLOAD=basic leaves out the results that workers pickle by value.
FULL = os.environ.get("LOKY_APP_WORKLOAD", "full") == "full"


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


class Sealed:
    """Refuses ordinary pickling: only the executor's job reducer can ship it."""

    def __init__(self, v):
        self.v = v

    def __reduce__(self):
        raise TypeError("Sealed objects travel only through the job reducer")


def _unseal(v):
    obj = Sealed.__new__(Sealed)
    obj.v = v
    return obj


def reduce_sealed(obj):
    return _unseal, (obj.v,)


def make_adder(n):
    def add(x):
        return x + n
    return add


def make_point(x):
    return Point(x, -x)


def make_multiplier(k):
    return lambda y: y * k


def worker_report(which="loky"):
    import importlib

    from cloudpickle_rs.integrations import audit

    reduction = importlib.import_module(
        "loky.backend.reduction" if which == "loky" else "joblib.externals.loky.backend.reduction")
    cls = reduction.get_loky_pickler()
    import linecache

    entry = linecache.cache.get(__file__)  # by_source loads register the script's lines
    return {"report": audit.report(), "pickler_name": reduction.get_loky_pickler_name(),
            "source_registered": entry is not None and entry[1] is None,
            "pickler_mro": [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]}


def enable_audit():
    from cloudpickle_rs.integrations import audit

    audit.enable()


def run_loky():
    import loky

    ex = loky.get_reusable_executor(max_workers=2, timeout=30, initializer=enable_audit,
                                    job_reducers={Sealed: reduce_sealed})
    out = {}
    out["lambda"] = ex.submit(lambda x: x + 1, 41).result(timeout=T)
    out["closure"] = ex.submit(make_adder(10), 5).result(timeout=T)
    out["method"] = ex.submit(lambda p: p.norm1(), Point(3, -4)).result(timeout=T)
    if FULL:  # results that workers pickle by value
        pt = ex.submit(make_point, 7).result(timeout=T)
        out["instance_is_main_class"] = type(pt) is Point
        out["instance"] = [pt.x, pt.y]
        out["returned_lambda"] = ex.submit(make_multiplier, 6).result(timeout=T)(7)
    out["job_reducer"] = ex.submit(lambda s: s.v * 2, Sealed(21)).result(timeout=T)
    out["map"] = list(ex.map(make_adder(100), range(4), timeout=T))
    reports = [f.result(timeout=T) for f in [ex.submit(worker_report) for _ in range(4)]]
    ex.shutdown(wait=True, kill_workers=True)
    return out, reports


def run_joblib():
    from joblib import Parallel, delayed

    with Parallel(n_jobs=2, backend="loky", timeout=T) as par:
        values = par(delayed(make_adder(1))(i) for i in range(4))
        if FULL:
            values.append(par([delayed(lambda: make_point(3))()])[0].norm1())
        reports = par(delayed(worker_report)("joblib") for _ in range(2))
    return values, reports


if __name__ == "__main__":
    faulthandler.dump_traceback_later(150, exit=True)
    mode = sys.argv[1]
    from cloudpickle_rs.integrations import audit

    audit.enable()
    if mode == "set":
        import loky

        loky.set_loky_pickler("cloudpickle_rs")
    elif mode == "integration":
        from cloudpickle_rs.integrations import loky as cprs_loky

        cprs_loky.install()  # by_source from CLOUDPICKLE_RS_BY_SOURCE (unset: bytecode)
    elif mode == "env":
        assert os.environ.get("LOKY_PICKLER") == "cloudpickle_rs"
    elif mode == "receiver":
        import cloudpickle_rs
        from cloudpickle_rs.integrations import loky as cprs_loky

        cprs_loky.install(receiver=cloudpickle_rs.Receiver(modules=["cloudpickle_rs"], deny=["subprocess"]))
    out = {"mode": mode}
    if mode == "receiver":
        import subprocess

        import loky

        ex = loky.get_reusable_executor(max_workers=2, timeout=30, initializer=enable_audit)
        try:
            ex.submit(lambda: subprocess.run(["true"])).result(timeout=T)
            out["refused"] = None
        except Exception as e:
            chain, cur = [], e
            while cur is not None:
                chain.append(f"{type(cur).__name__}: {cur}")
                cur = cur.__cause__ or cur.__context__
            out["refused"] = chain
    try:
        out["results"], out["workers"] = run_loky()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e)[:600]}"
    if mode in ("env", "integration", "receiver"):
        try:
            out["joblib_results"], out["joblib_workers"] = run_joblib()
        except Exception as e:
            out["joblib_error"] = f"{type(e).__name__}: {str(e)[:600]}"
    import loky.backend.reduction as reduction

    cls = reduction.get_loky_pickler()
    out["parent_pickler_mro"] = [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
    out["driver"] = audit.report()
    print("INTEG-RESULT: " + json.dumps(out, default=repr), flush=True)
    faulthandler.cancel_dump_traceback_later()
