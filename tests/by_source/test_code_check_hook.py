"""The code comparison by_source runs when a rebuilt code object is not `==` the original is the
package's (`_source_check.same_code`), handed to the extension at import through
`_native._set_code_check`: the extension imports no module of the package by name."""
import pickle

import pytest

import cloudpickle_rs
from cloudpickle_rs import _native


def _target(x):
    return x + 1


def _with_unused_constant():
    # Same source, same instructions, one constant more: `==` fails, the comparison decides.
    def f(x):
        return x + 1
    f.__code__ = _target.__code__.replace(co_consts=_target.__code__.co_consts + ("unused",))
    f.__qualname__ = _target.__qualname__
    f.__name__ = _target.__name__
    return f


@pytest.fixture
def registered():
    calls = []

    def install(verdict):
        def check(original, rebuilt):
            calls.append((original, rebuilt))
            return verdict(original, rebuilt)
        _native._set_code_check(check)
        return calls

    yield install
    _native._set_code_check(cloudpickle_rs._same_code)


def test_the_registered_check_decides_when_code_differs(registered):
    f = _with_unused_constant()
    calls = registered(lambda a, b: True)
    g = pickle.loads(cloudpickle_rs.dumps(f, by_source=True))
    assert g(41) == 42
    assert calls
    for original, rebuilt in calls:
        assert original is f.__code__ and rebuilt.co_name == "_target" and rebuilt != original

    calls = registered(lambda a, b: False)
    with pytest.raises(pickle.PicklingError, match="no longer matches its code"):
        cloudpickle_rs.dumps(_with_unused_constant(), by_source=True)
    assert calls


def test_equal_code_never_asks(registered):
    calls = registered(lambda a, b: False)
    assert pickle.loads(cloudpickle_rs.dumps(_target, by_source=True))(1) == 2
    assert calls == []


def test_the_package_registers_its_own_check():
    # what import cloudpickle_rs left registered is the real comparison (constants by value: an
    # extra one is a different function), not a missing one ("no code comparison was registered")
    with pytest.raises(pickle.PicklingError, match="no longer matches its code"):
        cloudpickle_rs.dumps(_with_unused_constant(), by_source=True)


def test_a_check_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        _native._set_code_check(3)
