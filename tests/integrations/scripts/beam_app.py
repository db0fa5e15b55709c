"""Integration script (run as __main__ by tests/integrations/test_integ_beam.py).

    beam_app.py integration   # cloudpickle_rs.integrations.beam.install()
    beam_app.py by_source     # install(by_source=True)
    beam_app.py receiver      # install(receiver=...): the pipeline passes, a denied step is refused
    beam_app.py negative      # Beam's own pickling: the audit must catch its stock dumps

A DirectRunner pipeline of __main__ code (a lambda Map, a __main__ DoFn with a closure and a
__main__ class instance, a CombineFn, save_main_session=True), then a DoFn holding an unpicklable
object (a sqlite3 connection): the error must name the attribute.  One line
``INTEG-RESULT: <json>`` reports the results, the audit and the integration's counts.
"""
import faulthandler
import json
import sqlite3
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to


class Scale:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


def make_offset(n):
    def offset(x):
        return x + n
    return offset


class ScaleAndOffset(beam.DoFn):
    def __init__(self, scale, offset):
        self.scale, self.offset = scale, offset

    def process(self, x):
        yield self.offset(self.scale.apply(x))


class SumFn(beam.CombineFn):
    def create_accumulator(self):
        return 0

    def add_input(self, acc, x):
        return acc + x

    def merge_accumulators(self, accs):
        return sum(accs)

    def extract_output(self, acc):
        return acc


class HoldsConnection(beam.DoFn):
    def __init__(self):
        self.conn = sqlite3.connect(":memory:")

    def process(self, x):
        yield x


def pipeline_results(options):
    out = {}
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        nums = p | "nums" >> beam.Create([1, 2, 3, 4])
        doubled = nums | "lambda" >> beam.Map(lambda x: x * 2)
        scaled = nums | "dofn" >> beam.ParDo(ScaleAndOffset(Scale(10), make_offset(1)))
        total = scaled | "combine" >> beam.CombineGlobally(SumFn())
        assert_that(doubled, equal_to([2, 4, 6, 8]), label="check_lambda")
        assert_that(scaled, equal_to([11, 21, 31, 41]), label="check_dofn")
        assert_that(total, equal_to([104]), label="check_combine")
    out["pipeline"] = "ok"
    try:
        with beam.Pipeline(options=PipelineOptions(options)) as p:
            _ = p | "one" >> beam.Create([1]) | "held" >> beam.ParDo(HoldsConnection())
        out["unpicklable"] = None
    except Exception as e:
        cause = e.__cause__ or e.__context__
        out["unpicklable"] = {"type": f"{type(e).__module__}.{type(e).__name__}", "message": str(e),
                              "cause": None if cause is None else f"{type(cause).__name__}: {cause}",
                              "cause_notes": getattr(cause, "__notes__", [])}
    return out


def stream_facts():
    """What Beam's pickler writes for a __main__ class: the globals the stream names."""
    import base64
    import bz2
    import io
    import pickle

    from apache_beam.internal import pickler

    data = bz2.decompress(base64.b64decode(pickler.dumps(Scale)))
    globals_named = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            globals_named.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recording(io.BytesIO(data)).load()
    back = pickler.loads(pickler.dumps(Scale(3)))
    return {"globals": sorted(globals_named), "skip_reset": b"skip_reset_dynamic_type_state" in data,
            "round_trip": back.apply(5)}


def main(mode):
    from cloudpickle_rs.integrations import audit

    import apache_beam.internal.cloudpickle.cloudpickle  # noqa: F401 (watched by the audit)

    audit.enable()
    if mode != "negative":
        from cloudpickle_rs.integrations import beam as cprs_beam

        receiver = None
        if mode == "receiver":
            import cloudpickle_rs

            receiver = cloudpickle_rs.Receiver(modules=["numpy"], deny=["subprocess"])
        cprs_beam.install(by_source=(mode == "by_source"), receiver=receiver)
    out = {"mode": mode}
    try:
        out["results"] = pipeline_results(["--runner=DirectRunner", "--save_main_session"])
        out["stream"] = stream_facts()
        if mode == "receiver":
            import subprocess

            try:
                with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
                    _ = p | beam.Create([1]) | "denied" >> beam.Map(lambda x: subprocess.run(["true"]))
                out["refused"] = None
            except Exception as e:
                chain = []
                while e is not None:
                    chain.append(f"{type(e).__module__}.{type(e).__name__}: {e}")
                    e = e.__cause__ or e.__context__
                out["refused"] = chain
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
    out["audit"] = audit.report()
    print("INTEG-RESULT: " + json.dumps(out, default=repr), flush=True)


if __name__ == "__main__":
    faulthandler.dump_traceback_later(240, exit=True)
    main(sys.argv[1])
    faulthandler.cancel_dump_traceback_later()
