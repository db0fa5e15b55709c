"""``CloudProcessPoolExecutor``: see :mod:`cloudpickle_rs.integrations.executor`."""
from __future__ import annotations

import concurrent.futures as cf
import pickle
import traceback

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import audit_from_env
from cloudpickle_rs.integrations._executor_common import (_PARENT_ONLY, _counter, _dump_task,
                                                          _load_exception, _options, _settle)

__all__ = ["CloudProcessPoolExecutor"]

# ------------------------------------------------------------------------------------------
# Worker side of CloudProcessPoolExecutor (imported by reference in the worker).

def _dump_result(value, opts):
    _counter.add("results")
    return _rs.dumps(value, opts.get("protocol"),
                     **{k: v for k, v in opts.items() if k != "protocol" and k not in _PARENT_ONLY})


def _run_blob(blob, opts):
    """Runs in the worker: load ``(fn, args, kwargs)``, call, return ``(ok, payload)``."""
    audit_from_env()
    try:
        fn, args, kwargs = pickle.loads(blob)
        return True, _dump_result(fn(*args, **kwargs), opts)
    except BaseException as exc:  # travels back with its traceback text
        return False, _dump_exception(exc, traceback.format_exc(), opts)


def _dump_exception(exc, tb, opts):
    try:
        payload = _dump_result(exc, opts)
    except BaseException:
        payload = _dump_result(RuntimeError(f"{type(exc).__name__}: {exc}"), opts)
    return pickle.dumps((payload, tb))


def _run_initializer(blob):
    ok, payload = _run_blob(blob, {})
    if not ok:
        exc, _tb = _load_exception(payload)
        raise exc


class _ResultFuture(cf.Future):
    """What ``submit`` returns: completes with the loaded result of the pool's inner future."""

    def __init__(self, inner):
        super().__init__()
        self._inner = inner
        inner.add_done_callback(self._inner_done)

    def cancel(self):
        if not self._inner.cancel():
            return False
        return super().cancel()

    def _inner_done(self, inner):
        if inner.cancelled():
            cf.Future.cancel(self)
            return
        exc = inner.exception()
        if exc is not None:
            self.set_exception(exc)
            return
        _settle(self, inner.result())


class CloudProcessPoolExecutor(cf.ProcessPoolExecutor):
    """``ProcessPoolExecutor`` whose tasks, results and initializer travel with cloudpickle_rs."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None, by_source=None, pickle_by_reference=None,
                 protocol=None, receiver=None):
        self._cprs_opts = _options(by_source, pickle_by_reference, protocol, receiver=receiver)
        audit_from_env()
        if initializer is not None:
            initargs = (_dump_task(self._cprs_opts, initializer, tuple(initargs), {}),)
            initializer = _run_initializer
        extra = {} if max_tasks_per_child is None else {"max_tasks_per_child": max_tasks_per_child}
        super().__init__(max_workers, mp_context, initializer, initargs, **extra)

    def submit(self, fn, /, *args, **kwargs):
        blob = _dump_task(self._cprs_opts, fn, args, kwargs)
        worker_opts = {k: v for k, v in self._cprs_opts.items() if k not in _PARENT_ONLY}
        return _ResultFuture(super().submit(_run_blob, blob, worker_opts))

    submit.__doc__ = cf.ProcessPoolExecutor.submit.__doc__


# The pool pickles these by reference: under the public module's name, as before the split (the
# worker then imports cloudpickle_rs.integrations.executor, whose stats() the audit reports).
for _f in (_run_blob, _run_initializer):
    _f.__module__ = "cloudpickle_rs.integrations.executor"
del _f
