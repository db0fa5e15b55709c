"""Every error raised for an object that cannot be pickled says where it sits, from the root.

As the error unwinds, each level adds a note (``when serializing list item 2``), and the top adds
``path to the object that failed, from the <type> being pickled: obj[...]...``. These tests pin the
path for each kind of step: list/tuple items, dict values and keys, set elements, instance state
(``__dict__`` and slots), reducer arguments, closures, globals, defaults, function attributes,
partials, classes pickled by value, for dumps, dump, Pickler subclasses and PicklerBase.
"""
import collections
import functools
import io
import pickle
import re
import threading

import pytest

import cloudpickle_rs

LOCK = threading.Lock()
PATH_NOTE = "path to the object that failed, from the "


def _error(obj, dump=None, **kw):
    with pytest.raises(Exception) as info:
        (dump or cloudpickle_rs.dumps)(obj, **kw)
    return info.value


def _path(err):
    paths = [n for n in getattr(err, "__notes__", []) if n.startswith(PATH_NOTE)]
    assert len(paths) == 1, f"expected one path note, got {getattr(err, '__notes__', None)}"
    return paths[0][len(PATH_NOTE):]


def _level_notes(err):
    return [n for n in err.__notes__ if not n.startswith(PATH_NOTE)]


class Worker:
    def __init__(self, handler):
        self.handler = handler


def _make_handler():
    lock = LOCK

    def handler():
        return lock

    return handler


def test_the_issue_example_workers_closure_lock():
    err = _error({"workers": [1, 2, Worker(_make_handler())]})
    assert isinstance(err, TypeError) and "_thread.lock" in str(err)
    path = _path(err)
    assert path.startswith("dict being pickled: obj['workers'][2]"), path
    # the attribute step (instance state, key 'handler'), then the closure cell by name
    assert re.search(r"obj\['workers'\]\[2\](\.handler| \(Worker state\)\['handler'\])\.__closure__ cell 'lock'$", path), path
    assert _level_notes(err) == [
        "when serializing function __closure__ cell 'lock'",
        "when serializing dict item 'handler'",
        "when serializing Worker state",
        "when serializing list item 2",
        "when serializing dict item 'workers'",
    ]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_nested_builtins(protocol):
    obj = (0, {"a": [1, 2, {"b": (3, Unpicklable())}]})
    assert _path(_error(obj, protocol=protocol)) == "tuple being pickled: obj[1]['a'][2]['b'][1]"


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable refuses")


def test_list_tuple_dict_paths_exact():
    err = _error([0, 1, 2, {"x": [(None, Unpicklable())]}])
    assert _path(err) == "list being pickled: obj[3]['x'][0][1]"
    assert _level_notes(err) == ["when serializing tuple item 1", "when serializing list item 0",
                                 "when serializing dict item 'x'", "when serializing list item 3"]


def test_dict_key():
    err = _error({"ok": 1, LOCK: 2})
    assert _path(err).startswith("dict being pickled: obj key <unlocked _thread.lock object")


def test_set_element():
    path = _path(_error({"s": {1, (2, Unpicklable())}}, protocol=5))
    assert path == "dict being pickled: obj['s'] (set element)[1]", path


def test_frozenset_element():
    path = _path(_error([frozenset([(2, Unpicklable())])], protocol=4))
    assert path == "list being pickled: obj[0] (frozenset element)[1]", path


def test_instance_state_and_slots():
    class Slotted:
        __slots__ = ("a", "b")

    s = Slotted()
    s.b = Unpicklable()
    path = _path(_error({"s": s}, protocol=2))
    assert path == "dict being pickled: obj['s'] (Slotted state)[1]['b']", path
    w = Worker([1, Unpicklable()])
    assert _path(_error([w])) == "list being pickled: obj[0] (Worker state)['handler'][1]"


class Args:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (Args, self.args)


def test_reducer_arguments():
    path = _path(_error({"r": Args(1, [Unpicklable()])}))
    assert path == "dict being pickled: obj['r'] (Args reconstructor arguments)[1][0]", path


def _uses_global():
    return LOCK


def test_function_globals():
    # a function of this module is found by name, so make one by value
    f = type(_uses_global)(_uses_global.__code__, {"LOCK": LOCK, "__name__": "dyn"}, "f")
    path = _path(_error([f]))
    assert re.fullmatch(r"list being pickled: obj\[0\] \(function state\)\.__globals__\[['\"]?LOCK['\"]?\]", path), path


def test_function_defaults_kwdefaults_and_dict():
    def f(x=Unpicklable()):
        return x

    def g(*, k=Unpicklable()):
        return k

    def h():
        pass

    h.attr = {"z": Unpicklable()}
    assert _path(_error([f])) == "list being pickled: obj[0] (function state).__defaults__[0]"
    assert _path(_error([g])) == "list being pickled: obj[0] (function state).__kwdefaults__['k']"
    assert re.fullmatch(r"list being pickled: obj\[0\] \(function state\)\.__dict__\[['\"]?attr['\"]?\]\['z'\]", _path(_error([h])))


def test_nested_closures():
    def outer():
        lk = LOCK

        def mid():
            def inner():
                return lk

            return inner

        return mid()

    assert _path(_error({"fn": outer()})) == "dict being pickled: obj['fn'].__closure__ cell 'lk'"


def test_partial():
    path = _path(_error([functools.partial(print, k=Unpicklable())]))
    assert path == "list being pickled: obj[0] (partial state)[2]['k']", path


def test_class_by_value_attribute():
    Dyn = type("Dyn", (), {"x": [Unpicklable()]})
    path = _path(_error(Dyn))
    assert path.startswith("type being pickled: obj") and path.endswith("['x'][0]"), path


def test_subclasses_of_builtins():
    class L(list):
        pass

    class D(dict):
        pass

    assert _path(_error(L([1, Unpicklable()]))) == "L being pickled: obj[1]"
    assert _path(_error(D(a=Unpicklable()))) == "D being pickled: obj['a']"
    assert _path(_error(collections.OrderedDict(a=[Unpicklable()]))) == "OrderedDict being pickled: obj['a'][0]"


@pytest.mark.parametrize("how", ["dumps", "dump", "Pickler", "Pickler_subclass_hooks", "PicklerBase"])
def test_every_entry_point_adds_the_path(how):
    obj = {"q": [0, Unpicklable()]}

    class Hooks(cloudpickle_rs.Pickler):
        def persistent_id(self, o):
            return None

        def reducer_override(self, o):
            return super().reducer_override(o)

    dumps = {
        "dumps": cloudpickle_rs.dumps,
        "dump": lambda o: cloudpickle_rs.dump(o, io.BytesIO()),
        "Pickler": lambda o: cloudpickle_rs.Pickler(io.BytesIO()).dump(o),
        "Pickler_subclass_hooks": lambda o: Hooks(io.BytesIO()).dump(o),
        "PicklerBase": lambda o: cloudpickle_rs.PicklerBase(io.BytesIO()).dump(o),
    }[how]
    assert _path(_error(obj, dumps)) == "dict being pickled: obj['q'][1]"


def test_path_resets_between_dumps_on_one_pickler():
    p = cloudpickle_rs.Pickler(io.BytesIO())
    for obj, expect in (([Unpicklable()], "list being pickled: obj[0]"),
                        ({"b": (1, Unpicklable())}, "dict being pickled: obj['b'][1]")):
        with pytest.raises(TypeError) as info:
            p.dump(obj)
        assert _path(info.value) == expect
        p.clear_memo()
    p.dump([1, 2])  # and a good dump after failures works


def test_error_at_the_root_has_no_path_note():
    err = _error(Unpicklable())
    assert not any(n.startswith(PATH_NOTE) for n in getattr(err, "__notes__", []))


def test_deep_paths_are_cut():
    x = {"lock": Unpicklable()}
    for _ in range(300):
        x = {"n": x}
    err = _error(x)
    assert len(err.__notes__) <= 64, len(err.__notes__)
    path = _path(err)
    assert path.startswith("dict being pickled: obj...") and path.endswith("['n']['lock']"), path


def test_original_exception_type_and_message_kept():
    class Boom:
        def __reduce__(self):
            raise KeyError("the original")

    err = _error([[Boom()]])
    assert type(err) is KeyError and err.args == ("the original",)
    assert _path(err) == "list being pickled: obj[0][0]"


# ----- bug: PicklingRecursionError carries no path notes ---------------------------------------


def test_recursion_error_has_path_notes():
    """The PicklingRecursionError raised for too-deep structures carries the path notes too."""
    x = []
    for _ in range(5000):
        x = [x]
    with pytest.raises(cloudpickle_rs.PicklingRecursionError) as info:
        cloudpickle_rs.dumps({"deep": x})
    notes = getattr(info.value, "__notes__", [])
    assert any(n.startswith("path to the object that failed") for n in notes), (
        f"notes on the raised error: {notes}; on its cause: {getattr(info.value.__cause__, '__notes__', None)}")
