"""loky and joblib pickle with cloudpickle_rs.

Plain cloudpickle_rs already works as loky's pickler, with no import of this module::

    LOKY_PICKLER=cloudpickle_rs python app.py           # loky and joblib's vendored loky
    loky.set_loky_pickler("cloudpickle_rs")             # or in code, before submitting

(loky subclasses ``cloudpickle_rs.Pickler`` as ``(writer, protocol=...)`` and gives it a
``dispatch_table`` holding copyreg's, loky's and the executor's ``job_reducers``, which
cloudpickle_rs honours on top of its own handling of functions, classes, code and cells.)

This module is a loky pickler module too (``LOKY_PICKLER=cloudpickle_rs.integrations.loky``) that
adds what the plain one lacks: the ``by_source`` option (from ``CLOUDPICKLE_RS_BY_SOURCE``, in the
parent and in workers) and a per-process count of the dumps it made (``stats()``).  ``install()``
selects it in ``loky`` and in ``joblib.externals.loky``.  loky workers select the parent's pickler
by name when they run a task, so they use it too.
"""
from __future__ import annotations

import os
import pickle

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (BY_SOURCE_ENV, Counter, audit_from_env,
                                                 dumps_kwargs, resolve_by_source)

__all__ = ["Pickler", "dumps", "loads", "install", "stats", "MODULE_NAME"]

MODULE_NAME = __name__
_counter = Counter("loky")
_state = {"by_source": None}


def _by_source():
    if _state["by_source"] is None:
        _state["by_source"] = resolve_by_source(None)
    return _state["by_source"]


def pickler_options():
    """The cloudpickle_rs options of every loky pickle made through this module."""
    return dumps_kwargs(_by_source())


class Pickler(_rs.Pickler):
    """cloudpickle_rs's pickler with the by_source option and a dump counter."""

    def __init__(self, file, protocol=None, **kwargs):
        for key, value in pickler_options().items():
            kwargs.setdefault(key, value)
        super().__init__(file, protocol, **kwargs)

    def dump(self, obj):
        _counter.add("dumps")
        return super().dump(obj)


def dumps(obj, protocol=None, buffer_callback=None):
    import io

    with io.BytesIO() as f:
        Pickler(f, protocol, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


loads = pickle.loads


def install(by_source=None, joblib=True):
    """Make loky (and joblib's vendored loky) pickle with this module's Pickler.

    ``by_source``: True, False, "auto", or None for ``CLOUDPICKLE_RS_BY_SOURCE``.  A value given
    here is also written to ``CLOUDPICKLE_RS_BY_SOURCE`` in ``os.environ`` so that workers
    started afterwards use the same mode.  Returns the loky modules switched.
    """
    resolved = resolve_by_source(by_source)
    _state["by_source"] = resolved
    if by_source is not None:
        os.environ[BY_SOURCE_ENV] = {True: "1", False: "0", "auto": "auto"}[resolved]
    audit_from_env()
    switched = []
    targets = ["loky.backend.reduction"]
    if joblib:
        targets.append("joblib.externals.loky.backend.reduction")
    for modname in targets:
        try:
            reduction = __import__(modname, fromlist=["set_loky_pickler"])
        except ImportError:
            continue
        reduction.set_loky_pickler(MODULE_NAME)
        switched.append(modname)
    return switched


def stats():
    out = _counter.snapshot()
    out.update(by_source=_by_source())
    return out
