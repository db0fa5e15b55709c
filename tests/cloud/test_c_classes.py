"""C classes travel by reference only: where their module and qualname do not find them, dumps
raises the C pickler's PicklingError (stock cloudpickle writes a skeleton Python class instead,
which loads as an empty class without the C behaviour, or fails on the receiver)."""
import ctypes
import pickle
import sys
import zlib
import _thread

import pytest

import cloudpickle_rs

UNFINDABLE = {
    "list_iterator": type(iter([])),
    "zlib.Compress": type(zlib.compressobj()),
    "sys.flags type": type(sys.flags),
    "ctypes metaclass": type(ctypes.Structure),
}


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", sorted(UNFINDABLE))
def test_unfindable_c_class_refused_as_the_c_pickler_does(name, proto):
    cls = UNFINDABLE[name]
    with pytest.raises(pickle.PicklingError) as ours:
        cloudpickle_rs.dumps(cls, protocol=proto)
    with pytest.raises(pickle.PicklingError) as ref:
        pickle.dumps(cls, protocol=proto)
    if name == "ctypes metaclass" and sys.version_info >= (3, 13):
        # 3.13 gave ctypes' metaclasses a metaclass (_ctypes.CType_Type): our walk reduces the
        # class through it and names that one, the C pickler names the class; both refuse
        assert "CType_Type" in str(ours.value) or repr(cls) in str(ours.value), str(ours.value)
    else:
        assert str(ours.value) == str(ref.value)


ALIASED = {"_thread.lock": "_thread.LockType", "_json.Encoder": "_json.make_encoder"}


@pytest.mark.parametrize("name", sorted(ALIASED))
def test_c_class_found_under_another_name_goes_by_that_name(name):
    """Better than the C pickler (which refuses) and upstream (which writes a skeleton class):
    a C class its module holds under another name is written as that global."""
    module, attr = ALIASED[name].split(".")
    cls = getattr(__import__(module), attr)
    assert f"{cls.__module__}.{cls.__qualname__}" == name
    if getattr(__import__(module), cls.__qualname__, None) is cls:
        pytest.skip(f"{name} is findable by its own name on this Python (3.13 added _thread.lock)")
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        stream = cloudpickle_rs.dumps(cls, protocol=proto)
        assert attr.encode() in stream and pickle.loads(stream) is cls


def test_function_by_value_using_an_aliased_c_class_loads_elsewhere(tmp_path):
    """json.dumps by value reaches `_json.make_encoder` (the class `_json.Encoder`) through its
    globals: the stream loads and runs in a fresh process."""
    import json
    import subprocess
    path = tmp_path / "f.pkl"
    path.write_bytes(cloudpickle_rs.dumps(json.dumps, pickle_by_reference=lambda o: False))
    code = "import pickle, sys; f = pickle.loads(open(sys.argv[1], 'rb').read()); print(f({'a': [1, 2]}))"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == '{"a": [1, 2]}', out


def test_instance_whose_class_cannot_be_found():
    with pytest.raises(pickle.PicklingError, match="sys.flags"):
        cloudpickle_rs.dumps(sys.flags)


def test_callback_false_does_not_send_a_heap_c_class_by_value():
    """pickle_by_reference=callable answering False: a C class still goes by reference (a heap
    C type such as zlib's Compress on 3.11 has no class statement to send)."""
    import _random
    for cls in (_random.Random, int, type(zlib.compressobj())):
        try:
            expected = pickle.dumps(cls, protocol=5)
        except pickle.PicklingError:
            with pytest.raises(pickle.PicklingError):
                cloudpickle_rs.dumps(cls, protocol=5, pickle_by_reference=lambda o: False)
        else:
            assert pickle.loads(cloudpickle_rs.dumps(cls, protocol=5, pickle_by_reference=lambda o: False)) is cls
            assert expected


def test_python_subclass_of_c_class_still_by_value():
    import _random
    ns = {}
    exec("import _random\nclass MyRandom(_random.Random):\n    def draw(self):\n        return 4\n", ns)
    cls = ns["MyRandom"]
    cls.__module__ = "__main__"
    stream = cloudpickle_rs.dumps(cls)
    assert b"_make_skeleton_class" in stream and b"MyRandom" in stream
    loaded = pickle.loads(stream)
    assert loaded.__mro__[1] is _random.Random and loaded().draw() == 4


def test_upstream_stream_loads_as_another_class_elsewhere(tmp_path):
    """What upstream writes for such a class fails to load in a fresh process, or loads as
    another class: the reason to refuse it at dump time."""
    import subprocess
    import cloudpickle
    path = tmp_path / "c.pkl"
    path.write_bytes(cloudpickle.dumps(type(zlib.compressobj())))
    code = ("import pickle, sys, zlib; c = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "print(c is type(zlib.compressobj()))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    # 3.11: "AttributeError: type object 'Compress' has no attribute '__copy__'" while loading.
    assert out.returncode != 0 or out.stdout.split() == ["False"], out
