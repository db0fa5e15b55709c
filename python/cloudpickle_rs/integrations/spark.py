"""PySpark pickles with cloudpickle_rs.

PySpark ships every ``rdd.map`` function, Python UDF and ``mapInPandas`` function, and (since
PySpark 3.5, where ``CPickleSerializer`` is ``CloudPickleSerializer``) the rows of
``parallelize`` and the results of ``collect``, through ``pyspark.cloudpickle``: a copy of
cloudpickle vendored in PySpark.  ``install()`` routes that copy's ``dumps``/``dump`` (what
``pyspark.serializers.CloudPickleSerializer`` and PySpark's ML utilities call) through
cloudpickle_rs, and broadcast values too (``Broadcast.dump``, plain ``pickle`` in PySpark: a
``__main__`` object broadcast without this integration fails to load on the executors).

Streams name ``pyspark.cloudpickle.cloudpickle`` reconstructors, so executors load them with
nothing but PySpark.  In the driver, before the ``SparkSession`` is built::

    from cloudpickle_rs.integrations import spark as cprs_spark
    cprs_spark.install()                               # by_source=, receiver=, target_python=
    spark = cprs_spark.configure(SparkSession.builder.master("local[2]")).getOrCreate()

``configure(builder_or_conf)`` is optional: it sets ``spark.python.daemon.module`` so that the
Python workers (forked by PySpark's daemon) pickle their results with cloudpickle_rs too, and passes
the by_source setting to them (``spark.executorEnv.CLOUDPICKLE_RS_BY_SOURCE``).  It needs
cloudpickle_rs installed where the workers run; without it, the workers pickle results with
PySpark's own copy (which is what they return data with anyway: tasks still travel through ours).
"""
from __future__ import annotations

import io
import os
import pickle

import cloudpickle_rs as _rs

from cloudpickle_rs.integrations._common import (BY_SOURCE_ENV, Counter, audit_from_env,
                                                 check_receiver, check_target_python,
                                                 dumps_kwargs, path_into_message,
                                                 resolve_by_source, resolve_target_python)

__all__ = ["DAEMON_MODULE", "RECONSTRUCTOR_MODULE", "configure", "dump", "dumps", "install",
           "installed", "stats", "uninstall"]

RECONSTRUCTOR_MODULE = "pyspark.cloudpickle.cloudpickle"
#: The ``spark.python.daemon.module`` that installs this integration in the Python workers.
DAEMON_MODULE = "cloudpickle_rs.integrations.spark_daemon"

_counter = Counter("spark")
_state = {"by_source": False, "target_python": None, "receiver": None, "installed": False,
          "saved": None, "role": "driver"}


def pickler_options():
    """The cloudpickle_rs options of every PySpark pickle made through this module."""
    return {"reconstructor_module": RECONSTRUCTOR_MODULE,
            **dumps_kwargs(_state["by_source"], _state["target_python"], _state["receiver"])}


def dumps(obj, protocol=None, buffer_callback=None):
    """``pyspark.cloudpickle.dumps`` through cloudpickle_rs."""
    _counter.add("dumps")
    try:
        return _rs.dumps(obj, protocol, buffer_callback=buffer_callback, **pickler_options())
    except Exception as e:
        path_into_message(e)
        raise


def dump(obj, file, protocol=None, buffer_callback=None):
    """``pyspark.cloudpickle.dump`` through cloudpickle_rs."""
    _counter.add("dumps")
    try:
        _rs.dump(obj, file, protocol, buffer_callback=buffer_callback, **pickler_options())
    except Exception as e:
        path_into_message(e)
        raise


def _broadcast_dump(self, value, f):
    """``Broadcast.dump`` through cloudpickle_rs (PySpark's error wording kept)."""
    from pyspark.util import print_exec

    _counter.add("broadcasts")
    try:
        _rs.dump(value, f, pickle.HIGHEST_PROTOCOL, **pickler_options())
    except pickle.PickleError:
        raise
    except Exception as e:
        path_into_message(e)
        import sys

        print_exec(sys.stderr)
        raise pickle.PicklingError(f"Could not serialize broadcast: {type(e).__name__}: {e}") from e
    f.close()


def install(by_source=None, target_python=None, receiver=None):
    """Make PySpark pickle with cloudpickle_rs in this process (driver or worker).

    ``by_source``: True, False, "auto", or None for ``CLOUDPICKLE_RS_BY_SOURCE``; one setting for
    everything PySpark ships.  ``target_python``: the executors' Python ("3.10" or (3, 10)), or
    None for ``CLOUDPICKLE_RS_TARGET_PYTHON``: what it cannot load is refused on the driver.
    ``receiver``: a :class:`cloudpickle_rs.Receiver` describing the executors (pyspark and py4j
    are added to its modules); what it refuses raises on the driver when the job is submitted.
    Calling it again updates the options.  Returns the patched ``pyspark.cloudpickle`` module.
    """
    import pyspark.cloudpickle as pcp
    import pyspark.cloudpickle.cloudpickle as pcp_impl
    from pyspark.core import broadcast

    _state["by_source"] = resolve_by_source(by_source)
    _state["target_python"] = check_target_python(resolve_target_python(target_python))
    _state["receiver"] = check_receiver(receiver, ("pyspark", "py4j"))
    if not _state["installed"]:
        _state["saved"] = [(pcp, "dumps", pcp.dumps), (pcp, "dump", pcp.dump),
                           (pcp_impl, "dumps", pcp_impl.dumps), (pcp_impl, "dump", pcp_impl.dump),
                           (broadcast.Broadcast, "dump", broadcast.Broadcast.__dict__["dump"])]
        for target in (pcp, pcp_impl):
            target.dumps = dumps
            target.dump = dump
        broadcast.Broadcast.dump = _broadcast_dump
        _state["installed"] = True
    audit_from_env()
    return pcp


def uninstall():
    """Put PySpark's own pickling back."""
    if not _state["installed"]:
        return
    for owner, name, value in _state["saved"]:
        setattr(owner, name, value)
    _state["installed"] = False


def installed():
    return _state["installed"]


def worker_conf():
    """The Spark settings that make the Python workers use cloudpickle_rs too."""
    conf = {"spark.python.daemon.module": DAEMON_MODULE}
    if _state["by_source"] is not False:
        conf[f"spark.executorEnv.{BY_SOURCE_ENV}"] = {True: "1", "auto": "auto"}[_state["by_source"]]
    return conf


def configure(builder_or_conf):
    """Set :func:`worker_conf` on a ``SparkSession.Builder`` or a ``SparkConf``; returns it.

    In ``local`` mode the workers inherit the driver's environment, so the by_source setting is
    also written to ``os.environ``."""
    for key, value in worker_conf().items():
        builder_or_conf = builder_or_conf.config(key, value) if hasattr(builder_or_conf, "config") \
            else builder_or_conf.set(key, value)
    if _state["by_source"] is not False:
        os.environ[BY_SOURCE_ENV] = worker_conf()[f"spark.executorEnv.{BY_SOURCE_ENV}"]
    return builder_or_conf


def stats():
    out = _counter.snapshot()
    out.update(installed=_state["installed"], by_source=_state["by_source"], role=_state["role"])
    return out

