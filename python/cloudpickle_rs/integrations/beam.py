"""Apache Beam pickles with cloudpickle_rs.

Beam (``pickle_library="cloudpickle"``, its default) pickles every ``DoFn``, lambda, ``CombineFn``
and transform through ``apache_beam.internal.cloudpickle_pickler``, which uses a modified copy of
cloudpickle vendored in Beam (``apache_beam.internal.cloudpickle``) with a ``CloudPickleConfig``.
``install()`` routes that module's ``_dumps`` (behind ``pickler.dumps``, ``roundtrip`` and the
coders' type pickling) and ``dump_session`` (``save_main_session``) through cloudpickle_rs::

    from cloudpickle_rs.integrations import beam as cprs_beam
    cprs_beam.install()                  # by_source=, target_python=, receiver= as for dumps
    with beam.Pipeline(options=...) as p: ...

Streams name the vendored copy's reconstructors, so workers load them with nothing but Beam, and
keep what Beam's configs mean:

- Beam's reducers of its pickler (locks and RLocks as fresh ones, absl flags, protobuf enum
  descriptors, ``typing.TypeAliasType``) are carried over;
- ``skip_reset_dynamic_type_state=True`` (Beam's default config): classes by value are written
  with Beam's own ``functools.partial(_class_setstate, skip_reset_dynamic_type_state=True)``;
- configs whose meaning cloudpickle_rs does not reproduce are pickled by Beam's own code, dump by
  dump, and counted as ``delegated`` in :func:`stats`: stable code identifiers
  (``enable_stable_code_identifier_pickling``), ``id_generator=None`` (the coders' deterministic
  type pickling), a ``filepath_interceptor`` other than the identity, ``pickle_main_by_ref``.

``install()`` must run in every process that pickles (the DirectRunner runs in the launching
process).  ``pickle_library="dill"`` is left alone: only the cloudpickle path is routed.
"""
from __future__ import annotations

import copyreg
import functools
import io
import sys
import types

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (Counter, audit_from_env, check_receiver,
                                                 check_target_python, dumps_kwargs,
                                                 path_into_message, resolve_by_source,
                                                 resolve_target_python)

__all__ = ["RECONSTRUCTOR_MODULE", "install", "installed", "stats", "uninstall"]

RECONSTRUCTOR_MODULE = "apache_beam.internal.cloudpickle.cloudpickle"
#: The vendored module's namespace with Beam's default-config class state setter (a module of
#: this process only: what the stream names are the vendored module's own functions).
_SKIP_RESET_MODULE = "cloudpickle_rs.integrations._beam_skip_reset"

_counter = Counter("beam")
_state = {"by_source": False, "target_python": None, "receiver": None, "installed": False,
          "saved": None, "options": {}, "dispatch_table": None}


def _skip_reset_module():
    mod = sys.modules.get(_SKIP_RESET_MODULE)
    if mod is None:
        vendored = sys.modules[RECONSTRUCTOR_MODULE]
        mod = types.ModuleType(_SKIP_RESET_MODULE, "Beam's reconstructors, skip-reset class state.")
        mod.__dict__.update({k: v for k, v in vars(vendored).items() if not k.startswith("__")})
        mod._class_setstate = functools.partial(vendored._class_setstate,
                                                skip_reset_dynamic_type_state=True)
        sys.modules[_SKIP_RESET_MODULE] = mod
    return mod


def _ours_can_keep(config, stable_ids):
    """Whether cloudpickle_rs writes what ``config`` means (else Beam's own code pickles)."""
    from apache_beam.internal import code_object_pickler

    return (not stable_ids and config.id_generator is not None
            and config.get_code_object_params is None and not config.pickle_main_by_ref
            and config.filepath_interceptor in (None, code_object_pickler.get_normalized_path))


def _dispatch_table(beam_pickler):
    """copyreg's table and the reducers Beam's pickler registers for each dump."""
    table = dict(copyreg.dispatch_table)
    for type_name, reducer in (("RLOCK_TYPE", "_pickle_rlock"), ("LOCK_TYPE", "_lock_reducer"),
                               ("EnumDescriptor", "_pickle_enum_descriptor")):
        t, f = getattr(beam_pickler, type_name, None), getattr(beam_pickler, reducer, None)
        if t is not None and f is not None:
            table[t] = f
    alias = getattr(beam_pickler, "_TypeAliasType", None)
    if alias is not None:
        table[alias] = beam_pickler._typealias_reduce
    flags = getattr(beam_pickler, "flags", None)
    if flags is not None:
        table[type(flags.FLAGS)] = beam_pickler._pickle_absl_flags
    return table


def _pickle(obj, file, module):
    p = _rs.Pickler(file, reconstructor_module=module, **_state["options"])
    p.dispatch_table = _state["dispatch_table"]
    p.dump(obj)


def _dumps(o, enable_best_effort_determinism=False, enable_stable_code_identifier_pickling=False,
           config=None):
    """``cloudpickle_pickler._dumps`` through cloudpickle_rs (Beam's signature and lock)."""
    from apache_beam.internal import cloudpickle_pickler as beam_pickler

    if config is None:
        config = beam_pickler.DEFAULT_CONFIG
    if not _ours_can_keep(config, enable_stable_code_identifier_pickling):
        _counter.add("delegated")
        return _state["saved"]["_dumps"](o, enable_best_effort_determinism,
                                         enable_stable_code_identifier_pickling, config)
    if enable_best_effort_determinism:
        beam_pickler._LOGGER.warning("Ignoring unsupported option: enable_best_effort_determinism. "
                                     "This has only been implemented for dill.")
    module = _skip_reset_module().__name__ if config.skip_reset_dynamic_type_state else RECONSTRUCTOR_MODULE
    _counter.add("dumps")
    with beam_pickler._pickle_lock:
        with io.BytesIO() as file:
            try:
                _pickle(o, file, module)
            except Exception as e:
                path_into_message(e)
                raise
            return file.getvalue()


def _dump_session(file_path):
    """``cloudpickle_pickler.dump_session`` (``save_main_session``) through cloudpickle_rs."""
    from apache_beam.coders import typecoders
    from apache_beam.internal import cloudpickle_pickler as beam_pickler
    from apache_beam.typehints import schemas
    from apache_beam.typehints.schema_registry import SCHEMA_REGISTRY

    _counter.add("sessions")
    with beam_pickler._pickle_lock, open(file_path, "wb") as file:
        _pickle({"coder": typecoders.registry.get_custom_type_coder_tuples(),
                 "logical_type": schemas.LogicalType._known_logical_types.copy_custom(),
                 "schema": SCHEMA_REGISTRY.get_registered_typings()}, file, RECONSTRUCTOR_MODULE)


def install(by_source=None, target_python=None, receiver=None):
    """Make Beam's cloudpickle pickler use cloudpickle_rs in this process.

    ``by_source``: True, False, "auto", or None for ``CLOUDPICKLE_RS_BY_SOURCE``: one setting for
    everything Beam pickles.  ``target_python``: the workers' Python, or None for
    ``CLOUDPICKLE_RS_TARGET_PYTHON``.  ``receiver``: a :class:`cloudpickle_rs.Receiver`
    describing the workers (apache_beam is added to its modules): what it refuses raises when the
    pipeline is built.  Calling it again updates the options.
    """
    from apache_beam.internal import cloudpickle_pickler as beam_pickler

    _state["by_source"] = resolve_by_source(by_source)
    _state["target_python"] = check_target_python(resolve_target_python(target_python))
    _state["receiver"] = check_receiver(receiver, ("apache_beam",))
    _state["options"] = dumps_kwargs(_state["by_source"], _state["target_python"], _state["receiver"])
    # Beam registers the same reducers on each of its picklers: one table, made once.
    _state["dispatch_table"] = _dispatch_table(beam_pickler)
    if not _state["installed"]:
        _state["saved"] = {name: getattr(beam_pickler, name) for name in ("_dumps", "dump_session")}
        beam_pickler._dumps = _dumps
        beam_pickler.dump_session = _dump_session
        _state["installed"] = True
    audit_from_env()
    return beam_pickler


def uninstall():
    """Put Beam's own pickling back."""
    if not _state["installed"]:
        return
    from apache_beam.internal import cloudpickle_pickler as beam_pickler

    for name, value in _state["saved"].items():
        setattr(beam_pickler, name, value)
    _state["installed"] = False


def installed():
    return _state["installed"]


def stats():
    out = _counter.snapshot()
    out.update(installed=_state["installed"], by_source=_state["by_source"])
    return out

