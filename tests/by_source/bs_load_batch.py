"""Loads every pickle of a by_source batch in THIS interpreter (a loader env: stock cloudpickle,
no cloudpickle_rs) and runs each scenario's check. Usage: python -I bs_load_batch.py DIR OUT.json

DIR holds load_cases.json ({name: {"check": src, "script": path}}), bs_check_prelude.py and
<name>.pkl. Writes {name: {"result": ...} | {"error": {...}}, ...} to OUT.json.
Must stay valid Python 3.9 syntax (PyPy 3.9)."""
import contextlib
import io
import json
import os
import pickle
import platform
import sys
import traceback

d, out_path = sys.argv[1], sys.argv[2]
setup = {"implementation": platform.python_implementation(),
         "version": "%d.%d.%d" % sys.version_info[:3]}
try:
    import cloudpickle_rs  # noqa: F401
except ImportError:
    setup["cloudpickle_rs_importable"] = False
else:
    setup["cloudpickle_rs_importable"] = True
with open(os.path.join(d, "load_cases.json")) as f:
    cases = json.load(f)
with open(os.path.join(d, "bs_check_prelude.py")) as f:
    prelude = compile(f.read(), "<prelude>", "exec")


def describe(phase, e):
    return {"phase": phase, "type": type(e).__name__, "message": str(e),
            "filename": getattr(e, "filename", None) if isinstance(e, SyntaxError) else None,
            "lineno": getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None,
            "traceback": traceback.format_exc()}


results = {}
for name in sorted(cases):
    case = cases[name]
    r = results[name] = {}
    try:
        with open(os.path.join(d, name + ".pkl"), "rb") as f:
            data = f.read()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            obj = pickle.loads(data)
        r["load_output"] = out.getvalue() + err.getvalue()
    except Exception as e:
        r["error"] = describe("loads", e)
        continue
    r["script_exists"] = os.path.exists(case["script"])
    ns = {"obj": obj, "pickle": pickle, "SCRIPT": case["script"], "__name__": "__check__"}
    try:
        exec(prelude, ns)
        exec(compile(case["check"], "<check>", "exec"), ns)
        r["result"] = json.loads(json.dumps(ns["result"]))
    except Exception as e:
        r["error"] = describe("check", e)
setup["cloudpickle_rs_imported"] = "cloudpickle_rs" in sys.modules
setup["cloudpickle_version"] = getattr(sys.modules.get("cloudpickle"), "__version__", None)
results["__setup__"] = setup
with open(out_path, "w") as f:
    json.dump(results, f)
