"""The integrations' option plumbing, in this process (no engine needed: runs in .venv).

The by_source option must reach cloudpickle_rs in every integration: asserted on what each one
passes on (options / a recorded dumps call), so it holds whatever by_source mode is built.
"""
import io
import pickle

import pytest

import cloudpickle_rs
from cloudpickle_rs.integrations import _common

pytestmark = pytest.mark.timeout(60)


def test_resolve_by_source(monkeypatch):
    monkeypatch.delenv(_common.BY_SOURCE_ENV, raising=False)
    assert _common.resolve_by_source(None) is False
    for raw, want in [("1", True), ("true", True), ("auto", "auto"), ("0", False), ("", False)]:
        monkeypatch.setenv(_common.BY_SOURCE_ENV, raw)
        assert _common.resolve_by_source(None) == want
    monkeypatch.setenv(_common.BY_SOURCE_ENV, "sometimes")
    with pytest.raises(ValueError, match="CLOUDPICKLE_RS_BY_SOURCE"):
        _common.resolve_by_source(None)
    assert _common.resolve_by_source(True) is True
    with pytest.raises(ValueError):
        _common.resolve_by_source("yes")
    # the values dumps() accepts, read by the same (native) parser
    import cloudpickle_rs
    for value, want in [(False, False), (0, False), ("auto", "auto"), (1, True), ([1], True)]:
        assert _common.resolve_by_source(value) == want
        assert type(_common.resolve_by_source(value)) is type(want)
        cloudpickle_rs.dumps(lambda: 0, by_source=value)  # accepted there too
    with pytest.raises(ValueError, match="by_source must be"):
        cloudpickle_rs.dumps(0, by_source="yes")
    assert _common.dumps_kwargs(False) == {}
    assert _common.dumps_kwargs("auto") == {"by_source": "auto"}


def test_resolve_target_python(monkeypatch):
    monkeypatch.delenv(_common.TARGET_PYTHON_ENV, raising=False)
    assert _common.resolve_target_python(None) is None
    monkeypatch.setenv(_common.TARGET_PYTHON_ENV, " 3.9 ")
    assert _common.resolve_target_python(None) == "3.9"
    assert _common.resolve_target_python((3, 12)) == (3, 12)
    assert _common.dumps_kwargs(True, "3.9") == {"by_source": True, "target_python": "3.9"}
    assert _common.dumps_kwargs(False, (3, 10)) == {"target_python": (3, 10)}
    for bad in ("3", "three.nine", (2, 7)):
        with pytest.raises(ValueError, match="target_python"):
            _common.check_target_python(bad)
    with pytest.raises(TypeError, match="target_python"):
        _common.check_target_python(3.9)


def test_dask_install_target_python(monkeypatch):
    """The workers' Python given to install() reaches every dump: a lambda pickled as bytecode
    for another version is refused on the client, before it is sent."""
    import sys

    from cloudpickle_rs.integrations import dask as cprs_dask

    other = "3.9" if sys.version_info[:2] != (3, 9) else "3.10"
    monkeypatch.delenv(_common.TARGET_PYTHON_ENV, raising=False)
    try:
        cprs_dask.install(by_source=False, target_python=other)
        assert cprs_dask.shim.dumps([1, "a"]) == cloudpickle_rs.dumps([1, "a"])
        with pytest.raises(pickle.PicklingError, match=f"bytecode for Python {other}"):
            cprs_dask.shim.dumps(lambda x: x + 1)
        cprs_dask.install(by_source=True)  # not given: the environment (unset: no check)
        assert pickle.loads(cprs_dask.shim.dumps(lambda x: x + 1))(1) == 2
        monkeypatch.setenv(_common.TARGET_PYTHON_ENV, other)
        cprs_dask.install(by_source=False)
        with pytest.raises(pickle.PicklingError, match=f"bytecode for Python {other}"):
            cprs_dask.shim.dumps(lambda x: x + 1)
        with pytest.raises(ValueError, match="target_python"):
            cprs_dask.install(target_python="py39")
    finally:
        monkeypatch.delenv(_common.TARGET_PYTHON_ENV, raising=False)
        cprs_dask.install(by_source=False)


def test_dask_shim_passes_by_source(monkeypatch):
    from cloudpickle_rs.integrations import dask as cprs_dask

    calls = []
    real = cloudpickle_rs.dumps
    monkeypatch.setattr(cloudpickle_rs, "dumps",
                        lambda obj, *a, **kw: calls.append(kw) or real(obj, *a, **kw))
    try:
        cprs_dask.install(by_source=False)
        data = cprs_dask.shim.dumps(lambda x: x + 1, protocol=5)
        assert pickle.loads(data)(1) == 2
        assert calls[-1] == {}
        cprs_dask.install(by_source="auto")
        cprs_dask.shim.dumps([1])
        assert calls[-1] == {"by_source": "auto"}
        assert cprs_dask.stats()["by_source"] == "auto"
        assert cprs_dask.stats()["counts"]["dumps"] >= 2
        # cloudpickle's other names resolve through the shim
        assert cprs_dask.shim.loads is pickle.loads
        assert cprs_dask.shim.list_registry_pickle_by_value is cloudpickle_rs.list_registry_pickle_by_value
    finally:
        cprs_dask.install(by_source=False)


def test_ray_pickler_options_and_dispatch(monkeypatch):
    from cloudpickle_rs.integrations import ray as cprs_ray

    monkeypatch.setitem(cprs_ray._state, "by_source", True)
    assert cprs_ray.pickler_options() == {"reconstructor_module": "ray.cloudpickle.cloudpickle",
                                          "by_source": True}
    monkeypatch.setitem(cprs_ray._state, "by_source", False)
    assert cprs_ray.pickler_options() == {"reconstructor_module": "ray.cloudpickle.cloudpickle"}
    monkeypatch.setitem(cprs_ray._state, "target_python", (3, 10))
    assert cprs_ray.pickler_options() == {"reconstructor_module": "ray.cloudpickle.cloudpickle",
                                          "target_python": (3, 10)}
    monkeypatch.setitem(cprs_ray._state, "target_python", None)
    # the dispatch table: what Ray registers, then copyreg's
    import copyreg

    class Handle:
        pass

    monkeypatch.setitem(cprs_ray.Pickler.dispatch, Handle, lambda h: (Handle, ()))
    assert cprs_ray.Pickler.dispatch[Handle] is not None
    for cls, reducer in copyreg.dispatch_table.items():
        assert cprs_ray.Pickler.dispatch[cls] is reducer
    with pytest.raises(KeyError):
        cprs_ray.Pickler.dispatch[io.BytesIO]
    assert cprs_ray.CloudPickler is cprs_ray.Pickler
    assert issubclass(cprs_ray.Pickler, cloudpickle_rs.Pickler)


def test_loky_pickler_options_and_dump(monkeypatch):
    from cloudpickle_rs.integrations import loky as cprs_loky

    monkeypatch.setitem(cprs_loky._state, "by_source", "auto")
    assert cprs_loky.pickler_options() == {"by_source": "auto"}
    monkeypatch.setitem(cprs_loky._state, "by_source", False)
    assert cprs_loky.pickler_options() == {}
    before = cprs_loky.stats()["dumps"]
    buf = io.BytesIO()
    k = 5
    # loky's way: a subclass __init__(writer, reducers, protocol) calling ours with (writer, protocol=)
    p = cprs_loky.Pickler(buf, protocol=5)
    p.dispatch_table = {complex: lambda c: (complex, (c.real, -c.imag))}
    p.dump([lambda x: x * k, 1 + 2j])
    f, c = pickle.loads(buf.getvalue())
    assert f(2) == 10 and c == 1 - 2j  # the instance dispatch_table was honoured
    assert cprs_loky.stats()["dumps"] == before + 1


def test_audit_catches_a_stock_dump():
    import cloudpickle

    from cloudpickle_rs.integrations import audit

    was_enabled = audit.enabled()  # importing the module enables it
    audit.enable()
    audit.reset()
    try:
        cloudpickle_rs.dumps(lambda: 1)
        assert audit.report()["stock_dumps"] == 0
        cloudpickle.dumps(lambda: 1)
        rep = audit.report()
        assert rep["stock_dumps"] == 1 and rep["stock_events"][0]["type"] == "builtins.function"
    finally:
        audit.reset()
        audit.disable()
    assert not getattr(cloudpickle.Pickler.dump, "_cloudpickle_rs_audit", False)
    assert was_enabled
