"""The CLI's reader (``cloudpickle_rs._cli``) against real dumps of cloudpickle_rs.

The stream shape the reader recognises is named in one place, ``_cli/shape.py``; these tests make
dumps (by_source and bytecode; several lambdas on one line, nested closures, a class) and check
that the reader finds every function with its own name, file, line and text, and that the names
``shape.py`` gives occur in the streams as it says.
"""
import ast
import importlib
import pickletools
import sys
import textwrap

import pytest

import cloudpickle_rs
from cloudpickle_rs._cli import analyse, shape

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(sys.version_info < (3, 11),
                                 reason="matches lambdas to the source by code positions (3.11+)")]

MODULE = textwrap.dedent('''\
    import json

    T = 0.5


    def plain(x):
        return json.dumps(x)


    def make(weight):
        def outer(x):
            def inner(y):
                return weight * x * y + T
            return inner
        return outer


    def make_mul(k):
        return lambda y: y * k


    class Model:
        def __init__(self, w):
            self.w = w

        def predict(self, x):
            return self.w * x + T


    line = [lambda y: round(y, 3), lambda y: "hi" if y > T else "lo"]
    pair = (lambda a: a + 1, lambda b: (lambda c: b * c))
''')


@pytest.fixture()
def mod(tmp_path, monkeypatch):
    (tmp_path / "shape_cli_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("shape_cli_mod", None)
    m = importlib.import_module("shape_cli_mod")
    cloudpickle_rs.register_pickle_by_value(m)
    try:
        yield m
    finally:
        cloudpickle_rs.unregister_pickle_by_value(m)
        sys.modules.pop("shape_cli_mod", None)


def functions_of(m):
    """The functions the payload holds by value (those it names and the class's methods)."""
    return [m.plain, m.make(2), m.make(2)(3), m.make_mul(6), *m.line, *m.pair,
            m.pair[1](4), m.Model.__init__, m.Model.predict]


def payload(m):
    return [m.plain, m.make(2), m.make(2)(3), m.make_mul(6), m.line, m.pair,
            m.pair[1](4), m.Model, m.Model(3)]


def expected(fn, source):
    """(name, file, line, own text) of ``fn`` out of its module's source."""
    code = fn.__code__
    tree = ast.parse(source)
    if fn.__name__ == "<lambda>":
        # the first instruction with a column span (RESUME has none) lies in the lambda's body: the innermost lambda
        # whose span holds it is this one
        line, col = next((p[0], p[2]) for p in code.co_positions()
                         if p[0] == code.co_firstlineno and p[2] is not None and p[3] > p[2])
        spans = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)
                 and (n.lineno, n.col_offset) <= (line, col) < (n.end_lineno, n.end_col_offset)]
        # an outer lambda's first instruction can lie in the inner one: the right lambda holds
        # as many nested lambdas as the code holds nested code objects
        nested = sum(1 for c in code.co_consts if hasattr(c, "co_code"))
        node = max((n for n in spans
                    if sum(isinstance(d, ast.Lambda) for d in ast.walk(n)) - 1 == nested),
                   key=lambda n: (n.lineno, n.col_offset))
        text = ast.get_source_segment(source, node)
    else:
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                    and n.name == fn.__name__ and n.lineno == code.co_firstlineno)
        text = textwrap.dedent(" " * node.col_offset + ast.get_source_segment(source, node))
    return fn.__qualname__, code.co_filename, node.lineno, text


@pytest.mark.parametrize("by_source", [True, False])
def test_reader_finds_every_function_with_its_name_line_and_text(mod, by_source):
    data = cloudpickle_rs.dumps(payload(mod), by_source=by_source)
    info = analyse(data)
    want = sorted(expected(fn, MODULE) for fn in functions_of(mod))
    # a function reached twice in one dump travels once: compare the distinct ones
    want = sorted(set(want))
    mode = "source" if by_source else "bytecode"
    assert {f["mode"] for f in info["functions"]} == {mode}, info["functions"]
    if by_source:
        got = sorted({(f["name"], f["file"], f["line"], f["source"]) for f in info["functions"]})
        assert got == want
    else:  # bytecode carries no text: name, file and line
        got = sorted({(f["name"], f["file"], f["line"]) for f in info["functions"]})
        assert got == sorted({w[:3] for w in want})
    assert {(c["qualname"], c["kind"]) for c in info["classes"]} == {("Model", "class")}
    assert info["classes"][0]["methods"] == {"__init__": mode, "predict": mode}
    assert "json" in info["modules"]


def stream_globals(data):
    """The (module, name) globals and the strings of a stream, read with pickletools alone (the
    memo followed for the strings STACK_GLOBAL takes)."""
    out, strings, memo, recent = set(), [], {}, []
    last = None
    for op, arg, _pos in pickletools.genops(data):
        value = None
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            value = arg
            strings.append(arg)
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            value = memo.get(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
        elif op.name == "STACK_GLOBAL":
            out.add((recent[-2], recent[-1]))
        elif op.name in ("GLOBAL", "INST"):
            out.add(tuple(arg.split(" ", 1)))
        if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME"):
            continue
        last = value
        recent.append(value)
    return out, strings


def test_shape_names_occur_in_real_streams(mod):
    """What shape.py names is what the streams hold (not an old shape)."""
    src = cloudpickle_rs.dumps(payload(mod), by_source=True)
    byc = cloudpickle_rs.dumps(payload(mod))
    for data in (src, byc):
        found, strings = stream_globals(data)
        recon = {m for m, _ in found if m in shape.RECONSTRUCTOR_MODULES}
        assert recon, found
        names = {n for m, n in found if m in recon}
        assert shape.MAKE_FUNCTION in names and shape.MAKE_CLASS in names
        assert names & set(shape.SETSTATE) and names & set(shape.MAKE_CELL)
    found, strings = stream_globals(src)
    assert {(shape.BUILTINS, shape.COMPILE), (shape.BUILTINS, shape.EXEC)} <= found
    assert shape.HELPER_NAME in strings
    assert any(shape.FACTORY_RESULT in s for s in strings)
    found, strings = stream_globals(byc)
    assert shape.CODE_TYPE in strings and shape.BUILTIN_TYPE in {n for _, n in found}
    assert (shape.BUILTINS, shape.COMPILE) not in found
    for f in analyse(src)["functions"]:
        assert shape.FACTORY_RESULT in f["factory_source"]
        assert f["python"] == "3.8+"


def test_reader_on_a_newer_syntax_marker(tmp_path, monkeypatch):
    """A factory of 3.10+ syntax carries the REQUIRES marker the reader reads."""
    (tmp_path / "shape_cli_match.py").write_text(textwrap.dedent('''\
        def kind(x):
            match x:
                case 0:
                    return "zero"
                case _:
                    return "other"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("shape_cli_match", None)
    m = importlib.import_module("shape_cli_match")
    cloudpickle_rs.register_pickle_by_value(m)
    try:
        data = cloudpickle_rs.dumps(m.kind, by_source=True)
    finally:
        cloudpickle_rs.unregister_pickle_by_value(m)
        sys.modules.pop("shape_cli_match", None)
    (f,) = analyse(data)["functions"]
    assert shape.REQUIRES.search(f["factory_source"]), f["factory_source"]
    assert f["python"] == "3.10+" and f["line"] == 1 and f["source"].startswith("def kind(x):")


@pytest.mark.parametrize("by_source", [True, False])
def test_reader_on_the_demo_payload(by_source, monkeypatch):
    """``make demo``'s payload (closures, two lambdas on one line, a dataclass instance)."""
    import pathlib

    examples = pathlib.Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    demo = importlib.import_module("demo")
    info = analyse(cloudpickle_rs.dumps(demo.payload, by_source=by_source))
    source = (examples / "demo.py").read_text()
    want = sorted(set(expected(fn, source) for fn in [*demo.pipeline, demo.stats]))
    if by_source:
        got = sorted({(f["name"], f["file"], f["line"], f["source"]) for f in info["functions"]})
    else:
        got = sorted({(f["name"], f["file"], f["line"]) for f in info["functions"]})
        want = sorted({w[:3] for w in want})
    assert got == want
    assert [f["name"] for f in info["functions"]].count("<lambda>") == 2
