"""``python -m cloudpickle_rs inspect|deps``: checked on known pickles (never executed)."""
import json
import os
import pickle
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

import cloudpickle_rs
from cloudpickle_rs import _cli

pytestmark = pytest.mark.timeout(120)

MODULE = textwrap.dedent('''\
    import json
    import numpy


    def make_scorer(weight):
        def score(xs):
            return weight * float(numpy.sum(xs)) + len(json.dumps(list(xs)))
        return score


    class Model:
        def __init__(self, w):
            self.w = w

        def predict(self, x):
            return self.w * x


    square = lambda v: v * v
''')


@pytest.fixture()
def shipmod(tmp_path, monkeypatch):
    path = tmp_path / "shipmod_cli.py"
    path.write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    sys.modules.pop("shipmod_cli", None)
    mod = importlib.import_module("shipmod_cli")
    cloudpickle_rs.register_pickle_by_value(mod)
    try:
        yield mod, str(path)
    finally:
        cloudpickle_rs.unregister_pickle_by_value(mod)
        sys.modules.pop("shipmod_cli", None)


def cli(*args, stdin=None):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "cloudpickle_rs", *args], input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def payload(mod):
    return {"scorer": mod.make_scorer(2.5), "model": mod.Model(3), "square": mod.square,
            "data": list(range(5))}


def dump_module_by_source(tmp_path, monkeypatch, name, text, pick):
    """Write ``text`` as module ``name``, import it, dump ``pick(module)`` by source (the module
    registered by value meanwhile) into ``tmp_path/p.pkl``; return that path."""
    import importlib

    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    mod = importlib.import_module(name)
    cloudpickle_rs.register_pickle_by_value(mod)
    try:
        data = cloudpickle_rs.dumps(pick(mod), by_source=True)
    finally:
        cloudpickle_rs.unregister_pickle_by_value(mod)
        sys.modules.pop(name, None)
    f = tmp_path / "p.pkl"
    f.write_bytes(data)
    return f


@pytest.mark.parametrize("by_source", [False, True])
def test_inspect_json_functions_classes_modules(shipmod, tmp_path, by_source):
    mod, path = shipmod
    data = cloudpickle_rs.dumps(payload(mod), by_source=by_source)
    f = tmp_path / "p.pkl"
    f.write_bytes(data)
    rc, out, err = cli("inspect", str(f), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["size"] == len(data) and info["protocol"] == 5
    assert info["reconstructor_modules"] == ["cloudpickle.cloudpickle"]
    fns = {fn["name"]: fn for fn in info["functions"]}
    assert set(fns) == {"make_scorer.<locals>.score", "Model.__init__", "Model.predict", "<lambda>"}
    mode = "source" if by_source else "bytecode"
    for fn in fns.values():
        assert fn["mode"] == mode and fn["file"] == path and fn["module"] == "shipmod_cli"
        assert 0 < fn["size"] < len(data)
    assert fns["make_scorer.<locals>.score"]["line"] == 6
    assert fns["Model.predict"]["line"] == 15
    assert fns["<lambda>"]["line"] == 19
    assert fns["make_scorer.<locals>.score"]["closure"] == {"weight": "2.5"}
    assert set(fns["make_scorer.<locals>.score"]["globals"]) == {"numpy", "json"}
    if by_source:
        assert fns["make_scorer.<locals>.score"]["source"].startswith("def score(xs):")
        assert "weight * float(numpy.sum(xs))" in fns["make_scorer.<locals>.score"]["source"]
        assert fns["Model.predict"]["source"].splitlines()[0].strip() == "def predict(self, x):"
        assert fns["<lambda>"]["source"] == "lambda v: v * v"
        assert {fn["python"] for fn in fns.values()} == {"3.8+"}
    else:
        assert fns["Model.predict"]["bytecode_size"] > 0
        layout = "3.11+" if sys.version_info >= (3, 11) else "3.8-3.10"
        assert {fn["python"] for fn in fns.values()} == {f"the sender's version only ({layout} code layout)"}
    (cls,) = info["classes"]
    assert cls["name"] == "Model" and cls["module"] == "shipmod_cli"
    assert cls["methods"] == {"__init__": mode, "predict": mode}
    assert "numpy" in info["modules"] and "json" in info["modules"]
    assert "cloudpickle.cloudpickle" in info["modules"]
    keys = info["tree"]["keys"]
    assert keys == ["'scorer'", "'model'", "'square'", "'data'"]


def test_inspect_text_and_stdin(shipmod):
    mod, path = shipmod
    data = cloudpickle_rs.dumps(payload(mod), by_source=True)
    rc, out, err = cli("inspect", "-", stdin=data)
    assert rc == 0, err
    assert f"make_scorer.<locals>.score  [source, Python 3.8+]  {path}:6  module shipmod_cli" in out
    assert "closure: weight = 2.5" in out
    assert "| def score(xs):" in out
    assert "class Model(builtins.object)" in out and "predict (source)" in out
    assert "numpy: import (subimport)" in out
    assert "'model': instance of class Model" in out


NEWER = textwrap.dedent('''\
    def classify(a, b):
        with (
            open(a) as f,
            open(b) as g,
        ):
            return f.read() + g.read()


    def first(xs):
        if (n := len(xs)) > 0:
            return xs[0], n
        return None, 0
''')


def test_inspect_shows_minimum_python(tmp_path, monkeypatch):
    """Each source-shipped function says which receivers can compile it: 3.8 (the oldest
    receiver) unless its text needs more, here parenthesized context managers (3.9)."""
    f = dump_module_by_source(tmp_path, monkeypatch, "newer_cli", NEWER,
                              lambda mod: [mod.classify, mod.first])
    rc, out, err = cli("inspect", str(f), "--json")
    assert rc == 0, err
    assert {fn["name"]: fn["python"] for fn in json.loads(out)["functions"]} == {
        "classify": "3.9+", "first": "3.8+"}
    rc, out, err = cli("inspect", str(f))
    assert rc == 0, err
    assert "classify  [source, Python 3.9+]" in out and "first  [source, Python 3.8+]" in out


def test_deps_requirements_lines(shipmod, tmp_path):
    mod, _ = shipmod
    f = tmp_path / "p.pkl"
    f.write_bytes(cloudpickle_rs.dumps(payload(mod)))
    rc, out, err = cli("deps", str(f), "--all")
    assert rc == 0, err
    lines = out.splitlines()
    assert any(ln.startswith(f"numpy=={metadata.version('numpy')} ") for ln in lines), out
    assert any(ln.startswith(f"cloudpickle=={metadata.version('cloudpickle')} ") for ln in lines)
    assert not any(ln.startswith("json") for ln in lines)
    std = [ln for ln in lines if ln.startswith("# standard library:")]
    assert std and "json" in std[0] and "builtins" in std[0]


def test_deps_unknown_module_and_plain_pickle(tmp_path):
    # A global of a module no distribution provides: named as a comment, not a requirement.
    data = b"\x80\x02cnot_a_modulx\nfunc\n)R."
    f = tmp_path / "u.pkl"
    f.write_bytes(data)
    rc, out, _ = cli("deps", str(f))
    assert rc == 0
    assert "# not_a_modulx: no installed distribution provides it" in out
    info = _cli.analyse(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}))
    assert info["functions"] == [] and info["reconstructor_modules"] == []
    assert info["tree"]["keys"] == ["'a'", "'b'"]
    assert info["tree"]["children"][0]["text"] == "list of 3"


def test_inspect_never_executes(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = pickle.dumps(Evil(), protocol=2)
    f = tmp_path / "evil.pkl"
    f.write_bytes(data)
    rc, out, err = cli("inspect", str(f))
    assert rc == 0, err
    assert "posix.system" in out or "os.system" in out
    rc, out, err = cli("deps", str(f), "--all")
    assert rc == 0, err
    assert not marker.exists()


def test_malformed_input_is_an_error(tmp_path):
    f = tmp_path / "bad.pkl"
    f.write_bytes(b"\x80\x05\x95garbage")
    rc, _, err = cli("inspect", str(f))
    assert rc == 1 and "not a readable pickle" in err
    rc, _, err = cli("inspect", str(tmp_path / "missing.pkl"))
    assert rc == 2


def test_protocols_0_to_5_and_memo_sharing():
    shared = [1, 2]
    for proto in range(6):
        info = _cli.analyse(pickle.dumps({"x": shared, "y": shared, "t": (shared,)}, protocol=proto))
        tree = info["tree"]
        assert tree["keys"] == ["'x'", "'y'", "'t'"], proto
        assert "shared reference" in tree["children"][1]["text"], proto


LAMBDAS = textwrap.dedent('''\
    threshold = 0.5


    def validate(row):
        return row


    pipeline = [validate, lambda y: round(y, 3), lambda y: "high" if y > threshold else "low"]
    pair = (lambda a: a + 1,
            lambda b: (lambda c: b * c))
''')


def test_inspect_each_lambda_line_and_text(tmp_path, monkeypatch):
    """Each lambda shows its own line and exactly its own text, several on one line included
    (the demo's pipeline shape: the factory keeps the lambda on the line that assigns it, and a
    line search used to print ``file:?`` with the text ``)``)."""
    f = dump_module_by_source(tmp_path, monkeypatch, "lambdas_cli", LAMBDAS,
                              lambda mod: mod.pipeline + list(mod.pair))
    rc, out, err = cli("inspect", str(f), "--json")
    assert rc == 0, err
    got = [(fn["name"], fn["line"], fn["source"]) for fn in json.loads(out)["functions"]]
    assert got == [
        ("validate", 4, "def validate(row):\n    return row"),
        ("<lambda>", 8, "lambda y: round(y, 3)"),
        ("<lambda>", 8, 'lambda y: "high" if y > threshold else "low"'),
        ("<lambda>", 9, "lambda a: a + 1"),
        ("<lambda>", 10, "lambda b: (lambda c: b * c)"),
    ], got
    rc, out, err = cli("inspect", str(f))
    assert rc == 0, err
    assert "lambdas_cli.py:?" not in out and "lambdas_cli.py:8" in out, out
