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
                                                 check_receiver, dumps_kwargs, resolve_by_source)

__all__ = ["Pickler", "dumps", "loads", "install", "stats", "MODULE_NAME"]

MODULE_NAME = __name__
_counter = Counter("loky")
_state = {"by_source": None, "receiver": None}


def _by_source():
    if _state["by_source"] is None:
        _state["by_source"] = resolve_by_source(None)
    return _state["by_source"]


def pickler_options():
    """The cloudpickle_rs options of every loky pickle made through this module."""
    return dumps_kwargs(_by_source(), receiver=_state["receiver"])


def _is_task(obj):
    """A loky work item (``_CallItem``: the function, its arguments) as opposed to loky's own
    plumbing (the worker process object with its queues and locks, spawn preparation data,
    control messages), which goes to the worker processes loky starts and is not the user's."""
    cls = type(obj)
    return cls.__name__ == "_CallItem" and cls.__module__.endswith("loky.process_executor")


class Pickler(_rs.Pickler):
    """cloudpickle_rs's pickler with the by_source option, the receiver check of tasks and a
    dump counter."""

    def __init__(self, file, protocol=None, **kwargs):
        options = pickler_options()
        self._cprs_receiver = options.pop("receiver", None)
        for key, value in options.items():
            kwargs.setdefault(key, value)
        self._cprs_args = (file, protocol, kwargs)
        super().__init__(file, protocol, **kwargs)

    def dump(self, obj):
        _counter.add("dumps")
        if self._cprs_receiver is not None and _is_task(obj):
            # The same dump under the receiver: a task it refuses raises here, in the parent.
            file, protocol, kwargs = self._cprs_args
            checked = _rs.Pickler(file, protocol, receiver=self._cprs_receiver, **kwargs)
            checked.dispatch_table = self.dispatch_table
            return checked.dump(obj)
        return super().dump(obj)


def dumps(obj, protocol=None, buffer_callback=None):
    import io

    with io.BytesIO() as f:
        Pickler(f, protocol, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


loads = pickle.loads


def install(by_source=None, joblib=True, receiver=None):
    """Make loky (and joblib's vendored loky) pickle with this module's Pickler.

    ``by_source``: True, False, "auto", or None for ``CLOUDPICKLE_RS_BY_SOURCE``.  A value given
    here is also written to ``CLOUDPICKLE_RS_BY_SOURCE`` in ``os.environ`` so that workers
    started afterwards use the same mode.  ``receiver``: a :class:`cloudpickle_rs.Receiver`
    describing the workers (loky and joblib are added to its modules): a task it refuses raises
    in this process when it is submitted.  It applies to this process's pickles only (the
    workers pickle their results without it).  Returns the loky modules switched.
    """
    resolved = resolve_by_source(by_source)
    _state["receiver"] = check_receiver(receiver, ("loky", "joblib"))
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
