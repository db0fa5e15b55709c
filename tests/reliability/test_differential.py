"""Differential fuzzing (issue 6): random object graphs, protocols 0-5, four entry points;
``pickle.loads`` of our bytes must be structurally equal (sharing, cycles, NaN bits) to
``pickle.loads`` of stock cloudpickle's, and PicklerBase must write the C pickler's exact bytes.

Batches run in child processes (fuzz_harness.py), so a crash or hang names its seed.
CI size: FUZZ_EXAMPLES (default 4000). ``RELIABILITY_LONG=1`` or ``make fuzz``
(tools/fuzz_differential.py) runs 100 000. Replay one: python tools/fuzz_differential.py --replay SEED
"""
import math
import os
import pickle

import pytest

import fuzz_gen
import fuzz_harness

LONG = os.environ.get("RELIABILITY_LONG") == "1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100000" if LONG else "4000"))
START = int(os.environ.get("FUZZ_START", "0"))


def _report(failures):
    return "\n".join(f"seed {f['seed']} [{f['kind']}]: {f['detail']}\n    replay: {f['replay']}" for f in failures[:20])


def test_differential_fuzz():
    done, failures, secs = fuzz_harness.run(START, EXAMPLES, batch=max(250, EXAMPLES // 8), jobs=2)
    print(f"fuzzed {done} examples from seed {START} in {secs:.1f}s; {len(failures)} failures")
    assert done == EXAMPLES
    assert not failures, _report(failures)


# ----- the harness and the comparator check themselves -------------------------------------------


def test_harness_pins_a_crash_to_its_seed(monkeypatch):
    monkeypatch.setenv("FUZZ_INJECT_CRASH", "1007")
    done, failures, _ = fuzz_harness.run(1000, 20, batch=10, jobs=2)
    assert done == 20, "the examples after the crash still run"
    assert [(f["seed"], f["kind"]) for f in failures] == [(1007, "crash")]
    assert failures[0]["replay"].endswith("--replay 1007")


def test_harness_pins_a_hang_to_its_seed(monkeypatch):
    monkeypatch.setenv("FUZZ_INJECT_HANG", "2003")
    done, failures, _ = fuzz_harness.run(2000, 6, batch=6, jobs=1, stall=3)
    assert done == 6
    assert [(f["seed"], f["kind"]) for f in failures] == [(2003, "hang")]


def test_examples_replay_exactly():
    for seed in (0, 1, 17, 12345):
        a, pa, api_a = fuzz_gen.example(seed)
        b, pb, api_b = fuzz_gen.example(seed)
        assert (pa, api_a) == (pb, api_b)
        assert fuzz_gen.diff(a, b) is None


def _cycle():
    x = [1]
    x.append(x)
    return x


@pytest.mark.parametrize("a,b", [
    ([1.0], [1]),
    ([math.nan], [-math.nan]),
    ([0.0], [-0.0]),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    (_cycle(), [1, [1, []]]),
    ((lambda s: [s, s])([0]), [[0], [0]]),
    ([[0], [0]], (lambda s: [s, s])([0])),
    ({1, (2, 3)}, {1, (2, 4)}),
    (bytearray(b"ab"), bytearray(b"ac")),
])
def test_comparator_sees_differences(a, b):
    assert fuzz_gen.diff(a, b) is not None


def test_comparator_accepts_equal_structures():
    x = {"n": math.nan, "z": -0.0, "l": _cycle(), "s": {(1, math.nan), frozenset([2])}}
    x["self"] = x
    for proto in range(6):
        assert fuzz_gen.diff(pickle.loads(pickle.dumps(x, proto)), pickle.loads(pickle.dumps(x, proto))) is None


def test_fuzzer_catches_a_pickler_that_loses_sharing(monkeypatch):
    """Mutation check of the whole loop: a reference pickler in fast mode (no memo: shared
    objects are duplicated, cycles fail) in place of ours must be caught on some seeds."""
    import io

    import cloudpickle

    def fast_dump(obj, protocol, api):
        f = io.BytesIO()
        p = cloudpickle.Pickler(f, protocol)
        p.fast = True
        p.dump(obj)
        return f.getvalue()

    monkeypatch.setattr(fuzz_gen, "dump_ours", fast_dump)
    found = [s for s in range(300) if fuzz_gen.check(s) is not None]
    assert len(found) >= 10, found
