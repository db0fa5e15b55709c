"""``InterpreterPoolExecutor``: see :mod:`cloudpickle_rs.integrations.executor`."""
from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
import queue
import struct
import subprocess
import threading
from concurrent.futures.process import BrokenProcessPool

from cloudpickle_rs.integrations._executor_common import _dump_task, _options, _settle

__all__ = ["InterpreterPoolExecutor", "WORKER_PATH", "WORKER_SOURCE"]

#: The program each InterpreterPoolExecutor worker runs (``python WORKER_PATH PROTOCOL``): a
#: module file of Python 3.8+ syntax that imports only the standard library (it is run by path,
#: so the worker's interpreter needs no cloudpickle_rs).  Frames: 8-byte little-endian length,
#: then a pickle.  Task: ``(fn, args, kwargs)`` pickled by cloudpickle_rs.  Answer: ``(ok,
#: payload)`` as in CloudProcessPoolExecutor.
WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_interpreter_worker.py")

with open(WORKER_PATH, encoding="utf-8") as _f:
    #: The worker program's text (what :data:`WORKER_PATH` holds).
    WORKER_SOURCE = _f.read()
del _f

# ------------------------------------------------------------------------------------------
# InterpreterPoolExecutor: workers of another interpreter, stdlib only on their side.


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

    ``max_workers`` (default 2) workers start at once; each runs :data:`WORKER_PATH`.
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
        cmd = [self._python, *(["-I"] if isolated else []), WORKER_PATH, str(protocol)]
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
