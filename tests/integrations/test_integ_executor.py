"""cloudpickle_rs.integrations.executor: stdlib process pools whose tasks travel with cloudpickle_rs.

CloudProcessPoolExecutor runs scripts/exec_app.py as ``__main__`` (this interpreter, the package
from integ_env.package_dir()) under fork, spawn and forkserver.  InterpreterPoolExecutor starts
workers with other interpreters that have only stock cloudpickle (loader environments of
tests/support/loaders.py): CPython 3.11 (bytecode loads: real functions work) and PyPy 3.9 (plain
data with bytecode; lambdas, closures and classes with by_source=True).
The by_source cases include workers sending back by source what they received by source.
"""
import operator
import os
import pickle
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integ_env  # noqa: E402

import cloudpickle_rs  # noqa: E402
from cloudpickle_rs.integrations import executor as cprs_exec  # noqa: E402

pytestmark = pytest.mark.timeout(900)  # the pypy39 loader may be built on first use

EXPECTED = {"lambda": 42, "closure": 15, "method": 7, "instance_is_main_class": True,
            "instance": [7, -7], "returned_lambda": 42, "map": [100, 101, 102, 103, 104],
            "initializer": "init-ran", "exception": ["Boom", "kaboom", True]}


def run_exec_app(method, *extra):
    env = integ_env.script_env()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(integ_env.SCRIPTS / "exec_app.py"), method, *extra],
                          env=env, cwd=str(integ_env.SCRIPTS), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=150)
    res = integ_env.ScriptResult(proc.returncode, proc.stdout, proc.stderr, None,
                                 time.monotonic() - t0)
    for line in proc.stdout.splitlines():
        if line.startswith(integ_env.RESULT_MARK):
            import json

            res.result = json.loads(line[len(integ_env.RESULT_MARK):])
    assert res.returncode == 0 and res.result is not None, res.explain()
    return res.result


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_cloud_process_pool_start_methods(method):
    out = run_exec_app(method)
    assert out["results"] == EXPECTED
    driver = out["driver"]
    assert driver["stock_dumps"] == 0
    assert driver["integrations"]["executor"]["counts"]["tasks"] > 0
    workers = [w for w in out["workers"] if w["pid"] != driver["pid"]]
    assert workers and len(workers) == len(out["workers"])
    for w in workers:
        assert w["audit"] and w["stock_dumps"] == 0, w
        assert w["integrations"]["executor"]["counts"].get("results", 0) > 0, w


def test_cloud_process_pool_spawn_by_source():
    # Workers return a __main__ instance and a lambda they received by source: they send them
    # back by source too (the stream left the factory texts in their linecache).
    out = run_exec_app("spawn", "by_source")
    assert out["results"] == EXPECTED
    assert out["driver"]["stock_dumps"] == 0


def test_cloud_process_pool_in_process_with_options():
    import multiprocessing

    seen = []

    def by_ref(obj):
        seen.append(obj)
        return False

    with cprs_exec.CloudProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork"), by_source=False,
            pickle_by_reference=None, protocol=4) as ex:
        assert ex._cprs_opts == {"protocol": 4}
        k = 3
        assert ex.submit(lambda x: x * k, 5).result(timeout=60) == 15
        fut = ex.submit(operator.truediv, 1, 0)
        with pytest.raises(ZeroDivisionError):
            fut.result(timeout=60)
    ex2 = cprs_exec.CloudProcessPoolExecutor(1, pickle_by_reference=by_ref)
    try:
        assert ex2._cprs_opts["pickle_by_reference"] is by_ref
    finally:
        ex2.shutdown()


def test_cloud_process_pool_receiver_refuses_at_submit():
    import multiprocessing

    r = cloudpickle_rs.Receiver(deny=["subprocess"], forbid={"os.DirEntry": "send the path"})
    with cprs_exec.CloudProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork"), receiver=r) as ex:
        assert ex._cprs_opts["receiver"] is r
        k = 4
        assert ex.submit(lambda x: x * k, 5).result(timeout=60) == 20
        with pytest.raises(cloudpickle_rs.PicklingProhibitedError,
                           match=r"uses 'subprocess' \(global: module subprocess\), which the receiver denies"):
            ex.submit(lambda: subprocess.run(["true"]))
        entry = next(os.scandir("."))
        with pytest.raises(cloudpickle_rs.PicklingProhibitedError, match="Instead: send the path"):
            ex.submit(print, entry)
        assert ex.submit(operator.add, 1, 2).result(timeout=60) == 3  # the pool still works
    with pytest.raises(TypeError, match="receiver must be a cloudpickle_rs.Receiver"):
        cprs_exec.CloudProcessPoolExecutor(1, receiver="numpy")


def test_a_receiver_travels_without_its_caches():
    r = cloudpickle_rs.Receiver(python="3.9", modules=["numpy"], deny=cloudpickle_rs.Receiver.NDIF_DENY)
    cloudpickle_rs.dumps(lambda: 1, receiver=r, by_source=True)  # fills the caches
    r2 = pickle.loads(pickle.dumps(r))
    assert (r2.python, r2.modules, r2.deny_modules) == (r.python, r.modules, r.deny_modules)
    assert not hasattr(r2, "_cprs_core")
    with pytest.raises(cloudpickle_rs.PicklingProhibitedError, match="denies"):
        cloudpickle_rs.dumps(lambda: os.getcwd(), receiver=r2, by_source=True)


def test_options_plumbing_by_source(monkeypatch):
    # The option reaches cloudpickle_rs.dumps: asserted on the options, not on a dump, so the
    # test holds before and after by_source is built.
    assert cprs_exec._options(False, None, None) == {"protocol": None}
    assert cprs_exec._options(True, None, 5) == {"protocol": 5, "by_source": True}
    assert cprs_exec._options("auto", None, None)["by_source"] == "auto"
    monkeypatch.setenv("CLOUDPICKLE_RS_BY_SOURCE", "1")
    assert cprs_exec._options(None, None, None)["by_source"] is True
    monkeypatch.setenv("CLOUDPICKLE_RS_BY_SOURCE", "0")
    assert "by_source" not in cprs_exec._options(None, None, None)
    calls = []
    monkeypatch.setattr(cprs_exec._rs, "dumps", lambda obj, proto, **kw: calls.append(kw) or b"")
    cprs_exec._dump_task({"protocol": None, "by_source": True}, len, ((),), {})
    assert calls == [{"by_source": True}]


def test_interpreter_pool_stock_cpython(stock_cp312):
    # CPython 3.11 with only stock cloudpickle: bytecode functions load there.
    with cprs_exec.InterpreterPoolExecutor(stock_cp312.python, max_workers=2) as ex:
        infos = ex.workers
        assert {i["pickler"] for i in infos} == {"cloudpickle"}
        assert all(i["implementation"] == "cpython" for i in infos)
        assert all(i["pid"] != os.getpid() for i in infos)
        n = 10
        assert ex.submit(lambda x: x + n, 32).result(timeout=60) == 42
        assert list(ex.map(lambda x: x * x, range(5), timeout=60)) == [0, 1, 4, 9, 16]
        f = ex.submit(lambda k: (lambda y: y * k), 6).result(timeout=60)
        assert f(7) == 42  # a lambda pickled by stock cloudpickle in the worker
        with pytest.raises(ValueError) as info:
            ex.submit(int, "not a number").result(timeout=60)
        assert "int" in str(info.value.__cause__)


def test_interpreter_pool_receiver(stock_cp312):
    # The receiver's python comes from the workers (the sender's own version here);
    # what it denies is refused at submit and never reaches a worker.
    r = cloudpickle_rs.Receiver(deny=["subprocess"])
    with cprs_exec.InterpreterPoolExecutor(stock_cp312.python, max_workers=1, receiver=r) as ex:
        assert ex._opts["target_python"] == sys.version_info[:2] and ex._opts["receiver"] is r
        n = 2
        assert ex.submit(lambda x: x + n, 40).result(timeout=60) == 42
        with pytest.raises(cloudpickle_rs.PicklingProhibitedError, match="which the receiver denies"):
            ex.submit(lambda: subprocess.check_output(["id"]))
        assert ex.submit(sorted, [3, 1, 2]).result(timeout=60) == [1, 2, 3]


def test_interpreter_pool_pypy_plain_data(pypy39):
    with cprs_exec.InterpreterPoolExecutor(pypy39.python, max_workers=2) as ex:
        infos = ex.workers
        assert all(i["implementation"] == "pypy" and i["version"][:2] == [3, 9] for i in infos)
        assert {i["pickler"] for i in infos} == {"cloudpickle"}
        assert ex.submit(sorted, [3, 1, 2]).result(timeout=60) == [1, 2, 3]
        assert ex.submit(operator.add, 2, 40).result(timeout=60) == 42
        assert list(ex.map(abs, [-1, -2, 3], timeout=60)) == [1, 2, 3]
        assert ex.submit(dict, a=[1, {"b": (2, 3)}]).result(timeout=60) == {"a": [1, {"b": (2, 3)}]}
        with pytest.raises(ValueError):
            ex.submit(int, "x").result(timeout=60)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def make_adder(n):
    def add(x):
        return x + n
    return add


@pytest.fixture()
def this_module_by_value():
    # This test module is importable here but not in the worker: ship its functions by value.
    import cloudpickle_rs

    mod = sys.modules[__name__]
    cloudpickle_rs.register_pickle_by_value(mod)
    try:
        yield
    finally:
        cloudpickle_rs.unregister_pickle_by_value(mod)


def test_interpreter_pool_pypy_by_source_functions(pypy39, this_module_by_value):
    # Functions written on CPython 3.11 run on PyPy 3.9 (stock cloudpickle only): by source.
    with cprs_exec.InterpreterPoolExecutor(pypy39.python, max_workers=2, by_source=True) as ex:
        assert ex.submit(lambda x: x + 1, 41).result(timeout=60) == 42
        assert ex.submit(make_adder(10), 5).result(timeout=60) == 15
        assert ex.submit(lambda p: p.norm1(), Point(3, -4)).result(timeout=60) == 7
        assert list(ex.map(make_adder(100), range(3), timeout=60)) == [100, 101, 102]
        with pytest.raises(ZeroDivisionError) as info:
            ex.submit(lambda: 1 / 0).result(timeout=60)
        assert "test_integ_executor.py" in str(info.value.__cause__)  # PyPy's traceback


def test_interpreter_pool_pypy_bytecode_is_refused_there(pypy39):
    # The control: the same lambda as CPython 3.11 bytecode does not load on PyPy 3.9.  With
    # target_python=None it is sent and fails on the worker; by default the pool knows its
    # workers' version and refuses it at submit, naming the function.
    with cprs_exec.InterpreterPoolExecutor(pypy39.python, max_workers=1, by_source=False,
                                           target_python=None) as ex:
        with pytest.raises(Exception):
            ex.submit(lambda x: x + 1, 41).result(timeout=60)
        assert ex.submit(len, [1, 2]).result(timeout=60) == 2
    with cprs_exec.InterpreterPoolExecutor(pypy39.python, max_workers=1, by_source=False) as ex:
        with pytest.raises(pickle.PicklingError, match=r"'<lambda>'.*bytecode for Python 3\.9.*by_source=True"):
            ex.submit(lambda x: x + 1, 41)
        assert ex.submit(len, [1, 2]).result(timeout=60) == 2


@pytest.mark.skipif(sys.version_info < (3, 10), reason="the sender must parse a match statement")
def test_interpreter_pool_refuses_syntax_the_workers_lack(pypy39, tmp_path, monkeypatch):
    # A by_source task whose text needs a newer Python than the workers' (a match statement on
    # PyPy 3.9) is refused at submit, before anything reaches the worker.
    (tmp_path / "needs310_exec.py").write_text(
        "def classify(v):\n    match v:\n        case [x, *_]:\n            return x\n"
        "        case _:\n            return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("needs310_exec", None)
    import needs310_exec

    cloudpickle_rs.register_pickle_by_value(needs310_exec)
    try:
        with cprs_exec.InterpreterPoolExecutor(pypy39.python, max_workers=1, by_source=True) as ex:
            with pytest.raises(pickle.PicklingError, match=r"classify.*`match` statement.*Python 3\.10\+"):
                ex.submit(needs310_exec.classify, [1])
            assert ex.submit(len, [1, 2]).result(timeout=60) == 2
        with pytest.raises(ValueError, match="target_python"):
            cprs_exec.InterpreterPoolExecutor(pypy39.python, max_workers=1, target_python="3.7")
    finally:
        cloudpickle_rs.unregister_pickle_by_value(needs310_exec)
        sys.modules.pop("needs310_exec", None)


def test_interpreter_pool_broken_worker_fails_futures(stock_cp312):
    ex = cprs_exec.InterpreterPoolExecutor(stock_cp312.python, max_workers=1)
    try:
        fut = ex.submit(os._exit, 3)
        with pytest.raises(cprs_exec.BrokenProcessPool):
            fut.result(timeout=60)
        with pytest.raises(cprs_exec.BrokenProcessPool):
            ex.submit(len, [])
    finally:
        ex.shutdown()


def test_interpreter_pool_bad_interpreter_raises():
    with pytest.raises((OSError, cprs_exec.BrokenProcessPool)):
        cprs_exec.InterpreterPoolExecutor("/bin/false", max_workers=1, start_timeout=20)
