"""Dask and distributed pickle with cloudpickle_rs.

Importing this module installs it (``install()`` with the by_source option from the environment
variable ``CLOUDPICKLE_RS_BY_SOURCE``).  It replaces the ``cloudpickle`` module that Dask's
pickling code calls, in the places that call it:

- ``distributed.protocol.pickle`` (tasks, results, ``client.run`` functions, anything distributed
  serialises with pickle: the client, the scheduler, which re-pickles every task it sends to a
  worker, and the workers, which pickle results);
- ``dask.tokenize`` (tokens of objects defined in ``__main__``);
- ``dask.multiprocessing`` (the default ``func_dumps`` of the multiprocessing scheduler).

Every process that pickles must have it, so use it as a Dask preload everywhere::

    export DASK_DISTRIBUTED__CLIENT__PRELOAD='["cloudpickle_rs.integrations.dask"]'
    export DASK_DISTRIBUTED__SCHEDULER__PRELOAD='["cloudpickle_rs.integrations.dask"]'
    export DASK_DISTRIBUTED__WORKER__PRELOAD='["cloudpickle_rs.integrations.dask"]'
    # or: dask scheduler --preload cloudpickle_rs.integrations.dask
    #     dask worker tcp://... --preload cloudpickle_rs.integrations.dask
    # or in Python: LocalCluster(preload=[...], scheduler_kwargs={"preload": [...]})

Receivers need only stock cloudpickle (streams name ``cloudpickle.cloudpickle`` reconstructors);
a worker without this preload still loads what it receives, but pickles its results with stock
cloudpickle.  by_source: ``install(by_source=True)`` or ``CLOUDPICKLE_RS_BY_SOURCE=1`` in every
process (the variable reaches LocalCluster workers, which inherit the environment).
"""
from __future__ import annotations

import functools
import pickle
import sys
import types

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (Counter, audit_from_env, check_receiver, check_target_python,
                                                 dumps_kwargs, resolve_by_source,
                                                 resolve_target_python)

__all__ = ["install", "uninstall", "installed", "stats", "dask_setup", "shim"]

_counter = Counter("dask")
_state = {"by_source": False, "target_python": None, "receiver": None, "installed": False, "saved": []}

# Where Dask looks up the `cloudpickle` module by attribute at call time.
_TARGET_MODULES = ("distributed.protocol.pickle", "dask.tokenize", "dask.multiprocessing")


def _dumps(obj, protocol=None, buffer_callback=None, **kwargs):
    _counter.add("dumps")
    kwargs.update(dumps_kwargs(_state["by_source"], _state["target_python"], _state["receiver"]))
    return _rs.dumps(obj, protocol, buffer_callback, **kwargs)


def _dump(obj, file, protocol=None, buffer_callback=None, **kwargs):
    _counter.add("dump")
    kwargs.update(dumps_kwargs(_state["by_source"], _state["target_python"], _state["receiver"]))
    return _rs.dump(obj, file, protocol, buffer_callback, **kwargs)


class _Shim(types.ModuleType):
    """Stands in for the ``cloudpickle`` module inside Dask: cloudpickle's names, our dumps."""

    def __getattr__(self, name):
        return getattr(_rs, name)


shim = _Shim("cloudpickle", "cloudpickle_rs standing in for cloudpickle inside Dask")
shim.dumps = _dumps
shim.dump = _dump
shim.loads = pickle.loads
shim.load = pickle.load
shim.__version__ = "3.1.2"


def _patch(module, name, value):
    old = module.__dict__.get(name, _MISSING)
    _state["saved"].append((module, name, old))
    setattr(module, name, value)


_MISSING = object()


def _patch_module(modname):
    mod = sys.modules.get(modname)
    if mod is None:
        try:
            __import__(modname)
        except ImportError:
            return False
        mod = sys.modules[modname]
    if "cloudpickle" in mod.__dict__:
        _patch(mod, "cloudpickle", shim)
    if modname == "dask.multiprocessing" and "_dumps" in mod.__dict__:
        _patch(mod, "_dumps", functools.partial(_dumps, protocol=pickle.HIGHEST_PROTOCOL))
    return True


def install(by_source=None, target_python=None, receiver=None):
    """Route Dask's and distributed's pickling in this process through cloudpickle_rs.

    ``by_source``: True, False, "auto", or None for ``CLOUDPICKLE_RS_BY_SOURCE``.
    ``target_python``: the workers' Python ("3.10" or (3, 10)), or None for
    ``CLOUDPICKLE_RS_TARGET_PYTHON``; a task whose code that Python cannot load is refused when
    it is pickled, on the client.  ``receiver``: a :class:`cloudpickle_rs.Receiver` describing
    the workers (dask, distributed and toolz are added to its modules); tasks it refuses raise
    on the client.  Calling it again changes the options.  Returns the list of modules patched.
    """
    _state["by_source"] = resolve_by_source(by_source)
    _state["target_python"] = check_target_python(resolve_target_python(target_python))
    _state["receiver"] = check_receiver(receiver, ("dask", "distributed", "toolz", "tlz", "msgpack"))
    audit_from_env()
    patched = []
    if not _state["installed"]:
        for modname in _TARGET_MODULES:
            if _patch_module(modname):
                patched.append(modname)
        _state["installed"] = True
        _state["modules"] = patched
    return list(_state.get("modules", []))


def uninstall():
    """Put Dask's own ``cloudpickle`` references back."""
    while _state["saved"]:
        module, name, old = _state["saved"].pop()
        if old is _MISSING:
            module.__dict__.pop(name, None)
        else:
            setattr(module, name, old)
    _state["installed"] = False
    _state["modules"] = []


def installed():
    return _state["installed"]


def stats():
    """Counts of the dumps Dask made through cloudpickle_rs in this process (and the options)."""
    out = _counter.snapshot()
    out.update(installed=_state["installed"], by_source=_state["by_source"],
               modules=list(_state.get("modules", [])))
    return out


def dask_setup(server=None):
    """Dask preload hook (client, scheduler, worker or nanny): installing happened on import."""
    if not _state["installed"]:
        install()


install()
