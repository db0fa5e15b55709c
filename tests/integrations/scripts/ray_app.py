"""Integration script (run as __main__ by tests/integrations/test_integ_ray.py).

    ray_app.py positive [--by-source false|true|auto] [--workload full|basic]
                        # driver install(), workers via setup hook string; basic leaves out
                        # results that workers pickle by value
    ray_app.py negative                       # install(carry_reducers=False) everywhere

Starts a local Ray (num_cpus=2, no dashboard), ships lambdas, closures, a __main__ class, an
ObjectRef inside a closure and inside nested args, an ActorHandle in args, and prints one
``INTEG-RESULT: <json>`` line with the results and the audit report of the driver and of every
worker/actor process that answered.  Every ray.get has a timeout; ray.shutdown() in finally.
"""
import argparse
import faulthandler
import json
import os
import sys

T = 60

if __name__ == "__main__":
    faulthandler.dump_traceback_later(240, exit=True)
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["positive", "negative"])
    p.add_argument("--by-source", default="false")
    p.add_argument("--workload", choices=["full", "basic"], default="full")
    args = p.parse_args()
    BY_SOURCE = {"false": False, "true": True, "auto": "auto"}[args.by_source]

os.environ["CLOUDPICKLE_RS_AUDIT"] = "1"  # the driver's install() enables the audit too

import ray  # noqa: E402
from ray.exceptions import GetTimeoutError  # noqa: E402

from cloudpickle_rs.integrations import audit  # noqa: E402
from cloudpickle_rs.integrations import ray as cprs_ray  # noqa: E402


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def make_adder(n):
    def add(x):
        return x + n
    return add


def make_point(x):
    return Point(x, -x)


def make_multiplier(k):
    return lambda y: y * k


def no_carry_hook():
    from cloudpickle_rs.integrations import ray as r

    r.install(carry_reducers=False)


@ray.remote
class Tally:
    def __init__(self):
        self.n = 0

    def incr(self, k):
        self.n += k
        return self.n

    def report(self):
        return audit.report()


def get(ref, timeout=T):
    return ray.get(ref, timeout=timeout)


def report_task():
    import linecache
    import time

    time.sleep(0.2)  # let both workers take one
    rep = audit.report()
    entry = linecache.cache.get(__file__)  # by_source loads register the script's lines
    rep["source_registered"] = entry is not None and entry[1] is None
    return rep


def positive():
    out = {}
    out["lambda"] = get(ray.remote(lambda x: x + 1).remote(41))
    out["closure"] = get(ray.remote(make_adder(10)).remote(5))
    out["method"] = get(ray.remote(lambda p: p.norm1()).remote(Point(3, -4)))
    if args.workload == "full":  # results that workers pickle by value
        pt = get(ray.remote(make_point).remote(7))
        out["instance_is_main_class"] = type(pt) is Point
        out["instance"] = [pt.x, pt.y]
        out["returned_lambda"] = get(ray.remote(make_multiplier).remote(6))(7)

    ref = ray.put(21)

    def use_captured():
        return ray.get(ref, timeout=T) * 2

    out["ref_in_closure"] = get(ray.remote(use_captured).remote())
    out["ref_in_nested_args"] = get(ray.remote(
        lambda d: ray.get(d["a"][0][1], timeout=T) + 1).remote({"a": [(0, ref)]}))
    tally = Tally.remote()
    out["actor_in_args"] = get(ray.remote(
        lambda h, k: ray.get(h.incr.remote(k), timeout=T)).remote(tally, 5))
    out["actor_state"] = get(tally.incr.remote(1))
    reports = get([ray.remote(report_task).remote() for _ in range(4)])
    reports.append(get(tally.report.remote()))
    by_pid = {r["pid"]: r for r in reports}
    return out, list(by_pid.values())


def negative():
    ref = ray.put(21)

    def use_captured():
        return ray.get(ref, timeout=8) * 2

    try:
        value = get(ray.remote(use_captured).remote(), timeout=30)
        return {"outcome": "value", "value": value}, []
    except GetTimeoutError as e:
        return {"outcome": "timeout", "error": type(e).__name__}, []
    except Exception as e:  # the task failed (e.g. the ref's owner freed it)
        return {"outcome": "error", "error": f"{type(e).__name__}: {str(e)[:400]}"}, []


if __name__ == "__main__":
    carry = args.mode == "positive"
    cprs_ray.install(by_source=BY_SOURCE, carry_reducers=carry)
    hook = "cloudpickle_rs.integrations.ray.install" if carry else no_carry_hook
    env_vars = {"CLOUDPICKLE_RS_AUDIT": "1",
                "CLOUDPICKLE_RS_BY_SOURCE": {False: "0", True: "1", "auto": "auto"}[BY_SOURCE]}
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20,
                 log_to_driver=True, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": hook, "env_vars": env_vars})
        audit.enable()  # now that ray.cloudpickle is imported: watch Ray's own pickler too
        results, worker_reports = positive() if carry else negative()
        out = {"results": results, "driver": audit.report(), "workers": worker_reports}
    finally:
        ray.shutdown()
    print("INTEG-RESULT: " + json.dumps(out, default=repr), flush=True)
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.flush()
