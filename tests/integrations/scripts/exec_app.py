"""Integration script (run as __main__ by tests/integrations/test_integ_executor.py).

    exec_app.py fork|spawn|forkserver

CloudProcessPoolExecutor(2 workers) under the given start method: lambdas, closures, a __main__
class (instance returned), a returned lambda, map, an exception of a __main__ class raised in a
worker, a lambda initializer; prints one ``INTEG-RESULT: <json>`` line with the results and the
audit reports of the parent and of the workers.
"""
import faulthandler
import json
import multiprocessing
import os
import sys

T = 60


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


class Boom(Exception):
    pass


def make_adder(n):
    def add(x):
        return x + n
    return add


def make_point(x):
    return Point(x, -x)


def make_multiplier(k):
    return lambda y: y * k


def explode(msg):
    raise Boom(msg)


if __name__ == "__main__":
    faulthandler.dump_traceback_later(120, exit=True)
    method = sys.argv[1]
    by_source = sys.argv[2:] == ["by_source"]
    os.environ["CLOUDPICKLE_RS_AUDIT"] = "1"  # workers inherit it: each enables the audit
    from cloudpickle_rs.integrations import audit
    from cloudpickle_rs.integrations.executor import CloudProcessPoolExecutor

    audit.enable()
    ctx = multiprocessing.get_context(method)
    out = {"method": method}
    with CloudProcessPoolExecutor(2, mp_context=ctx, by_source=by_source,
                                  initializer=lambda tag: os.environ.__setitem__("CPRS_INIT_TAG", tag),
                                  initargs=("init-ran",)) as ex:
        r = out["results"] = {}
        r["lambda"] = ex.submit(lambda x: x + 1, 41).result(timeout=T)
        r["closure"] = ex.submit(make_adder(10), 5).result(timeout=T)
        r["method"] = ex.submit(lambda p: p.norm1(), Point(3, -4)).result(timeout=T)
        pt = ex.submit(make_point, 7).result(timeout=T)
        r["instance_is_main_class"] = type(pt) is Point
        r["instance"] = [pt.x, pt.y]
        r["returned_lambda"] = ex.submit(make_multiplier, 6).result(timeout=T)(7)
        r["map"] = list(ex.map(make_adder(100), range(5), timeout=T, chunksize=2))
        r["initializer"] = ex.submit(lambda: os.environ.get("CPRS_INIT_TAG")).result(timeout=T)
        try:
            ex.submit(explode, "kaboom").result(timeout=T)
            r["exception"] = None
        except Boom as e:
            r["exception"] = [type(e).__name__, str(e), "explode" in str(e.__cause__)]
        reports = [f.result(timeout=T) for f in [ex.submit(audit.report) for _ in range(6)]]
    out["workers"] = list({rep["pid"]: rep for rep in reports}.values())
    out["driver"] = audit.report()
    print("INTEG-RESULT: " + json.dumps(out, default=repr), flush=True)
    faulthandler.cancel_dump_traceback_later()
