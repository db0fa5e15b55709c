"""Process pools of the standard library whose tasks travel with cloudpickle_rs.

``CloudProcessPoolExecutor`` is a ``concurrent.futures.ProcessPoolExecutor``: the same constructor
(plus cloudpickle_rs options), ``submit``, ``map``, ``shutdown``, context manager, under the
``fork``, ``spawn`` and ``forkserver`` start methods.  Lambdas, closures, ``__main__`` classes and
their instances go to workers and come back (a returned lambda, an instance of a ``__main__`` class,
an exception of a ``__main__`` class with the worker's traceback as ``__cause__``)::

    from cloudpickle_rs.integrations.executor import CloudProcessPoolExecutor
    with CloudProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        print(ex.submit(lambda x: x + 1, 41).result())

How: ``submit(fn, *args, **kwargs)`` pickles ``(fn, args, kwargs)`` with cloudpickle_rs into bytes
and submits ``_run_blob(blob)`` (a module-level function: the stdlib pool pickles only bytes and a
reference); the worker loads the blob with plain ``pickle.loads``, calls, and returns its result
pickled with cloudpickle_rs, which the parent loads.  ``multiprocessing.reduction.ForkingPickler``
is not touched: nothing else in the process changes.  ``initializer`` travels the same way.

``InterpreterPoolExecutor(python=...)`` runs the workers with *another interpreter* (PyPy 3.9,
another CPython) that has stock cloudpickle and not necessarily cloudpickle_rs: each worker is
``python _interpreter_worker.py`` (a stdlib-only loop run by path) speaking length-prefixed
pickles over pipes; it loads tasks with ``pickle.loads`` and pickles results with
cloudpickle_rs, else stock cloudpickle, else pickle.
Functions defined here reach another Python *version* only by source (``by_source=True``; with
bytecode they load only on the same CPython minor version); plain data and importable callables
(``sorted``, ``operator.add``, ...) work in any case.  Results come back pickled by the worker, so a
PyPy worker can return data, not functions.

Options of both: ``by_source`` (True, False, "auto"; None reads ``CLOUDPICKLE_RS_BY_SOURCE``),
``pickle_by_reference`` (cloudpickle_rs's callback), ``protocol`` and ``receiver`` (a
:class:`cloudpickle_rs.Receiver` describing the workers: a task it refuses raises at ``submit``,
in this process, and never reaches a worker).

The code: ``_process_pool.py`` (CloudProcessPoolExecutor and its worker-side functions),
``_interpreter_pool.py`` (InterpreterPoolExecutor), ``_interpreter_worker.py`` (the program its
workers run by path), ``_executor_common.py`` (options, task dumps, answers); this module
re-exports them.
"""
from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback  # noqa: F401

import cloudpickle_rs as _rs  # noqa: F401

from cloudpickle_rs.integrations._executor_common import (  # noqa: F401  (re-exported)
    _PARENT_ONLY, _counter, _dump_task, _load_exception, _options, _settle)
from cloudpickle_rs.integrations._interpreter_pool import (  # noqa: F401
    WORKER_PATH, WORKER_SOURCE, InterpreterPoolExecutor, _Worker, _with_timeout)
from cloudpickle_rs.integrations._process_pool import (  # noqa: F401
    CloudProcessPoolExecutor, _dump_exception, _dump_result, _ResultFuture, _run_blob,
    _run_initializer)

__all__ = ["CloudProcessPoolExecutor", "InterpreterPoolExecutor", "stats", "WORKER_SOURCE"]


def stats():
    """Dumps this process made for the executors (tasks in a parent, results in a worker)."""
    return _counter.snapshot()
