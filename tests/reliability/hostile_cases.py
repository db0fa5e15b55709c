"""Hostile objects and hostile hooks, run against cloudpickle_rs and against the reference picklers.

A case is a function ``case(m)`` of an implementation namespace ``m``:

- ``m.dumps(obj, protocol=None, **kw)`` -> bytes, ``m.dump(obj, file, protocol=None, **kw)``,
- ``m.Pickler``: the class to instantiate or subclass.

Family "cloud": ours = ``cloudpickle_rs.dumps``/``Pickler``, reference = stock cloudpickle.
Family "base":  ours = ``cloudpickle_rs.PicklerBase``,         reference = the C ``pickle.Pickler``.

A case returns bytes (the runner loads them and records a canonical repr) or any other value
(recorded as its repr). ``hostile_runner.py CASE`` runs one case in a child process, ours first,
so a reference pickler that crashes (stock segfaults on some of these) cannot hide our result.

Module-level classes here are importable (``hostile_cases.X``): both picklers take them by
reference, so the two walk the same path.
"""
import copyreg
import functools
import io
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
import types

CASES = {}
# Cases that show a known bug: defined in pending_bugs.py, not collected until fixed.
PENDING = {}


class Case:
    def __init__(self, fn, families, expect, ref, timeout, note):
        self.fn = fn
        self.name = fn.__name__
        self.families = families
        # expect: an exception class name ours must raise (the reference is not consulted), or
        # a tuple of acceptable outcomes ("ok" and/or exception class names); None: as the ref.
        self.expect = expect
        # ref: run the reference picklers too (False where stock segfaults or misbehaves).
        self.ref = ref
        self.timeout = timeout
        self.note = note


def case(families=("cloud", "base"), expect=None, ref=True, timeout=60, note="", registry=None):
    def deco(fn):
        (CASES if registry is None else registry)[fn.__name__] = Case(fn, families, expect, ref, timeout, note)
        return fn

    return deco


def family_cases():
    """(case name, family) pairs: the pytest parameters."""
    return [(name, fam) for name, c in CASES.items() for fam in c.families]


# ----- __reduce__ returning the wrong thing ------------------------------------------------------


class R:
    """``__reduce__`` returns whatever it was given."""

    def __init__(self, rv):
        self.rv = rv

    def __reduce__(self):
        return self.rv() if callable(self.rv) and not isinstance(self.rv, type) else self.rv


class TupleSub(tuple):
    pass


class NamedRaises:
    """A callable whose ``__name__`` lookup raises (consulted for NEWOBJ from protocol 2)."""

    @property
    def __name__(self):
        raise ValueError("no name for you")

    def __call__(self, *a):
        return a


class CallableInstanceOnly:
    pass


_NON_CALLABLE = CallableInstanceOnly()
_NON_CALLABLE.__call__ = lambda *a: a  # an instance attribute does not make it callable


def _items_then_raise():
    yield 1
    raise ValueError("listitems iterator broke")


_BAD_REDUCE_VALUES = {
    "int": 42,
    "none": None,
    "empty_tuple": (),
    "one_tuple": (len,),
    "seven_tuple": (len, (), None, None, None, None, None),
    "args_not_tuple": (len, [1]),
    "args_tuple_subclass": (len, TupleSub([[1, 2]])),
    "callable_not_callable": (1, ()),
    "callable_instance_attr_call": (_NON_CALLABLE, ()),
    "listitems_not_iterator": (list, (), None, [1, 2]),
    "dictitems_not_iterator": (dict, (), None, None, {1: 2}),
    "dictitems_not_pairs": lambda: (dict, (), None, None, iter([1, 2])),
    "dictitems_triples": lambda: (dict, (), None, None, iter([(1, 2, 3)])),
    "listitems_raises": lambda: (list, (), None, _items_then_raise()),
    "state_setter_not_callable": (list, (), {"a": 1}, None, None, 5),
    "unknown_global_name": "no_such_global_name",
    "global_name_other_object": "Case",
    "rv_tuple_subclass": TupleSub([list, ()]),
    "newobj_empty": (copyreg.__newobj__, ()),
    "newobj_not_a_type": (copyreg.__newobj__, (5,)),
    "newobj_wrong_class": (copyreg.__newobj__, (int,)),
    "newobj_ex_wrong_len": (copyreg.__newobj_ex__, (R, (), {}, 1)),
    "newobj_ex_not_a_class": (copyreg.__newobj_ex__, (5, (), {})),
    "newobj_ex_args_list": (copyreg.__newobj_ex__, (R, [], {})),
    "newobj_ex_kwargs_list": (copyreg.__newobj_ex__, (R, (), [])),
    "callable_name_raises": (NamedRaises(), ()),
}


def _make_reduce_case(key, rv):
    def fn(m):
        return [m.dumps(R(rv), protocol=p) for p in range(6)]

    fn.__name__ = f"reduce_returns_{key}"
    case()(fn)


for _k, _v in _BAD_REDUCE_VALUES.items():
    _make_reduce_case(_k, _v)


class SelfInArgs:
    """``__reduce__`` whose arguments hold the object itself: infinite recursion."""

    def __reduce__(self):
        return (SelfInArgs, (self,))


@case()
def reduce_args_contain_self(m):
    return m.dumps(SelfInArgs())


# ----- reducers and state hooks that raise -------------------------------------------------------


class ReduceExRaises:
    def __reduce_ex__(self, protocol):
        raise ValueError("reduce_ex refuses")


class ReduceRaises:
    def __reduce__(self):
        raise KeyError("reduce refuses")


class GetStateRaises:
    def __getstate__(self):
        raise ZeroDivisionError("getstate refuses")


class GetStateUnpicklable:
    def __getstate__(self):
        return {"lock": threading.Lock()}


class GetNewArgsExGarbage:
    def __getnewargs_ex__(self):
        return 5


class GetNewArgsExBadKw:
    def __getnewargs_ex__(self):
        return ((), [1])


class GetNewArgsRaises:
    def __getnewargs__(self):
        raise OSError("getnewargs refuses")


class ReduceExNotCallable:
    __reduce_ex__ = 5


class ReduceExNone:
    __reduce_ex__ = None


class ReduceExNotImplemented:
    def __reduce_ex__(self, protocol):
        return NotImplemented


class ReduceExReturnsSelfReducer:
    """__reduce_ex__ returning a reduction whose state holds the object: fine (after memo)."""

    def __reduce_ex__(self, protocol):
        return (ReduceExReturnsSelfReducer, (), {"me": self})

    def __setstate__(self, state):
        self.me = state["me"]

    def __repr__(self):
        return f"<RERSR me-is-self={getattr(self, 'me', None) is self}>"


for _cls in (ReduceExRaises, ReduceRaises, GetStateRaises, GetStateUnpicklable, GetNewArgsExGarbage,
             GetNewArgsExBadKw, GetNewArgsRaises, ReduceExNotCallable, ReduceExNone, ReduceExNotImplemented,
             ReduceExReturnsSelfReducer):

    def _fn(m, cls=_cls):
        return [m.dumps([1, cls()], protocol=p) for p in range(6)]

    _fn.__name__ = f"hook_{_cls.__name__}"
    case()(_fn)


# ----- containers mutated while they are walked --------------------------------------------------


class Mutator:
    """Runs ``action`` when reduced, then reduces to a plain int."""

    def __init__(self, action):
        self.action = action

    def __reduce__(self):
        self.action()
        return (int, (7,))


@case()
def list_grows_during_walk(m):
    out = []
    for p in range(6):
        lst = []
        lst.extend(Mutator(lambda: lst.append("added")) for _ in range(3))
        out.append(m.dumps(lst, protocol=p))
    return out


@case()
def list_grows_past_batch(m):
    out = []
    for p in range(6):
        lst = [Mutator(lambda: lst.extend(range(1500)))] + list(range(999))
        out.append(m.dumps(lst, protocol=p))
    return out


@case()
def list_cleared_during_walk(m):
    out = []
    for p in range(6):
        lst = [1, None, 3, 4]
        lst[1] = Mutator(lst.clear)
        out.append(m.dumps(lst, protocol=p))
    return out


@case()
def list_item_freed_during_walk(m):
    """The item being reduced drops the list's (and so the last) reference to itself."""
    out = []
    for p in range(6):
        lst = [0]
        lst.append(Mutator(lambda: lst.__setitem__(1, "replaced")))
        lst.append(2)
        out.append(m.dumps(lst, protocol=p))
    return out


@case()
def dict_grows_during_walk(m):
    d = {"a": 1}
    d["m"] = Mutator(lambda: d.__setitem__(len(d) + 100, 0))
    d["z"] = 2
    return m.dumps(d)


@case()
def dict_shrinks_during_walk(m):
    d = {"a": 1, "b": 2}
    d["m"] = Mutator(lambda: d.pop("a"))
    return m.dumps(d)


@case()
def dict_same_size_mutation(m):
    d = {"a": 1, "b": 2}
    d["m"] = Mutator(lambda: (d.pop("a"), d.__setitem__("new", 3)))
    d["z"] = 2
    return m.dumps(d)


@case()
def dict_cleared_during_walk(m):
    d = {"a": 1}
    d["m"] = Mutator(d.clear)
    d["z"] = 2
    return m.dumps(d)


@case()
def dict_protocol0_grows(m):
    d = {"a": 1}
    d["m"] = Mutator(lambda: d.__setitem__(len(d) + 100, 0))
    return m.dumps(d, protocol=0)


@case()
def set_grows_during_walk(m):
    out = []
    for p in range(6):
        s = {1, 2}
        s.add(Mutator(lambda: s.add(object())))
        try:
            out.append(m.dumps(s, protocol=p))
        except RuntimeError as e:
            out.append(f"RuntimeError: {e}")
    return out


@case()
def dict_subclass_grows_during_walk(m):
    d = DictSub(a=1)
    d["m"] = Mutator(lambda: d.__setitem__(len(d) + 100, 0))
    return m.dumps(d)


@case()
def instance_dict_grows_during_state(m):
    o = Plain()
    o.x = Mutator(lambda: setattr(o, f"y{len(vars(o))}", 1))
    return m.dumps(o)


class DictSub(dict):
    pass


class Plain:
    def __repr__(self):
        return f"Plain({vars(self)!r})"


# ----- attribute access that misbehaves ----------------------------------------------------------


class GetattrRaises:
    def __getattr__(self, name):
        raise ValueError(f"no attribute {name} here")


class GetattrRecurses:
    def __getattr__(self, name):
        return getattr(self, "_x" + name)


class GetattrGarbage:
    def __getattr__(self, name):
        return 42


class GetattributeRaises:
    def __getattribute__(self, name):
        raise ValueError(f"__getattribute__ refuses {name}")


class LyingClass:
    @property
    def __class__(self):
        return int


class LyingClassFunction:
    """Claims to be a function: isinstance(x, FunctionType) is True; type(x) is not."""

    @property
    def __class__(self):
        return types.FunctionType


class ClassRaises:
    @property
    def __class__(self):
        raise RuntimeError("no class for you")


for _cls in (GetattrRaises, GetattrRecurses, GetattrGarbage, GetattributeRaises, LyingClass, ClassRaises):

    def _fn(m, cls=_cls):
        return [m.dumps([cls()], protocol=p) for p in range(6)]

    _fn.__name__ = f"attr_{_cls.__name__}"
    case()(_fn)


@case(families=("base",), note="stock cloudpickle believes the lying __class__ and fails inside its "
      "function reducer; ours dispatches on the real type, so compare with pickle only")
def attr_LyingClassFunction(m):
    return [m.dumps([LyingClassFunction()], protocol=p) for p in range(6)]


@case(families=("cloud",), expect="TypeError", note="stock raises AttributeError from inside its function "
      "reducer; ours raises what pickle raises (the object is reduced by its real type)")
def attr_LyingClassFunction_cloud(m):
    return [m.dumps([LyingClassFunction()], protocol=p) for p in range(6)]


class MetaQualnameRaises(type):
    def __getattribute__(cls, name):
        if name == "__qualname__":
            raise ValueError("metaclass hides __qualname__")
        return super().__getattribute__(name)


class HiddenQualname(metaclass=MetaQualnameRaises):
    pass


@case()
def class_qualname_raises(m):
    return m.dumps(HiddenQualname)


class NoSuchModule:
    pass


NoSuchModule.__module__ = "no.such.module_anywhere"


@case(families=("base",))
def class_module_missing(m):
    return m.dumps(NoSuchModule)


class NonAsciiGlobal:
    pass


NonAsciiGlobal.__qualname__ = "Non\u00e4sciiGlobal"
globals()["Non\u00e4sciiGlobal"] = NonAsciiGlobal


@case(families=("base",))
def class_non_ascii_name(m):
    out = []
    for p in range(6):
        try:
            out.append(m.dumps(NonAsciiGlobal, protocol=p))
        except pickle.PicklingError as e:
            out.append(f"PicklingError: {e}")
    return out


# ----- hooks: persistent_id, buffer_callback, reducer_override, dispatch tables -----------------


def _pickler_with(m, protocol=None, **methods):
    cls = type("HookPickler", (m.Pickler,), methods)
    f = io.BytesIO()
    return cls(f, protocol), f


def _dump_with(m, obj, protocol=None, **methods):
    p, f = _pickler_with(m, protocol, **methods)
    p.dump(obj)
    return f.getvalue()


@case()
def persistent_id_raises(m):
    def persistent_id(self, obj):
        if obj == "x":
            raise LookupError("pid refuses")
        return None

    return _dump_with(m, [1, "x"], persistent_id=persistent_id)


@case()
def persistent_id_unpicklable(m):
    return _dump_with(m, [1, "x"], persistent_id=lambda self, obj: threading.Lock() if obj == "x" else None)


@case()
def persistent_id_non_ascii_protocol0(m):
    return _dump_with(m, ["x"], 0, persistent_id=lambda self, obj: "\u00e9" if obj == "x" else None)


class StrRaises:
    def __str__(self):
        raise ValueError("str refuses")


@case()
def persistent_id_str_raises_protocol0(m):
    return _dump_with(m, ["x"], 0, persistent_id=lambda self, obj: StrRaises() if obj == "x" else None)


@case()
def persistent_id_not_callable(m):
    return _dump_with(m, [1], persistent_id=5)


@case()
def persistent_id_returns_the_object(m):
    # The id is saved without consulting persistent_id again.
    return _dump_with(m, [[1, 2]], persistent_id=lambda self, obj: obj if type(obj) is list and obj == [1, 2] else None)


@case()
def buffer_callback_raises(m):
    def cb(buf):
        raise ValueError("buffer_callback refuses")

    return m.dumps([pickle.PickleBuffer(b"abc")], protocol=5, buffer_callback=cb)


class BoolRaises:
    def __bool__(self):
        raise TypeError("no truth")


@case()
def buffer_callback_garbage(m):
    return m.dumps([pickle.PickleBuffer(b"abc")], protocol=5, buffer_callback=lambda b: BoolRaises())


@case()
def buffer_callback_not_callable(m):
    return m.dumps([pickle.PickleBuffer(b"abc")], protocol=5, buffer_callback=5)


@case()
def buffer_callback_protocol4(m):
    return m.dumps([1], protocol=4, buffer_callback=lambda b: None)


@case()
def picklebuffer_protocol4(m):
    return m.dumps([pickle.PickleBuffer(b"abc")], protocol=4)


@case()
def picklebuffer_released(m):
    mv = memoryview(b"abc")
    pb = pickle.PickleBuffer(mv)
    pb.release()
    return m.dumps(pb, protocol=5)


class Custom:
    def __init__(self, v=0):
        self.v = v

    def __repr__(self):
        return f"Custom({self.v!r})"


def _ro_raising(self, obj):
    if type(obj) is Custom:
        raise ArithmeticError("reducer_override refuses")
    return NotImplemented


@case()
def reducer_override_raises(m):
    return _dump_with(m, [Custom()], reducer_override=_ro_raising)


@case()
def reducer_override_returns_int(m):
    return _dump_with(m, [Custom()], reducer_override=lambda self, obj: 42 if type(obj) is Custom else NotImplemented)


@case()
def reducer_override_returns_short_tuple(m):
    return _dump_with(m, [Custom()], reducer_override=lambda self, obj: (len,) if type(obj) is Custom else NotImplemented)


@case()
def reducer_override_returns_unknown_name(m):
    return _dump_with(m, [Custom()], reducer_override=lambda self, obj: "nope" if type(obj) is Custom else NotImplemented)


@case()
def reducer_override_reduces_to_itself(m):
    """Reduces the object to a call that takes the object: infinite recursion."""
    return _dump_with(m, [Custom()], reducer_override=lambda self, obj: (Custom, (obj,)) if type(obj) is Custom else NotImplemented)


@case()
def reducer_override_not_callable(m):
    return _dump_with(m, [Custom()], reducer_override=5)


def _ro_calls_dump(self, obj):
    if type(obj) is Custom:
        self.dump("inner")
    return NotImplemented


@case(expect="RuntimeError", ref=False, note="stock (C pickler) segfaults or writes a corrupt stream")
def reducer_override_calls_dump(m):
    return _dump_with(m, [Custom()], reducer_override=_ro_calls_dump)


@case(expect="RuntimeError", ref=False)
def persistent_id_calls_dump(m):
    def persistent_id(self, obj):
        if type(obj) is Custom:
            self.dump("inner")
        return None

    return _dump_with(m, [Custom()], persistent_id=persistent_id)


_CURRENT = []


class DumpsCurrentPickler:
    def __reduce__(self):
        _CURRENT[-1].dump("inner")
        return (int, ())


@case(expect="RuntimeError", ref=False)
def reduce_calls_dump_on_running_pickler(m):
    f = io.BytesIO()
    p = m.Pickler(f)
    _CURRENT.append(p)
    try:
        p.dump([DumpsCurrentPickler()])
    finally:
        _CURRENT.pop()
    return f.getvalue()


@case(expect="RuntimeError", ref=False)
def file_write_calls_dump(m):
    box = []

    class F:
        def write(self, data):
            box[0].dump("inner")

    p = m.Pickler(F())
    box.append(p)
    p.dump([1, 2])


class RaisingMapping:
    def __getitem__(self, key):
        raise ValueError("mapping refuses")


def _dump_with_table(m, table, obj, after_init=False):
    if after_init:
        p, f = _pickler_with(m)
        p.dispatch_table = table
    else:
        f = io.BytesIO()
        p = type("TablePickler", (m.Pickler,), {"dispatch_table": table})(f)
    p.dump(obj)
    return f.getvalue()


def _dispatch_raises(obj):
    raise IndexError("dispatch entry refuses")


_TABLES = {
    "entry_raises": lambda: {Custom: _dispatch_raises},
    "entry_garbage": lambda: {Custom: lambda obj: 3.5},
    "entry_bad_tuple": lambda: {Custom: lambda obj: (Custom, (1,), None, 5)},
    "entry_not_callable": lambda: {Custom: 5},
    "not_a_mapping": lambda: 5,
    "getitem_raises": lambda: RaisingMapping(),
}

for _name, _table in _TABLES.items():

    def _class_attr(m, table=_table):
        return _dump_with_table(m, table(), [Custom()])

    _class_attr.__name__ = f"dispatch_table_{_name}"
    case()(_class_attr)

    def _after_init(m, table=_table):
        return _dump_with_table(m, table(), [Custom()], after_init=True)

    _after_init.__name__ = f"dispatch_table_{_name}_set_after_init"
    # Stock cloudpickle ignores a dispatch_table set on the instance after __init__; the C
    # pickler and ours honour it: compare with the C pickler.
    case(families=("base",))(_after_init)


@case()
def dispatch_table_class_attribute(m):
    cls = type("DTPickler", (m.Pickler,), {"dispatch_table": {Custom: lambda obj: (Custom, ("via table",))}})
    f = io.BytesIO()
    cls(f).dump([Custom(1)])
    return f.getvalue()


@case()
def copyreg_entry_raises(m):
    def bad(obj):
        raise FloatingPointError("copyreg entry refuses")

    copyreg.pickle(Custom, bad)
    try:
        return m.dumps([Custom()])
    finally:
        del copyreg.dispatch_table[Custom]


# ----- files ---------------------------------------------------------------------------------


class WriteRaises:
    def write(self, data):
        raise OSError(28, "No space left on device")


class WriteShort:
    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(bytes(data))
        return 0


class WriteGarbage:
    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(bytes(data))
        return "garbage"


class NoWrite:
    pass


class WriteNotCallable:
    write = 5


@case()
def file_write_raises(m):
    m.dump([1, 2, 3], WriteRaises())


@case()
def file_write_raises_on_large(m):
    m.dump([b"x" * 200_000, 1], WriteRaises(), protocol=5)


@case()
def file_write_returns_short(m):
    out = []
    for obj in ([1, 2, 3], [b"y" * 200_000, "z" * 100_000]):
        f = WriteShort()
        m.dump(obj, f, protocol=5)
        out.append(b"".join(f.chunks))
    return out


@case()
def file_write_returns_garbage(m):
    f = WriteGarbage()
    m.dump({"a": [1, 2]}, f)
    return b"".join(f.chunks)


@case()
def file_without_write(m):
    m.dump([1], NoWrite())


@case()
def file_write_not_callable(m):
    m.dump([1], WriteNotCallable())


@case()
def file_is_none(m):
    m.Pickler(None)


@case()
def file_closed(m):
    f = io.BytesIO()
    f.close()
    m.dump([1], f)


# ----- depth ---------------------------------------------------------------------------------

DEPTH = 100_000


def _deep_list():
    x = []
    for _ in range(DEPTH):
        x = [x]
    return x


def _deep_dict():
    x = {}
    for _ in range(DEPTH):
        x = {"k": x}
    return x


def _deep_tuple():
    x = ()
    for _ in range(DEPTH):
        x = (x,)
    return x


def _deep_set():
    x = frozenset()
    for _ in range(DEPTH):
        x = frozenset([x])
    return x


class Chain:
    def __init__(self, nxt):
        self.nxt = nxt

    def __reduce__(self):
        return (Chain, (self.nxt,))


def _deep_reduce():
    x = None
    for _ in range(DEPTH):
        x = Chain(x)
    return x


def _deep_state():
    x = Plain()
    for _ in range(DEPTH):
        y = Plain()
        y.nxt = x
        x = y
    return x


def _deep_closure():
    f = None
    for _ in range(2000):
        def f(g=f):  # noqa: E731 - chains of default values
            return g
    return f


_DEEP = {"list": _deep_list, "dict": _deep_dict, "tuple": _deep_tuple, "frozenset": _deep_set,
         "reduce_chain": _deep_reduce, "state_chain": _deep_state}


def _run_in_thread(fn, stack_size):
    threading.stack_size(stack_size)
    box = {}

    def target():
        try:
            box["ok"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["err"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    threading.stack_size(0)
    if "err" in box:
        raise box["err"]
    return box["ok"]


def _depth_result(data):
    """Summary of a deep pickle that did succeed: how deep it loads back."""
    obj = pickle.loads(data)
    depth = 0
    while True:
        if type(obj) in (list, tuple) and obj:
            obj = obj[0]
        elif type(obj) is dict and obj:
            obj = obj["k"]
        elif type(obj) is frozenset and obj:
            (obj,) = obj
        elif type(obj) in (Chain, Plain) and hasattr(obj, "nxt"):
            obj = obj.nxt
        else:
            return f"depth {depth}"
        depth += 1


for _name, _make in _DEEP.items():

    def _default(m, make=_make):
        return _depth_result(m.dumps(make()))

    _default.__name__ = f"deep_{_name}"
    case(timeout=120)(_default)

    def _high_limit(m, make=_make):
        # No reference here: the C pickler overflows the C stack (segfault) with a raised limit.
        sys.setrecursionlimit(10**6)
        return _depth_result(m.dumps(make()))

    _high_limit.__name__ = f"deep_{_name}_recursionlimit_1e6"
    case(expect=("ok", "RecursionError"), ref=False, timeout=120)(_high_limit)

    def _thread(m, make=_make):
        sys.setrecursionlimit(10**6)
        obj = make()
        return _run_in_thread(lambda: _depth_result(m.dumps(obj)), 1 << 20)

    _thread.__name__ = f"deep_{_name}_thread_1MiB_stack"
    case(expect=("ok", "RecursionError"), ref=False, timeout=120)(_thread)

    def _small_thread(m, make=_make):
        # 512 KiB: the smallest stack on which shallow objects still pickle today (see
        # pending_bugs.py for 128-256 KiB); deep ones must stop with RecursionError, not SIGSEGV
        sys.setrecursionlimit(10**6)
        obj = make()
        return _run_in_thread(lambda: _depth_result(m.dumps(obj)), 512 * 1024)

    _small_thread.__name__ = f"deep_{_name}_thread_512KiB_stack"
    case(expect=("RecursionError",), ref=False, timeout=120)(_small_thread)


@case(timeout=120)
def deep_closure_defaults(m):
    return _depth_result(m.dumps(_deep_closure()))


@case()
def shallow_in_thread_512KiB_stack(m):
    return _run_in_thread(lambda: m.dumps([[1, [2, {"a": (3,)}]]]), 512 * 1024)


@case(expect=("RecursionError",), ref=False)
def deep_list_default_limit_is_recursion_error(m):
    """Whatever the family: the error is (a subclass of) RecursionError, never a crash."""
    return m.dumps(_deep_list())


# ----- numbers and protocols -----------------------------------------------------------------


@case()
def huge_int_text_protocols(m):
    return [m.dumps(10**100_000, protocol=p) for p in (0, 1)]


@case()
def huge_int_binary_protocols(m):
    n = (1 << (8 * 2**20)) - 12345
    return [len(m.dumps([n, -n], protocol=p)) for p in (2, 3, 4, 5)]


@case()
def huge_int_text_no_digit_limit(m):
    sys.set_int_max_str_digits(0)
    return [m.dumps(-(10**50_000) + 7, protocol=p) for p in (0, 1)]


_BAD_PROTOCOLS = {"6": 6, "huge": 2**100, "str": "5", "float": 5.0, "object": object(), "minus1": -1,
                  "minus100": -100, "bool": True, "none": None}

for _name, _proto in _BAD_PROTOCOLS.items():

    def _dumps_proto(m, proto=_proto):
        return m.dumps([1, "a"], protocol=proto)

    _dumps_proto.__name__ = f"protocol_{_name}_dumps"
    case()(_dumps_proto)

    def _pickler_proto(m, proto=_proto):
        f = io.BytesIO()
        m.Pickler(f, proto).dump([1, "a"])
        return f.getvalue()

    _pickler_proto.__name__ = f"protocol_{_name}_pickler"
    case()(_pickler_proto)


# ----- objects that cannot be pickled ------------------------------------------------------------


def _gen():
    yield 1


async def _coro():
    pass


def _unpicklables():
    tmp = tempfile.NamedTemporaryFile("w", delete=False)
    closed = open(tmp.name)
    closed.close()
    try:
        raise ValueError("x")
    except ValueError as e:
        tb = e.__traceback__
    return {
        "lock": threading.Lock, "rlock": threading.RLock, "condition": threading.Condition,
        "socket": socket.socket, "generator": _gen, "frame": sys._getframe, "traceback": lambda: tb,
        "coroutine": lambda: _coro(), "file_open_for_writing": lambda: tmp, "closed_file": lambda: closed,
        "thread": threading.Thread, "event": threading.Event,
        "weakref": lambda: __import__("weakref").ref(Custom),
    }


for _name in ("lock", "rlock", "condition", "socket", "generator", "frame", "traceback", "coroutine",
              "file_open_for_writing", "closed_file", "thread", "event", "weakref"):

    def _unp(m, name=_name):
        obj = _unpicklables()[name]()
        try:
            return m.dumps({"payload": [obj]})
        finally:
            if name == "coroutine":
                obj.close()
            elif name == "socket":
                obj.close()

    _unp.__name__ = f"unpicklable_{_name}"
    case()(_unp)


# ----- misuse of the Pickler class -----------------------------------------------------------


@case()
def subclass_init_not_called(m):
    class P(m.Pickler):
        def __init__(self, f):
            self.f = f

    P(io.BytesIO()).dump([1])


@case()
def pickler_no_arguments(m):
    m.Pickler()


@case()
def pickler_too_many_arguments(m):
    m.Pickler(io.BytesIO(), 2, True, None, 5)


@case()
def pickler_unknown_keyword(m):
    m.Pickler(io.BytesIO(), bogus=1)


@case()
def memo_set_to_int(m):
    p = m.Pickler(io.BytesIO())
    p.memo = 5


@case()
def memo_values_not_pairs(m):
    p = m.Pickler(io.BytesIO())
    p.memo = {1: 5}


@case()
def fast_mode_int_value(m):
    f = io.BytesIO()
    p = m.Pickler(f)
    p.fast = 1
    p.dump([[1]])
    return f.getvalue()


@case()
def memo_index_not_int(m):
    p = m.Pickler(io.BytesIO())
    p.memo = {1: ("zero", [])}


@case()
def fast_mode_cycle(m):
    f = io.BytesIO()
    p = m.Pickler(f)
    p.fast = True
    x = []
    for _ in range(60):
        x = [x]
    x[0].append(x)
    p.dump(x)


@case()
def dump_unpicklable_then_reuse(m):
    """A dump that failed halfway leaves the pickler usable (memo cleared by the caller)."""
    f = io.BytesIO()
    p = m.Pickler(f)
    try:
        p.dump([1, threading.Lock()])
    except TypeError:
        pass
    p.clear_memo()
    f.seek(0)
    f.truncate()
    p.dump({"after": "failure"})
    return f.getvalue()


# ----- re-entrancy that must work --------------------------------------------------------------


class NestedDumps:
    """``__reduce__`` that pickles something else with a fresh top-level dumps."""

    def __init__(self, payload, impl):
        self.payload = payload
        self.impl = impl

    def __reduce__(self):
        inner = self.impl([self.payload, {"x": 1}])
        return (pickle.loads, (inner,))


@case()
def reduce_calls_dumps_nested(m):
    obj = [NestedDumps([NestedDumps("deepest", m.dumps)], m.dumps)] * 2
    return m.dumps(obj)




# ----- by_source, pickle_by_reference, reconstructor_module (ours only: stock has none of them) ---

_EXEC_NS = {}
exec("def from_exec(x):\n    return x + 1\n", _EXEC_NS)


def _local_function():
    def local(x):
        return x * 2

    return local


@case(families=("cloud",), ref=False, expect="PicklingError")
def by_source_without_source_text(m):
    return m.dumps([_EXEC_NS["from_exec"]], by_source=True)


@case(families=("cloud",), ref=False, expect=("ok",))
def by_source_auto_without_source_text(m):
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        data = m.dumps([_EXEC_NS["from_exec"], _local_function()], by_source="auto")
    assert [type(x.message).__name__ for x in w] == ["SourceFallbackWarning"], [str(x.message) for x in w]
    f, g = pickle.loads(data)
    assert (f(1), g(2)) == (2, 4)
    return data


@case(families=("cloud",), ref=False, expect="ValueError")
def by_source_invalid_value(m):
    return m.dumps([1], by_source="yes")


class RefusalError(Exception):
    pass


def _refuse(obj):
    raise RefusalError("callback refuses")


@case(families=("cloud",), ref=False, expect="RefusalError")
def pickle_by_reference_raises(m):
    return m.dumps({"f": _local_function()}, pickle_by_reference=_refuse)


@case(families=("cloud",), ref=False, expect="PicklingProhibitedError")
def pickle_by_reference_prohibits(m):
    import cloudpickle_rs

    def prohibit(obj):
        raise cloudpickle_rs.PicklingProhibitedError(f"{obj!r} may not leave this process")

    return m.dumps({"f": _local_function()}, pickle_by_reference=prohibit)


@case(families=("cloud",), ref=False, expect="TypeError")
def pickle_by_reference_returns_bad_bool(m):
    return m.dumps({"f": _local_function()}, pickle_by_reference=lambda o: BoolRaises())


@case(families=("cloud",), ref=False, expect="TypeError")
def pickle_by_reference_not_callable(m):
    return m.dumps({"f": _local_function()}, pickle_by_reference=5)


@case(families=("cloud",), ref=False, expect="ImportError")
def reconstructor_module_missing(m):
    return m.dumps({"f": _local_function()}, reconstructor_module="no_such_module_for_reconstructors")


# ----- dynamic classes whose metaclass pickles while cloudpickle's class tracker is consulted ----------------------------------


def _make_dynamic(name, meta=type):
    return meta(name, (), {"__module__": __name__, "f": lambda self: 1})


_IMPL = []


class MetaDumpsOnQualname(type):
    """A metaclass whose ``__qualname__`` lookup pickles another dynamic class."""

    def __getattribute__(cls, name):
        if name == "__qualname__" and not type.__getattribute__(cls, "__dict__").get("_busy"):
            type.__setattr__(cls, "_busy", True)
            try:
                _IMPL[-1](_make_dynamic("Other2"))
            finally:
                type.__setattr__(cls, "_busy", False)
        return type.__getattribute__(cls, name)


class MetaDumpsOnHash(type):
    """A metaclass whose ``__hash__`` pickles another dynamic class."""

    def __hash__(cls):
        if not type.__getattribute__(cls, "__dict__").get("_in_hash"):
            type.__setattr__(cls, "_in_hash", True)
            try:
                _IMPL[-1](_make_dynamic("Other"))
            finally:
                type.__setattr__(cls, "_in_hash", False)
        return id(cls) >> 4


@case(families=("cloud",), timeout=20)
def dynamic_class_metaclass_dumps_in_qualname(m):
    """The tracker lock (non-reentrant) must not be held while the class's attributes are read."""
    _IMPL.append(m.dumps)
    try:
        return m.dumps(_make_dynamic("WithQualname", MetaDumpsOnQualname))
    finally:
        _IMPL.pop()


@case(families=("cloud",), timeout=20, expect=("ok",), ref=False)
def dynamic_class_metaclass_dumps_in_hash(m):
    """Stock deadlocks here (it holds the lock around WeakKeyDictionary.get, which hashes the
    class); ours must not."""
    _IMPL.append(m.dumps)
    try:
        return m.dumps(_make_dynamic("WithHash", MetaDumpsOnHash))
    finally:
        _IMPL.pop()


# ----- the re-entrancy guard holds through memo and __init__ -------------------------------------------------


def _reenter_after(setup):
    def reducer_override(self, obj):
        if type(obj) is Custom:
            setup(self)
            self.dump("inner")
        return NotImplemented

    return reducer_override


@case(expect="RuntimeError", ref=False)
def reentrant_dump_after_memo_setter(m):
    """``self.memo = {}`` inside a reducer must not re-arm the guard for a nested dump."""
    return _dump_with(m, [Custom()], reducer_override=_reenter_after(lambda self: setattr(self, "memo", {})))


@case(expect="RuntimeError", ref=False)
def reentrant_dump_after_reinit(m):
    """Nor ``self.__init__(file)`` during the dump."""
    f = io.BytesIO()
    return _dump_with(m, [Custom()], reducer_override=_reenter_after(lambda self: self.__init__(f)))


# ----- fixed: exception type as _pickle.c (moved from pending_bugs.py) ----------------------------------------------------------------


@case()
def picklebuffer_non_contiguous(m):
    """PicklingError, as _pickle.c raises."""
    return m.dumps(pickle.PickleBuffer(memoryview(b"abcdef")[::2]), protocol=5)


# ----- fixed: small thread stacks still pickle shallow objects (the red zone scales) ----------------------------------


@case()
def shallow_in_thread_256KiB_stack(m):
    """A thread whose whole stack is 256 KiB (threading.stack_size(262144); musl's default is
    128 KiB) still pickles shallow objects: the native red zone scales with the stack."""
    return _run_in_thread(lambda: m.dumps([[1, [2, {"a": (3,)}]]]), 256 * 1024)


@case()
def shallow_in_thread_128KiB_stack(m):
    return _run_in_thread(lambda: m.dumps([[1, [2, {"a": (3,)}]]]), 128 * 1024)


# ----- Python subclasses of heap C types: C state a __dict__ cannot carry ---------------------------------------------


def _heap_c_bases():
    import _random
    import _struct
    import mmap
    import sqlite3
    import ssl
    out = {"Random": (_random.Random, ()), "Struct": (_struct.Struct, ("i",)),
           "mmap": (mmap.mmap, (-1, 16)), "Connection": (sqlite3.Connection, (":memory:",)),
           "SSLContext": (ssl.SSLContext, (ssl.PROTOCOL_TLS_CLIENT,)),
           "RLock": (type(threading.RLock()), ())}
    return out


HEAP_C_SUBCLASSES = {}
for _name, (_base, _args) in _heap_c_bases().items():
    HEAP_C_SUBCLASSES[_name] = globals()["HeapSub" + _name] = type("HeapSub" + _name, (_base,), {"__module__": __name__})
    HEAP_C_SUBCLASSES[_name].args = _args


def _make_heap_c_case(name):
    def fn(m):
        cls = HEAP_C_SUBCLASSES[name]
        obj = cls(*cls.args)
        obj.tag = "x"
        results = []
        for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
            # Twice: the first attempt caches copyreg's __slotnames__ in the class, after which
            # a fast path that only checks the class's pickling hooks would accept the instance.
            for _ in range(2):
                try:
                    m.dumps(obj, protocol=proto)
                    results.append("dumped")
                except Exception as e:
                    results.append(type(e).__name__)
        return results

    fn.__name__ = "heap_c_subclass_" + name
    fn.__doc__ = (f"A Python subclass of {HEAP_C_SUBCLASSES[name].__mro__[1].__qualname__}: "
                  "refused at every protocol, every time, as the C pickler refuses it.")
    case()(fn)


for _name in HEAP_C_SUBCLASSES:
    _make_heap_c_case(_name)
