"""Frames end where `_pickle.c` ends them, before any object, also inside tuples whose atoms the
walk writes without its dispatch (found by tools/fuzz_differential.py, seed 69383)."""
import io
import pickle

import pytest

import cloudpickle_rs


def base_dumps(obj, proto):
    buf = io.BytesIO()
    cloudpickle_rs.PicklerBase(buf, proto).dump(obj)
    return buf.getvalue()


@pytest.mark.parametrize("proto", [4, 5])
@pytest.mark.parametrize("pad", [65500, 65530, 65536, 65540, 65560])
def test_tuple_items_across_a_frame_boundary(proto, pad):
    for tail in ((-914, 1.5, None, True), ("s", 3), (2**70, "t" * 300)):
        obj = (b"x" * pad,) + tail
        assert base_dumps(obj, proto) == pickle.dumps(obj, proto)
        assert pickle.loads(cloudpickle_rs.dumps(obj, protocol=proto)) == obj
        nested = [obj, [(b"y" * pad, -1, 2.5)]]
        assert base_dumps(nested, proto) == pickle.dumps(nested, proto)
