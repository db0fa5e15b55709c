"""cloudpickle-rs demo: ship code defined in __main__ to another interpreter.

A small "model service" is defined right here: a dataclass config, a numpy-free linear model
with a predictor closure and a validator closure, a lambda pipeline, a recursive helper. It is
pickled on this CPython by source (`by_source=True`) and loaded by PyPy 3.9 with nothing but
stock cloudpickle installed: bytecode from CPython 3.11 cannot load there, source can.
Then the same payload is timed against stock cloudpickle, and in our bytecode mode.

Run it with `make demo` (it sets up .venv and the PyPy loader environment itself).
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import cloudpickle_rs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.loaders import loader_python  # noqa: E402  (builds .venvs/pypy39 when missing)


@dataclasses.dataclass
class Config:
    name: str
    weights: list
    bias: float = 0.5
    threshold: float = 1.0


def make_model(cfg):
    calls = 0

    def predict(row):
        nonlocal calls
        calls += 1
        return sum(w * x for w, x in zip(cfg.weights, row)) + cfg.bias

    def validate(row):
        if len(row) != len(cfg.weights):
            raise ValueError(f"expected {len(cfg.weights)} features, got {len(row)}")
        return row

    def stats():
        return {"model": cfg.name, "calls": calls}

    return predict, validate, stats


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


cfg = Config("linear-v1", weights=[0.2, -1.5, 3.0])
predict, validate, stats = make_model(cfg)
pipeline = [validate, predict, lambda y: round(y, 3), lambda y: "high" if y > cfg.threshold else "low"]
payload = {"config": cfg, "pipeline": pipeline, "stats": stats, "fib": fib}

rows = [[1.0, 2.0, 3.0], [0.0, 0.1, 0.2], [5.0, -1.0, 0.5]]


def run_local(p):
    out = []
    for row in rows:
        v = row
        for step in p["pipeline"]:
            v = step(v)
        out.append(v)
    return out


LOADER = r'''
import json, pickle, sys, platform
p = pickle.load(open(sys.argv[1], "rb"))
rows = json.loads(sys.argv[2])
out = []
for row in rows:
    v = row
    for step in p["pipeline"]:
        v = step(v)
    out.append(v)
try:
    p["pipeline"][0]([1.0])
except ValueError as e:
    err = str(e)
print(json.dumps({"interpreter": platform.python_implementation() + " " + platform.python_version(),
                  "results": out, "stats": p["stats"](), "fib20": p["fib"](20), "error": err,
                  "config": repr(p["config"])}))
'''


def main():
    print(f"sender: CPython {sys.version.split()[0]}, cloudpickle_rs with stock cloudpickle {cloudpickle.__version__}")
    expected = run_local(payload)
    data = cloudpickle_rs.dumps(payload, by_source=True)
    bytecode = cloudpickle_rs.dumps(payload)
    print(f"by_source pickle: {len(data)} bytes (bytecode mode: {len(bytecode)} bytes)")

    pypy = loader_python("pypy39")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "payload.pkl")
        Path(path).write_bytes(data)
        res = subprocess.run([str(pypy), "-I", "-c", LOADER, path, json.dumps(rows)],
                             capture_output=True, text=True, timeout=120, cwd=tmp)
        if res.returncode != 0:
            print(res.stderr)
            raise SystemExit("the PyPy worker failed")
        got = json.loads(res.stdout)
        print(f"receiver: {got['interpreter']} with stock cloudpickle only")
        print(f"  results {got['results']} (sender computed {expected}) -> {'OK' if got['results'] == expected else 'MISMATCH'}")
        print(f"  closure state after the run: {got['stats']}; fib(20) = {got['fib20']}")
        print(f"  validator error raised on the receiver: {got['error']!r}")
        print(f"  config: {got['config']}")

        print("\n$ python -m cloudpickle_rs inspect payload.pkl   (reads the opcodes, never loads the pickle)")
        inspect = subprocess.run([sys.executable, "-m", "cloudpickle_rs", "inspect", path],
                                 capture_output=True, text=True, timeout=60)
        print("\n".join(inspect.stdout.splitlines()[:40]) or inspect.stderr)
        print("\n$ python -m cloudpickle_rs deps payload.pkl")
        deps = subprocess.run([sys.executable, "-m", "cloudpickle_rs", "deps", path],
                              capture_output=True, text=True, timeout=60)
        print(deps.stdout.strip() or "(only the standard library and cloudpickle)", deps.stderr.strip())
        print()

        Path(path).write_bytes(bytecode)
        res = subprocess.run([str(pypy), "-I", "-c", LOADER, path, json.dumps(rows)],
                             capture_output=True, text=True, timeout=120, cwd=tmp)
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        print(f"control: the bytecode pickle on PyPy -> {'loads' if res.returncode == 0 else 'fails: ' + last}")

    def best(fn, n=200):
        t = []
        for _ in range(7):
            s = time.perf_counter()
            for _ in range(n):
                fn()
            t.append((time.perf_counter() - s) / n)
        return min(t) * 1e6

    ours_bc = best(lambda: cloudpickle_rs.dumps(payload))
    ours_src = best(lambda: cloudpickle_rs.dumps(payload, by_source=True))
    theirs = best(lambda: cloudpickle.dumps(payload))
    print(f"dumps of this payload (best of 7 x 200): cloudpickle {theirs:.1f} us, "
          f"cloudpickle_rs {ours_bc:.1f} us ({theirs / ours_bc:.1f}x faster), by_source {ours_src:.1f} us")


if __name__ == "__main__":
    main()
