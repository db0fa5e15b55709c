"""Shared plumbing of the integrations: the by_source option and per-process dump counters."""
from __future__ import annotations

import os
import threading

__all__ = ["BY_SOURCE_ENV", "resolve_by_source", "Counter"]

#: Environment variable read by every integration when its ``by_source`` option is not given.
BY_SOURCE_ENV = "CLOUDPICKLE_RS_BY_SOURCE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off", "none"}


def resolve_by_source(by_source=None):
    """The by_source value an integration passes to cloudpickle_rs: True, False or "auto".

    ``None`` means "not given": read :data:`BY_SOURCE_ENV` (unset means False).
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
    if by_source is True or by_source is False or by_source == "auto":
        return by_source
    raise ValueError(f"by_source must be True, False or 'auto', not {by_source!r}")


def dumps_kwargs(by_source):
    """Keyword arguments for ``cloudpickle_rs.dumps``/``Pickler``: by_source only when it is on,
    so a build without by_source keeps working with the option off."""
    return {"by_source": by_source} if by_source else {}


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
