"""What both executors of :mod:`cloudpickle_rs.integrations.executor` share: the dump counter,
the options, the task dump, and how an answer ``(ok, payload)`` settles a future."""
from __future__ import annotations

import pickle
from concurrent.futures.process import _RemoteTraceback

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (Counter, check_receiver, check_target_python,
                                                 dumps_kwargs, resolve_by_source)

#: The executors' dump counts (``executor.stats()``: this module has no ``stats`` of its own, so
#: the audit reports them once, under "executor").
_counter = Counter("executor")


#: Options that stay in the submitting process (what the worker pickles results with is its own).
_PARENT_ONLY = ("pickle_by_reference", "receiver")


def _options(by_source, pickle_by_reference, protocol, target_python=None, receiver=None):
    opts = dumps_kwargs(resolve_by_source(by_source), check_target_python(target_python),
                        check_receiver(receiver))
    if pickle_by_reference is not None:
        opts["pickle_by_reference"] = pickle_by_reference
    return {"protocol": protocol, **opts}


def _dump_task(opts, fn, args, kwargs):
    _counter.add("tasks")
    return _rs.dumps((fn, args, kwargs), opts["protocol"],
                     **{k: v for k, v in opts.items() if k != "protocol"})


def _load_exception(payload):
    data, tb = pickle.loads(payload)
    exc = pickle.loads(data)
    if isinstance(exc, BaseException):
        exc.__cause__ = _RemoteTraceback(tb)
    return exc, tb


def _settle(future, answer):
    ok, payload = answer
    try:
        if ok:
            future.set_result(pickle.loads(payload))
        else:
            future.set_exception(_load_exception(payload)[0])
    except BaseException as e:  # the answer itself did not load
        future.set_exception(e)
