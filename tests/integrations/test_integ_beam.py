"""Apache Beam with cloudpickle_rs (scripts/beam_app.py, a real DirectRunner pipeline).

Routing is proven as for the other engines: the integration counts its dumps (a few hundred for
this small pipeline, and the ``save_main_session`` registries), the audit (stock cloudpickle and
Beam's vendored copy watched) reports zero stock dumps, and the negative control without the
integration is caught by the same audit.  Streams name only Beam's vendored reconstructors (and
the standard library), with Beam's skip-reset class state setter; a pickling failure Beam reports
names the attribute that failed.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integ_env  # noqa: E402

pytestmark = pytest.mark.timeout(900)  # includes building .venvs/beam on first use (~1 min)

BEAM_CP = "apache_beam.internal.cloudpickle.cloudpickle"


def run(mode):
    res = integ_env.run_script("beam_app.py", mode, timeout=300, venv="beam")
    assert res.returncode == 0 and res.result is not None, res.explain()
    out = res.result
    assert "error" not in out, out["error"]
    return out


def check_unpicklable(results):
    err = results["unpicklable"]
    assert err["type"] == "builtins.RuntimeError"
    assert err["message"].startswith("Unable to pickle fn <__main__.HoldsConnection object")
    assert err["cause"].startswith("TypeError: cannot pickle 'sqlite3.Connection' object")
    return err


@pytest.mark.parametrize("by_source", [False, True])
def test_beam_pipeline_through_ours(by_source):
    out = run("by_source" if by_source else "integration")
    assert out["results"]["pipeline"] == "ok"
    audit = out["audit"]
    assert audit["stock_dumps"] == 0, audit["stock_events"]
    assert f"{BEAM_CP}.Pickler" in audit["watched"]
    beam = audit["integrations"]["beam"]
    assert beam["installed"] and beam["by_source"] is by_source
    assert beam["counts"]["dumps"] >= 100 and beam["counts"]["sessions"] >= 1
    assert "delegated" not in beam["counts"]
    stream = out["stream"]
    assert stream["round_trip"] == 15 and stream["skip_reset"] is True
    tops = {g.rsplit(".", 1)[0] for g in stream["globals"]}
    assert tops <= {BEAM_CP, "builtins", "functools", "_operator", "itertools", "linecache"}, tops
    assert f"{BEAM_CP}._class_setstate" in stream["globals"] and "functools.partial" in stream["globals"]
    if by_source:
        assert "builtins.compile" in stream["globals"]
    # the message Beam shows carries the path to the attribute
    err = check_unpicklable(out["results"])
    assert err["message"].split(". User code")[0].endswith(
        "cannot pickle 'sqlite3.Connection' object; path to the object that failed, from the "
        "HoldsConnection being pickled: obj (HoldsConnection state)['conn']")


def test_negative_control_beams_own_pickling_is_caught():
    out = run("negative")
    assert out["results"]["pipeline"] == "ok"
    assert out["audit"]["stock_dumps"] >= 100
    assert out["audit"]["integrations"] == {}
    err = check_unpicklable(out["results"])
    assert "path to the object" not in err["message"]


def test_beam_receiver_refuses_when_the_pipeline_is_built():
    out = run("receiver")
    assert out["results"]["pipeline"] == "ok" and out["audit"]["stock_dumps"] == 0
    refused = out["refused"]
    assert refused and refused[0].startswith("builtins.RuntimeError: Unable to pickle fn"), refused
    assert any(c.startswith("cloudpickle_rs.PicklingProhibitedError: cannot send ") and
               "uses 'subprocess' (closure variable: module subprocess), which the receiver denies" in c
               for c in refused), refused
