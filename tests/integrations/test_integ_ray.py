"""Ray routed through cloudpickle_rs (cloudpickle_rs.integrations.ray), with a real local Ray.

scripts/ray_app.py runs as ``__main__``: ``ray.init(num_cpus=2, include_dashboard=False)``,
the driver calls ``install()``, workers get it through
``runtime_env={"worker_process_setup_hook": "cloudpickle_rs.integrations.ray.install"}`` and the
audit (``CLOUDPICKLE_RS_AUDIT=1``) wraps stock ``cloudpickle.Pickler.dump`` and Ray's vendored
``ray.cloudpickle.cloudpickle.Pickler.dump`` in every process.

by_source: ``test_by_source_basic`` ships every task function and the actor class by source
(workers get CLOUDPICKLE_RS_BY_SOURCE=1 through runtime_env env_vars; a worker proves it loaded
by source: the stream registered the script's lines in its linecache).
The by_source cases include workers sending back by source what they received by source.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integ_env  # noqa: E402

pytestmark = pytest.mark.timeout(900)  # includes building .venvs/integ on first use (~3 min)

BY_SOURCE_CASES = [("positive", "--by-source", "true")]  # workers re-pickle what they received by source

EXPECTED = {"lambda": 42, "closure": 15, "method": 7, "instance_is_main_class": True,
            "instance": [7, -7], "returned_lambda": 42, "ref_in_closure": 42,
            "ref_in_nested_args": 22, "actor_in_args": 5, "actor_state": 6}
RAY_REDUCERS = {"ray.ObjectRef", "ray.actor.ActorHandle"}


def run(*args):
    res = integ_env.run_script("ray_app.py", *args, timeout=240)
    assert res.returncode == 0 and res.result is not None, res.explain()
    return res.result


BASIC = {k: v for k, v in EXPECTED.items()
         if k not in ("instance_is_main_class", "instance", "returned_lambda")}


def check_positive(out, by_source=False, expected=EXPECTED):
    assert out["results"] == expected
    driver, workers = out["driver"], out["workers"]
    assert workers, "no worker reported"
    for r in [driver, *workers]:
        assert "ray.cloudpickle.cloudpickle.Pickler" in r["watched"], r
        assert r["stock_dumps"] == 0, f"stock dump in pid {r['pid']}: {r['stock_events']}"
        ray_stats = r["integrations"]["ray"]
        assert ray_stats["installed"] and ray_stats["carry_reducers"]
        assert ray_stats["by_source"] == by_source
    # Ray registers ObjectRef/ActorHandle reducers when a process makes its serialization context,
    # which a worker may not have done yet when it reports: required in the driver and in at
    # least one worker (they reach our Pickler either way, see integrations/ray.py).
    carried = [r for r in [driver, *workers]
               if RAY_REDUCERS <= set(r["integrations"]["ray"]["ray_reducers"])]
    assert driver in carried, driver["integrations"]["ray"]["ray_reducers"]
    assert len(carried) >= 2, [r["integrations"]["ray"]["ray_reducers"] for r in workers]
    assert driver["integrations"]["ray"]["dumps"] > 0
    assert all(w["pid"] != driver["pid"] for w in workers)
    # a worker pickled task results (reports; the Point instance, the returned lambda) through ours
    assert any(w["integrations"]["ray"]["dumps"] > 0 for w in workers), workers
    flags = [w["source_registered"] for w in workers if "source_registered" in w]
    assert flags and all(f is bool(by_source) for f in flags), flags


def test_ray_routes_driver_and_workers():
    check_positive(run("positive"))


def test_negative_control_without_ray_reducers_objectref_in_closure_breaks():
    out = run("negative")
    # The ObjectRef captured by the closure is not registered as contained in the task: the
    # worker's ray.get of it times out (or fails), it never yields the value.
    assert out["results"]["outcome"] in ("timeout", "error"), out["results"]
    assert out["driver"]["integrations"]["ray"]["carry_reducers"] is False


def test_by_source_basic():
    check_positive(run("positive", "--by-source", "true", "--workload", "basic"),
                   by_source=True, expected=BASIC)


if BY_SOURCE_CASES:  # defined only when there are cases: an empty parametrize would skip
    @pytest.mark.parametrize("case", BY_SOURCE_CASES)
    def test_by_source(case):
        check_positive(run(*case), by_source=True)
