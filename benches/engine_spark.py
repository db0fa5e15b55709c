"""Spark row of `make bench` (run by benches/run.py with the .venvs/spark interpreter).

Driver-side serialization of a job of 2,000 small tasks: ``sc.parallelize(rows, 2000)`` (20,000
``(id, name, score)`` rows in 2,000 partitions: 2,000 batches pickled on the driver) ``.map(closure)``, where the closure holds
a ``__main__`` class instance and a helper function, up to the point where PySpark has pickled
everything it sends (``rdd._jrdd``: the command is pickled; no task runs).  Measured: the time
spent inside ``pyspark.cloudpickle.dumps`` (PySpark's vendored cloudpickle, the default) or inside
the integration's ``dumps`` (cloudpickle_rs), summed over the job; the two alternate round by
round in one SparkSession (``install()``/``uninstall()``).  Prints one JSON line.
"""
import sys
import time

from engine_common import alternate, report

N_PARTITIONS = 2000
N_ROWS = 20000
#: A list (PySpark turns a range into a JVM range without pickling it): (id, name, score) rows.
ROWS = [(i, "row-%d" % i, i * 0.5) for i in range(N_ROWS)]


class Scaler:
    def __init__(self, factor, offset):
        self.factor, self.offset = factor, offset

    def apply(self, x):
        return x * self.factor + self.offset


def clip(v, lo=0, hi=10**9):
    return max(lo, min(hi, v))


def make_task(scaler):
    def task(row):
        return row[0], clip(scaler.apply(row[2]))
    return task


def timed(fn, acc):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc.append(time.perf_counter() - t0)
    return wrapper


def one_job(sc, pcp, acc):
    """Seconds spent pickling on the driver for one job (the dumps function swapped in)."""
    original = pcp.dumps
    pcp.dumps = timed(original, acc)
    try:
        acc.clear()
        rdd = sc.parallelize(ROWS, N_PARTITIONS).map(make_task(Scaler(3, 1)))
        rdd._jrdd  # noqa: B018 - PySpark pickles the command here
        return sum(acc), len(acc)
    finally:
        pcp.dumps = original


def main(rounds):
    from pyspark.sql import SparkSession

    import pyspark.cloudpickle as pcp
    from cloudpickle_rs.integrations import spark as cprs_spark

    spark = (SparkSession.builder.master("local[2]").appName("cprs-bench")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        sc = spark.sparkContext
        acc = []
        out = alternate(rounds, "pyspark", cprs_spark, lambda: one_job(sc, pcp, acc))
    finally:
        spark.stop()
    import pyspark
    out["pyspark_version"] = pyspark.__version__
    report(out)

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 11)
