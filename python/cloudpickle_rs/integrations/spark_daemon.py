"""PySpark's Python worker daemon with cloudpickle_rs installed (``spark.python.daemon.module``).

The daemon forks the Python workers of an executor; installing the integration here, before it
forks, makes every worker pickle its results through cloudpickle_rs (by_source from
``CLOUDPICKLE_RS_BY_SOURCE``).  Set by :func:`cloudpickle_rs.integrations.spark.configure`.
"""
from cloudpickle_rs.integrations import spark as _spark

_spark._state["role"] = "worker"
_spark.install()

if __name__ == "__main__":
    from pyspark.daemon import manager

    manager()
