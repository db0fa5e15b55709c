"""PySpark with cloudpickle_rs (scripts/spark_app.py, a real local[2] SparkSession on Java 17).

Routing is proven as for Dask and Ray: the driver counts the dumps made through ours and its
audit (stock cloudpickle and PySpark's vendored copy watched) reports zero stock dumps; every
Python worker (forked by the daemon ``configure()`` selects) reports the same from inside the
job; the negative control without the integration is caught by the same audit, and shows the one
thing PySpark's own pickling cannot do here (a broadcast ``__main__`` object does not load on the
workers).  Each mode is one SparkSession, stopped in a ``finally``; every wait has a timeout.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integ_env  # noqa: E402

pytestmark = pytest.mark.timeout(900)  # includes building .venvs/spark on first use (~1 min)

EXPECTED = {"lambda": 21, "closure": [10, 11, 12, 13, 14, 15], "instance_in_closure": [7],
            "collected_main_instances": [6, [0, 2, 4, 6, 8, 10]], "returned_lambda": 42,
            "broadcast": [11], "udf": [3, 6, 9], "accumulator": 15}
UNPICKLABLE = "PicklingError: Could not serialize object: TypeError: cannot pickle 'sqlite3.Connection' object"
DAEMON = "cloudpickle_rs/integrations/spark_daemon.py"


def run(mode):
    res = integ_env.run_script("spark_app.py", mode, timeout=300, venv="spark")
    assert res.returncode == 0 and res.result is not None, res.explain()
    out = res.result
    assert "error" not in out, out["error"]
    return out


def check_routed(out, by_source, receiver=False):
    results = dict(out["results"])
    workers = results.pop("workers")
    unpicklable = results.pop("unpicklable")
    assert results == EXPECTED
    if receiver:  # the receiver's catalogue refuses the connection, path first
        assert unpicklable.startswith("PicklingProhibitedError: cannot send obj[0].__closure__ cell "), unpicklable
        assert ".__closure__ cell 'f'.__closure__ cell 'conn' (Connection) to the receiver: " in unpicklable
    else:  # PySpark reports str(exc) only: the path to the captured connection is in the message
        assert unpicklable.startswith(UNPICKLABLE + "; path to the object that failed, from the tuple being pickled: ")
        assert unpicklable.endswith(".__closure__ cell 'f'.__closure__ cell 'conn'")
    driver = out["driver"]
    assert driver["stock_dumps"] == 0, driver["stock_events"]
    assert "pyspark.cloudpickle.cloudpickle.Pickler" in driver["watched"]
    spark = driver["integrations"]["spark"]
    assert spark["installed"] and spark["by_source"] is by_source and spark["role"] == "driver"
    assert spark["counts"]["dumps"] >= 8 and spark["counts"]["broadcasts"] == 1
    assert len({w["pid"] for w in workers}) == 2
    for w in workers:
        assert w["argv0"].endswith(DAEMON), w["argv0"]
        assert w["cloudpickle_rs_loaded"] is True
        assert w["audit"] and w["stock_dumps"] == 0, w["stock_events"]
        assert "pyspark.cloudpickle.cloudpickle.Pickler" in w["watched"]
        ws = w["integrations"]["spark"]
        assert ws["role"] == "worker" and ws["by_source"] is by_source and ws["dumps"] > 0
        # by source: the stream put the script's lines into the worker's linecache
        assert w["source_registered"] is by_source
    return workers


def test_spark_bytecode():
    check_routed(run("integration"), by_source=False)


def test_spark_by_source():
    check_routed(run("by_source"), by_source=True)


def test_spark_receiver_refuses_on_the_driver():
    out = run("receiver")
    check_routed(out, by_source=False, receiver=True)
    assert out["refused"] == (
        "cloudpickle_rs.PicklingProhibitedError: cannot send obj[0].__closure__ cell 'f' (function) "
        "to the receiver: function __main__.main.<locals>.<lambda> "
        f"({integ_env.SCRIPTS / 'spark_app.py'}:{_line_of('subprocess.run([')}) uses 'subprocess' "
        "(closure variable: module subprocess), which the receiver denies. Instead: do this work on "
        "this side and send the result, or use an allowed module")


def test_streams_load_on_workers_without_cloudpickle_rs():
    # install() on the driver only: the workers run PySpark's own daemon and never import
    # cloudpickle_rs before the report does; everything ours sent loads there.
    out = run("driver_only")
    results = dict(out["results"])
    workers = results.pop("workers")
    results.pop("unpicklable")
    assert results == EXPECTED
    assert out["driver"]["stock_dumps"] == 0
    assert out["driver"]["integrations"]["spark"]["counts"]["dumps"] >= 8
    for w in workers:
        assert not w["argv0"].endswith(DAEMON) and w["cloudpickle_rs_loaded"] is False, w


def test_negative_control_pysparks_own_pickling_is_caught():
    out = run("negative")
    results = out["results"]
    assert out["driver"]["stock_dumps"] > 0
    assert out["driver"]["integrations"] == {}
    assert results["broadcast"].startswith("error: PythonException: AttributeError: Can't get attribute 'Point'")
    for key in ("lambda", "closure", "udf", "accumulator"):
        assert results[key] == EXPECTED[key]
    assert results["unpicklable"] == UNPICKLABLE


def _line_of(text):
    lines = (integ_env.SCRIPTS / "spark_app.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)
