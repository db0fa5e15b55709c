"""cloudpickle-rs: a Rust drop-in for cloudpickle.

    import cloudpickle_rs as cloudpickle
    data = cloudpickle.dumps(obj)            # what cloudpickle.dumps does, faster
    data = cloudpickle.dumps(obj, by_source=True)   # functions travel as source text
    obj2 = cloudpickle.loads(data)           # this is pickle.loads

Streams name only the standard library and ``cloudpickle.cloudpickle`` reconstructors, so a
receiver needs stock cloudpickle, not this package.
"""
from pickle import HIGHEST_PROTOCOL, PicklingError, load, loads

from cloudpickle_rs._native import Pickler, dump, dumps

# The by-value registry is stock cloudpickle's own (the reconstructors' module): stock's
# reducers that we reuse for the long tail of types consult it too, so both agree.
from cloudpickle.cloudpickle import (
    list_registry_pickle_by_value,
    register_pickle_by_value,
    unregister_pickle_by_value,
)

__all__ = [
    "DEFAULT_PROTOCOL",
    "HIGHEST_PROTOCOL",
    "CloudPickler",
    "Pickler",
    "PicklingError",
    "PicklingProhibitedError",
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


class PicklingProhibitedError(PicklingError):
    """Raised by a ``pickle_by_reference`` callback to refuse an object; reaches the caller as is."""
