"""cloudpickle-rs: a Rust drop-in for cloudpickle.

    import cloudpickle_rs as cloudpickle
    data = cloudpickle.dumps(obj)            # what cloudpickle.dumps does, faster
    data = cloudpickle.dumps(obj, by_source=True)   # functions travel as source text
    obj2 = cloudpickle.loads(data)           # this is pickle.loads

Streams name only the standard library and ``cloudpickle.cloudpickle`` reconstructors, so a
receiver needs stock cloudpickle, not this package.
"""
from pickle import HIGHEST_PROTOCOL, PicklingError, load, loads

from cloudpickle_rs._native import Pickler, PicklerBase, PicklingRecursionError, SourceFallbackWarning, dump, dumps
from cloudpickle_rs._receiver import (
    PayloadTooLargeError,
    PicklingProhibitedError,
    Receiver,
    Report,
    check,
    check_stream,
)
from cloudpickle_rs.isolate import ChildDiedError, IsolateProtocolError, ModuleLeakError, RemoteError, isolate


def _same_code(original, rebuilt):
    # by_source's instruction-by-instruction check (imports `dis`: loaded on first use only)
    from cloudpickle_rs._source_check import same_code

    return same_code(original, rebuilt)


from cloudpickle_rs import _native as _native_module  # noqa: E402

_native_module._set_code_check(_same_code)
del _native_module


# The by-value registry is stock cloudpickle's own set of module names (in the reconstructors'
# module): stock's reducers that we reuse for the long tail of types consult it too, so both agree.
# Looked up on first use: `import cloudpickle_rs` must stay cheap.
def _registry():
    from cloudpickle import cloudpickle as stock

    return stock._PICKLE_BY_VALUE_MODULES


def register_pickle_by_value(module):
    """Pickle the functions and classes of `module` (and its submodules) by value."""
    import sys
    import types

    if not isinstance(module, types.ModuleType):
        raise ValueError(f"Input should be a module object, got {str(module)} instead")
    if module.__name__ not in sys.modules:
        raise ValueError(f"{module} was not imported correctly, have you used an `import` statement to access it?")
    _registry().add(module.__name__)


def unregister_pickle_by_value(module):
    """Undo `register_pickle_by_value(module)`."""
    import types

    if not isinstance(module, types.ModuleType):
        raise ValueError(f"Input should be a module object, got {str(module)} instead")
    registry = _registry()
    if module.__name__ not in registry:
        raise ValueError(f"{module} is not registered for pickle by value")
    registry.remove(module.__name__)


def list_registry_pickle_by_value():
    """The names of the modules registered by value (a copy)."""
    return _registry().copy()


__all__ = [
    "DEFAULT_PROTOCOL",
    "HIGHEST_PROTOCOL",
    "ChildDiedError",
    "CloudPickler",
    "IsolateProtocolError",
    "ModuleLeakError",
    "RemoteError",
    "isolate",
    "Pickler",
    "PicklerBase",
    "PicklingRecursionError",
    "SourceFallbackWarning",
    "PicklingError",
    "PicklingProhibitedError",
    "PayloadTooLargeError",
    "Receiver",
    "Report",
    "check",
    "check_stream",
    "dump",
    "dumps",
    "list_registry_pickle_by_value",
    "load",
    "loads",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
]

DEFAULT_PROTOCOL = 5

CloudPickler = Pickler

