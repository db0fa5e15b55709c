"""Child side of cloudpickle_rs.isolate: stdlib + stock cloudpickle only (runs on CPython 3.8+, PyPy 3.9).

Run as ``python _isolate_child.py RFD WFD``. Frames: 8-byte little-endian length + pickle.
Messages: ("req", id, op, args) -> ("ok", id, value) | ("err", id, type_name, message, traceback).
"""
import importlib
import os
import pickle
import struct
import sys
import traceback
import types

import cloudpickle

_HDR = struct.Struct("<Q")


def _read_exact(fd, n):
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError("peer closed the pipe")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


class Handle(object):
    """A reference to an object owned by the other side."""

    def __init__(self, hid):
        self.hid = hid


class _Pickler(cloudpickle.CloudPickler):
    def __init__(self, file, table):
        cloudpickle.CloudPickler.__init__(self, file, protocol=pickle.HIGHEST_PROTOCOL)
        self._table = table

    def persistent_id(self, obj):
        if isinstance(obj, Handle):
            return ("peer", obj.hid)
        if self._table.protected(obj):
            return ("own", self._table.add(obj))
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, table):
        pickle.Unpickler.__init__(self, file)
        self._table = table

    def persistent_load(self, pid):
        kind, hid = pid
        if kind == "peer":  # the sender's own "peer" is our object
            return self._table.objects[hid]
        return Handle(hid)


class Table(object):
    def __init__(self, top):
        self.top = top
        self.objects = {}
        self.ids = {}
        self.next = 1

    def protected(self, obj):
        mod = getattr(type(obj), "__module__", "") or ""
        if isinstance(obj, (type, types.FunctionType, types.MethodType)):
            mod = getattr(obj, "__module__", "") or ""
        return mod == self.top or mod.startswith(self.top + ".")

    def add(self, obj):
        hid = self.ids.get(id(obj))
        if hid is None:
            hid = self.next
            self.next += 1
            self.objects[hid] = obj
            self.ids[id(obj)] = hid
        return hid

    def release(self, hid):
        obj = self.objects.pop(hid, None)
        if obj is not None:
            self.ids.pop(id(obj), None)


def main():
    rfd, wfd, top = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    del sys.path[0]
    for entry in reversed(sys.argv[4:]):
        sys.path.insert(0, entry)
    table = Table(top)
    import io

    def send(msg):
        buf = io.BytesIO()
        _Pickler(buf, table).dump(msg)
        data = buf.getvalue()
        view = memoryview(_HDR.pack(len(data)) + data)
        while view:
            view = view[os.write(wfd, view):]

    send(("hello", 0, tuple(sys.version_info[:3]), sys.implementation.name, os.getpid()))
    while True:
        try:
            (n,) = _HDR.unpack(_read_exact(rfd, 8))
        except EOFError:
            return
        data = _read_exact(rfd, n)
        try:
            msg = _Unpickler(io.BytesIO(data), table).load()
            _, rid, op, args = msg
            if op == "stop":
                return
            if op == "release":
                table.release(args[0])
                continue
            if op == "new":
                modname, clsname, a, kw = args
                cls = getattr(importlib.import_module(modname), clsname)
                result = ("handle", table.add(cls(*a, **kw)))
            elif op == "callmethod":
                obj, name, a, kw = args
                result = getattr(obj, name)(*a, **kw)
            elif op == "getattr":
                obj, name = args
                result = getattr(obj, name)
            else:
                raise ValueError("unknown op %r" % (op,))
            reply = ("ok", rid, result)
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
            reply = ("err", rid, type(exc).__name__, str(exc), traceback.format_exc())
        try:
            send(reply)
        except Exception as exc:  # an unpicklable result
            send(("err", rid, type(exc).__name__, str(exc), traceback.format_exc()))


if __name__ == "__main__":
    main()
