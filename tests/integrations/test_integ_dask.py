"""Dask / distributed routed through cloudpickle_rs (cloudpickle_rs.integrations.dask).

Each test runs scripts/dask_app.py as ``__main__`` with real worker processes (.venvs/integ, see
integ_env.py) and reads back the audit report of every process: dumps counted through
cloudpickle_rs by the integration, and dumps made by stock cloudpickle (wrapped
``cloudpickle.Pickler.dump`` via the audit preload, present in every process).

by_source: ``test_by_source_local_cluster`` runs the basic workload (tasks travel by source to
the workers, results are plain data) and proves it on the workers (the stream registered the
script's lines in their linecache); BY_SOURCE_CASES also cover workers returning a __main__
instance and a lambda (they re-pickle by source what they received by source) and the separate
scheduler, which re-pickles every task it received by source.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integ_env  # noqa: E402

pytestmark = pytest.mark.timeout(900)  # includes building .venvs/integ on first use (~3 min)

BY_SOURCE_CASES = [
    ("local", "--by-source", "true"),  # workers re-pickle by source what they received by source
    ("deploy", "--by-source", "true", "--workload", "basic"),  # the scheduler re-pickles every task
]

EXPECTED = {"lambda": 42, "closure": 15, "method": 7, "instance_is_main_class": True,
            "instance": [7, -7], "returned_lambda": 42, "map": [100, 101, 102, 103],
            "delayed": 6, "token_deterministic": True}


def run(*args, env=None):
    res = integ_env.run_script("dask_app.py", *args, env=env, timeout=200)
    assert res.returncode == 0 and res.result is not None, res.explain()
    return res.result


def ours(report):
    return report["integrations"].get("dask", {}).get("dumps", 0)


def check_covered(out, separate_scheduler, expected=EXPECTED, by_source=False):
    assert out["results"] == expected
    reports = out["reports"]
    driver, scheduler, workers = reports["driver"], reports["scheduler"], reports["workers"]
    everyone = [driver, scheduler, *workers]
    for r in everyone:
        assert r["audit"] and "cloudpickle.cloudpickle.Pickler" in r["watched"], r
        assert r["stock_dumps"] == 0, f"stock cloudpickle dumped in pid {r['pid']}: {r['stock_events']}"
        assert r["integrations"]["dask"]["by_source"] == by_source
    assert ours(driver) > 0
    for w in workers:
        assert w["pid"] != driver["pid"]
        assert w["source_registered"] is bool(by_source)
        if expected is EXPECTED:  # each worker pickled results (a __main__ instance, a lambda)
            assert ours(w) > 0, w
    if separate_scheduler:
        assert scheduler["pid"] not in {driver["pid"], *(w["pid"] for w in workers)}
        assert ours(scheduler) > 0, scheduler  # it re-pickles every task it sends
    return reports


def test_local_cluster_routes_every_process():
    out = run("local")
    reports = check_covered(out, separate_scheduler=False)
    assert len(reports["workers"]) == 2
    assert len({w["pid"] for w in reports["workers"]}) == 2


def test_local_cluster_negative_control_uncovered_workers_are_caught():
    out = run("local", "--uncovered", "worker")
    assert out["results"] == EXPECTED
    workers = out["reports"]["workers"]
    assert all(ours(w) == 0 for w in workers)
    assert sum(w["stock_dumps"] for w in workers) > 0, workers
    assert out["reports"]["driver"]["stock_dumps"] == 0


def test_separate_scheduler_and_worker_with_preload():
    out = run("deploy")
    check_covered(out, separate_scheduler=True)


def test_negative_control_uncovered_scheduler_is_caught_repickling():
    out = run("deploy", "--uncovered", "scheduler")
    assert out["results"] == EXPECTED
    sched = out["reports"]["scheduler"]
    assert ours(sched) == 0
    assert sched["stock_dumps"] > 0
    assert any(e["type"].startswith("dask.") for e in sched["stock_events"]), sched["stock_events"]
    assert all(w["stock_dumps"] == 0 for w in out["reports"]["workers"])


BASIC = {k: v for k, v in EXPECTED.items()
         if k not in ("instance_is_main_class", "instance", "returned_lambda")}


def test_by_source_local_cluster():
    out = run("local", "--by-source", "true", "--workload", "basic",
              env={"CLOUDPICKLE_RS_BY_SOURCE": "1"})  # the workers' preload reads it
    check_covered(out, separate_scheduler=False, expected=BASIC, by_source=True)


if BY_SOURCE_CASES:  # defined only when there are cases: an empty parametrize would skip
    @pytest.mark.parametrize("case", BY_SOURCE_CASES)
    def test_by_source(case):
        out = run(*case, env={"CLOUDPICKLE_RS_BY_SOURCE": "1"})
        expected = BASIC if "basic" in case else EXPECTED
        check_covered(out, separate_scheduler=case[0] == "deploy", expected=expected,
                      by_source=True)


def test_receiver_refuses_a_denied_task_on_the_client():
    """install(receiver=Receiver(deny=NDIF_DENY)): the workload travels (dask's own modules are
    added to the receiver's), and a task calling os.system is refused before it is sent, with
    the receiver's message, where without a receiver it would run on the worker."""
    res = integ_env.run_script("dask_app.py", "local", "--workload", "basic", "--receiver", "ndif",
                               timeout=200)
    assert res.returncode == 0 and res.result is not None, res.explain()
    out = res.result
    refused, ran = out["results"].pop("refused"), out["results"].pop("task_ran")
    check_covered(out, separate_scheduler=False, expected=BASIC)
    assert refused is not None and not ran, (refused, ran)
    assert refused[0] == "TypeError" and "Could not serialize" in refused[1], refused
    # distributed logs the cause, ours, on the client
    assert ("cloudpickle_rs.PicklingProhibitedError: cannot send obj (LLGExpr reconstructor arguments)"
            in res.stderr), res.stderr[-3000:]
    assert ("function __main__.workload.<locals>.shell" in res.stderr
            and "uses 'os' (global: module os), which the receiver denies" in res.stderr), res.stderr[-3000:]
