"""The wire-compatibility corpus: run as ``__main__`` so everything defined here is pickled by value.

    python corpus_main.py ours|stock OUTDIR

writes OUTDIR/<case>.pkl for every case and OUTDIR/cases.json with each case's check: Python
source run in the loading process with ``obj`` (the first load) and ``obj2`` (a second load of the
same bytes) bound, setting ``result`` to something JSON-able.
"""
import abc
import asyncio
import collections
import dataclasses
import enum
import functools
import io
import json
import logging
import math
import os
import os.path
import sys
import types
import typing
import weakref
from pathlib import Path

which, outdir = sys.argv[1], Path(sys.argv[2])
if which == "ours":
    import cloudpickle_rs as pickler
else:
    import cloudpickle as pickler

# A module imported from a file and registered by value: the loader does not have it.
_moddir = outdir / "_mods"
_moddir.mkdir(parents=True, exist_ok=True)
(_moddir / "corpus_byvalue_mod.py").write_text(
    "SCALE = 3\n"
    "def scale(x):\n    return x * SCALE\n"
    "class Box:\n    def __init__(self, v):\n        self.v = v\n    def get(self):\n        return scale(self.v)\n"
)
sys.path.insert(0, str(_moddir))
import corpus_byvalue_mod  # noqa: E402

pickler.register_pickle_by_value(corpus_byvalue_mod)

CASES = {}


def case(name, obj, check):
    CASES[name] = (obj, check)


GLOBAL_K = 10


def uses_global(x):
    return x + GLOBAL_K


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def make_adder(k):
    def add(x):
        return x + k
    return add


def make_counter():
    n = 0

    def inc():
        nonlocal n
        n += 1
        return n

    def get():
        return n
    return inc, get


def make_local_recursive():
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
    return fib


def make_appender():
    items = []

    def append(x):
        items.append(x)
        return list(items)
    return append


def documented(a, b=2, *, c=3) -> int:
    """Adds things."""
    return a + b + c


documented.custom_attr = "hello"


def gen(n):
    yield from range(n)


async def coro(x):
    await asyncio.sleep(0)
    return x * 2


def uses_submodule():
    return os.path.join("a", "b")


class Base:
    def greet(self):
        return "base"


class Child(Base):
    tag = "child"

    def __init__(self, v=1):
        self.v = v
        self.__secret = v * 10

    def greet(self):
        return "child+" + super().greet()

    def secret(self):
        return self.__secret

    @staticmethod
    def st():
        return "static"

    @classmethod
    def cm(cls):
        return cls.__name__

    @property
    def double(self):
        return self.v * 2


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a, self.b = 1, 2


@dataclasses.dataclass
class Config:
    name: str
    size: int = 3
    tags: list = dataclasses.field(default_factory=list)


Point = collections.namedtuple("Point", "x y")


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    CRIMSON = 1  # alias


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1
    RW = 6


class Shape(enum.Flag):
    ROUND = enum.auto()
    RED = enum.auto()


class Animal(abc.ABC):
    @abc.abstractmethod
    def sound(self):
        ...


class Dog(Animal):
    def sound(self):
        return "woof"


class Registered:
    pass


Animal.register(Registered)

T = typing.TypeVar("T")


class Stack(typing.Generic[T]):
    def __init__(self):
        self.items = []


dyn = types.ModuleType("corpus_dynamic_module")
exec("def hello():\n    return 'hi from dyn'\nVALUE = 41\n", dyn.__dict__)

text_path = outdir / "_readable.txt"
text_path.write_text("line one\nline two\n")
readable = open(text_path)
readable.readline()

inc, get = make_counter()

case("lambda", lambda x: x * 2 + 1, "result = obj(3)")
case("lambda_default_lambda", lambda f=lambda y: y + 1: f(1), "result = obj()")
case("closure_value", make_adder(5), "result = obj(1)")
case("closure_mutable", make_appender(), "obj(1); result = obj(2)")
case("shared_nonlocal", (inc, get), "obj[0](); obj[0](); result = obj[1]()")
case("global_function", uses_global, "result = obj(1)")
case("global_recursion", fact, "result = obj(5)")
case("mutual_recursion", (is_even, is_odd), "result = [obj[0](10), obj[1](7)]")
case("local_recursion", make_local_recursive(), "result = obj(10)")
case("signature_and_attrs", documented,
     "result = [obj(1), obj(1, c=10), obj.__doc__, obj.custom_attr, obj.__defaults__, obj.__kwdefaults__, obj.__name__]")
case("uses_math_module", lambda x: math.sqrt(x), "result = obj(16)")
case("uses_submodule", uses_submodule, "result = obj()")
case("generator_function", gen, "result = list(obj(4))")
case("async_function", coro, "import asyncio; result = asyncio.run(obj(21))")
case("partial", functools.partial(documented, 10, c=0), "result = obj(5)")
case("bound_method", Child(4).greet, "result = obj()")
case("dynamic_class", Child,
     "c = obj(3); result = [c.greet(), c.secret(), c.st(), c.cm(), c.double, c.tag, obj.__name__, obj.__qualname__]")
case("class_identity_two_loads", Child, "result = obj is obj2")
case("instance", Child(7), "result = [obj.v, obj.secret(), obj.double, type(obj).__name__]")
case("slots", Slotted(), "result = [obj.a, obj.b, hasattr(obj, '__dict__')]")
case("dataclass_instance", Config("c", tags=["x"]),
     "import dataclasses; result = [obj.name, obj.size, obj.tags, [f.name for f in dataclasses.fields(obj)], repr(type(obj)(name='z'))]")
case("dataclass_field_sentinel", dataclasses.fields(Config)[0]._field_type,
     "import dataclasses; result = obj is dataclasses._FIELD")
case("namedtuple", Point(1, 2), "result = [obj.x, obj.y, obj._fields, obj._replace(x=5).x]")
case("enum_member", Color.RED, "result = [obj.name, obj.value, obj is type(obj).CRIMSON]")
case("enum_class", Color, "result = [m.name for m in obj] + [obj(1).name, obj['CRIMSON'].name]")
case("intenum", Level.HIGH, "result = [int(obj), obj > 1, obj.name]")
case("intflag_class", Perm, "result = [int(obj.RW), obj(6).name, (obj.R | obj.W) is obj.RW, sorted(obj.__members__)]")
case("intflag_member", Perm.R | Perm.X, "result = [int(obj), obj.R in obj]")
case("flag", Shape.ROUND | Shape.RED, "result = [obj.value, type(obj).ROUND in obj]")
case("abc_class", (Animal, Dog, Registered),
     "A, D, R = obj; result = [D().sound(), issubclass(D, A), issubclass(R, A), isinstance(R(), A)]")
case("typevar", T, "result = [obj.__name__, obj is obj2]")
case("generic_class", Stack, "import typing; result = [obj.__parameters__[0].__name__, type(obj()).__name__]")
case("module_by_reference", math, "result = obj.sqrt(9)")
case("dynamic_module", dyn, "result = [obj.hello(), obj.VALUE, obj.__name__]")
case("function_of_dynamic_module", dyn.hello, "result = obj()")
case("registered_by_value_function", corpus_byvalue_mod.scale, "result = obj(5)")
case("registered_by_value_class", corpus_byvalue_mod.Box(4), "result = obj.get()")
d = {"a": 1, "b": 2}
case("dict_keys", d.keys(), "result = sorted(obj)")
case("dict_values", d.values(), "result = sorted(obj)")
case("dict_items", d.items(), "result = sorted(obj)")
case("odict_keys", collections.OrderedDict(d).keys(), "result = list(obj)")
case("mappingproxy", types.MappingProxyType({"k": "v"}), "result = [obj['k'], type(obj).__name__]")
weak_target = Child(1)
case("weakset", (weakref.WeakSet([weak_target]), weak_target), "result = len(obj[0])")
case("memoryview", memoryview(b"abc"), "result = bytes(obj).decode()")
case("logger", logging.getLogger("corpus.logger"), "result = obj.name")
case("root_logger", logging.getLogger(), "result = obj.name")
case("staticmethod_object", staticmethod(uses_global), "result = obj.__func__(1)")
case("classmethod_object", classmethod(uses_global), "result = obj.__func__(2)")
case("property_object", property(lambda self: 42), "result = obj.fget(None)")
case("getset_descriptor", types.FunctionType.__dict__["__globals__"], "result = type(obj).__name__")
case("code_object", fact.__code__, "result = obj.co_name")
case("cell_object", make_adder(9).__closure__[0], "result = obj.cell_contents")
case("readable_file", readable, "result = [obj.read(), obj.name.endswith('_readable.txt')]")
case("singleton_types", (type(None), type(Ellipsis), type(NotImplemented)), "result = [t.__name__ for t in obj]")
case("builtin_type", types.FunctionType, "result = obj.__name__")
case("nested_structures", {"fs": [make_adder(i) for i in range(3)], "t": (Color.GREEN, Level.LOW)},
     "result = [f(10) for f in obj['fs']] + [obj['t'][0].name]")

meta = {}
for name, (obj, check) in CASES.items():
    (outdir / f"{name}.pkl").write_bytes(pickler.dumps(obj))
    meta[name] = {"check": check}
# What the checks give on the original objects, in this process (after every dump: some checks
# mutate their object).
for name, (obj, check) in CASES.items():
    env = {"obj": obj, "obj2": obj}
    exec(check, env)
    meta[name]["expected"] = json.loads(json.dumps(env["result"]))
(outdir / "cases.json").write_text(json.dumps(meta, indent=1))
print(len(CASES), "cases written by", which)
