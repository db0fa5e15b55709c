"""Loads a corpus directory in the current interpreter (a loader environment): prints JSON
{case: {"ok": value} | {"error": "Type: message"}}. Proves cloudpickle_rs is not importable here."""
import json
import pickle
import sys
import traceback
from pathlib import Path

try:
    import cloudpickle_rs  # noqa: F401
except ImportError:
    pass
else:
    print(json.dumps({"__setup__": {"error": "cloudpickle_rs is importable in the loader"}}))
    sys.exit(0)

import cloudpickle  # noqa: E402  (the receivers' reconstructors; stock only)

outdir = Path(sys.argv[1])
cases = json.loads((outdir / "cases.json").read_text())
results = {"__setup__": {"ok": cloudpickle.__version__}}
for name, spec in cases.items():
    check = spec["check"]
    try:
        data = (outdir / f"{name}.pkl").read_bytes()
        env = {"obj": pickle.loads(data), "obj2": pickle.loads(data)}
        exec(check, env)
        json.dumps(env["result"])
        results[name] = {"ok": env["result"]}
    except Exception as exc:  # reported per case to the test, which decides
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc(limit=3)}
print(json.dumps(results))
