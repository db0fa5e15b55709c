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
``python -c <stdlib-only loop>`` speaking length-prefixed pickles over pipes; it loads tasks with
``pickle.loads`` and pickles results with cloudpickle_rs, else stock cloudpickle, else pickle.
Functions defined here reach another Python *version* only by source (``by_source=True``; with
bytecode they load only on the same CPython minor version); plain data and importable callables
(``sorted``, ``operator.add``, ...) work in any case.  Results come back pickled by the worker, so a
PyPy worker can return data, not functions.

Options of both: ``by_source`` (True, False, "auto"; None reads ``CLOUDPICKLE_RS_BY_SOURCE``),
``pickle_by_reference`` (cloudpickle_rs's callback), ``protocol`` and ``receiver`` (a
:class:`cloudpickle_rs.Receiver` describing the workers: a task it refuses raises at ``submit``,
in this process, and never reaches a worker).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import traceback
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (Counter, audit_from_env, check_receiver,
                                                 check_target_python, dumps_kwargs,
                                                 resolve_by_source, resolve_target_python)

__all__ = ["CloudProcessPoolExecutor", "InterpreterPoolExecutor", "stats", "WORKER_SOURCE"]

_counter = Counter("executor")


def stats():
    """Dumps this process made for the executors (tasks in a parent, results in a worker)."""
    return _counter.snapshot()


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


def _load_exception(payload):
    data, tb = pickle.loads(payload)
    exc = pickle.loads(data)
    if isinstance(exc, BaseException):
        exc.__cause__ = _RemoteTraceback(tb)
    return exc, tb


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


def _settle(future, answer):
    ok, payload = answer
    try:
        if ok:
            future.set_result(pickle.loads(payload))
        else:
            future.set_exception(_load_exception(payload)[0])
    except BaseException as e:  # the answer itself did not load
        future.set_exception(e)


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


# ------------------------------------------------------------------------------------------
# InterpreterPoolExecutor: workers of another interpreter, stdlib only on their side.

#: The loop each InterpreterPoolExecutor worker runs (``python -c``): Python 3.8+ syntax, stdlib
#: only.  Frames: 8-byte little-endian length, then a pickle.  Task: ``(fn, args, kwargs)``
#: pickled by cloudpickle_rs.  Answer: ``(ok, payload)`` as in CloudProcessPoolExecutor.
WORKER_SOURCE = r'''
import os, pickle, struct, sys, traceback
chan_out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
sys.stdout = sys.stderr
chan_in = os.fdopen(os.dup(0), "rb")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
try:
    import cloudpickle_rs as _cp
    _PICKLER = "cloudpickle_rs"
except ImportError:
    try:
        import cloudpickle as _cp
        _PICKLER = "cloudpickle"
    except ImportError:
        _cp = pickle
        _PICKLER = "pickle"
PROTO = int(sys.argv[1])
def _dumps(obj):
    return _cp.dumps(obj, protocol=PROTO)
def _read(n):
    buf = b""
    while len(buf) < n:
        chunk = chan_in.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
def _send(obj):
    data = pickle.dumps(obj, protocol=PROTO)
    chan_out.write(struct.pack("<Q", len(data)) + data)
    chan_out.flush()
_send(("hello", {"pid": os.getpid(), "pickler": _PICKLER, "executable": sys.executable,
                 "version": list(sys.version_info[:3]),
                 "implementation": sys.implementation.name}))
while True:
    head = _read(8)
    if head is None:
        break
    blob = _read(struct.unpack("<Q", head)[0])
    if blob is None:
        break
    try:
        fn, args, kwargs = pickle.loads(blob)
        answer = (True, _dumps(fn(*args, **kwargs)))
    except BaseException as exc:
        tb = traceback.format_exc()
        try:
            data = _dumps(exc)
        except BaseException:
            data = _dumps(RuntimeError("%s: %s" % (type(exc).__name__, exc)))
        answer = (False, pickle.dumps((data, tb), protocol=PROTO))
    _send(answer)
'''

_STOP = object()


class _Worker:
    def __init__(self, cmd, env):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, start_new_session=True)
        self.info = None

    def send(self, blob):
        self.proc.stdin.write(struct.pack("<Q", len(blob)) + blob)
        self.proc.stdin.flush()

    def recv(self):
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise BrokenProcessPool(
                f"worker {self.proc.pid} ({self.proc.args[0]}) exited with code {self.proc.poll()}")
        n = struct.unpack("<Q", head)[0]
        data = self.proc.stdout.read(n)
        if len(data) < n:
            raise BrokenProcessPool(f"worker {self.proc.pid} closed its pipe mid-answer")
        return pickle.loads(data)


class InterpreterPoolExecutor(cf.Executor):
    """A pool of worker processes of another interpreter (``python``: path to its executable).

    ``max_workers`` (default 2) workers start at once; each runs :data:`WORKER_SOURCE`.
    ``env``: the workers' environment (default: ours without PYTHON* variables; with
    ``isolated=True``, the default, they also run with ``-I``).  ``protocol`` defaults to 4 so
    that older interpreters load the answers' framing.  ``target_python``: the Python the tasks
    are checked against when they are pickled (see ``cloudpickle_rs.dumps``); the default,
    ``"workers"``, is the version the workers report when they start, so syntax or bytecode they
    could not load is refused at ``submit`` with the function's name, never on the worker.
    ``None`` turns the check off.  ``receiver``: a :class:`cloudpickle_rs.Receiver` describing
    the workers (what they can import and must not run); its ``python``, when not given, is the
    workers' version as for ``target_python``.
    """

    def __init__(self, python, max_workers=2, *, by_source=None, pickle_by_reference=None,
                 protocol=4, env=None, isolated=True, start_timeout=60, target_python="workers",
                 receiver=None):
        self._python = os.fspath(python)
        from_workers = isinstance(target_python, str) and target_python == "workers"
        self._opts = _options(by_source, pickle_by_reference, protocol,
                              None if from_workers else target_python, receiver)
        if env is None:
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
        cmd = [self._python, *(["-I"] if isolated else []), "-c", WORKER_SOURCE, str(protocol)]
        self._queue = queue.Queue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken = None
        self._workers = [_Worker(cmd, env) for _ in range(max_workers)]
        self._threads = []
        try:
            for w in self._workers:
                kind, info = _with_timeout(w.recv, start_timeout, w)
                if kind != "hello":
                    raise BrokenProcessPool(f"unexpected first message from worker: {kind!r}")
                w.info = info
            if from_workers:
                versions = {tuple(w.info["version"][:2]) for w in self._workers}
                if len(versions) == 1:
                    self._opts["target_python"] = versions.pop()
        except BaseException:
            self._kill_all()
            raise
        for w in self._workers:
            t = threading.Thread(target=self._serve, args=(w,), daemon=True,
                                 name=f"InterpreterPoolExecutor-{w.proc.pid}")
            t.start()
            self._threads.append(t)

    @property
    def workers(self):
        """What each worker said when it started: pid, pickler, executable, version."""
        return [dict(w.info) for w in self._workers]

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            blob = _dump_task(self._opts, fn, args, kwargs)
            future = cf.Future()
            self._queue.put((future, blob))
            return future

    def _serve(self, worker):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, blob = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                worker.send(blob)
                answer = worker.recv()
            except BaseException as e:
                err = e if isinstance(e, BrokenProcessPool) else BrokenProcessPool(repr(e))
                future.set_exception(err)
                with self._lock:
                    self._broken = str(err)
                self._fail_pending(err)
                return
            _settle(future, answer)

    def _fail_pending(self, err):
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._queue.put(_STOP)
                return
            future, _ = item
            if future.set_running_or_notify_cancel():
                future.set_exception(err)

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            already = self._shutdown
            self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].cancel()
        if not already:
            for _ in self._threads:
                self._queue.put(_STOP)
        if wait:
            for t in self._threads:
                t.join()
            for w in self._workers:
                try:
                    w.proc.stdin.close()
                except OSError:
                    pass
                try:
                    w.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
                for f in (w.proc.stdout,):
                    f.close()

    def _kill_all(self):
        for w in self._workers:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()


def _with_timeout(fn, timeout, worker):
    box = {}

    def run():
        try:
            box["v"] = fn()
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        worker.proc.kill()
        t.join(5)
        raise BrokenProcessPool(f"worker {worker.proc.args[0]} did not start within {timeout}s")
    if "e" in box:
        raise box["e"]
    return box["v"]
