"""Beam row of `make bench` (run by benches/run.py with the .venvs/beam interpreter).

Driver-side serialization of a pipeline of 50 steps (25 ``Map`` of closures, 25 ``ParDo`` of a
``__main__`` DoFn holding a helper object), as Beam does when it turns the pipeline into its
runner representation (``pipeline.to_runner_api()``: every transform and DoFn pickled).
Measured: the time spent inside ``cloudpickle_pickler._dumps`` (the pickling itself, before
Beam's bz2 compression), Beam's vendored cloudpickle (the default) against the integration
(cloudpickle_rs), alternating round by round (``install()``/``uninstall()``).  Prints one JSON line.
"""
import sys
import time

from engine_common import alternate, report

import apache_beam as beam

N_STEPS = 50


class Scale:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


def make_offset(n):
    def offset(x):
        return x + n
    return offset


class Step(beam.DoFn):
    def __init__(self, scale, offset):
        self.scale, self.offset = scale, offset

    def process(self, x):
        yield self.offset(self.scale.apply(x))


def build():
    p = beam.Pipeline()
    pc = p | "create" >> beam.Create([1, 2, 3])
    for i in range(N_STEPS // 2):
        pc = pc | f"map{i}" >> beam.Map(make_offset(i))
        pc = pc | f"dofn{i}" >> beam.ParDo(Step(Scale(i + 1), make_offset(-i)))
    return p


def one_round(bp):
    acc = []
    inner = bp._dumps

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            acc.append(time.perf_counter() - t0)

    bp._dumps = timed
    try:
        build().to_runner_api()
    finally:
        bp._dumps = inner
    return sum(acc), len(acc)


def main(rounds):
    from apache_beam.internal import cloudpickle_pickler as bp

    from cloudpickle_rs.integrations import beam as cprs_beam

    out = alternate(rounds, "beam", cprs_beam, lambda: one_round(bp))
    out["beam_version"] = beam.__version__
    report(out)

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 11)
