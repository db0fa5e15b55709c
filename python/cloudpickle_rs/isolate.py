"""cloudpickle_rs.isolate: a proxy class whose instances live in a child interpreter (issue 10).

The child runs ``_isolate_child.py`` (stdlib + stock cloudpickle) over two pipes; the protocol is
described at the top of that file. Values go by pickle (``by_source`` when the child's version
differs); objects of the protected module tree, unpicklable values and values chosen for the
"reference" transport go as handles, in both directions. While the parent waits for a reply it
serves the child's calls on parent handles, so callbacks nest.
"""
import io
import os
import pickle
import struct
import sys
import weakref
from pathlib import Path

from cloudpickle_rs._native import Pickler as _Pickler

__all__ = [
    "isolate",
    "method",
    "ModuleLeakError",
    "RemoteError",
    "BatchError",
    "ChildDiedError",
    "IsolateProtocolError",
]

_CHILD = str(Path(__file__).with_name("_isolate_child.py"))
_HDR = struct.Struct("<QQB")  # payload length, request id, kind (see _isolate_child.py)
_KIND = {"req": 0, "ok": 1, "err": 1, "rel": 2}
#: per-call keyword that picks the transport of that call's arguments ("value" or "reference");
#: it is removed from the keyword arguments before the call reaches the child.
OVERRIDE_KW = "_isolate_transport"
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


class ModuleLeakError(RuntimeError):
    """The protected module tree is already imported in this process."""


class ChildDiedError(RuntimeError):
    """The child process exited while a call was pending or before a call."""


class IsolateProtocolError(RuntimeError):
    """The child sent something that is not a message of the protocol."""


class RemoteError(Exception):
    """An exception raised in the child."""

    def __init__(self, remote_type_name, remote_message, remote_traceback):
        super().__init__(f"{remote_type_name}: {remote_message}\n--- remote traceback ---\n{remote_traceback}")
        self.remote_type_name = remote_type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class BatchError(RemoteError):
    """A call of ``.batch`` raised: ``results`` holds the results of the calls before it and
    ``index`` the position of the failing call."""

    def __init__(self, remote_type_name, remote_message, remote_traceback, results):
        super().__init__(remote_type_name, remote_message, remote_traceback)
        self.results = results
        self.index = len(results)


class _ByRef:
    """Marks an argument to travel as a parent handle."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj


class _FromChild(pickle.Unpickler):
    """Reads one message of the child: its handles become proxies of `session`; a reference to
    the protected tree by value is refused (it would import the tree here)."""

    def __init__(self, file, session):
        super().__init__(file)
        self.session = session

    def persistent_load(self, pid):
        if pid[0] == "shma":
            return self.session.shmio.take(*pid[1:5])
        if pid[0] == "shm":
            return self.session.shmio.take_oneoff(*pid[1:4])
        if pid[0] == "mine":
            return self.session.handle(pid[1], pid[2], pid[3])
        if pid[0] == "yours":
            try:
                return self.session.exports[pid[1]][0]
            except KeyError:
                raise IsolateProtocolError(f"the child used a released parent handle {pid[1]}") from None
        raise IsolateProtocolError(f"unexpected persistent id {pid!r}")

    def find_class(self, module, name):
        if any(module == top or module.startswith(top + ".") for top in self.session.tops):
            raise ModuleLeakError(f"the child sent a reference to {module}.{name} by value")
        return super().find_class(module, name)


class _ToChild(_Pickler):
    """Writes one message for the child: a proxy goes as the child's own handle, a _ByRef as a
    parent handle."""

    def persistent_id(self, obj):
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= _SHM_MIN and self.isolate_session.shm:
            pid = self.isolate_session.shmio.put(obj, t.__name__)
            if pid[0] == "shm":
                self.isolate_segments.append(pid[1])
            return pid
        if isinstance(obj, _RemoteObject):
            hid = object.__getattribute__(obj, "_isolate_hid")
            if hid is None:
                raise ValueError("this proxy was closed")
            return ("yours", hid)
        if type(obj) is _ByRef:
            hid = self.isolate_session.export(obj.obj)
            self.isolate_made.append(hid)
            return ("mine", hid)
        return None


class _Session:
    def __init__(self, python, top, path, transport, type_rules):
        import subprocess  # lazily: `import cloudpickle_rs` stays cheap

        rp, cw = os.pipe()  # child -> parent
        cr, pw = os.pipe()  # parent -> child
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        entries = [str(p) for p in (path or [])]
        if main:
            entries.append(os.path.dirname(os.path.abspath(main)))
        entries.append(os.getcwd())
        self.proc = subprocess.Popen([str(python), _CHILD, str(cr), str(cw), top, *entries], pass_fds=(cr, cw))
        os.close(cr)
        os.close(cw)
        self.rfd, self.wfd, self.tops, self.next_id = rp, pw, (top,), 1
        self.python, self.shm, self.users = python, False, 0
        self.shmio = _helpers()["Shm"]()
        import threading

        self.lock = threading.RLock()
        self.transport = transport
        self.type_rules = dict(type_rules or {})
        self.handles = {}  # child hid -> (weakref to proxy, [copies received])
        self.methods = {}  # child type key -> method names
        self.pending = []  # (hid, count): child handles to release with the next message
        self.exports = {}  # parent hid -> [obj, copies sent and not yet released]
        self.export_ids = {}
        self.next_export = 1
        self._finalizer = weakref.finalize(self, _stop, self.proc, rp, pw, self.shmio)
        try:
            _, _, version, impl, pid, child_shm = self._recv()
        except _LoadFailed as failed:
            raise failed.exc from (None if failed.__cause__ is failed.exc else failed.__cause__)
        self.by_source = tuple(version[:2]) != tuple(sys.version_info[:2]) or impl != sys.implementation.name
        shm = bool(child_shm and _has_shm())
        self._request("config", {"shm": shm, "cross": self.by_source})
        self.shm = shm

    def protect(self, top):
        if top not in self.tops:
            self.request("protect", top)
            self.tops = self.tops + (top,)

    # -- framing ---------------------------------------------------------------------------
    def _recv(self):
        """The next message; a payload that cannot be loaded raises _LoadFailed (the frame was
        read whole, so the stream stays in sync)."""
        n, rid, kind = _HDR.unpack(self._read(_HDR.size))
        data = self._read(n)
        self.shmio.reset()  # the child has loaded everything we sent: our arena is free
        try:
            return _FromChild(io.BytesIO(data), self).load()
        except (ModuleLeakError, IsolateProtocolError) as exc:
            raise _LoadFailed(rid, kind, exc) from exc
        except Exception as exc:
            raise _LoadFailed(rid, kind, IsolateProtocolError(f"cannot load the child's message: {exc!r}")) from exc

    def _read(self, n):
        chunks = []
        while n:
            b = os.read(self.rfd, min(n, 1 << 20))
            if not b:
                self.proc.poll()
                raise ChildDiedError(f"the child process {self.proc.pid} died (exit code {self.proc.returncode})")
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def _encode(self, msg):
        buf = io.BytesIO()
        p = _ToChild(buf, protocol=5, by_source=self.by_source)
        p.isolate_session, p.isolate_made, p.isolate_segments = self, [], []
        try:
            p.dump(msg)
        except BaseException:
            for hid in p.isolate_made:
                self._release_export(hid, 1)
            for name in p.isolate_segments:
                _shm_unlink(name)
            raise
        data = buf.getvalue()
        return _HDR.pack(len(data), msg[1], _KIND[msg[0]]) + data

    def _write(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.wfd, view):]
        except BrokenPipeError as exc:
            self.proc.poll()
            raise ChildDiedError(f"the child process {self.proc.pid} died") from exc

    def _send(self, msg):
        if not self._finalizer.alive:
            raise ChildDiedError("the isolate session is closed")
        data = self._encode(msg)
        if self.pending:
            pending, self.pending = self.pending, []
            data = self._encode(("rel", 0, pending)) + data
        self._write(data)

    # -- handles ---------------------------------------------------------------------------
    def handle(self, hid, tkey, names, cls=None):
        if names is not None:
            self.methods[tkey] = frozenset(names)
        entry = self.handles.get(hid)
        obj = entry[0]() if entry is not None else None
        if obj is None:
            obj = object.__new__(cls or _RemoteObject)
            cell = [0]
            object.__setattr__(obj, "_isolate_session", self)
            object.__setattr__(obj, "_isolate_hid", hid)
            object.__setattr__(obj, "_isolate_tkey", tkey)
            object.__setattr__(obj, "_isolate_fin", weakref.finalize(obj, self._dropped, hid, cell))
            entry = self.handles[hid] = (weakref.ref(obj), cell)
        entry[1][0] += 1
        return obj

    def _dropped(self, hid, cell):
        # runs when a proxy is collected or closed: queue the release (sending here could
        # interleave with a frame being written), it goes out in front of the next message
        entry = self.handles.get(hid)
        if entry is not None and entry[1] is cell:
            del self.handles[hid]
        if self._finalizer.alive:
            self.pending.append((hid, cell[0]))

    def export(self, obj):
        hid = self.export_ids.get(id(obj))
        if hid is None:
            hid = self.next_export
            self.next_export += 1
            self.exports[hid] = [obj, 0]
            self.export_ids[id(obj)] = hid
        self.exports[hid][1] += 1
        return hid

    def _release_export(self, hid, n):
        entry = self.exports.get(hid)
        if entry is not None:
            entry[1] -= n
            if entry[1] <= 0:
                del self.exports[hid]
                self.export_ids.pop(id(entry[0]), None)

    # -- transport policy ------------------------------------------------------------------
    def policy_for(self, value, override=None):
        if override is not None:
            if override not in ("value", "reference"):
                raise ValueError(f"{OVERRIDE_KW} must be 'value' or 'reference', got {override!r}")
            return override, f"per-call {OVERRIDE_KW}={override!r}"
        for klass in type(value).__mro__:
            rule = self.type_rules.get(klass)
            if rule is not None:
                return rule, f"type_rules[{klass.__module__}.{klass.__qualname__}]"
        if self.transport == "reference" and isinstance(value, _SCALARS):
            return "value", "scalar (the reference transport sends scalars by value)"
        return self.transport, f"session default transport={self.transport!r}"

    def _wrap(self, value, override):
        if isinstance(value, _RemoteObject):
            return value
        return _ByRef(value) if self.policy_for(value, override)[0] == "reference" else value

    def _args(self, args, kwargs, override):
        if override is None and not self.type_rules and self.transport == "value":
            return args, kwargs
        return tuple(self._wrap(a, override) for a in args), {k: self._wrap(v, override) for k, v in kwargs.items()}

    def _picklable(self, value):
        try:
            self._encode(value)
            return True
        except Exception:  # noqa: BLE001
            return False

    def _fallback(self, value):
        if isinstance(value, (_RemoteObject, _ByRef)) or self._picklable(value):
            return value
        return _ByRef(value)

    # -- requests --------------------------------------------------------------------------
    def call(self, op, fixed, args=(), kwargs=None, override=None):
        """Request `op` with arguments `fixed + (args, kwargs)` after the transport policy."""
        kwargs = kwargs or {}
        a, kw = self._args(args, kwargs, override)
        try:
            return self.request(op, *fixed, a, kw)
        except _Unpicklable:
            a = tuple(self._fallback(x) for x in a)
            kw = {k: self._fallback(v) for k, v in kw.items()}
            try:
                return self.request(op, *fixed, a, kw)
            except _Unpicklable as exc:
                raise exc.__cause__ from None

    def request(self, op, *args):
        # one thread at a time talks to the child; the lock is re-entrant because a callback
        # served on this thread may call the child again
        with self.lock:
            return self._request(op, *args)

    def _request(self, op, *args):
        rid = self.next_id
        self.next_id += 1
        try:
            self._send(("req", rid, op, args))
        except ChildDiedError:
            raise
        except Exception as exc:
            raise _Unpicklable() from exc
        while True:
            try:
                reply = self._recv()
            except _LoadFailed as failed:
                if failed.kind == 0:  # a callback request we cannot load: the child gets the error
                    import traceback

                    tb = "".join(traceback.format_exception(type(failed.exc), failed.exc, failed.__cause__.__traceback__))
                    self._send(("err", failed.rid, type(failed.exc).__name__, str(failed.exc), tb))
                    continue
                if failed.kind == 1 and failed.rid == rid:
                    raise failed.exc from (None if failed.__cause__ is failed.exc else failed.__cause__)
                continue
            kind = reply[0] if isinstance(reply, tuple) and reply else None
            if kind == "req":
                self._serve(reply)
                continue
            if kind == "rel":
                for hid, n in reply[2]:
                    self._release_export(hid, n)
                continue
            if kind not in ("ok", "err") or reply[1] != rid:
                raise IsolateProtocolError(f"unexpected reply {reply!r:.200}")
            if kind == "ok":
                return reply[2]
            raise RemoteError(*reply[2:5])

    def _serve(self, msg):
        import traceback

        _, rid, op, args = msg
        try:
            if op == "call":
                obj, a, kw = args
                result = obj(*a, **kw)
            elif op == "callmethod":
                obj, name, a, kw = args
                result = getattr(obj, name)(*a, **kw)
            elif op == "getattr":
                obj, name = args
                value = getattr(obj, name)
                result = ("m", None) if callable(value) and not isinstance(value, type) else ("v", value)
            else:
                raise ValueError(f"unknown op {op!r}")
        except BaseException as exc:  # noqa: BLE001 - the error goes back to the child
            self._send(("err", rid, type(exc).__name__, str(exc), traceback.format_exc()))
            return
        try:
            self._send(("ok", rid, result))
        except ChildDiedError:
            raise
        except Exception:  # noqa: BLE001 - an unpicklable result goes as a handle
            self._send(("ok", rid, _ByRef(result)))

    def close(self):
        self._finalizer()


_SHM_MIN = 64 * 1024  # bytes/bytearray at least this big travel through shared memory


def _has_shm():
    try:
        import _posixshmem  # noqa: F401
    except ImportError:
        return False
    return True


# the parent's shared-memory helpers are the child's (one copy of the code, stdlib only)
_child_mod = None


def _helpers():
    global _child_mod
    if _child_mod is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_cloudpickle_rs_isolate_shm", _CHILD)
        src = Path(_CHILD).read_text()
        start, end = src.index("def shm_put(data):"), src.index("class RemoteError(Exception):")
        ns = {"os": os, "__name__": spec.name, "object": object}
        exec(compile(src[start:end], _CHILD, "exec"), ns)  # noqa: S102 - our own file
        _child_mod = ns
    return _child_mod


def _shm_unlink(name):
    _helpers()["shm_unlink"](name)


class _Unpicklable(Exception):
    pass


class _LoadFailed(Exception):
    def __init__(self, rid, kind, exc):
        super().__init__(rid, kind, exc)
        self.rid, self.kind, self.exc = rid, kind, exc


def _stop(proc, rfd, wfd, shmio):
    import subprocess

    try:
        os.close(wfd)  # EOF: the child's loop returns
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    os.close(rfd)
    peer = shmio.peer_name
    shmio.close()
    if peer is not None:  # the child unlinks its arena at exit; not if it was killed
        _shm_unlink(peer)


class _Close:
    """``Remote.close()`` stops the child; ``obj.close()`` releases that instance in the child.
    A target's own method named ``close`` is reached with ``isolate.method(obj, "close")()``."""

    def __get__(self, obj, cls=None):
        if obj is None:
            close = getattr(cls, "_isolate_close", None)
            if close is None:
                raise AttributeError("close")
            return close
        return lambda: _release(obj)


def _release(obj):
    fin = object.__getattribute__(obj, "_isolate_fin")
    fin()  # queues the release; it reaches the child in front of the next message
    object.__setattr__(obj, "_isolate_hid", None)


def _live(obj):
    session = object.__getattribute__(obj, "_isolate_session")
    if object.__getattribute__(obj, "_isolate_hid") is None:
        raise ValueError("this proxy was closed")
    return session


class _RemoteObject:
    """A handle to an object living in the child."""

    close = _Close()

    def __getattr__(self, name):
        if name.startswith("__") or name.startswith("_isolate_"):
            raise AttributeError(name)
        session = _live(self)
        if name in session.methods.get(object.__getattribute__(self, "_isolate_tkey"), ()):
            return _RemoteMethod(self, name)
        try:
            kind, value = session.request("getattr", self, name)
        except RemoteError as exc:  # hasattr() and getattr(obj, name, default) work as locally
            if exc.remote_type_name == "AttributeError":
                raise AttributeError(exc.remote_message) from None
            raise
        return _RemoteMethod(self, name) if kind == "m" else value

    def __setattr__(self, name, value):
        _live(self).call("setattr", (self, name), (value,), {})

    def __call__(self, *args, **kwargs):
        return _RemoteMethod(self, "__call__")(*args, **kwargs)

    def __repr__(self):
        return _RemoteMethod(self, "__repr__")()

    def __bool__(self):
        return bool(_live(self).request("truth", self))

    def __len__(self):
        try:
            return _RemoteMethod(self, "__len__")()
        except RemoteError as exc:  # no __len__ in the child: a TypeError as for a local object
            if exc.remote_type_name in ("AttributeError", "TypeError"):
                raise TypeError(f"object of remote type has no len(): {exc.remote_message}") from None
            raise

    def __contains__(self, item):
        return _RemoteMethod(self, "__contains__")(item)

    def __getitem__(self, key):
        return _RemoteMethod(self, "__getitem__")(key)

    def __setitem__(self, key, value):
        _RemoteMethod(self, "__setitem__")(key, value)

    def __iter__(self):
        return _RemoteIterator(_live(self).request("iter", self))

    def __enter__(self):
        return _RemoteMethod(self, "__enter__")()

    def __exit__(self, et, ev, tb):
        # the traceback cannot travel; the type and the exception do (as handles if unpicklable)
        return bool(_live(self).call("exit", (self,), (et, ev), {}))


class _RemoteIterator:
    """Iterates over a child iterator, fetching 1, 2, 4 ... up to 256 items per round trip."""

    def __init__(self, it):
        self.it, self.buf, self.done, self.n = it, [], False, 1

    def __iter__(self):
        return self

    def __next__(self):
        if not self.buf:
            if self.done:
                raise StopIteration
            session = object.__getattribute__(self.it, "_isolate_session")
            items, self.done = session.request("next", self.it, self.n)
            self.n = min(self.n * 2, 256)
            self.buf = list(reversed(items))
            if not self.buf:
                raise StopIteration
        return self.buf.pop()


class _RemoteMethod:
    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __call__(self, *args, **kwargs):
        override = kwargs.pop(OVERRIDE_KW, None)
        return _live(self.obj).call("callmethod", (self.obj, self.name), args, kwargs, override)

    def batch(self, calls, **options):
        """Run ``[(args, kwargs), ...]`` in one round trip, in order; the first exception stops
        the batch and raises BatchError (its ``results`` are those of the calls before it)."""
        session = _live(self.obj)
        override = options.pop(OVERRIDE_KW, None)
        if options:
            raise TypeError(f"unexpected options {sorted(options)}")
        prepared = []
        for a, kw in calls:
            prepared.append(session._args(tuple(a), dict(kw or {}), override))
        try:
            results, err = session.request("batch", self.obj, self.name, prepared)
        except _Unpicklable:
            prepared = [(tuple(session._fallback(x) for x in a), {k: session._fallback(v) for k, v in kw.items()}) for a, kw in prepared]
            try:
                results, err = session.request("batch", self.obj, self.name, prepared)
            except _Unpicklable as exc:
                raise exc.__cause__ from None
        if err is not None:
            raise BatchError(*err, results)
        return results

    def __repr__(self):
        return f"<remote method {self.name}>"


_SHARED = {}  # share_key -> _Session


def method(obj, name):
    """The child's method `name` of proxy `obj`, even where the proxy has its own attribute of that
    name (``close``): ``method(obj, "close")()`` calls the target's ``close``."""
    return _RemoteMethod(obj, name)


def isolate(target, python=None, share_key=None, transport="value", type_rules=None, path=None):
    """A proxy class for ``"pkg.module:ClassName"`` whose instances live in a child interpreter."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(f"target must be 'pkg.module:ClassName', got {target!r}")
    if transport not in ("value", "reference"):
        raise ValueError(f"transport must be 'value' or 'reference', got {transport!r}")
    for klass, rule in (type_rules or {}).items():
        if not isinstance(klass, type) or rule not in ("value", "reference"):
            raise ValueError(f"type_rules maps types to 'value' or 'reference', got {klass!r}: {rule!r}")
    modname, clsname = target.split(":")
    top = modname.split(".")[0]
    leaked = [m for m in sys.modules if m == top or m.startswith(top + ".")]
    if leaked:
        raise ModuleLeakError(f"{top} is already imported in this process: {sorted(leaked)[:5]}")
    python = os.path.abspath(str(python or sys.executable))  # not realpath: a venv python is a symlink
    session = None
    if share_key is not None:
        session = _SHARED.get(share_key)
        if session is not None and not session._finalizer.alive:
            session = None
        if session is not None:
            if (session.python, session.transport, session.type_rules) != (python, transport, dict(type_rules or {})):
                raise ValueError(
                    f"share_key {share_key!r} is used with python={session.python!r}, transport={session.transport!r}, "
                    f"type_rules={session.type_rules!r}; got {python!r}, {transport!r}, {dict(type_rules or {})!r}"
                )
            session.protect(top)
    if session is None:
        session = _Session(python, top, path, transport, type_rules)
        if share_key is not None:
            _SHARED[share_key] = session
    session.users += 1
    closed = []

    def close():
        """Stops the child (a shared child when the last class using it closes)."""
        if closed:
            return
        closed.append(True)
        session.users -= 1
        if session.users <= 0:
            if share_key is not None and _SHARED.get(share_key) is session:
                del _SHARED[share_key]
            session.close()

    class Remote(_RemoteObject):
        def __new__(cls, *args, **kwargs):
            override = kwargs.pop(OVERRIDE_KW, None)
            hid, tkey, names = session.call("new", (modname, clsname), args, kwargs, override)
            return session.handle(hid, tkey, names, cls)

        def __init__(self, *args, **kwargs):
            pass

    Remote.__name__ = Remote.__qualname__ = clsname
    Remote._isolate_session = session
    Remote._isolate_close = staticmethod(close)
    Remote.policy_for = staticmethod(lambda value, override=None: session.policy_for(value, override))
    return Remote
