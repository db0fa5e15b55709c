"""Module-level classes and factories for the reliability tests.

Everything here is importable by name (``fuzz_objects.X``), so classes and module functions are
pickled by reference by both stock cloudpickle and cloudpickle_rs, while the functions the
factories return (lambdas, closures, nested functions: ``make_x.<locals>.f``) and the classes
``make_class`` builds are not reachable by name and go by value. Both picklers therefore walk the
same graph and the loaded results can be compared structurally.
"""
import collections
import dataclasses
import enum
import functools

GLOBAL_CONST = ("global", 1, 2.5)
GLOBAL_LIST = [1, "two", 3.0]


class Plain:
    """Instance state in ``__dict__`` (object.__reduce_ex__ + BUILD)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def method(self, x=None):
        return (self, x)


class Slotted:
    """``__slots__`` only; some slots stay unset."""

    __slots__ = ("a", "b", "c")


class SlottedDict(Slotted):
    """Slots plus a ``__dict__`` (state is a (dict, slots) pair)."""

    __slots__ = ("d", "__dict__")


class ReduceArgs:
    """``__reduce__`` -> (cls, args): state travels as constructor arguments."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (ReduceArgs, self.args)


class ReduceState:
    """``__reduce__`` -> (cls, (), state, listitems, dictitems) with the default BUILD."""

    def __init__(self):
        self.items = []
        self.mapping = {}

    def append(self, x):
        self.items.append(x)

    def __setitem__(self, k, v):
        self.mapping[k] = v

    def __reduce__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("items", "mapping")}
        return (ReduceState, (), state or None, iter(list(self.items)), iter(list(self.mapping.items())))


class ReduceEx:
    """``__reduce_ex__(protocol)`` that depends on the protocol."""

    def __init__(self, value=None):
        self.value = value

    def __reduce_ex__(self, protocol):
        if protocol >= 2:
            return (_rebuild_reduce_ex, (self.value, protocol >= 4))
        return (ReduceEx, (self.value,))


def _rebuild_reduce_ex(value, high):
    obj = ReduceEx(value)
    return obj


class GetSetState:
    """``__getstate__``/``__setstate__`` that transform the state (a tuple on the wire)."""

    def __init__(self, a=None, b=None):
        self.a = a
        self.b = b

    def __getstate__(self):
        return (self.a, self.b)

    def __setstate__(self, state):
        self.a, self.b = state


class NewArgsEx:
    """``__getnewargs_ex__`` with keyword-only ``__new__`` arguments (NEWOBJ_EX from protocol 4,
    ``partial(cls.__new__, ...)`` before)."""

    def __new__(cls, x, *, y=None):
        self = super().__new__(cls)
        self.x = x
        self.y = y
        return self

    def __getnewargs_ex__(self):
        return ((self.x,), {"y": self.y})


class NewArgs:
    """``__getnewargs__`` (NEWOBJ from protocol 2)."""

    def __new__(cls, x):
        self = super().__new__(cls)
        self.x = x
        return self

    def __getnewargs__(self):
        return (self.x,)


def _set_state(obj, state):
    obj.__dict__.update(state)
    obj.via_setter = True


class StateSetter:
    """A 6-tuple ``__reduce__`` whose state goes through a state_setter callable."""

    def __init__(self):
        pass

    def __reduce__(self):
        return (StateSetter, (), dict(self.__dict__), None, None, _set_state)


class ListSub(list):
    """A list subclass with attributes: listitems plus state."""


class DictSub(dict):
    """A dict subclass with attributes: dictitems plus state."""


@dataclasses.dataclass(frozen=True)
class Key:
    """Hashable by value: usable as a dict key and a set element in the graphs."""

    name: str
    n: int


Point = collections.namedtuple("Point", ["x", "y"])


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class _Singleton:
    def __reduce__(self):
        return "SINGLETON"


SINGLETON = _Singleton()


def module_function(*args, **kwargs):
    return args, kwargs


# ----- factories of by-value functions and classes -----------------------------------------------


def make_lambda(v):
    return lambda x=v, *, k=GLOBAL_CONST: (x, k, v)


def make_closure(a, b):
    def closure(y=None):
        return [a, b, y, GLOBAL_CONST, GLOBAL_LIST]

    return closure


def make_shared_cell(v):
    """Two closures over one cell (shared after loading by cloudpickle_rs, not by stock)."""

    def get():
        return v

    def set_(x):
        nonlocal v
        v = x

    return get, set_


def make_recursive():
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    return fact


def make_nested(v):
    def outer():
        def inner():
            return v

        return inner

    return outer()


def make_empty_cell():
    def f():
        return v  # noqa: F821 - the cell stays empty on purpose

    if False:
        v = 1  # noqa: F841
    return f


def make_function_with_attrs(defaults, attr, doc):
    def f(a=None, b=None):
        return (a, b)

    f.__defaults__ = tuple(defaults)
    f.__kwdefaults__ = None
    f.attr = attr
    f.__doc__ = doc
    return f


def make_class(name, attrs, slots=False):
    """A class built at run time (pickled by value), with a method closing over ``attrs``."""
    ns = dict(attrs)
    if slots:
        ns["__slots__"] = ("s",)

    def method(self):
        return (self, attrs)

    ns["method"] = method
    return type(name, (object,), ns)


def make_partial(func, args, kw):
    return functools.partial(func, *args, **kw)
