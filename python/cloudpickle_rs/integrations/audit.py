"""Catch dumps made by *stock* cloudpickle (or Ray's vendored copy) in this process.

An engine that was meant to pickle with cloudpickle_rs but still calls stock cloudpickle
somewhere (an uncovered Dask scheduler, a loky worker with the default pickler, ...) would ship
bytecode where by_source was asked for, silently.  ``enable()`` wraps ``Pickler.dump`` of stock
``cloudpickle`` (and of ``ray.cloudpickle`` and ``pyspark.cloudpickle`` when imported) so that every such dump is
recorded; ``report()`` returns what was seen, together with the counters of the cloudpickle_rs
integrations installed in this process.

Ways to turn it on in every process of a deployment:

- import it (it enables itself), e.g. as a Dask preload:
  ``--preload cloudpickle_rs.integrations.audit``;
- set ``CLOUDPICKLE_RS_AUDIT=1``: every ``install()`` of an integration then enables it;
- ``CLOUDPICKLE_RS_AUDIT=raise`` makes a stock dump raise ``StockDumpError`` instead.

Read the reports with e.g. ``client.run(audit.report)`` (Dask) or a Ray task calling ``report()``.
"""
from __future__ import annotations

import os
import sys
import threading
import traceback

__all__ = ["StockDumpError", "disable", "enable", "enabled", "report", "reset", "watch", "watch_ray",
           "watch_spark", "watch_beam", "dask_setup"]

AUDIT_ENV = "CLOUDPICKLE_RS_AUDIT"


class StockDumpError(RuntimeError):
    """A stock cloudpickle dump happened while the audit was in ``raise`` mode."""


_lock = threading.Lock()
_events = []
_count = {"n": 0}
_watched = {}
_state = {"enabled": False, "raise": False}
_MAX_EVENTS = 50


def _record(label, obj):
    stack = "".join(traceback.format_stack(limit=12)[:-1])
    event = {"pickler": label, "type": f"{type(obj).__module__}.{type(obj).__qualname__}",
             "stack": stack}
    with _lock:
        _count["n"] += 1
        if len(_events) < _MAX_EVENTS:
            _events.append(event)
    if _state["raise"]:
        raise StockDumpError(f"stock {label}.dump() called on a {event['type']} object while "
                             f"cloudpickle_rs was meant to pickle everything:\n{stack}")


def watch(cls, label):
    """Record every ``cls.dump`` call (``cls`` a stock pickler class).  Idempotent."""
    orig = cls.__dict__.get("dump") or cls.dump
    if getattr(orig, "_cloudpickle_rs_audit", False):
        return
    def dump(self, obj):  # noqa: E306
        _record(label, obj)
        return orig(self, obj)
    dump._cloudpickle_rs_audit = True
    dump.__wrapped__ = orig
    cls.dump = dump
    _watched[label] = cls


def watch_ray():
    """Watch Ray's vendored pickler too (when ``ray.cloudpickle`` is imported)."""
    mod = sys.modules.get("ray.cloudpickle.cloudpickle")
    if mod is not None:
        watch(mod.Pickler, "ray.cloudpickle.cloudpickle.Pickler")


def watch_spark():
    """Watch PySpark's vendored pickler too (when ``pyspark.cloudpickle`` is imported)."""
    mod = sys.modules.get("pyspark.cloudpickle.cloudpickle")
    if mod is not None:
        watch(mod.Pickler, "pyspark.cloudpickle.cloudpickle.Pickler")


def watch_beam():
    """Watch Beam's vendored pickler too (when ``apache_beam.internal.cloudpickle`` is imported)."""
    mod = sys.modules.get("apache_beam.internal.cloudpickle.cloudpickle")
    if mod is not None:
        watch(mod.Pickler, "apache_beam.internal.cloudpickle.cloudpickle.Pickler")


def enable(raise_on_stock=None):
    """Watch stock cloudpickle's pickler (and Ray's and PySpark's copies when imported)."""
    if raise_on_stock is None:
        raise_on_stock = os.environ.get(AUDIT_ENV, "").strip().lower() == "raise"
    _state["raise"] = bool(raise_on_stock)
    _state["enabled"] = True
    try:
        from cloudpickle import cloudpickle as stock
    except ImportError:
        stock = None
    # In PySpark's Python workers ``cloudpickle`` is PySpark's vendored copy (its directory is on
    # their sys.path), possibly still being imported here: watched when it has its Pickler.
    pickler = getattr(stock, "Pickler", None)
    if pickler is not None:
        watch(pickler, "cloudpickle.cloudpickle.Pickler")
    watch_ray()
    watch_spark()
    watch_beam()


def disable():
    """Stop watching: put the original ``dump`` methods back."""
    for label, cls in list(_watched.items()):
        dump = cls.__dict__.get("dump")
        if getattr(dump, "_cloudpickle_rs_audit", False):
            cls.dump = dump.__wrapped__
        del _watched[label]
    _state["enabled"] = False


def enabled():
    return _state["enabled"]


def report():
    """What this process saw: stock dumps (count and first events) and our integrations' counts."""
    integrations = {}
    for name, mod in list(sys.modules.items()):
        if name.startswith("cloudpickle_rs.integrations.") and hasattr(mod, "stats"):
            try:
                integrations[name.rsplit(".", 1)[1]] = mod.stats()
            except Exception as e:  # pragma: no cover - a report must not fail
                integrations[name.rsplit(".", 1)[1]] = {"error": repr(e)}
    with _lock:
        events = [dict(e) for e in _events]
        n = _count["n"]
    return {"pid": os.getpid(), "argv0": sys.argv[0] if sys.argv else "", "audit": _state["enabled"],
            "watched": sorted(_watched), "stock_dumps": n, "stock_events": events,
            "integrations": integrations}


def reset():
    with _lock:
        _events.clear()
        _count["n"] = 0


def dask_setup(server=None):
    """Dask preload entry point: importing this module already enabled the audit."""
    enable()


enable()
