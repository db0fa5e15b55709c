"""Integration script (run as __main__ by tests/integrations/test_integ_spark.py).

    spark_app.py integration   # cloudpickle_rs.integrations.spark.install() + configure()
    spark_app.py by_source     # the same with install(by_source=True)
    spark_app.py receiver      # install(receiver=...): the workload passes, a denied task is refused
    spark_app.py driver_only   # install() without configure(): workers run PySpark's own daemon
    spark_app.py negative      # PySpark's own pickling: the audit must catch its stock dumps

A local SparkSession (local[2], Python workers forked by PySpark's daemon) runs a small workload
of __main__ code; one line ``INTEG-RESULT: <json>`` reports the results, the driver's audit and
every worker's audit.
"""
import faulthandler
import json
import linecache
import os
import sys

T = 120
SCRIPT = os.path.abspath(__file__)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def make_adder(n):
    def add(x):
        return x + n
    return add


def make_point(x):
    return Point(x, -x)


def worker_report(_):
    rs_before = "cloudpickle_rs" in sys.modules  # before this report imports it
    from cloudpickle_rs.integrations import audit

    rep = audit.report()
    rep["cloudpickle_rs_loaded"] = rs_before
    rep["source_registered"] = SCRIPT in linecache.cache
    return [rep]


def workload(spark):
    """Each step's value, or ``"error: ..."`` when that step failed (the negative control)."""
    from pyspark.sql.functions import udf
    from pyspark.sql.types import IntegerType

    sc = spark.sparkContext
    rdd = sc.parallelize(range(6), 2)
    p = Point(3, -4)
    k = 3
    times_k = udf(lambda v: v * k, IntegerType())

    def collected():
        pts = rdd.map(make_point).collect()
        return [[type(q) is Point for q in pts].count(True), [q.norm1() for q in pts]]

    def broadcast():
        b = sc.broadcast(Point(5, 6))
        return rdd.map(lambda _: b.value.norm1()).distinct().collect()

    def accumulator():
        acc = sc.accumulator(0)
        rdd.foreach(lambda x: acc.add(x))
        return acc.value

    def unpicklable():
        import sqlite3

        conn = sqlite3.connect(":memory:")
        try:
            rdd.map(lambda x: (x, conn)).count()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None

    steps = {
        "lambda": lambda: rdd.map(lambda x: x + 1).sum(),
        "closure": lambda: rdd.map(make_adder(10)).collect(),
        "instance_in_closure": lambda: rdd.map(lambda _: p.norm1()).distinct().collect(),
        "collected_main_instances": collected,
        "returned_lambda": lambda: sc.parallelize([6], 1).map(lambda n: (lambda y: y * n)).collect()[0](7),
        "broadcast": broadcast,
        "udf": lambda: [r[0] for r in spark.createDataFrame([(1,), (2,), (3,)], ["v"]).select(times_k("v")).collect()],
        "accumulator": accumulator,
        "unpicklable": unpicklable,
        "workers": lambda: sc.parallelize(range(2), 2).mapPartitions(worker_report).collect(),
    }
    out = {}
    for name, step in steps.items():
        try:
            out[name] = step()
        except Exception as e:
            first = [line for line in str(e).splitlines() if "Error" in line or "error" in line][-1:]
            out[name] = f"error: {type(e).__name__}: {(first or [str(e)])[0][:400]}"
    return out


def main(mode):
    from cloudpickle_rs.integrations import audit
    from pyspark.sql import SparkSession

    import pyspark.cloudpickle  # noqa: F401  (so that the audit watches PySpark's copy)

    audit.enable()
    builder = (SparkSession.builder.master("local[2]").appName(f"cprs-{mode}")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.executorEnv.CLOUDPICKLE_RS_AUDIT", "1"))
    if mode != "negative":
        import cloudpickle_rs
        from cloudpickle_rs.integrations import spark as cprs_spark

        receiver = None
        if mode == "receiver":
            receiver = cloudpickle_rs.Receiver(modules=["cloudpickle_rs"], deny=["subprocess"])
        cprs_spark.install(by_source=(mode == "by_source"), receiver=receiver)
        if mode != "driver_only":
            builder = cprs_spark.configure(builder)
    os.environ["CLOUDPICKLE_RS_AUDIT"] = "1"  # the workers (local mode) inherit it
    spark = builder.getOrCreate()
    out = {"mode": mode}
    try:
        try:
            out["results"] = workload(spark)
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
        if mode == "receiver":
            import subprocess

            try:
                spark.sparkContext.parallelize([1], 1).map(lambda _: subprocess.run(["true"])).collect()
                out["refused"] = None
            except Exception as e:
                out["refused"] = f"{type(e).__module__}.{type(e).__name__}: {e}"
    finally:
        spark.stop()
    out["driver"] = audit.report()
    print("INTEG-RESULT: " + json.dumps(out, default=repr), flush=True)


if __name__ == "__main__":
    faulthandler.dump_traceback_later(240, exit=True)
    main(sys.argv[1])
    faulthandler.cancel_dump_traceback_later()
