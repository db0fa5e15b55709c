"""The constructor arguments of `_pickle.Pickler(file, protocol=None, fix_imports=True,
buffer_callback=None)`: positional or by name, with the C pickler's errors; our own options
(by_source, pickle_by_reference, reconstructor_module) are keyword-only."""
import _pickle
import io
import pickle

import pytest

import cloudpickle_rs

CLASSES = [cloudpickle_rs.PicklerBase, cloudpickle_rs.Pickler]


def outcome(cls, *args, **kwargs):
    try:
        p = cls(*args, **kwargs)
    except TypeError as e:
        return TypeError, str(e)
    buf = args[0] if args else kwargs["file"]
    proto = args[1] if len(args) > 1 else kwargs.get("protocol")
    p.dump(["x", 1, pickle.PickleBuffer(b"ab")] if proto == 5 else ["x", 1])
    return "ok", buf.getvalue()


CASES = [
    ((2,), {}),
    ((2, False), {}),
    ((5, True, None), {}),
    ((5, True, lambda b: None), {}),
    ((2, True, None, 1), {}),
    ((2, True), {"fix_imports": False}),
    ((2,), {"protocol": 3}),
    ((), {"file": None, "protocol": 4}),
    ((4, True), {"buffer_callback": None}),
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_like_the_c_pickler(cls, case):
    args, kwargs = CASES[case]
    kwargs = dict(kwargs)
    if "file" in kwargs:
        kwargs["file"] = io.BytesIO()
        theirs, ours = (outcome(_pickle.Pickler, **{**kwargs, "file": io.BytesIO()}),
                        outcome(cls, **kwargs))
    else:
        theirs = outcome(_pickle.Pickler, io.BytesIO(), *args, **kwargs)
        ours = outcome(cls, io.BytesIO(), *args, **kwargs)
    if theirs[0] is TypeError:
        assert ours == theirs
    elif cls is cloudpickle_rs.PicklerBase:
        assert ours == theirs
    else:
        assert ours[0] == "ok"


def test_our_options_are_keyword_only():
    with pytest.raises(TypeError):
        cloudpickle_rs.Pickler(io.BytesIO(), 5, True, None, True)
    cloudpickle_rs.Pickler(io.BytesIO(), 5, True, None, by_source=True).dump(len)
