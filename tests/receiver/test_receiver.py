"""``receiver=``: refuse at dump time what would fail on the other side (issue "Know the receiver").

NDIF's quick-reference table for remote code, row by row, with the outcome we promise; the
built-in catalogue of objects that cannot work on another machine; ``deny``; ``max_bytes``;
``check()``; and a real receiver (CPython 3.9 with numpy and stock cloudpickle only).
"""
import dataclasses
import enum
import io
import logging
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

import cloudpickle_rs as cp
from cloudpickle_rs import PayloadTooLargeError, PicklingProhibitedError, Receiver

# The catalogue, deny and size tests do not depend on the receiver's version (bytecode then
# loads on this one); a receiver on 3.9 is named where by_source streams go to one.
NP = Receiver(modules=["numpy"])
NP39 = Receiver(python="3.9", modules=["numpy"])


# ----- NDIF's quick-reference rows: what travels ---------------------------------------------

class Model:
    scale = 2  # a class attribute: travels with its current value

    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return x * self.w * self.scale

    class Inner:
        def ping(self):
            return "pong"


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Color(enum.Enum):
    RED = 1
    GREEN = 2


SHARED_STATE = {"calls": 0}


def counter():
    n = 0

    def bump():
        nonlocal n
        n += 1
        return n

    return bump


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def uses_state():
    SHARED_STATE["calls"] += 1
    return SHARED_STATE["calls"]


def roundtrip(obj, by_source=True):
    # bytecode loads on the sender's own version only: that receiver is named for it
    receiver = NP39 if by_source else Receiver(python=sys.version_info[:2], modules=["numpy"])
    return pickle.loads(cp.dumps(obj, by_source=by_source, receiver=receiver))


@pytest.mark.parametrize("by_source", [False, True])
def test_ndif_rows_that_travel(by_source):
    m = Model(3)
    shared = [1, 2]
    cyc = []
    cyc.append(cyc)
    payload = {
        "instance": m, "class": Model, "nested": Model.Inner, "function": fact,
        "lambda": lambda v: v + 1, "closure": counter(), "array": np.arange(6.0),
        "shared": (shared, shared), "state": uses_state, "cycle": cyc,
        "instances": [Model(1), Model(2)], "dataclass": Point(1, 2), "enum": Color.GREEN,
    }
    # (in this process the classes load as themselves, cloudpickle's class tracking: the
    # class attribute's current value is checked on a real receiver, below)
    out = roundtrip(payload, by_source=by_source)
    assert out["instance"](2) == 2 * 3 * 2
    assert out["class"].scale == 2
    assert out["nested"]().ping() == "pong"
    assert out["function"](5) == 120
    assert out["lambda"](1) == 2
    bump = out["closure"]
    assert (bump(), bump()) == (1, 2)
    assert np.array_equal(out["array"], np.arange(6.0))
    assert out["shared"][0] is out["shared"][1]
    assert out["state"]() == SHARED_STATE["calls"] + 1
    assert out["cycle"][0] is out["cycle"]
    a, b = out["instances"]
    assert type(a) is type(b)
    assert out["dataclass"] == type(out["dataclass"])(1, 2)
    assert out["enum"].name == "GREEN"


def test_by_reference_exactly_what_the_receiver_imports():
    report = cp.check({"f": np.mean, "j": __import__("json").dumps, "a": np.zeros(2)}, receiver=NP)
    assert report.ok, str(report)
    # what the receiver must have installed beyond the standard library
    assert report.by_reference == ["numpy"]
    # the test module is not on the receiver: its functions go by value, rebuilt by cloudpickle
    report = cp.check(fact, by_source=True, receiver=NP39)
    assert report.ok and f"{__name__}.fact" in report.by_value
    assert report.by_reference == ["cloudpickle"]
    # as bytecode, a 3.9 receiver could not load it (unless this is 3.9): the report says why
    if sys.version_info[:2] != (3, 9):
        (problem,) = cp.check(fact, receiver=NP39).problems
        assert problem.path == "obj.__code__" and problem.workaround == "use by_source=True"
        assert "bytecode for Python 3.9" in problem.reason


def test_subclass_of_an_importable_base_goes_by_value_with_its_base_by_reference():
    class MyArray(np.ndarray):
        pass

    report = cp.check(MyArray, receiver=NP)
    assert report.ok, str(report)
    assert any(name.endswith("MyArray") for name in report.by_value)
    assert "numpy" in report.by_reference
    assert pickle.loads(cp.dumps(MyArray, receiver=NP)).__mro__[1] is np.ndarray


def test_a_library_the_receiver_lacks_is_refused():
    with pytest.raises(PicklingProhibitedError) as e:
        cp.dumps({"a": np.zeros(3)}, receiver=Receiver(python="3.9"))
    assert str(e.value).startswith("cannot send obj['a'] ")
    assert "the receiver cannot import numpy" in str(e.value)
    assert "add 'numpy' to Receiver(modules=...)" in str(e.value)


# ----- the catalogue --------------------------------------------------------------------------

def test_open_file_message_in_full(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("hello")
    with open(p) as f:
        with pytest.raises(PicklingProhibitedError) as e:
            cp.dumps({"log": f}, receiver=NP)
        # without a receiver, cloudpickle's behaviour: the file's content is shipped
        assert pickle.loads(cp.dumps(f)).read() == "hello"
    assert str(e.value) == (
        "cannot send obj['log'] (TextIOWrapper) to the receiver: an open file belongs to this "
        "machine's file system and process. Instead: read the content first and send the data "
        "(or send the path, if the receiver has the file)")
    assert e.value.problem.path == "obj['log']"
    assert e.value.problem.type == "TextIOWrapper"


def test_lock_in_a_closure_message_in_full():
    lock = threading.Lock()

    def guarded():
        with lock:
            return 1

    with pytest.raises(PicklingProhibitedError) as e:
        cp.dumps([guarded], receiver=NP)
    assert str(e.value) == (
        "cannot send obj[0].__closure__ cell 'lock' (lock) to the receiver: a lock synchronises "
        "threads of this process only. Instead: create the lock on the receiver (a module-level "
        "or class attribute made there)")


def _gen():
    yield 1


@pytest.mark.parametrize("make, tname, reason", [
    (lambda: socket.socket(), "socket", "a socket is a connection of this process"),
    (lambda: sqlite3.connect(":memory:"), "Connection", "a database connection belongs to this process"),
    (lambda: threading.RLock(), "RLock", "a lock synchronises threads"),
    (lambda: threading.Event(), "Event", "a lock synchronises threads"),
    (lambda: threading.Thread(target=print), "Thread", "a thread runs in this process only"),
    (lambda: subprocess.Popen([sys.executable, "-c", "pass"]), "Popen", "a subprocess runs on this machine"),
    (lambda: sys._getframe(), "frame", "a frame or traceback"),
    (lambda: _gen(), "generator", "a generator holds a running frame"),
    (lambda: logging.StreamHandler(io.StringIO()), "StreamHandler", "a logging handler"),
    (lambda: open(os.devnull, "rb"), "BufferedReader", "an open file"),
])
def test_catalogue_refuses(make, tname, reason):
    obj = make()
    try:
        with pytest.raises(PicklingProhibitedError) as e:
            cp.dumps({"x": obj}, receiver=NP)
        msg = str(e.value)
        assert msg.startswith(f"cannot send obj['x'] ({tname}) to the receiver: {reason}"), msg
        assert "Instead: " in msg
        report = cp.check({"x": obj}, receiver=NP)
        assert not report.ok and report.problems[0].path == "obj['x']"
    finally:
        if isinstance(obj, subprocess.Popen):
            obj.wait()
        elif hasattr(obj, "close") and not isinstance(obj, threading.Thread):
            obj.close()


def test_pytest_fixture_objects_are_refused(request, monkeypatch):
    for obj in (request, monkeypatch):
        tname = type(obj).__name__  # TopRequest/FixtureRequest, as pytest's version has it
        with pytest.raises(PicklingProhibitedError, match=rf"\({tname}\) to the receiver: a test-framework object"):
            cp.dumps([obj], receiver=NP)


def test_dataframe_refused_unless_the_receiver_has_pandas():
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(PicklingProhibitedError) as e:
        cp.dumps({"df": df}, receiver=NP)
    assert str(e.value) == (
        "cannot send obj['df'] (DataFrame) to the receiver: the receiver cannot import pandas. "
        "Instead: convert it first: df.to_numpy(), df.to_dict('list') or df.values.tolist()")
    out = pickle.loads(cp.dumps({"df": df}, receiver=Receiver(modules=["numpy", "pandas"])))
    assert out["df"].equals(df)


def test_forbid_adds_and_removes_entries():
    class Secret:
        pass

    r = Receiver(modules=["numpy"], forbid={Secret: "send the token's name", "_thread.RLock": None})
    with pytest.raises(PicklingProhibitedError, match=r"the receiver forbids .*Secret\. Instead: send the token's name"):
        cp.dumps([Secret()], receiver=r)
    with pytest.raises(PicklingProhibitedError, match="forbids numpy.ndarray"):
        cp.dumps([np.zeros(1)], receiver=Receiver(modules=["numpy"], forbid={"numpy.ndarray": "send a list"}))
    # the RLock entry removed: what happens then is the stdlib's own error, as without a receiver
    with pytest.raises(TypeError, match="cannot pickle '_thread.RLock'"):
        cp.dumps(threading.RLock(), receiver=r)


def test_nothing_changes_without_a_receiver():
    payload = {"f": fact, "a": np.arange(3), "m": Model(2)}
    assert cp.dumps(payload) == cp.dumps(payload, receiver=None)


def test_dumps_of_one_receiver_share_verdicts_until_sys_modules_changes(monkeypatch):
    """A receiver's plain dumps share what the walk learnt (the catalogue, verdicts per module
    and type); a module imported later is seen by the next dump."""
    import types

    r = Receiver(modules=["numpy"], forbid={"cprs_late_module.Handle": "open it on the receiver"})
    assert pickle.loads(cp.dumps([1, "a"], receiver=r)) == [1, "a"]
    late = types.ModuleType("cprs_late_module")
    exec("class Handle:\n    pass\n", late.__dict__)
    late.Handle.__module__ = "cprs_late_module"
    monkeypatch.setitem(sys.modules, "cprs_late_module", late)
    for _ in range(2):  # refused every time, not only by the dump that computed the verdict
        with pytest.raises(PicklingProhibitedError, match=r"obj\[0\] \(Handle\).*open it on the receiver"):
            cp.dumps([late.Handle()], receiver=r)
    # a library the receiver lacks is refused on every dump, also after one that passed
    assert pickle.loads(cp.dumps(np.arange(2), receiver=r)).tolist() == [0, 1]
    lacking = Receiver()
    for _ in range(2):
        with pytest.raises(PicklingProhibitedError, match="cannot import numpy"):
            cp.dumps(np.arange(2), receiver=lacking)


def test_one_receiver_in_threads():
    """Dumps of one receiver from several threads at once: each refuses and passes alike."""
    import concurrent.futures

    def work(i):
        ok = pickle.loads(cp.dumps(lambda x: x + i, receiver=DENY))(1) == 1 + i
        try:
            cp.dumps(lambda: os.getcwd(), receiver=DENY)
        except PicklingProhibitedError as e:
            return ok and "denies" in str(e)
        return False

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert all(ex.map(work, range(200)))


# ----- deny -----------------------------------------------------------------------------------

DENY = Receiver(modules=["numpy"], deny=Receiver.NDIF_DENY)


def test_deny_a_module_global_message_in_full():
    def run(cmd):
        return os.system(cmd)

    with pytest.raises(PicklingProhibitedError) as e:
        cp.dumps({"job": run}, receiver=DENY)
    code = run.__code__
    assert str(e.value) == (
        f"cannot send obj['job'] (function) to the receiver: function {__name__}.{run.__qualname__} "
        f"({code.co_filename}:{code.co_firstlineno}) uses 'os' (global: module os), which the "
        "receiver denies. Instead: do this work on this side and send the result, or use an "
        "allowed module")


def test_deny_catches_builtins_in_closures_bodies_defaults_and_imports():
    dangerous = eval
    cases = {
        "closure": lambda s: dangerous(s),
        "body": lambda s: eval(s),
        "default": lambda s, f=exec: f(s),
        "import": lambda: __import__("json"),
    }

    def imports_subprocess():
        import subprocess as sp
        return sp

    cases["import stmt"] = imports_subprocess
    for what, fn in cases.items():
        with pytest.raises(PicklingProhibitedError, match="which the receiver denies") as e:
            cp.dumps(fn, receiver=DENY)
        assert fn.__code__.co_filename in str(e.value), what
    # without deny the same functions travel (a pickle_by_reference callback never sees builtins)
    assert pickle.loads(cp.dumps(cases["closure"], receiver=NP))("1+1") == 2


def test_deny_class_attribute_and_referenced_function():
    class Runner:
        run = os.system

    with pytest.raises(PicklingProhibitedError, match=r"class .*Runner.* uses 'run' \(class attribute"):
        cp.dumps(Runner, receiver=DENY)

    def spawn():
        return subprocess.run(["true"])

    with pytest.raises(PicklingProhibitedError, match="module subprocess"):
        cp.dumps(spawn, receiver=DENY)


def test_the_streams_own_reconstructors_stay_allowed():
    # by_source streams call builtins exec/compile/getattr to rebuild functions: not the user's
    f = counter()
    out = pickle.loads(cp.dumps(f, by_source=True, receiver=DENY))
    assert out() == 1


# ----- size -----------------------------------------------------------------------------------

def test_payload_too_large_lists_largest_parts():
    payload = {"weights": np.zeros(1_000_000), "bias": np.zeros(10), "cfg": {"lr": 0.1}}
    with pytest.raises(PayloadTooLargeError) as e:
        cp.dumps(payload, receiver=Receiver(modules=["numpy"], max_bytes=100_000))
    msg = str(e.value)
    assert msg.startswith("the pickle is 8.0 MB (")
    assert "over the receiver's max_bytes of 100.0 KB (100000 bytes)" in msg
    assert "\n  obj['weights'] (ndarray) 8.0 MB" in msg
    assert e.value.largest[0][:2] == ("obj['weights']", "ndarray")
    assert isinstance(e.value, pickle.PicklingError)


def test_out_of_band_buffers_count_and_dump_writes_nothing():
    payload = [pickle.PickleBuffer(np.zeros(100_000))]
    r = Receiver(modules=["numpy"], max_bytes=10_000)
    buffers = []
    with pytest.raises(PayloadTooLargeError):
        cp.dumps(payload, protocol=5, buffer_callback=buffers.append, receiver=r)
    f = io.BytesIO()
    with pytest.raises(PayloadTooLargeError):
        cp.dump({"w": np.zeros(100_000)}, f, receiver=r)
    assert f.getvalue() == b""
    p = cp.Pickler(f, receiver=r)
    with pytest.raises(PayloadTooLargeError):
        p.dump({"w": np.zeros(100_000)})
    assert f.getvalue() == b""
    p.dump({"w": np.zeros(10)})
    assert pickle.loads(f.getvalue())["w"].shape == (10,)


# ----- python= --------------------------------------------------------------------------------

@pytest.mark.skipif(sys.version_info < (3, 10), reason="a match statement needs a 3.10+ sender to compile")
def test_python_is_target_python():
    src = "def f(x):\n    match x:\n        case 1:\n            return 'one'\n"
    ns = {"__name__": "__main__"}
    import linecache
    linecache.cache["<recv-test>"] = (len(src), None, src.splitlines(True), "<recv-test>")
    exec(compile(src, "<recv-test>", "exec"), ns)
    with pytest.raises(pickle.PicklingError, match=r"`match` statement \(<recv-test>:2\): Python 3\.10\+"):
        cp.dumps(ns["f"], by_source=True, receiver=Receiver(python="3.9", modules=["numpy"]))
    report = cp.check(ns["f"], by_source=True, receiver=Receiver(python="3.9"))
    assert not report.ok and "`match` statement" in report.problems[0].reason


def test_stdlib_modules_the_receivers_version_lacks():
    r = Receiver(python="3.13")
    assert not r.can_import("telnetlib") and r.can_import("json")
    assert not Receiver(python="3.10").can_import("tomllib")


# ----- check() and the report -----------------------------------------------------------------

def test_check_reports_every_problem_without_raising(tmp_path):
    def run():
        return os.getcwd()

    with open(tmp_path / "x", "w") as f:
        report = cp.check({"f": f, "lock": threading.Lock(), "run": run, "ok": [1, 2]}, receiver=DENY)
    assert not report.ok
    paths = [p.path for p in report.problems]
    assert paths == ["obj['f']", "obj['lock']", "obj['run']"], str(report)
    assert report.problems[2].type == "function"
    assert "denies" in report.problems[2].reason
    assert report.size > 0 and report.largest
    text = str(report)
    assert text.startswith("NOT OK for Receiver(") and "problem: cannot send obj['lock'] (lock)" in text


def test_requirements_file(tmp_path):
    (tmp_path / "base.txt").write_text("numpy==2.0.2  # arrays\n")
    (tmp_path / "req.txt").write_text("-r base.txt\nscikit-learn>=1.0\nPillow\n# comment\n")
    r = Receiver.from_requirements(tmp_path / "req.txt", python="3.9")
    assert {"numpy", "sklearn", "PIL"} <= r.modules
    assert r.python == (3, 9)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Receiver(python="three")
    with pytest.raises(ValueError):
        Receiver(max_bytes=-1)
    with pytest.raises(TypeError):
        Receiver(deny=[os])


# ----- a real receiver ------------------------------------------------------------------------

CHECK = """
m = obj["model"]
result = {
    "model": m(2.0).tolist(),
    "scale": type(m).scale,
    "closure": [obj["bump"](), obj["bump"]()],
    "fact": obj["fact"](6),
    "point": [obj["point"].x, obj["point"].y],
    "color": obj["color"].name,
    "mean": float(obj["mean"](obj["array"])),
    "version": list(__import__("sys").version_info[:2]),
}
"""


def test_a_pickle_that_passes_check_loads_on_a_real_39_receiver():
    from support import loaders

    payload = {"model": Model(np.array([1.0, 2.0])), "bump": counter(), "fact": fact,
               "point": Point(3, 4), "color": Color.RED, "mean": np.mean, "array": np.arange(4.0)}
    report = cp.check(payload, by_source=True, receiver=NP39)
    assert report.ok, str(report)
    Model.scale = 5  # changed after the class statement: the current value travels (NDIF: 2)
    try:
        data = cp.dumps(payload, by_source=True, receiver=NP39)
    finally:
        Model.scale = 2
    # the file-level judge agrees, without loading the stream
    assert cp.check_stream(data, NP39).ok, str(cp.check_stream(data, NP39))
    out = loaders.load_in("recv-3.9-numpy", data, CHECK)
    assert out == {"model": [10.0, 20.0], "scale": 5, "closure": [1, 2], "fact": 720, "point": [3, 4],
                   "color": "RED", "mean": 1.5, "version": [3, 9]}


def test_a_pickle_that_fails_check_names_what_would_have_failed_there():
    from support import loaders
    import pandas as pd

    payload = {"df": pd.DataFrame({"a": [1]})}
    report = cp.check(payload, receiver=NP39)
    assert [(p.path, p.type) for p in report.problems] == [("obj['df']", "DataFrame")]
    stream = cp.dumps(payload, protocol=4)
    judged = cp.check_stream(stream, NP39)
    assert [(p.path, p.type) for p in judged.problems][:1] == [("global pandas.core.frame.DataFrame", "DataFrame")]
    # and indeed: the 3.9 receiver without pandas cannot load the plain pickle
    with pytest.raises(loaders.LoaderError) as e:
        loaders.load_in("recv-3.9-numpy", stream)
    assert e.value.exc_type in ("ModuleNotFoundError", "ImportError")


# ----- python -m cloudpickle_rs check FILE ----------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cloudpickle_rs", "check", *args],
                          capture_output=True, text=True, timeout=120)


MATCH_SRC = (
    "import os\n"
    "def run(cmd):\n    return os.system(cmd)\n"
    "f = lambda s: eval(s)\n"
    "def m(x):\n    match x:\n        case 1:\n            return 1\n"
)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="the sender script has a match statement")
def test_cli_check_judges_a_file_without_loading_it(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(MATCH_SRC + (
        "import sys, numpy, cloudpickle_rs as cp\n"
        "payload = {'a': numpy.zeros(3), 'run': run, 'f': f, 'm': m}\n"
        "open(sys.argv[1], 'wb').write(cp.dumps(payload, by_source=True))\n"
        "open(sys.argv[2], 'wb').write(cp.dumps({'a': numpy.zeros(3), 'f': f}))\n"))
    src, byc = tmp_path / "src.pkl", tmp_path / "byc.pkl"
    subprocess.run([sys.executable, str(script), str(src), str(byc)], check=True, timeout=120)
    out = _cli(str(src), "--python", "3.9", "--modules", "numpy", "--deny", "ndif")
    assert out.returncode == 1, out
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("problem:")]
    fix = "Instead: do this work on this side and send the result, or use an allowed module"
    assert lines == [
        f"problem: cannot send module os (module) to the receiver: it is os, and the receiver denies module os. {fix}",
        f"problem: cannot send function __main__.<lambda> ({script}:4) (function) to the receiver: it calls "
        f"builtin eval, which the receiver denies. {fix}",
        f"problem: cannot send function __main__.m ({script}:5) (function) to the receiver: its source needs "
        "Python 3.10+, the receiver runs 3.9. Instead: rewrite it without that syntax, or use a newer receiver",
    ], out.stdout
    # the by_source stream's own exec/compile/getattr are not the user's: not reported
    assert "builtin exec" not in out.stdout and "builtin compile" not in out.stdout
    # without deny, on 3.12: fine
    ok = _cli(str(src), "--python", "3.12", "--modules", "numpy")
    assert ok.returncode == 0 and ok.stdout.startswith("OK for Receiver(python='3.12'"), ok
    # bytecode of this sender's layout on another layout's receiver; numpy missing
    other = "3.9" if sys.version_info >= (3, 11) else "3.12"
    out = _cli(str(byc), "--python", other, "--json")
    assert out.returncode == 1
    import json
    report = json.loads(out.stdout)
    reasons = [p["reason"] for p in report["problems"]]
    assert any("the receiver cannot import numpy" in r for r in reasons), reasons
    assert any(f"which Python {other} cannot load" in r for r in reasons), reasons
    assert report["by_reference"] == ["cloudpickle", "numpy"]


def test_cli_check_size_and_bad_input(tmp_path):
    p = tmp_path / "big.pkl"
    p.write_bytes(pickle.dumps({"w": b"x" * 5000, "b": b"y" * 10}))
    out = _cli(str(p), "--max-bytes", "1000")
    assert out.returncode == 1 and "over max_bytes=1000. Instead: send less: obj['w'] is 5.0 KB" in out.stdout
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x05garbage")
    out = _cli(str(bad))
    assert out.returncode == 2 and "not a readable pickle" in out.stderr
    out = _cli(str(tmp_path / "missing.pkl"))
    assert out.returncode == 2 and "cannot read" in out.stderr
    out = _cli(str(p), "--python", "three")
    assert out.returncode == 2 and "bad receiver" in out.stderr
