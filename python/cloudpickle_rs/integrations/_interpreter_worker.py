"""The program of an ``InterpreterPoolExecutor`` worker (``python [-I] _interpreter_worker.py PROTOCOL``).

Run by path on *another* interpreter (PyPy 3.9, another CPython): Python 3.8+ syntax, standard
library only, so that interpreter needs no cloudpickle_rs (it pickles answers with cloudpickle_rs
when it has it, else stock cloudpickle, else pickle).  Frames on its stdin/stdout: 8-byte
little-endian length, then a pickle.  Task: ``(fn, args, kwargs)``.  Answer: ``(ok, payload)``.
"""
import os, sys
# Run by path, Python puts this file's folder first on sys.path (the package's integrations
# folder: dask.py, ray.py, ...); a task's imports must not see it. The worker used to run as
# ``-c`` source, which puts '' (the working directory) there instead: keep that.
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = ""
import pickle, struct, traceback
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
