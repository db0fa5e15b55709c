"""Ray pickles with cloudpickle_rs.

``install()`` replaces ``ray.cloudpickle.CloudPickler``, ``Pickler``, ``dumps`` and ``dump`` (what
Ray's serializer, function and actor export and ``ray.util`` call) with a cloudpickle_rs pickler
that

- writes streams naming ``ray.cloudpickle.cloudpickle`` reconstructors (Ray workers have Ray's
  vendored cloudpickle, not necessarily the ``cloudpickle`` package);
- carries Ray's own reducers over from ``ray.cloudpickle.CloudPickler.dispatch`` (ObjectRef,
  ActorHandle, compiled-DAG refs, ``ray.util.register_serializer`` types): without them an
  ObjectRef captured in a closure is not registered as contained in the task, and ``ray.get``
  hangs or fails.  Reducers Ray registers after ``install()`` (``CloudPickler.dispatch[cls] = f``,
  as Ray does when a serialization context is made) land in the new class's ``dispatch`` and are
  honoured too.

Use it in the driver before or after ``ray.init()``, and in every worker::

    from cloudpickle_rs.integrations import ray as cprs_ray
    cprs_ray.install()
    ray.init(runtime_env={"worker_process_setup_hook": "cloudpickle_rs.integrations.ray.install"})

``by_source``: ``install(by_source=True)``, or ``CLOUDPICKLE_RS_BY_SOURCE=1`` (pass it to workers
with ``runtime_env={"env_vars": {...}}``; the setup hook calls ``install()`` without arguments).
"""
from __future__ import annotations

import copyreg
import io

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (Counter, audit_from_env, check_receiver, check_target_python,
                                                 dumps_kwargs, resolve_by_source,
                                                 resolve_target_python)

__all__ = ["RECONSTRUCTOR_MODULE", "Pickler", "CloudPickler", "dumps", "dump", "install",
           "uninstall", "installed", "stats"]

RECONSTRUCTOR_MODULE = "ray.cloudpickle.cloudpickle"

_counter = Counter("ray")
_state = {"by_source": False, "target_python": None, "receiver": None, "installed": False, "carry": True, "saved": None,
          "ray_dispatch": None}


def _vendored_cloudpickle_own(reducer):
    """True for the reducers of Ray's vendored cloudpickle itself: cloudpickle_rs handles those
    types natively (and for code objects, by_source must not be bypassed)."""
    return getattr(reducer, "__module__", None) == RECONSTRUCTOR_MODULE


def pickler_options():
    """The cloudpickle_rs options every Ray pickle is made with (Ray's reconstructors, by_source)."""
    return {"reconstructor_module": RECONSTRUCTOR_MODULE, **dumps_kwargs(_state["by_source"], _state["target_python"],
                                                                          _state["receiver"])}


class _RayDispatch(dict):
    """``Pickler.dispatch`` and ``dispatch_table``: Ray's reducers, then copyreg's.

    Entries are what Ray registers on our class; a miss falls back to Ray's original
    ``CloudPickler.dispatch`` (registrations made on a reference to Ray's class kept from before
    ``install()``), then to ``copyreg.dispatch_table`` (a pickler's dispatch_table replaces
    copyreg's, as in ``pickle.Pickler``).
    """

    def __missing__(self, cls):
        if _state["carry"]:
            original = _state["ray_dispatch"]
            if original is not None:
                reducer = original.get(cls)
                if reducer is not None and not _vendored_cloudpickle_own(reducer):
                    return reducer
        return copyreg.dispatch_table[cls]


class Pickler(_rs.Pickler):
    """cloudpickle_rs's pickler with Ray's reducers and Ray's reconstructor module.

    Same constructor as ``ray.cloudpickle.CloudPickler``: ``(file, protocol=None,
    buffer_callback=None)``, plus cloudpickle_rs's keyword options.
    """

    dispatch = _RayDispatch()
    dispatch_table = dispatch

    def __init__(self, file, protocol=None, buffer_callback=None, **kwargs):
        for key, value in pickler_options().items():
            kwargs.setdefault(key, value)
        super().__init__(file, protocol, buffer_callback=buffer_callback, **kwargs)

    def dump(self, obj):
        _counter.add("dumps")
        return super().dump(obj)


CloudPickler = Pickler


def dumps(obj, protocol=None, buffer_callback=None):
    """``ray.cloudpickle.dumps`` through cloudpickle_rs."""
    with io.BytesIO() as file:
        Pickler(file, protocol, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def dump(obj, file, protocol=None, buffer_callback=None):
    """``ray.cloudpickle.dump`` through cloudpickle_rs."""
    Pickler(file, protocol, buffer_callback=buffer_callback).dump(obj)


_NAMES = ("CloudPickler", "Pickler", "dumps", "dump")


def install(by_source=None, carry_reducers=True, target_python=None, receiver=None):
    """Make ``ray.cloudpickle`` pickle with cloudpickle_rs in this process.

    ``by_source``: True, False, "auto", or None for ``CLOUDPICKLE_RS_BY_SOURCE``.
    ``target_python``: the workers' Python ("3.10" or (3, 10)), or None for
    ``CLOUDPICKLE_RS_TARGET_PYTHON``: what it cannot load is refused on the driver.
    ``receiver``: a :class:`cloudpickle_rs.Receiver` describing the workers (ray is added to its
    modules); what it refuses raises on the driver.
    ``carry_reducers=False`` leaves Ray's reducers out (for tests proving they are needed: an
    ObjectRef in a closure then breaks).  Calling it again updates the options.
    """
    import ray.cloudpickle as rcp

    _state["by_source"] = resolve_by_source(by_source)
    _state["target_python"] = check_target_python(resolve_target_python(target_python))
    _state["receiver"] = check_receiver(receiver, ("ray",))
    _state["carry"] = bool(carry_reducers)
    if not _state["installed"]:
        original = rcp.CloudPickler
        _state["saved"] = {name: getattr(rcp, name) for name in _NAMES}
        _state["ray_dispatch"] = getattr(original, "dispatch", None)
        Pickler.dispatch.clear()
        if _state["ray_dispatch"] is not None:
            Pickler.dispatch.update({cls: f for cls, f in _state["ray_dispatch"].items()
                                     if not _vendored_cloudpickle_own(f)})
        for name, value in (("CloudPickler", Pickler), ("Pickler", Pickler), ("dumps", dumps),
                            ("dump", dump)):
            setattr(rcp, name, value)
        _state["installed"] = True
    # Without the carry-over, Ray's reducers (old and new) stay out of the pickler's table.
    Pickler.dispatch_table = Pickler.dispatch if _state["carry"] else copyreg.dispatch_table
    audit_from_env()
    return Pickler


def uninstall():
    """Put Ray's vendored cloudpickle back (reducers registered meanwhile are copied back)."""
    if not _state["installed"]:
        return
    import ray.cloudpickle as rcp

    for name, value in _state["saved"].items():
        setattr(rcp, name, value)
    original = _state["ray_dispatch"]
    if original is not None:
        for cls, f in Pickler.dispatch.items():
            original.setdefault(cls, f)
    _state["installed"] = False


def installed():
    return _state["installed"]


def _reachable_reducers():
    """Types our Pickler has a Ray reducer for: registered on it, or reached through the fallback
    to Ray's original dispatch (where Ray registers when its serialization context is made,
    which may happen after ``install()``)."""
    found = set(Pickler.dispatch)
    original = _state["ray_dispatch"]
    if _state["carry"] and original is not None:
        found.update(cls for cls, f in list(original.items()) if not _vendored_cloudpickle_own(f))
    return found


def stats():
    out = _counter.snapshot()
    out.update(installed=_state["installed"], by_source=_state["by_source"],
               carry_reducers=_state["carry"],
               ray_reducers=sorted(f"{c.__module__}.{c.__qualname__}" for c in _reachable_reducers()))
    return out
