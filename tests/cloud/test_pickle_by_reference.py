"""`pickle_by_reference`: the caller decides what the receiver can import (DESIGN.md §1)."""
import collections
import json
import pickle
import subprocess
import sys
import types

import pytest

import cloudpickle_rs


def test_false_sends_an_importable_function_by_value():
    seen = []

    def by_value(obj):
        seen.append(obj)
        return False

    data = cloudpickle_rs.dumps(json.dumps, pickle_by_reference=by_value)
    assert json.dumps in seen
    # by value: the stream carries its code, not `json.dumps` by name
    assert b"_make_function" in data
    assert pickle.loads(data)({"a": 1}) == '{"a": 1}'


def test_true_sends_a_main_function_by_reference():
    def local():
        return 1

    local.__qualname__ = "local_made_global"
    sys.modules[__name__].local_made_global = local
    try:
        data = cloudpickle_rs.dumps(local, pickle_by_reference=lambda o: True)
        assert b"_make_function" not in data
        assert pickle.loads(data) is local
    finally:
        del sys.modules[__name__].local_made_global


def test_consulted_for_classes_and_modules():
    seen = []

    def decide(obj):
        seen.append(obj)
        return True

    cloudpickle_rs.dumps([json.JSONDecoder, json, collections.OrderedDict], pickle_by_reference=decide)
    assert json.JSONDecoder in seen
    assert json in seen
    # A static (C) type can only go by reference: the callback is not asked about it.
    assert collections.OrderedDict not in seen


def test_module_by_value_when_refused(monkeypatch):
    tiny = types.ModuleType("tiny_importable_mod")
    exec("K = 3\ndef f(x):\n    return x * K\n", tiny.__dict__)
    monkeypatch.setitem(sys.modules, "tiny_importable_mod", tiny)
    assert b"dynamic_subimport" not in cloudpickle_rs.dumps(tiny)
    data = cloudpickle_rs.dumps(
        tiny, pickle_by_reference=lambda o: o is not tiny and getattr(o, "__module__", None) != tiny.__name__)
    assert b"dynamic_subimport" in data
    monkeypatch.delitem(sys.modules, "tiny_importable_mod")
    assert pickle.loads(data).f(2) == 6


def test_refusal_reaches_the_caller_unchanged():
    err = cloudpickle_rs.PicklingProhibitedError("the server must not get this")

    def refuse(obj):
        raise err

    with pytest.raises(cloudpickle_rs.PicklingProhibitedError) as info:
        cloudpickle_rs.dumps({"f": lambda: 1}, pickle_by_reference=refuse)
    assert info.value is err
    assert isinstance(info.value, pickle.PicklingError)


def test_other_exceptions_propagate_too():
    def broken(obj):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        cloudpickle_rs.dumps(lambda: 1, pickle_by_reference=broken)


def test_pickler_option_and_dispatch_in_subprocess(tmp_path):
    # A function of an importable module sent by value loads where that module is missing.
    mod = tmp_path / "only_here_mod.py"
    mod.write_text("def triple(x):\n    return 3 * x\n")
    script = (
        "import sys, io; sys.path.insert(0, %r)\n"
        "import only_here_mod, cloudpickle_rs\n"
        "f = io.BytesIO()\n"
        "p = cloudpickle_rs.Pickler(f, pickle_by_reference=lambda o: getattr(o, '__module__', None) != 'only_here_mod')\n"
        "p.dump(only_here_mod.triple)\n"
        "sys.stdout.buffer.write(f.getvalue())\n" % str(tmp_path)
    )
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    out = subprocess.run([sys.executable, "-I", "-c", "import pickle,sys; print(pickle.loads(sys.stdin.buffer.read())(5))"],
                         input=data, capture_output=True, cwd=str(tmp_path.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == b"15"


def test_dynamic_module_function_with_callback_true_fails_like_pickle():
    m = types.ModuleType("not_importable_anywhere")
    exec("def g():\n    return 2\n", m.__dict__)
    with pytest.raises(pickle.PicklingError):
        cloudpickle_rs.dumps(m.g, pickle_by_reference=lambda o: True)
