"""Container items that nothing else references are not memoized (dumper/mod.rs, `save_item`).

What must hold: every identity the object graph has survives the round trip (shared items,
cycles, dict keys of split dicts), the streams shrink, protocols 0-2 and PicklerBase keep the C
pickler's bytes, and the one documented difference: an item reached again only by Python code
run during the dump comes back equal, not identical.
"""
import io
import pickle
import pickletools

import pytest

import cloudpickle_rs


def memoize_count(data):
    return sum(op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") for op, _, _ in pickletools.genops(data))


def test_task_list_streams_shrink_and_round_trip():
    tasks = [(i, ("x-%d" % i, i * 0.5), ["tag", i], {"k": "v%d" % i}) for i in range(2000)]
    ours = cloudpickle_rs.dumps(tasks)
    theirs = pickle.dumps(tasks, protocol=5)
    assert pickle.loads(ours) == tasks
    assert memoize_count(ours) < 10 < memoize_count(theirs)
    assert len(ours) < len(theirs)


@pytest.mark.parametrize("proto", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_shared_items_keep_their_identity(proto):
    shared_tuple = ("a", [1, 2])
    shared_list = [3, 4]
    shared_str = "s" * 30
    obj = [shared_tuple, shared_tuple, shared_list, {"x": shared_list}, (shared_str, shared_str)]
    back = pickle.loads(cloudpickle_rs.dumps(obj, protocol=proto))
    assert back == obj
    assert back[0] is back[1]
    assert back[2] is back[3]["x"]
    assert back[4][0] is back[4][1]


def test_cycles_through_items():
    inner = []
    outer = [inner]
    inner.append(outer)
    d = {}
    d["self"] = [d]
    back = pickle.loads(cloudpickle_rs.dumps([outer, d]))
    assert back[0][0][0] is back[0]
    assert back[1]["self"][0] is back[1]


def test_split_dict_keys_and_instances():
    class Rec:
        def __init__(self, i):
            self.alpha = i
            self.beta = ("b", i)

    Rec.__module__ = "__main__"
    recs = [Rec(i) for i in range(50)]
    back = pickle.loads(cloudpickle_rs.dumps(recs))
    assert [(r.alpha, r.beta) for r in back] == [(r.alpha, r.beta) for r in recs]
    assert len({type(r) for r in back}) == 1


def test_protocols_0_to_2_and_picklerbase_keep_c_bytes():
    data = [("x", i, [i, "y"]) for i in range(20)]
    for proto in range(0, 3):
        assert cloudpickle_rs.dumps(data, protocol=proto) == pickle.dumps(data, protocol=proto)
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        buf = io.BytesIO()
        cloudpickle_rs.PicklerBase(buf, proto).dump(data)
        assert buf.getvalue() == pickle.dumps(data, protocol=proto)


def test_persistent_id_turns_it_off():
    class P(cloudpickle_rs.Pickler):
        def persistent_id(self, obj):
            return None

    data = [("x", i) for i in range(10)]
    buf = io.BytesIO()
    P(buf, 5).dump(data)
    assert memoize_count(buf.getvalue()) == memoize_count(pickle.dumps(data, protocol=5)) == 12


def test_item_reached_again_by_a_reducer_comes_back_equal():
    """The documented difference: a `__reduce__` that digs an item out of the container being
    pickled gets a second copy of it, not a reference."""
    holder = [("only", "here")]

    class Digger:
        def __reduce__(self):
            return (tuple, (holder[0],))

    back = pickle.loads(cloudpickle_rs.dumps([holder, Digger()]))
    assert back[0][0] == back[1] == ("only", "here")


@pytest.mark.parametrize("proto", range(3, pickle.HIGHEST_PROTOCOL + 1))
def test_cycles_back_to_a_tuple_through_its_unshared_items(proto):
    """A tuple is memoized after its items, so a cycle back to it walks its items again: those
    items must be memoized even when the tuple holds their only reference."""
    t = ({},)
    t[0][1] = t
    u = ([],)
    u[0].append(u)
    inner = ({"k": None},)
    middle = (inner, "m")
    inner[0]["k"] = middle
    holder = [middle]
    del inner, middle
    for obj in (t, [t], u, [u], holder):
        back = pickle.loads(cloudpickle_rs.dumps(obj, protocol=proto))
        if obj is t:
            assert back[0][1] is back
        elif obj is u:
            assert back[0][0] is back
        elif obj is holder:
            assert back[0][0][0]["k"] is back[0]
        else:
            first = back[0]
            assert (first[0][1] if isinstance(first[0], dict) else first[0][0]) is first
