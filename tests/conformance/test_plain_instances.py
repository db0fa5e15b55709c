"""Instances of plain classes skip the `__reduce_ex__` call (crates/cloudpickle_rs/src/plain.rs).

The shortcut must write exactly what `_pickle.c` writes after calling `object.__reduce_ex__`,
and must step aside for every class or instance that changes the protocol, including changes
made after a class's instances were already pickled once. Each case compares our PicklerBase
with the C pickler byte for byte, and round-trips through our cloudpickle Pickler.
"""
import copyreg
import io
import pickle

import pytest

import cloudpickle_rs

PROTOCOLS = range(0, pickle.HIGHEST_PROTOCOL + 1)


def c_bytes(obj, proto):
    buf = io.BytesIO()
    pickle.Pickler(buf, proto).dump(obj)
    return buf.getvalue()


def our_bytes(obj, proto):
    buf = io.BytesIO()
    cloudpickle_rs.PicklerBase(buf, proto).dump(obj)
    return buf.getvalue()


def outcome(dump, obj, proto):
    """The bytes, or the error's type and first line (our errors add notes)."""
    try:
        return dump(obj, proto)
    except Exception as e:  # noqa: BLE001 - compared with the C pickler's
        return type(e), str(e).splitlines()[0]


def assert_same_as_c(obj):
    for proto in PROTOCOLS:
        # Twice: the first dump of a class may cache copyreg's __slotnames__ in it.
        for _ in range(2):
            theirs = outcome(c_bytes, obj, proto)
            assert outcome(our_bytes, obj, proto) == theirs, proto


class Plain:
    def __init__(self, i):
        self.i = i
        self.name = "n%d" % i
        self.tags = ("t", i)


class PlainChild(Plain):
    extra = 1


class Mixin:
    def helper(self):
        return 1


class Diamond(PlainChild, Mixin):
    pass


class Empty:
    pass


class WithSlots:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a, self.b = 1, 2


class SlotsAndDict(Plain):
    __slots__ = ("s",)

    def __init__(self, i):
        super().__init__(i)
        self.s = "slot"


class WithGetstate(Plain):
    def __getstate__(self):
        return {"only": self.i}


class WithReduce(Plain):
    def __reduce__(self):
        return (WithReduce, (self.i,))


class WithReduceEx(Plain):
    def __reduce_ex__(self, proto):
        return (WithReduceEx, (self.i + proto,))


class WithGetnewargs(Plain):
    def __new__(cls, i=0):
        return super().__new__(cls)

    def __getnewargs__(self):
        return (self.i,)


class WithGetnewargsEx(Plain):
    def __new__(cls, *a, **k):
        return super().__new__(cls)

    def __getnewargs_ex__(self):
        return ((self.i,), {})


class WithSetstate(Plain):
    def __setstate__(self, state):
        self.__dict__.update(state)


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    def __init__(self):
        self.x = 1


class WithGetattribute(Plain):
    def __getattribute__(self, name):
        return object.__getattribute__(self, name)


class IntSubclass(int):
    pass


class ListSubclass(list):
    pass


class DictSubclass(dict):
    pass


class ExcSubclass(Exception):
    pass


CASES = {
    "plain": lambda: [Plain(i) for i in range(5)],
    "shared instance": lambda: [Plain(1)] * 3,
    "child": lambda: [PlainChild(2)],
    "diamond": lambda: [Diamond(3)],
    "empty dict (state None)": lambda: [Empty(), Empty()],
    "slots": lambda: [WithSlots()],
    "slots and dict": lambda: [SlotsAndDict(4)],
    "getstate": lambda: [WithGetstate(5)],
    "reduce": lambda: [WithReduce(6)],
    "reduce_ex": lambda: [WithReduceEx(7)],
    "getnewargs": lambda: [WithGetnewargs(8)],
    "getnewargs_ex": lambda: [WithGetnewargsEx(9)],
    "setstate": lambda: [WithSetstate(10)],
    "metaclass": lambda: [WithMeta()],
    "getattribute": lambda: [WithGetattribute(11)],
    "int subclass": lambda: [IntSubclass(12)],
    "list subclass": lambda: [ListSubclass([1, 2])],
    "dict subclass": lambda: [DictSubclass(a=1)],
    "exception subclass": lambda: [ExcSubclass("boom")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_byte_identical_to_c_pickler(case):
    assert_same_as_c(CASES[case]())


@pytest.mark.parametrize("case", sorted(CASES))
def test_cloudpickle_round_trip(case):
    obj = CASES[case]()
    for proto in PROTOCOLS:
        if isinstance(outcome(c_bytes, obj, proto), tuple):
            continue  # the C pickler refuses it too (slots below protocol 2)
        back = pickle.loads(cloudpickle_rs.dumps(obj, protocol=proto))
        expected = pickle.loads(c_bytes(obj, proto))
        assert type(back) is type(expected) and len(back) == len(expected)
        for a, b in zip(expected, back):
            assert type(a) is type(b)
            assert getattr(a, "__dict__", None) == getattr(b, "__dict__", None)
            assert a == b or type(a).__eq__ is object.__eq__


def test_self_referencing_state_and_sharing():
    a, b = Plain(1), Plain(2)
    a.other, b.other = b, a
    a.me = a
    assert_same_as_c([a, b])
    back = pickle.loads(cloudpickle_rs.dumps([a, b]))
    assert back[0].other is back[1] and back[1].other is back[0] and back[0].me is back[0]


def test_instance_dict_overrides_are_honoured():
    """`__reduce_ex__` and `__getstate__` are looked up on the instance by pickle."""
    a = Plain(1)
    a.__reduce_ex__ = lambda proto: (Plain, (99,))
    b = Plain(2)
    b.__getstate__ = lambda: {"from": "instance"}
    for obj in ([a], [b], [Plain(3), a, Plain(4), b]):
        for proto in PROTOCOLS:
            assert pickle.loads(our_bytes(obj, proto))[0].__dict__ == pickle.loads(c_bytes(obj, proto))[0].__dict__
            assert our_bytes(obj, proto) == c_bytes(obj, proto)


def test_class_changed_after_a_dump():
    """A verdict cached for a class is dropped when the class (or a base) changes."""

    class Base:
        def __init__(self):
            self.v = 1

    class Derived(Base):
        pass

    objs = [Base(), Derived()]
    assert_same_as_c(objs)
    Base.__reduce__ = lambda self: (dict, ((("was", "reduce"),),))
    assert pickle.loads(our_bytes(objs, 2)) == [{"was": "reduce"}] * 2
    del Base.__reduce__
    assert_same_as_c(objs)
    Derived.__getstate__ = lambda self: "custom state"
    with pytest.raises(Exception) as ours:
        our_bytes(objs, 2)
    with pytest.raises(Exception) as theirs:
        c_bytes(objs, 2)
    assert type(ours.value) is type(theirs.value)  # Derived is local: not found by reference


def test_class_changed_within_one_dump():
    """A reducer running in the middle of a dump changes a class whose instances were already
    written: the instances after it follow the new definition, as with the C pickler."""

    class Late:
        def __init__(self, i):
            self.i = i

    class Switch:
        def __reduce__(self):
            Late.__reduce__ = lambda s: (str, ("late %d" % s.i,))
            return (int, (0,))

    Late.__module__ = __name__
    Late.__qualname__ = "Late"
    globals()["Late"] = Late
    try:
        obj = [Late(1), Switch(), Late(2)]
        ours = pickle.loads(our_bytes(obj, 5))
        del Late.__reduce__
        theirs = pickle.loads(c_bytes(obj, 5))
        del Late.__reduce__
        assert ours[2] == theirs[2] == "late 2"
        assert type(ours[0]) is Late and ours[0].i == 1
    finally:
        del globals()["Late"]


def test_copyreg_dispatch_table_wins():
    class Registered:
        def __init__(self):
            self.x = 1

    Registered.__module__, Registered.__qualname__ = __name__, "Registered"
    globals()["Registered"] = Registered
    copyreg.pickle(Registered, lambda o: (str, ("via copyreg",)))
    try:
        assert pickle.loads(our_bytes([Registered()], 5)) == ["via copyreg"]
        assert pickle.loads(cloudpickle_rs.dumps([Registered()])) == ["via copyreg"]
    finally:
        del copyreg.dispatch_table[Registered]
        del globals()["Registered"]


def test_class_attribute_instance_by_value():
    """A class pickled by value whose dict holds one of its instances: the instance is reached
    while the class is written, before its own NEWOBJ (save_reduce's recursive case)."""
    ns = {}
    exec("class Node:\n    def __init__(self, v):\n        self.v = v\n", ns)
    Node = ns["Node"]
    Node.__module__ = "__main__"
    Node.default = Node(0)
    data = [Node.default, Node(1)]
    back = pickle.loads(cloudpickle_rs.dumps(data))
    assert back[0] is type(back[0]).default
    assert back[1].v == 1 and type(back[1]) is type(back[0])
