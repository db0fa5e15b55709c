"""Child side of cloudpickle_rs.isolate: stdlib + stock cloudpickle only (runs on CPython 3.8+, PyPy 3.9).

Run as ``python _isolate_child.py RFD WFD TOP [PATH ...]``. Frames: 8-byte little-endian length + pickle.
Messages (both directions, the protocol is symmetric):
  ("req", rid, op, args)  -> ("ok", rid, value) | ("err", rid, type_name, message, traceback)
  ("rel", 0, [(hid, count), ...])   release handles of the receiver (no reply)
While a side waits for the reply to its request it serves the other side's requests, so calls
nest (parent -> child -> parent callback -> child ...) on one thread without deadlock.
Persistent ids: ("mine", hid, type_key, method_names_or_None) is an object of the sender;
("yours", hid) is an object of the receiver. Each side counts how often it sent each of its
handles; a release carries the count the receiver saw, and the sender frees the object only when
every sent copy has been released (so a release cannot race with the same handle in flight).
"""
import importlib
import inspect
import io
import os
import pickle
import struct
import sys
import traceback
import types
import weakref

import cloudpickle

# frame header: payload length, request id, kind (0 request, 1 reply, 2 release), so that a
# frame whose payload cannot be loaded is still answered (or failed) by its request id
_HDR = struct.Struct("<QQB")
_KIND = {"req": 0, "ok": 1, "err": 1, "hello": 1, "rel": 2}


class LoadError(Exception):
    def __init__(self, rid, kind, exc, tb):
        Exception.__init__(self, "cannot load a message of the parent: %s: %s" % (type(exc).__name__, exc))
        self.rid, self.kind, self.exc, self.tb = rid, kind, exc, tb


def _read_exact(fd, n):
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError("peer closed the pipe")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


SHM_MIN = 64 * 1024  # bytes/bytearray at least this big travel through shared memory


def shm_put(data):
    """Copy `data` into a new POSIX shared memory segment (the primitive under
    multiprocessing.shared_memory, used directly so that no resource_tracker process is started
    and nothing is registered with one); the receiver unlinks it."""
    import mmap

    import _posixshmem

    size = max(len(data), 1)
    name = "/cprs_%d_%s" % (os.getpid(), os.urandom(6).hex())
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
        try:
            mm.write(data)  # PyPy 3.9: slice assignment takes only bytes
        finally:
            mm.close()
    except BaseException:
        _posixshmem.shm_unlink(name)
        raise
    finally:
        os.close(fd)
    return name


def shm_take(name, size, kind):
    import mmap

    import _posixshmem

    fd = _posixshmem.shm_open(name, os.O_RDONLY, 0o600)
    try:
        mm = mmap.mmap(fd, max(size, 1), prot=mmap.PROT_READ)
        try:
            data = mm[:size]
        finally:
            mm.close()
    finally:
        os.close(fd)
        _posixshmem.shm_unlink(name)
    return bytearray(data) if kind == "bytearray" else data


def shm_unlink(name):
    import _posixshmem

    try:
        _posixshmem.shm_unlink(name)
    except OSError:
        pass


class Shm(object):
    """Big bytes through shared memory. This side writes into its own reusable segment (the
    arena), which the peer maps once and copies values out of. The arena is reused from offset 0
    each time a frame of the peer arrives: the protocol alternates, so the peer has then loaded
    every frame sent before. A value that does not fit the rest of the arena goes in a one-off
    segment that the receiver unlinks. The owner unlinks its arena when it closes (the parent
    also unlinks the child's after the child exited, in case it was killed)."""

    def __init__(self):
        self.name, self.mm, self.size, self.off = None, None, 0, 0
        self.peer_name, self.peer_mm = None, None
        self.sent, self.received = [], []  # sizes, for tests

    def put(self, data, kind):
        n = len(data)
        self.sent.append(n)
        if self.off == 0 and n > self.size:
            self._grow(n)
        if self.off + n > self.size:
            return ("shm", shm_put(data), n, kind)
        off = self.off
        self.mm.seek(off)
        self.mm.write(data)
        self.off = off + (n + 63) // 64 * 64
        return ("shma", self.name, off, n, kind)

    def _grow(self, n):
        import mmap

        import _posixshmem

        self.close_own()
        size = max(n, 2 * self.size, 1 << 20)
        name = "/cprs_%d_%s" % (os.getpid(), os.urandom(6).hex())
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            _posixshmem.shm_unlink(name)
            raise
        finally:
            os.close(fd)
        self.name, self.size = name, size

    def take(self, name, off, n, kind):
        self.received.append(n)
        if name != self.peer_name:
            import mmap

            import _posixshmem

            if self.peer_mm is not None:
                self.peer_mm.close()
                self.peer_mm = None
            fd = _posixshmem.shm_open(name, os.O_RDONLY, 0o600)
            try:
                self.peer_mm = mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self.peer_name = name
        data = self.peer_mm[off : off + n]
        return bytearray(data) if kind == "bytearray" else data

    def take_oneoff(self, name, n, kind):
        self.received.append(n)
        return shm_take(name, n, kind)

    def reset(self):
        self.off = 0

    def close_own(self):
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.name is not None:
            shm_unlink(self.name)
            self.name, self.size, self.off = None, 0, 0

    def close(self):
        self.close_own()
        if self.peer_mm is not None:
            self.peer_mm.close()
            self.peer_mm = None


class RemoteError(Exception):
    """A parent callback raised."""

    def __init__(self, remote_type_name, remote_message, remote_traceback):
        Exception.__init__(self, "%s: %s\n--- parent traceback ---\n%s" % (remote_type_name, remote_message, remote_traceback))
        self.remote_type_name = remote_type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class Own(object):
    """Wrap a value to send it as a handle of this side, whatever it is."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj


class ParentProxy(object):
    """An object of the parent: calls and attribute reads are round trips."""

    __slots__ = ("_conn", "_hid", "__weakref__")

    def __call__(self, *a, **kw):
        return self._conn.request("call", (self, a, kw))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        kind, value = self._conn.request("getattr", (self, name))
        if kind == "m":
            return ParentMethod(self, name)
        return value

    def __repr__(self):
        return "<parent object #%d>" % (self._hid,)


class ParentMethod(object):
    __slots__ = ("obj", "name")

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __call__(self, *a, **kw):
        return self.obj._conn.request("callmethod", (self.obj, self.name, a, kw))


def method_names(cls):
    names = []
    for name in dir(cls):
        if name.startswith("__"):
            continue
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(attr, (types.FunctionType, staticmethod, classmethod, types.BuiltinFunctionType)) or type(attr).__name__ in ("method_descriptor", "wrapper_descriptor"):
            names.append(name)
    return tuple(names)


# PyPy can pickle generators and frames, but only PyPy can load them: always handles
_NEVER_BY_VALUE = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType, types.FrameType, types.TracebackType)


class _Pickler(cloudpickle.CloudPickler):
    def __init__(self, file, conn):
        cloudpickle.CloudPickler.__init__(self, file, protocol=pickle.HIGHEST_PROTOCOL)
        self._conn = conn
        self.made = []
        self.new_types = []

    def persistent_id(self, obj):
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= SHM_MIN and self._conn.shm:
            return self._conn.shmio.put(obj, t.__name__)
        if isinstance(obj, ParentProxy):
            return ("yours", obj._hid)
        if isinstance(obj, Own):
            obj = obj.obj
        elif not isinstance(obj, _NEVER_BY_VALUE) and not self._conn.protected(obj) and not self._conn.dynamic(obj):
            return None
        conn = self._conn
        hid = conn.export(obj)
        self.made.append(hid)
        t = type(obj)
        tkey = "%s.%s" % (getattr(t, "__module__", "?"), getattr(t, "__qualname__", t.__name__))
        names = None
        if tkey not in conn.sent_types:
            conn.sent_types.add(tkey)
            self.new_types.append(tkey)
            names = method_names(t)
        return ("mine", hid, tkey, names)

    def rollback(self):
        for hid in self.made:
            self._conn.release_one(hid, 1)
        for tkey in self.new_types:
            self._conn.sent_types.discard(tkey)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, conn):
        pickle.Unpickler.__init__(self, file)
        self._conn = conn

    def persistent_load(self, pid):
        if pid[0] == "yours":
            return self._conn.exports[pid[1]][0]
        if pid[0] == "shma":
            return self._conn.shmio.take(*pid[1:5])
        if pid[0] == "shm":
            return self._conn.shmio.take_oneoff(*pid[1:4])
        return self._conn.proxy(pid[1])


def _call_batch(fn, calls):
    results = []
    for a, kw in calls:
        try:
            results.append(fn(*a, **kw))
        except Exception as exc:  # noqa: BLE001
            return results, (type(exc).__name__, str(exc), traceback.format_exc())
    return results, None


class Conn(object):
    def __init__(self, rfd, wfd, top):
        self.rfd, self.wfd = rfd, wfd
        self.tops = (top,)
        self.shmio = Shm()
        self.shm = False  # the parent turns it on when both sides have shared memory
        # the parent runs another Python: code that stock cloudpickle would send by value (as
        # this version's bytecode) cannot load there, so such functions, classes and their
        # instances go back as handles
        self.cross = False
        self._dyn_types = {}
        self.exports = {}  # hid -> [obj, copies sent and not yet released]
        self.export_ids = {}  # id(obj) -> hid
        self.next_hid = 1
        self.sent_types = set()
        self.proxies = {}  # parent hid -> (weakref to ParentProxy, [copies received])
        self.pending = []  # (hid, count) of parent handles to release
        self.next_rid = 1

    def protected(self, obj):
        if isinstance(obj, (type, types.FunctionType, types.MethodType)):
            mod = getattr(obj, "__module__", "") or ""
        else:
            mod = getattr(type(obj), "__module__", "") or ""
        for top in self.tops:
            if mod == top or mod.startswith(top + "."):
                return True
        return False

    def dynamic(self, obj):
        if not self.cross:
            return False
        by_ref = cloudpickle.cloudpickle._should_pickle_by_reference
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            fn = getattr(obj, "__func__", obj)
            return not by_ref(fn)
        t = obj if isinstance(obj, type) else type(obj)
        known = self._dyn_types.get(t)
        if known is None:
            try:
                # builtins (NoneType, ...) are special-cased by cloudpickle: never dynamic; the
                # elements of our own persistent ids are builtins, so they never recurse here
                known = self._dyn_types[t] = t.__module__ != "builtins" and not by_ref(t)
            except Exception:  # noqa: BLE001
                known = self._dyn_types[t] = False
        return known

    def export(self, obj):
        hid = self.export_ids.get(id(obj))
        if hid is None:
            hid = self.next_hid
            self.next_hid += 1
            self.exports[hid] = [obj, 0]
            self.export_ids[id(obj)] = hid
        self.exports[hid][1] += 1
        return hid

    def release_one(self, hid, n):
        entry = self.exports.get(hid)
        if entry is None:
            return
        entry[1] -= n
        if entry[1] <= 0:
            del self.exports[hid]
            self.export_ids.pop(id(entry[0]), None)

    def proxy(self, hid):
        entry = self.proxies.get(hid)
        p = entry[0]() if entry is not None else None
        if p is None:
            p = ParentProxy()
            p._conn, p._hid = self, hid
            cell = [0]
            self.proxies[hid] = (weakref.ref(p), cell)
            weakref.finalize(p, self._dropped, hid, cell)
            entry = self.proxies[hid]
        entry[1][0] += 1
        return p

    def _dropped(self, hid, cell):
        entry = self.proxies.get(hid)
        if entry is not None and entry[1] is cell:
            del self.proxies[hid]
        self.pending.append((hid, cell[0]))

    def encode(self, msg):
        buf = io.BytesIO()
        p = _Pickler(buf, self)
        try:
            p.dump(msg)
        except BaseException:
            p.rollback()
            raise
        data = buf.getvalue()
        return _HDR.pack(len(data), msg[1], _KIND[msg[0]]) + data

    def send(self, msg):
        data = self.encode(msg)
        if self.pending:
            pending, self.pending = self.pending, []
            data = self.encode(("rel", 0, pending)) + data
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def send_reply(self, rid, result):
        try:
            self.send(("ok", rid, result))
        except Exception:  # noqa: BLE001 - an unpicklable result goes as a handle
            try:
                self.send(("ok", rid, Own(result)))
            except Exception as exc:  # noqa: BLE001
                self.send(("err", rid, type(exc).__name__, str(exc), traceback.format_exc()))

    def recv(self):
        n, rid, kind = _HDR.unpack(_read_exact(self.rfd, _HDR.size))
        data = _read_exact(self.rfd, n)
        self.shmio.reset()
        try:
            return _Unpickler(io.BytesIO(data), self).load()
        except Exception as exc:  # noqa: BLE001 - the frame was read whole: the stream is in sync
            raise LoadError(rid, kind, exc, traceback.format_exc())

    def refuse(self, err):
        """A request that could not be loaded is answered with the error."""
        if err.kind == 0:
            self.send(("err", err.rid, type(err.exc).__name__, "the child cannot load the request: %s" % (err.exc,), err.tb))

    def request(self, op, args):
        rid = self.next_rid
        self.next_rid += 1
        self.send(("req", rid, op, args))
        while True:
            try:
                msg = self.recv()
            except LoadError as err:
                if err.kind == 1 and err.rid == rid:
                    raise err
                self.refuse(err)
                continue
            kind = msg[0]
            if kind == "req":
                self.serve(msg)
            elif kind == "rel":
                for hid, n in msg[2]:
                    self.release_one(hid, n)
            elif msg[1] != rid:
                raise RuntimeError("unexpected reply %r" % (msg[:2],))
            elif kind == "ok":
                return msg[2]
            else:
                raise RemoteError(*msg[2:5])

    def serve(self, msg):
        _, rid, op, args = msg
        try:
            if op == "callmethod":
                obj, name, a, kw = args
                result = getattr(obj, name)(*a, **kw)
            elif op == "call":
                obj, a, kw = args
                result = obj(*a, **kw)
            elif op == "new":
                modname, clsname, a, kw = args
                cls = getattr(importlib.import_module(modname), clsname)
                obj = cls(*a, **kw)
                t = type(obj)
                tkey = "%s.%s" % (t.__module__, t.__qualname__)
                names = None
                if tkey not in self.sent_types:
                    self.sent_types.add(tkey)
                    names = method_names(t)
                result = (self.export(obj), tkey, names)
            elif op == "getattr":
                obj, name = args
                value = getattr(obj, name)
                if isinstance(value, (types.MethodType, types.BuiltinMethodType)) or type(value).__name__ == "method-wrapper":
                    result = ("m", None)
                elif not self.protected(value) and callable(value) and not isinstance(value, type):
                    result = ("m", None)
                else:
                    result = ("v", value)
            elif op == "setattr":
                obj, name, a, kw = args
                setattr(obj, name, a[0])
                result = None
            elif op == "protect":
                if args[0] not in self.tops:
                    self.tops = self.tops + (args[0],)
                result = None
            elif op == "config":
                self.shm = bool(args[0].get("shm"))
                self.cross = bool(args[0].get("cross"))
                result = None
            elif op == "truth":
                result = bool(args[0])
            elif op == "iter":
                result = Own(iter(args[0]))
            elif op == "next":
                it, n = args
                items = []
                done = False
                for _ in range(n):
                    try:
                        items.append(next(it))
                    except StopIteration:
                        done = True
                        break
                result = (items, done)
            elif op == "exit":
                obj, a, kw = args
                et, ev = a
                result = bool(obj.__exit__(et, ev, None))
            elif op == "batch":
                obj, name, calls = args
                result = _call_batch(getattr(obj, name), calls)
            else:
                raise ValueError("unknown op %r" % (op,))
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
            self.send(("err", rid, type(exc).__name__, str(exc), traceback.format_exc()))
            return
        self.send_reply(rid, result)


def main():
    rfd, wfd, top = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    del sys.path[0]
    for entry in reversed(sys.argv[4:]):
        sys.path.insert(0, entry)
    conn = Conn(rfd, wfd, top)
    try:
        import _posixshmem  # noqa: F401

        has_shm = True
    except ImportError:
        has_shm = False
    conn.send(("hello", 0, tuple(sys.version_info[:3]), sys.implementation.name, os.getpid(), has_shm))
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                return
            except LoadError as err:
                conn.refuse(err)
                continue
            if msg[0] == "rel":
                for hid, n in msg[2]:
                    conn.release_one(hid, n)
            elif msg[0] == "req" and msg[2] == "stop":
                return
            else:
                conn.serve(msg)
    finally:
        conn.shmio.close()


if __name__ == "__main__":
    main()
