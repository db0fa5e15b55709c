"""Seeded generator of random object graphs and a structural comparator.

``example(seed)`` builds one graph from ``random.Random(seed)`` alone, so a seed replays an example
exactly (in any process, any hash seed). ``check(seed)`` dumps it with cloudpickle_rs and with stock
cloudpickle in the protocol and through the API the seed picks (dumps, dump to a file, a Pickler
subclass with Python hooks, dumps with by_source=True, PicklerBase bytes against pickle.dumps), loads both with ``pickle.loads`` and
compares the results with ``diff``: same types, equal values (floats bit for bit), the same pattern
of sharing (an object met twice on one side is met twice on the other) and the same cycles. When
stock raises, we must raise the same exception type (``PicklingRecursionError`` stands for stock's
PicklingError-from-RecursionError).
"""
import collections
import datetime
import decimal
import enum
import fractions
import functools
import io
import itertools
import math
import pickle
import random
import struct
import sys
import types

import cloudpickle
import fuzz_objects as fo

import cloudpickle_rs

PROTOCOLS = tuple(range(pickle.HIGHEST_PROTOCOL + 1))
APIS = ("dumps", "dump_file", "pickler_hooks", "picklerbase_bytes", "dumps_by_source")

# ----- atoms -----------------------------------------------------------------------------------

_INT_EDGES = [0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 2**63 - 1,
              2**63, -2**63, -2**63 - 1, 2**64, -2**64, 2**2039, -2**2040, 10**300]
_FLOAT_EDGES = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e16, 1e22, 0.1,
                1.7976931348623157e308, 2.2250738585072014e-308, 1e-7, 123456789.0]
_SPECIAL_CHARS = list("\\\0\n\r\x1a\x7f\x80\xff\u0100\uffff\U00010000\U0010ffff a'\"()[]{}.")


def _rand_int(r):
    k = r.random()
    if k < 0.3:
        return r.choice(_INT_EDGES)
    if k < 0.6:
        return r.randint(-1000, 1000)
    if k < 0.97:
        return r.randint(-2**r.randint(1, 300), 2**r.randint(1, 300))
    # Huge: past sys.get_int_max_str_digits() (4300) in decimal, so protocols 0-1 raise ValueError
    # in every pickler; LONG4 from protocol 2.
    return r.choice([1, -1]) * (3 ** r.randint(9100, 12000) + r.getrandbits(64))


def _rand_float(r):
    k = r.random()
    if k < 0.4:
        return r.choice(_FLOAT_EDGES)
    if k < 0.7:
        # Any bit pattern, NaN payloads and subnormals included.
        return struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
    return r.uniform(-1e6, 1e6)


def _rand_char(r):
    k = r.random()
    if k < 0.3:
        return r.choice(_SPECIAL_CHARS)
    if k < 0.4:
        return chr(r.randint(0xD800, 0xDFFF))  # lone surrogate
    if k < 0.7:
        return chr(r.randint(32, 126))
    return chr(r.randint(0, 0x10FFFF))


def _rand_str(r):
    k = r.random()
    if k < 0.75:
        return "".join(_rand_char(r) for _ in range(r.randint(0, 12)))
    if k < 0.95:
        # Past 255 bytes (SHORT_BINUNICODE ends there).
        return "".join(_rand_char(r) for _ in range(r.randint(1, 6))) * r.randint(40, 120)
    # Around the 64 KiB frame target.
    return "x" * r.choice([65535, 65536, 70000])


def _rand_bytes(r):
    k = r.random()
    if k < 0.75:
        return r.randbytes(r.randint(0, 16))
    if k < 0.95:
        return r.randbytes(r.randint(1, 8)) * r.randint(32, 100)
    n = r.choice([65535, 65536, 70000])
    return bytes(range(256)) * (n // 256) + b"y" * (n % 256)


_REFS = [int, str, type, object, len, fo.Plain, fo.Key, fo.module_function, fo.Color.RED, fo.Color.GREEN,
         fo.SINGLETON, math, math.floor, collections.OrderedDict, Ellipsis, NotImplemented, type(None)]


def _rand_stdlib(r):
    k = r.randint(0, 9)
    if k == 0:
        return datetime.datetime(2000 + r.randint(0, 50), r.randint(1, 12), r.randint(1, 28), r.randint(0, 23),
                                 microsecond=r.randint(0, 999999))
    if k == 1:
        return datetime.timedelta(days=r.randint(-1000, 1000), seconds=r.randint(0, 86399))
    if k == 2:
        return decimal.Decimal(r.choice(["NaN", "-0", "1.5", "-Infinity", str(r.randint(-10**30, 10**30))]))
    if k == 3:
        return fractions.Fraction(r.randint(-10**20, 10**20), r.randint(1, 10**20))
    if k == 4:
        return complex(_rand_float(r), _rand_float(r))
    if k == 5:
        return range(r.randint(-5, 5), r.randint(-5, 50), r.choice([1, 2, -1]))
    if k == 6:
        return slice(r.randint(0, 5), None, r.choice([None, 2]))
    if k == 7:
        return fo.Key(_rand_str(r)[:5], r.randint(0, 9))
    if k == 8:
        return fo.Point(r.randint(0, 9), _rand_str(r)[:4])
    return r.choice(_REFS)


def atom(r):
    k = r.random()
    if k < 0.05:
        return None
    if k < 0.1:
        return r.random() < 0.5
    if k < 0.3:
        return _rand_int(r)
    if k < 0.45:
        return _rand_float(r)
    if k < 0.65:
        return _rand_str(r)
    if k < 0.75:
        return _rand_bytes(r)
    if k < 0.8:
        return bytearray(_rand_bytes(r))
    return _rand_stdlib(r)


# ----- graphs ----------------------------------------------------------------------------------

def _key_safe(x, depth=0):
    """Usable as a set element or dict key in the comparison: hashed by value (objects hashed by
    identity could not be lined up between the two loaded sets), or a global by reference."""
    if depth > 4:
        return False
    if type(x) in (tuple, frozenset, fo.Point):
        return all(_key_safe(y, depth + 1) for y in x)
    if (type(x) in _ATOMS and type(x) is not slice) or type(x) is fo.Key:
        return True
    return any(x is ref for ref in _REFS)


KINDS = ["list", "tuple", "dict", "set", "frozenset", "plain", "slotted", "slotted_dict", "reduce_args",
         "reduce_state", "reduce_ex", "getsetstate", "newargs_ex", "newargs", "state_setter", "list_sub",
         "dict_sub", "lambda", "closure", "shared_cell", "recursive", "nested", "empty_cell", "func_attrs",
         "partial", "bound_method", "dyn_class", "dyn_instance", "ordered_dict", "deque", "defaultdict",
         "namespace"]


def graph(r, size=None):
    """A random graph: a pool of atoms, then objects of every kind built from earlier pool entries
    (so objects are shared), then back edges into mutable objects (so there are cycles)."""
    pool = [atom(r) for _ in range(r.randint(1, 8))]
    size = r.randint(0, 14) if size is None else size

    def pick():
        return pool[r.randrange(len(pool))]

    def picks(n):
        return [pick() for _ in range(n)]

    def keys():
        return [x for x in pool if _key_safe(x)] or ["k"]

    dyn_classes = []
    for _ in range(size):
        kind = r.choice(KINDS)
        n = r.randint(0, 5)
        if kind == "list":
            obj = picks(n)
        elif kind == "tuple":
            obj = tuple(picks(n))
        elif kind == "dict":
            ks = keys()
            obj = {r.choice(ks): pick() for _ in range(n)}
        elif kind in ("set", "frozenset"):
            ks = keys()
            obj = (set if kind == "set" else frozenset)(r.choice(ks) for _ in range(n))
        elif kind == "plain":
            obj = fo.Plain(**{f"a{i}": pick() for i in range(n)})
        elif kind in ("slotted", "slotted_dict"):
            obj = fo.Slotted() if kind == "slotted" else fo.SlottedDict()
            for name in ("a", "b", "c", "d")[: 3 if kind == "slotted" else 4]:
                if r.random() < 0.7:
                    setattr(obj, name, pick())
            if kind == "slotted_dict" and r.random() < 0.5:
                obj.extra = pick()
        elif kind == "reduce_args":
            # Arguments are built before the object: only atoms, to keep clear of cycles
            # through constructor arguments (which no pickler can write).
            obj = fo.ReduceArgs(*[atom(r) for _ in range(n)])
        elif kind == "reduce_state":
            obj = fo.ReduceState()
            for x in picks(n):
                obj.append(x)
            ks = keys()
            for _ in range(r.randint(0, 3)):
                obj[r.choice(ks)] = pick()
            if r.random() < 0.5:
                obj.extra = pick()
        elif kind == "reduce_ex":
            obj = fo.ReduceEx(atom(r))
        elif kind == "getsetstate":
            obj = fo.GetSetState(pick(), pick())
        elif kind == "newargs_ex":
            obj = fo.NewArgsEx(atom(r), y=atom(r))
            if r.random() < 0.5:
                obj.later = pick()
        elif kind == "newargs":
            obj = fo.NewArgs(atom(r))
        elif kind == "state_setter":
            obj = fo.StateSetter()
            obj.v = pick()
        elif kind == "list_sub":
            obj = fo.ListSub(picks(n))
            obj.attr = pick()
        elif kind == "dict_sub":
            ks = keys()
            obj = fo.DictSub({r.choice(ks): pick() for _ in range(n)})
            if r.random() < 0.5:
                obj.attr = pick()
        elif kind == "lambda":
            obj = fo.make_lambda(pick())
        elif kind == "closure":
            obj = fo.make_closure(pick(), pick())
        elif kind == "shared_cell":
            obj = list(fo.make_shared_cell(pick()))
        elif kind == "recursive":
            obj = fo.make_recursive()
        elif kind == "nested":
            obj = fo.make_nested(pick())
        elif kind == "empty_cell":
            obj = fo.make_empty_cell()
        elif kind == "func_attrs":
            obj = fo.make_function_with_attrs(picks(r.randint(0, 2)), pick(), r.choice([None, _rand_str(r)]))
        elif kind == "partial":
            funcs = [x for x in pool if callable(x) and not isinstance(x, type)] or [fo.module_function]
            ks = [f"k{i}" for i in range(r.randint(0, 2))]
            obj = fo.make_partial(r.choice(funcs + [fo.module_function]), picks(r.randint(0, 2)), {k: pick() for k in ks})
        elif kind == "bound_method":
            owners = [x for x in pool if type(x) is fo.Plain] or [fo.Plain(v=pick())]
            obj = r.choice(owners).method
        elif kind == "dyn_class":
            attrs = {f"c{i}": atom(r) for i in range(r.randint(0, 2))}
            obj = fo.make_class(f"Dyn{len(dyn_classes)}", attrs, slots=r.random() < 0.3)
            dyn_classes.append(obj)
        elif kind == "dyn_instance":
            if not dyn_classes:
                dyn_classes.append(fo.make_class("Dyn", {}))
            cls = r.choice(dyn_classes)
            obj = cls()
            if "__slots__" in vars(cls):
                obj.s = pick()
            else:
                obj.v = pick()
        elif kind == "ordered_dict":
            ks = keys()
            obj = collections.OrderedDict((r.choice(ks), pick()) for _ in range(n))
        elif kind == "deque":
            obj = collections.deque(picks(n), maxlen=r.choice([None, 10]))
        elif kind == "defaultdict":
            ks = keys()
            obj = collections.defaultdict(r.choice([list, int, None]), {r.choice(ks): pick() for _ in range(n)})
        else:  # namespace
            obj = types.SimpleNamespace(**{f"n{i}": pick() for i in range(n)})
        pool.append(obj)

    # Back edges: cycles through lists, dicts, instance dicts, closures' captured lists.
    mutable = [x for x in pool if type(x) in (list, dict, fo.Plain, fo.ListSub, fo.DictSub, fo.ReduceState,
                                               types.SimpleNamespace, collections.deque)]
    if mutable:
        for _ in range(r.randint(0, 6)):
            target = r.choice(mutable)
            value = target if r.random() < 0.3 else pick()
            if isinstance(target, collections.deque):
                target.append(value)
            elif isinstance(target, list):
                target.insert(r.randint(0, len(target)), value)
            elif isinstance(target, dict):
                target[r.choice(keys())] = value
            elif type(target) is fo.ReduceState:
                target.append(value)
            else:
                setattr(target, f"back{r.randint(0, 3)}", value)

    root = r.random()
    if root < 0.4:
        return pool[-1]
    if root < 0.8:
        return pool
    return pick()


def example(seed):
    """(obj, protocol, api) for one seed: the whole example follows from the seed."""
    r = random.Random(seed)
    protocol = PROTOCOLS[r.randrange(len(PROTOCOLS))]
    api = r.choice(APIS)
    return graph(r), protocol, api


# ----- dumping ---------------------------------------------------------------------------------

class _OursHooks(cloudpickle_rs.Pickler):
    """Every hook overridden in Python, each a no-op: the slow paths must write what the fast
    ones write."""

    def persistent_id(self, obj):
        return None

    def reducer_override(self, obj):
        return super().reducer_override(obj)


class _StockHooks(cloudpickle.Pickler):
    def persistent_id(self, obj):
        return None


def dump_ours(obj, protocol, api):
    if api == "dumps" or api == "picklerbase_bytes":
        return cloudpickle_rs.dumps(obj, protocol)
    if api == "dumps_by_source":
        # functions travel as source text and are compiled on load: the code objects must come
        # out equal to stock's bytecode ones (DESIGN.md: exact on 3.11)
        return cloudpickle_rs.dumps(obj, protocol, by_source=True)
    f = io.BytesIO()
    if api == "dump_file":
        cloudpickle_rs.dump(obj, f, protocol)
    else:
        _OursHooks(f, protocol).dump(obj)
    return f.getvalue()


def dump_stock(obj, protocol, api):
    if api == "pickler_hooks":
        f = io.BytesIO()
        _StockHooks(f, protocol).dump(obj)
        return f.getvalue()
    return cloudpickle.dumps(obj, protocol)


def _has_by_value(obj):
    """True when the graph holds something only the cloudpickle layer can write."""
    seen = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (types.FunctionType, functools.partial, types.MethodType)):
            return True
        if isinstance(x, type) and x.__module__ == fo.__name__ and x.__name__.startswith("Dyn"):
            return True
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(x)
        if hasattr(x, "__dict__") and not isinstance(x, type) and not isinstance(x, types.ModuleType):
            stack.extend(vars(x).values())
            stack.append(type(x))
        for cls in type(x).__mro__:
            for s in vars(cls).get("__slots__", ()):
                if s not in ("__dict__", "__weakref__") and hasattr(x, s):
                    stack.append(getattr(x, s))
    return False


def _outcome(fn):
    try:
        return "ok", fn()
    except RecursionError as e:  # noqa: F841 - a RecursionError escaping is itself a finding
        return "raise", e
    except Exception as e:  # noqa: BLE001
        return "raise", e


def _same_exception(ours, theirs):
    if type(ours) is type(theirs):
        return True
    if isinstance(ours, cloudpickle_rs.PicklingRecursionError):
        return isinstance(theirs, (RecursionError, pickle.PicklingError))
    return False


def check(seed):
    """None if the example agrees with the reference, else a one-line description."""
    obj, protocol, api = example(seed)
    if api == "picklerbase_bytes":
        # PicklerBase is _pickle.Pickler byte for byte (graphs of by-value objects excepted:
        # only the cloudpickle layer writes those).
        if not _has_by_value(obj):
            ok_ours, ours = _outcome(lambda: _base_dumps(obj, protocol))
            ok_ref, ref = _outcome(lambda: pickle.dumps(obj, protocol))
            if ok_ref == "raise" or ok_ours == "raise":
                if ok_ref != ok_ours or not _same_exception(ours, ref):
                    return f"PicklerBase: ours {_desc(ok_ours, ours)}, pickle {_desc(ok_ref, ref)}"
            elif ours != ref:
                return f"PicklerBase bytes differ from pickle.dumps (len {len(ours)} vs {len(ref)})"
    ok_ours, ours = _outcome(lambda: dump_ours(obj, protocol, api))
    ok_ref, ref = _outcome(lambda: dump_stock(obj, protocol, api))
    if ok_ref == "raise" or ok_ours == "raise":
        if ok_ref != ok_ours or not _same_exception(ours, ref):
            return f"ours {_desc(ok_ours, ours)}, stock {_desc(ok_ref, ref)}"
        return None
    loaded_ours = pickle.loads(ours)
    loaded_ref = pickle.loads(ref)
    return diff(loaded_ours, loaded_ref)


def _base_dumps(obj, protocol):
    f = io.BytesIO()
    cloudpickle_rs.PicklerBase(f, protocol).dump(obj)
    return f.getvalue()


def _desc(kind, value):
    if kind == "ok":
        return f"returned {len(value)} bytes"
    return f"raised {type(value).__module__}.{type(value).__qualname__}: {str(value)[:200]}"


# ----- structural comparison -------------------------------------------------------------------

_ATOMS = (type(None), bool, int, float, complex, str, bytes, decimal.Decimal, fractions.Fraction,
          datetime.datetime, datetime.date, datetime.time, datetime.timedelta, range, slice)
_BY_IDENTITY = (types.BuiltinFunctionType, types.ModuleType, type(Ellipsis), type(NotImplemented))


def _float_eq(a, b):
    return struct.pack("<d", a) == struct.pack("<d", b)


def _atom_eq(a, b):
    if type(a) is float:
        return _float_eq(a, b)
    if type(a) is complex:
        return _float_eq(a.real, b.real) and _float_eq(a.imag, b.imag)
    if type(a) is decimal.Decimal:
        return str(a) == str(b)
    return a == b


def _is_dynamic_class(x):
    return isinstance(x, type) and getattr(sys.modules.get(x.__module__), x.__qualname__, None) is not x


def _skey(x, depth=0):
    """An identity-free key to line up set elements (set order follows hashes)."""
    t = type(x)
    if depth > 6:
        return (t.__name__,)
    if t is float:
        return ("float", struct.pack("<d", x))
    if t is int:
        return ("int", hex(x))
    if t in (tuple, fo.Point):
        return (t.__name__,) + tuple(_skey(y, depth + 1) for y in x)
    if t is frozenset:
        return ("frozenset",) + tuple(sorted((_skey(y, depth + 1) for y in x), key=repr))
    if t in _ATOMS:
        return (t.__name__, repr(x))
    return (t.__qualname__, repr(x)[:80] if t is fo.Key or isinstance(x, enum.Enum) else "")


class Differ:
    """Walks two loaded graphs in step; ``a_to_b``/``b_to_a`` hold the identity pairing."""

    def __init__(self):
        self.a_to_b = {}
        self.b_to_a = {}
        self.keep = []  # temporaries (reduce tuples) stay alive so their ids are never reused

    def pair(self, a, b, path):
        """Record a <-> b; None if new, else whether the pairing is consistent."""
        ia, ib = id(a), id(b)
        if ia in self.a_to_b or ib in self.b_to_a:
            if self.a_to_b.get(ia) is not b or self.b_to_a.get(ib) is not a:
                raise _Mismatch(path, "sharing differs: an object shared (or cyclic) on one side is not on the other")
            return True
        self.a_to_b[ia] = b
        self.b_to_a[ib] = a
        self.keep.append((a, b))
        return None

    def cmp(self, a, b, path):
        if a is b:
            # Only globals (classes, functions by reference, singletons, tracked dynamic classes)
            # come out of two separate loads as one object.
            return
        ta, tb = type(a), type(b)
        if ta in _ATOMS or tb in _ATOMS:
            if ta is not tb or not _atom_eq(a, b):
                raise _Mismatch(path, f"{_r(a)} != {_r(b)}")
            return
        if isinstance(a, _BY_IDENTITY) or isinstance(b, _BY_IDENTITY):
            if a is not b:
                raise _Mismatch(path, f"{_r(a)} is not {_r(b)}")
            return
        if isinstance(a, type) and isinstance(b, type) and (not _is_dynamic_class(a) or not _is_dynamic_class(b)):
            if a is not b:
                raise _Mismatch(path, f"class {_r(a)} is not {_r(b)}")
            return
        if ta is tuple and not a and not b:
            return
        if self.pair(a, b, path):
            return
        if isinstance(a, type):
            return self.cmp_class(a, b, path)
        if not isinstance(b, type) and (ta is tb or (_is_dynamic_class(ta) and _is_dynamic_class(tb))):
            if ta is not tb:
                self.cmp(ta, tb, path + ".__class__")
        else:
            raise _Mismatch(path, f"type {ta.__qualname__} != {tb.__qualname__}")
        if isinstance(a, types.FunctionType):
            return self.cmp_function(a, b, path)
        if isinstance(a, types.CellType):
            return self.cmp_cell(a, b, path)
        if isinstance(a, types.MethodType):
            self.cmp(a.__func__, b.__func__, path + ".__func__")
            return self.cmp(a.__self__, b.__self__, path + ".__self__")
        if isinstance(a, functools.partial):
            self.cmp(a.func, b.func, path + ".func")
            self.cmp_seq(a.args, b.args, path + ".args")
            self.cmp_dict(a.keywords, b.keywords, path + ".keywords")
            return self.cmp_attrs(a, b, path)
        if isinstance(a, (list, tuple, collections.deque)):
            if isinstance(a, collections.deque) and a.maxlen != b.maxlen:
                raise _Mismatch(path, "deque maxlen differs")
            self.cmp_seq(a, b, path)
        elif isinstance(a, dict):
            if isinstance(a, collections.defaultdict):
                self.cmp(a.default_factory, b.default_factory, path + ".default_factory")
            self.cmp_dict(a, b, path)
        elif isinstance(a, (set, frozenset)):
            self.cmp_set(a, b, path)
        elif isinstance(a, bytearray):
            if bytes(a) != bytes(b):
                raise _Mismatch(path, f"{_r(a)} != {_r(b)}")
        self.cmp_attrs(a, b, path)

    def cmp_attrs(self, a, b, path):
        da, db = getattr(a, "__dict__", None), getattr(b, "__dict__", None)
        if (da is None) != (db is None):
            raise _Mismatch(path, "__dict__ on one side only")
        if da is not None and not isinstance(a, type):
            self.cmp_dict(da, db, path + ".__dict__")
        for cls in type(a).__mro__:
            slots = vars(cls).get("__slots__", ())
            for s in (slots,) if isinstance(slots, str) else slots:
                if s in ("__dict__", "__weakref__"):
                    continue
                ha, hb = hasattr(a, s), hasattr(b, s)
                if ha != hb:
                    raise _Mismatch(f"{path}.{s}", "slot set on one side only")
                if ha:
                    self.cmp(getattr(a, s), getattr(b, s), f"{path}.{s}")

    def cmp_seq(self, a, b, path):
        if len(a) != len(b):
            raise _Mismatch(path, f"length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            self.cmp(x, y, f"{path}[{i}]")

    def cmp_dict(self, a, b, path):
        if len(a) != len(b):
            raise _Mismatch(path, f"dict length {len(a)} != {len(b)}: {sorted(map(_r, a))[:8]} vs {sorted(map(_r, b))[:8]}")
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items())):
            self.cmp(ka, kb, f"{path} key #{i}")
            self.cmp(va, vb, f"{path}[{_r(ka)[:40]}]")

    def cmp_set(self, a, b, path):
        if len(a) != len(b):
            raise _Mismatch(path, f"set length {len(a)} != {len(b)}")
        ga, gb = collections.defaultdict(list), collections.defaultdict(list)
        for x in a:
            ga[repr(_skey(x))].append(x)
        for y in b:
            gb[repr(_skey(y))].append(y)
        if sorted(ga) != sorted(gb) or any(len(ga[k]) != len(gb[k]) for k in ga):
            raise _Mismatch(path, "set elements differ")
        for k in sorted(ga):
            xs, ys = ga[k], gb[k]
            if len(xs) == 1:
                self.cmp(xs[0], ys[0], f"{path}{{{k[:40]}}}")
                continue
            # Equal keys (NaNs, look-alike tuples): any consistent pairing will do.
            for perm in itertools.islice(itertools.permutations(ys), 24):
                saved = (dict(self.a_to_b), dict(self.b_to_a), len(self.keep))
                try:
                    for x, y in zip(xs, perm):
                        self.cmp(x, y, f"{path}{{{k[:40]}}}")
                    break
                except _Mismatch:
                    self.a_to_b, self.b_to_a = saved[0], saved[1]
                    del self.keep[saved[2]:]
            else:
                raise _Mismatch(path, f"no pairing of set elements with key {k[:60]}")

    def cmp_cell(self, a, b, path):
        try:
            ca = a.cell_contents
        except ValueError:
            ca = _EMPTY
        try:
            cb = b.cell_contents
        except ValueError:
            cb = _EMPTY
        if (ca is _EMPTY) != (cb is _EMPTY):
            raise _Mismatch(path, "cell empty on one side only")
        if ca is not _EMPTY:
            self.cmp(ca, cb, path + ".cell_contents")

    def cmp_function(self, a, b, path):
        if a.__code__ != b.__code__:
            raise _Mismatch(path, f"__code__ differs: {a.__code__!r} vs {b.__code__!r}")
        for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
            if getattr(a, attr) != getattr(b, attr):
                raise _Mismatch(f"{path}.{attr}", f"{getattr(a, attr)!r} != {getattr(b, attr)!r}")
        self.cmp(a.__defaults__, b.__defaults__, path + ".__defaults__")
        self.cmp(a.__kwdefaults__, b.__kwdefaults__, path + ".__kwdefaults__")
        self.cmp(a.__annotations__, b.__annotations__, path + ".__annotations__")
        self.cmp_dict(a.__dict__, b.__dict__, path + ".__dict__")
        # Cells are compared by content, not identity: stock gives every function fresh cells,
        # cloudpickle_rs keeps cells shared between closures (a deliberate improvement).
        ca, cb = a.__closure__ or (), b.__closure__ or ()
        if len(ca) != len(cb):
            raise _Mismatch(path, "closure length differs")
        for name, x, y in zip(a.__code__.co_freevars, ca, cb):
            self.cmp_cell(x, y, f"{path}.__closure__ cell {name!r}")
        # Globals: the names the code uses, as loaded (the rest is the module's base globals).
        ga, gb = a.__globals__, b.__globals__
        for name in sorted(set(ga) | set(gb)):
            if name == "__builtins__":
                continue
            if (name in ga) != (name in gb):
                raise _Mismatch(f"{path}.__globals__", f"{name!r} on one side only")
            self.cmp(ga[name], gb[name], f"{path}.__globals__[{name!r}]")

    def cmp_class(self, a, b, path):
        for attr in ("__name__", "__qualname__", "__module__"):
            if getattr(a, attr) != getattr(b, attr):
                raise _Mismatch(f"{path}.{attr}", f"{getattr(a, attr)!r} != {getattr(b, attr)!r}")
        self.cmp_seq(a.__bases__, b.__bases__, path + ".__bases__")
        va = {k: v for k, v in vars(a).items() if k not in ("__dict__", "__weakref__", "s")}
        vb = {k: v for k, v in vars(b).items() if k not in ("__dict__", "__weakref__", "s")}
        if sorted(va) != sorted(vb):
            raise _Mismatch(path, f"class namespace keys differ: {sorted(va)} vs {sorted(vb)}")
        for k in sorted(va):
            self.cmp(va[k], vb[k], f"{path}.{k}")


_EMPTY = object()


class _Mismatch(Exception):
    def __init__(self, path, what):
        super().__init__(f"at {path}: {what}")


def _r(x):
    try:
        s = hex(x) if type(x) is int and x.bit_length() > 4000 else repr(x)
    except Exception:  # noqa: BLE001
        s = f"<{type(x).__qualname__}>"
    return s if len(s) <= 80 else s[:77] + "..."


def diff(a, b):
    """None if ``a`` and ``b`` are structurally equal, else where and how they differ."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20000))
    try:
        Differ().cmp(a, b, "obj")
        return None
    except _Mismatch as e:
        return str(e)
    finally:
        sys.setrecursionlimit(old)
