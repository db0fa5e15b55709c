"""Shared plumbing of the integrations: the by_source option and per-process dump counters."""
from __future__ import annotations

import os
import threading

__all__ = ["BY_SOURCE_ENV", "TARGET_PYTHON_ENV", "resolve_by_source", "resolve_target_python", "check_receiver",
           "path_into_message",
           "Counter"]

#: Environment variable read by every integration when its ``by_source`` option is not given.
BY_SOURCE_ENV = "CLOUDPICKLE_RS_BY_SOURCE"
#: Environment variable read by every integration when its ``target_python`` option is not given:
#: the workers' Python as "3.10" (unset or empty: no check).
TARGET_PYTHON_ENV = "CLOUDPICKLE_RS_TARGET_PYTHON"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off", "none"}


def resolve_by_source(by_source=None):
    """The by_source value an integration passes to cloudpickle_rs: True, False or "auto".

    ``None`` means "not given": read :data:`BY_SOURCE_ENV` (unset means False). A value given
    is read by the native parser, the one ``dumps`` and ``Pickler`` use, so an integration
    accepts exactly what the pickler accepts.
    """
    if by_source is None:
        raw = os.environ.get(BY_SOURCE_ENV, "")
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        if value == "auto":
            return "auto"
        raise ValueError(f"{BY_SOURCE_ENV}={raw!r}: expected 1/true, 0/false or auto")
    from cloudpickle_rs import _native

    return _native._by_source_value(by_source)


def resolve_target_python(target_python=None):
    """The target_python an integration passes to cloudpickle_rs: None (no check), a "3.X"
    string or a (major, minor) tuple.  ``None`` means "not given": read
    :data:`TARGET_PYTHON_ENV`.  The value itself is checked where it is used (the first dump
    raises ``ValueError`` on a malformed one), so the rules live in one place."""
    if target_python is None:
        raw = os.environ.get(TARGET_PYTHON_ENV, "").strip()
        return raw or None
    return target_python


def dumps_kwargs(by_source, target_python=None, receiver=None):
    """Keyword arguments for ``cloudpickle_rs.dumps``/``Pickler``: by_source only when it is on,
    so a build without by_source keeps working with the option off; target_python and receiver
    only when set."""
    kwargs = {"by_source": by_source} if by_source else {}
    if target_python is not None:
        kwargs["target_python"] = target_python
    if receiver is not None:
        kwargs["receiver"] = receiver
    return kwargs


def check_receiver(receiver, framework_modules=()):
    """The receiver an integration passes on: a :class:`cloudpickle_rs.Receiver` (or None),
    with the framework's own modules added (its workers import them: a Dask worker has dask
    and distributed). ``TypeError`` now, at install time, for anything else."""
    if receiver is None:
        return None
    from cloudpickle_rs import Receiver

    if not isinstance(receiver, Receiver):
        raise TypeError(f"receiver must be a cloudpickle_rs.Receiver or None, not {type(receiver).__name__}")
    return receiver.with_modules(*framework_modules)


def check_target_python(target_python):
    """Raise ``ValueError`` now (at install time) for a target_python the pickler would refuse."""
    if target_python is not None:
        import cloudpickle_rs

        cloudpickle_rs.dumps(None, target_python=target_python)
    return target_python


class Counter:
    """Thread-safe counts of the dumps an integration routed through cloudpickle_rs."""

    def __init__(self, engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._counts = {}

    def add(self, what="dumps", n=1):
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + n

    def snapshot(self):
        with self._lock:
            counts = dict(self._counts)
        return {"engine": self.engine, "pid": os.getpid(), "counts": counts,
                "dumps": sum(counts.values())}

    def reset(self):
        with self._lock:
            self._counts.clear()


def audit_from_env():
    """Enable :mod:`cloudpickle_rs.integrations.audit` when ``CLOUDPICKLE_RS_AUDIT`` is set."""
    value = os.environ.get("CLOUDPICKLE_RS_AUDIT", "").strip().lower()
    if value and value not in ("0", "false", "no", "off"):
        from cloudpickle_rs.integrations import audit

        audit.enable(raise_on_stock=(value == "raise"))


def path_into_message(exc):
    """Put the path to the failing object (the last of cloudpickle_rs's notes) into the message.

    Engines report a pickling failure with ``str(exc)`` only: Beam as ``RuntimeError("Unable to
    pickle fn X: <str(exc)>")``, PySpark as ``PicklingError("Could not serialize object:
    TypeError: <str(exc)>")``, which drops the notes, so the user would not see which attribute
    failed.  After: "cannot pickle 'sqlite3.Connection' object; path to the object that failed,
    from the HoldsConnection being pickled: obj (HoldsConnection state)['conn']"."""
    from cloudpickle_rs import PayloadTooLargeError, PicklingProhibitedError

    if isinstance(exc, (PicklingProhibitedError, PayloadTooLargeError)):
        return exc  # a receiver's refusal names the path already
    notes = [n for n in getattr(exc, "__notes__", ()) if n.startswith("path to the object that failed")]
    if notes and len(exc.args) == 1 and isinstance(exc.args[0], str) and notes[-1] not in exc.args[0]:
        exc.args = (f"{exc.args[0]}; {notes[-1]}",)
    return exc
