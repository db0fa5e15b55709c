"""The receiver's side of a by_source stream: its compile helper keeps each factory text's code
(in ``linecache._cloudpickle_rs_texts``), so a second load of the same functions compiles
nothing; a cache entry that does not match the text sent is never used; the cache is bounded;
and what a process received can be sent on by source. Loaded with stock cloudpickle only
(3.1.2 and 3.0.0 on CPython 3.11, and PyPy 3.9)."""
import importlib.util
import linecache
import os
import pickle
import sys
import textwrap

import pytest

import cloudpickle_rs

MODULE = textwrap.dedent('''\
    import math
    import os.path as osp

    SCALE = 3


    def uses_math(x):
        return math.sqrt(x) + osp.basename("a/b").count("b")


    def make_adder(k):
        def add(x):
            return x + k * SCALE
        return add


    class Box:
        def __init__(self, v):
            self.__v = v

        def get(self):
            return self.__v + 1
''') + "\n" * 40 + textwrap.dedent('''\
    def deep(x, y=5):
        if x < 0:
            raise ValueError("negative: %d" % x)
        return x * y
''')


@pytest.fixture()
def shipped(tmp_path):
    path = tmp_path / "cache_mod.py"
    path.write_text(MODULE)
    spec = importlib.util.spec_from_file_location("cache_mod", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cache_mod"] = mod
    spec.loader.exec_module(mod)
    cloudpickle_rs.register_pickle_by_value(mod)
    try:
        yield mod, path
    finally:
        if "cache_mod" in sys.modules:  # test_what_was_received... removes it itself
            cloudpickle_rs.unregister_pickle_by_value(mod)
        sys.modules.pop("cache_mod", None)


def payload(mod):
    return {"uses_math": mod.uses_math, "add": mod.make_adder(2), "Box": mod.Box, "deep": mod.deep}


CHECK = textwrap.dedent('''\
    import linecache, pickle
    data = open("../payload.pkl", "rb").read()
    first = obj
    texts = vars(linecache)["_cloudpickle_rs_texts"]
    n_texts = len(texts)
    second = pickle.loads(data)
    same_code = all(first[k].__code__ is second[k].__code__ for k in ("uses_math", "add", "deep"))
    # An entry whose text differs from what the stream sends (a key collision) is not used.
    stale = compile("def impostor():\\n    return 'wrong'\\n", "<x>", "exec")
    for key, hit in list(texts.items()):
        texts[key] = ("other body",) + hit[1:4] + (stale,)
    third = pickle.loads(data)
    values = [third["uses_math"](16.0), third["add"](1), third["Box"](4).get(), third["deep"](3)]
    recompiled = third["deep"].__code__ is not first["deep"].__code__
    # Bounded: a full cache is emptied before the next text goes in (a miss: forget ours).
    for key in [k for k in texts if k >= 0]:
        del texts[key]
    for i in range(5000 - len(texts)):
        texts[-1 - i] = None
    pickle.loads(data)
    after_full = len(texts)
    try:
        third["deep"](-1)
        line = None
    except ValueError as e:
        tb = e.__traceback__
        while tb.tb_next:
            tb = tb.tb_next
        line = [tb.tb_lineno, linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()]
    result = {"n_texts": n_texts, "same_code": same_code, "values": values,
              "recompiled": recompiled, "after_full": after_full, "line": line,
              "firstlineno": first["deep"].__code__.co_firstlineno}
''')


def test_receiver_compiles_each_text_once_and_checks_hits(shipped, any_loader):
    mod, path = shipped
    data = cloudpickle_rs.dumps(payload(mod), by_source=True)
    got = any_loader.load(data, CHECK)
    deep_line = mod.deep.__code__.co_firstlineno
    assert got["firstlineno"] == deep_line
    # uses_math, add, Box.__init__, Box.get, deep: one text each.
    assert got["n_texts"] == 5, got
    assert got["same_code"] is True
    assert got["values"] == [5.0, 7, 5, 15]
    assert got["recompiled"] is True
    assert got["after_full"] <= 5, got
    assert got["line"] == [deep_line + 2, 'raise ValueError("negative: %d" % x)']


def test_rebuilt_code_equals_the_original_here(shipped):
    mod, _ = shipped
    back = pickle.loads(cloudpickle_rs.dumps(payload(mod), by_source=True))
    # `math.sqrt(...)` with `math` imported by the module: the factory's import prelude makes
    # CPython 3.11+ compile it as the module did (LOAD_ATTR), so the code objects are equal.
    assert back["uses_math"].__code__ == mod.uses_math.__code__
    assert back["deep"].__code__ == mod.deep.__code__
    assert back["uses_math"](9.0) == mod.uses_math(9.0)


def test_what_was_received_is_sent_on_by_source(shipped):
    mod, path = shipped
    data = cloudpickle_rs.dumps(payload(mod), by_source=True)
    cloudpickle_rs.unregister_pickle_by_value(mod)
    sys.modules.pop("cache_mod", None)
    os.remove(path)
    linecache.clearcache()
    back = pickle.loads(data)
    # Its file is gone; the texts the receiver keeps are what a second hop sends.
    again = pickle.loads(cloudpickle_rs.dumps(back, by_source=True))
    assert again["deep"](4) == 20 and again["add"](1) == 7 and again["Box"](1).get() == 2
    assert again["deep"].__code__.co_firstlineno == mod.deep.__code__.co_firstlineno


def test_stream_stable_after_loading_it_here(shipped):
    """Loading a class by value in its own process updates the class (cloudpickle's class
    tracker): its methods and `__module__` are then the loaded ones, which can change how the
    stream shares strings (as in bytecode mode and stock cloudpickle). Dask's tokenize dumps,
    loads and dumps again until two dumps in a row agree (3 tries): the stream must reach a
    fixed point at once. It did not when the factory's file name was the code's own str object."""
    mod, _ = shipped
    data = cloudpickle_rs.dumps(payload(mod), by_source=True)
    pickle.loads(data)
    second = cloudpickle_rs.dumps(payload(mod), by_source=True)
    for _ in range(2):
        pickle.loads(second)
        assert cloudpickle_rs.dumps(payload(mod), by_source=True) == second
