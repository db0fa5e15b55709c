"""cloudpickle_rs.isolate: a proxy class whose instances live in a child interpreter.

Minimal first version (issue 10): same-interpreter or other-interpreter child over two pipes,
values by pickle (by_source when the child's version differs), instances of the protected
module tree as handles, RemoteError / ChildDiedError / ModuleLeakError, close and finalizers.
"""
import io
import os
import pickle
import struct
import sys
import weakref
from pathlib import Path

from cloudpickle_rs._native import Pickler as _Pickler

__all__ = ["isolate", "ModuleLeakError", "RemoteError", "ChildDiedError", "IsolateProtocolError"]

_CHILD = str(Path(__file__).with_name("_isolate_child.py"))
_HDR = struct.Struct("<Q")


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


class _Handle:
    def __init__(self, hid):
        self.hid = hid


class _FromChild(pickle.Unpickler):
    """Reads one message of the child: its handles become proxies of `session`; a reference to
    the protected tree by value is refused (it would import the tree here)."""

    def __init__(self, file, session):
        super().__init__(file)
        self.session = session

    def persistent_load(self, pid):
        kind, hid = pid
        if kind == "own":
            return self.session.handle(hid)
        raise IsolateProtocolError(f"unexpected persistent id {pid!r}")

    def find_class(self, module, name):
        top = self.session.top
        if module == top or module.startswith(top + "."):
            raise ModuleLeakError(f"the child sent a reference to {module}.{name} by value")
        return super().find_class(module, name)


class _ToChild(_Pickler):
    """Writes one message for the child: a proxy goes as the child's own handle."""

    def persistent_id(self, obj):
        if isinstance(obj, _RemoteObject):
            return ("peer", object.__getattribute__(obj, "_isolate_hid"))
        return None


class _Session:
    def __init__(self, python, top, path):
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
        self.rfd, self.wfd, self.top, self.next_id = rp, pw, top, 1
        self.handles = {}
        _, _, version, impl, pid = self._recv()
        self.by_source = tuple(version[:2]) != tuple(sys.version_info[:2]) or impl != sys.implementation.name
        self._finalizer = weakref.finalize(self, _stop, self.proc, rp, pw)

    def _recv(self):
        hdr = self._read(8)
        (n,) = _HDR.unpack(hdr)
        data = self._read(n)
        try:
            return _FromChild(io.BytesIO(data), self).load()
        except (ModuleLeakError, IsolateProtocolError):
            raise
        except Exception as exc:
            raise IsolateProtocolError(f"cannot load the child's message: {exc!r}") from exc

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

    def handle(self, hid):
        ref = self.handles.get(hid)
        obj = ref() if ref is not None else None
        if obj is None:
            obj = _RemoteObject.__new__(_RemoteObject)
            self._bind(obj, hid)
        return obj

    def _bind(self, obj, hid):
        object.__setattr__(obj, "_isolate_session", self)
        object.__setattr__(obj, "_isolate_hid", hid)
        self.handles[hid] = weakref.ref(obj)
        weakref.finalize(obj, self._release_later, hid)

    def _release_later(self, hid):
        self.handles.pop(hid, None)
        if self.proc.returncode is None and self._finalizer.alive:
            try:
                self._send(("req", 0, "release", (hid,)))
            except OSError:
                pass

    def _send(self, msg):
        if not self._finalizer.alive:
            raise ChildDiedError("the isolate session is closed")
        buf = io.BytesIO()
        _ToChild(buf, protocol=5, by_source=self.by_source).dump(msg)
        data = buf.getvalue()
        view = memoryview(_HDR.pack(len(data)) + data)
        try:
            while view:
                view = view[os.write(self.wfd, view):]
        except BrokenPipeError as exc:
            self.proc.poll()
            raise ChildDiedError(f"the child process {self.proc.pid} died") from exc

    def request(self, op, *args):
        rid = self.next_id
        self.next_id += 1
        self._send(("req", rid, op, args))
        reply = self._recv()
        if not isinstance(reply, tuple) or reply[1] != rid:
            raise IsolateProtocolError(f"unexpected reply {reply!r:.200}")
        if reply[0] == "ok":
            return reply[2]
        raise RemoteError(*reply[2:5])

    def close(self):
        self._finalizer()


def _stop(proc, rfd, wfd):
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


class _RemoteObject:
    """A handle to an object living in the child."""

    def __getattr__(self, name):
        session = object.__getattribute__(self, "_isolate_session")
        return _RemoteMethod(self, name) if not name.startswith("__") else session.request("getattr", self, name)

    def __repr__(self):
        return _RemoteMethod(self, "__repr__")()

    def __len__(self):
        return _RemoteMethod(self, "__len__")()

    def __enter__(self):
        return _RemoteMethod(self, "__enter__")()

    def __exit__(self, *exc):
        return _RemoteMethod(self, "__exit__")(None, None, None)


class _RemoteMethod:
    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __call__(self, *args, **kwargs):
        session = object.__getattribute__(self.obj, "_isolate_session")
        return session.request("callmethod", self.obj, self.name, args, kwargs)


def isolate(target, python=None, share_key=None, transport="value", type_rules=None, path=None):
    """A proxy class for ``"pkg.module:ClassName"`` whose instances live in a child interpreter."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(f"target must be 'pkg.module:ClassName', got {target!r}")
    if transport != "value" or share_key is not None or type_rules is not None:
        raise NotImplementedError("only transport='value' without share_key/type_rules is built so far")
    modname, clsname = target.split(":")
    top = modname.split(".")[0]
    leaked = [m for m in sys.modules if m == top or m.startswith(top + ".")]
    if leaked:
        raise ModuleLeakError(f"{top} is already imported in this process: {sorted(leaked)[:5]}")
    session = _Session(python or sys.executable, top, path)

    class Remote(_RemoteObject):
        def __new__(cls, *args, **kwargs):
            _, hid = session.request("new", modname, clsname, args, kwargs)
            obj = object.__new__(cls)
            session._bind(obj, hid)
            return obj

        def __init__(self, *args, **kwargs):
            pass

    Remote.__name__ = Remote.__qualname__ = clsname
    Remote.close = staticmethod(session.close)
    Remote._isolate_session = session
    return Remote
