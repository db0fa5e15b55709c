"""loky and joblib with cloudpickle_rs as loky's pickler (scripts/loky_app.py, real workers).

Modes: ``LOKY_PICKLER=cloudpickle_rs`` (loky and joblib's vendored loky), ``set_loky_pickler(
"cloudpickle_rs")``, ``cloudpickle_rs.integrations.loky.install()`` (counting pickler), and a
negative control with loky's default pickler (stock cloudpickle) that the audit must catch.
The ``Sealed`` type refuses ordinary pickling: only the executor's ``job_reducers`` ship it.

by_source: ``test_integration_by_source_basic`` (CLOUDPICKLE_RS_BY_SOURCE=1; workers prove they
loaded by source: the stream registered the script's lines in their linecache).
The by_source cases include workers sending back by source what they received by source.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integ_env  # noqa: E402

pytestmark = pytest.mark.timeout(900)  # includes building .venvs/integ on first use (~3 min)

EXPECTED = {"lambda": 42, "closure": 15, "method": 7, "instance_is_main_class": True,
            "instance": [7, -7], "returned_lambda": 42, "job_reducer": 42,
            "map": [100, 101, 102, 103]}
RS = "cloudpickle_rs._native.Pickler"


def run(mode, env=None):
    res = integ_env.run_script("loky_app.py", mode, env=env, timeout=200)
    assert res.returncode == 0 and res.result is not None, res.explain()
    out = res.result
    assert "error" not in out and "joblib_error" not in out, out
    return out


def check_workers(workers, name):
    assert workers
    for w in workers:
        assert w["pickler_name"] == name
        assert RS in w["pickler_mro"], w["pickler_mro"]
        assert w["report"]["audit"] and w["report"]["stock_dumps"] == 0, w["report"]


def test_loky_pickler_env_variable_loky_and_joblib():
    out = run("env", env={"LOKY_PICKLER": "cloudpickle_rs"})
    assert out["results"] == EXPECTED
    assert RS in out["parent_pickler_mro"]
    assert out["driver"]["stock_dumps"] == 0
    check_workers(out["workers"], "cloudpickle_rs")
    assert out["joblib_results"] == [1, 2, 3, 4, 6]
    check_workers(out["joblib_workers"], "cloudpickle_rs")
    assert all(w["pickler_mro"][0].startswith("joblib.externals.loky.")
               for w in out["joblib_workers"])


def test_set_loky_pickler():
    out = run("set")
    assert out["results"] == EXPECTED
    assert RS in out["parent_pickler_mro"] and out["driver"]["stock_dumps"] == 0
    check_workers(out["workers"], "cloudpickle_rs")


def test_integration_counts_dumps_in_parent_and_workers():
    out = run("integration")
    assert out["results"] == EXPECTED
    assert out["parent_pickler_mro"][1] == "cloudpickle_rs.integrations.loky.Pickler"
    assert out["driver"]["stock_dumps"] == 0
    assert out["driver"]["integrations"]["loky"]["dumps"] > 0
    assert out["driver"]["integrations"]["loky"]["by_source"] is False
    for key in ("workers", "joblib_workers"):
        check_workers(out[key], "cloudpickle_rs.integrations.loky")
        # A worker's report is taken before it pickles the report itself, and which worker ran
        # which task is up to the pool: at least one worker per pool has counted dumps through
        # ours; every worker uses our pickler and saw no stock dump (check_workers).
        assert any(w["report"]["integrations"]["loky"]["dumps"] > 0 for w in out[key]), out[key]
        for w in out[key]:
            assert w["report"]["integrations"]["loky"]["by_source"] is False
            assert w["source_registered"] is False
    assert out["joblib_results"] == [1, 2, 3, 4, 6]


BASIC = {k: v for k, v in EXPECTED.items()
         if k not in ("instance_is_main_class", "instance", "returned_lambda")}


def test_integration_by_source_basic():
    out = run("integration", env={"CLOUDPICKLE_RS_BY_SOURCE": "1", "LOKY_APP_WORKLOAD": "basic"})
    assert out["results"] == BASIC
    assert out["joblib_results"] == [1, 2, 3, 4]
    assert out["driver"]["integrations"]["loky"]["by_source"] is True
    for key in ("workers", "joblib_workers"):
        check_workers(out[key], "cloudpickle_rs.integrations.loky")
        for w in out[key]:
            assert w["report"]["integrations"]["loky"]["by_source"] is True
            assert w["source_registered"] is True


def test_integration_by_source_full():
    # Workers return a __main__ instance and a lambda: they re-pickle by source what they got.
    out = run("integration", env={"CLOUDPICKLE_RS_BY_SOURCE": "1"})
    assert out["results"] == EXPECTED
    assert out["driver"]["integrations"]["loky"]["by_source"] is True
    for w in out["workers"]:
        assert w["report"]["integrations"]["loky"]["by_source"] is True


def test_integration_receiver():
    # install(receiver=...): the whole workload (loky and joblib) passes the check; a task using
    # a module the receiver denies is refused in the parent and never runs on a worker.
    out = run("receiver", env={"LOKY_APP_WORKLOAD": "basic"})
    assert out["results"] == BASIC
    assert out["joblib_results"] == [1, 2, 3, 4]
    check_workers(out["workers"], "cloudpickle_rs.integrations.loky")
    refused = out["refused"]
    assert refused and any(
        "PicklingProhibitedError" in c and "uses 'subprocess' (global: module subprocess), which the "
        "receiver denies" in c for c in refused), refused


def test_negative_control_default_pickler_is_caught():
    out = run("negative")
    assert out["results"] == EXPECTED
    assert RS not in out["parent_pickler_mro"]
    assert out["driver"]["stock_dumps"] > 0
    assert any(w["report"]["stock_dumps"] > 0 for w in out["workers"])
