"""Run one hostile case in this process: ours first (every family), then the references.

    python hostile_runner.py CASE

Prints one JSON line per run, and ``OURS-DONE`` between ours and the references: if the process
dies after that line, it was a reference pickler that crashed (stock segfaults on some cases).
"""
import faulthandler
import io
import json
import os
import pickle
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cloudpickle  # noqa: E402

import cloudpickle_rs  # noqa: E402


class Impl:
    def __init__(self, name, family, dumps, dump, pickler):
        self.name, self.family = name, family
        self.dumps, self.dump, self.Pickler = dumps, dump, pickler


def _base_dumps(obj, protocol=None, **kw):
    f = io.BytesIO()
    cloudpickle_rs.PicklerBase(f, protocol, **kw).dump(obj)
    return f.getvalue()


def _base_dump(obj, file, protocol=None, **kw):
    cloudpickle_rs.PicklerBase(file, protocol, **kw).dump(obj)


OURS = {
    "cloud": Impl("ours", "cloud", cloudpickle_rs.dumps, cloudpickle_rs.dump, cloudpickle_rs.Pickler),
    "base": Impl("ours", "base", _base_dumps, _base_dump, cloudpickle_rs.PicklerBase),
}
REFS = {
    "cloud": Impl("stock-cloudpickle", "cloud", cloudpickle.dumps, cloudpickle.dump, cloudpickle.Pickler),
    "base": Impl("pickle", "base", pickle.dumps, pickle.dump, pickle.Pickler),
}

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")


def canon(value):
    """A comparable text for what a case returned: pickles are loaded first."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = ("loaded", pickle.loads(value))
        except Exception as e:  # noqa: BLE001
            value = ("unloadable", type(e).__name__, str(e))
    elif isinstance(value, list):
        return "[" + ", ".join(canon(v) for v in value) + "]"
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001
        text = f"<repr failed: {type(e).__name__}>"
    return _ADDR.sub("", text)[:2000]


def run_one(case, impl):
    rec = {"impl": impl.name, "family": impl.family}
    try:
        value = case.fn(impl)
    except BaseException as e:  # noqa: BLE001 - PanicException is a BaseException
        rec.update(outcome="raise", type=f"{type(e).__module__}.{type(e).__qualname__}",
                   mro=[c.__qualname__ for c in type(e).__mro__], msg=str(e)[:500],
                   notes=list(getattr(e, "__notes__", []))[:60])
        cause = e.__cause__
        if cause is not None:
            rec["cause"] = f"{type(cause).__qualname__}: {str(cause)[:200]}"
    else:
        rec.update(outcome="ok", result=canon(value))
    print(json.dumps(rec), flush=True)


def main(name):
    faulthandler.enable()
    import hostile_cases

    registry = dict(hostile_cases.CASES)
    if name not in registry:
        import pending_bugs  # noqa: F401 - registers the pending cases

        registry.update(hostile_cases.PENDING)
    case = registry[name]
    for fam in case.families:
        run_one(case, OURS[fam])
    print("OURS-DONE", flush=True)
    if case.ref:
        for fam in case.families:
            run_one(case, REFS[fam])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: a case may leave threads or odd state behind


if __name__ == "__main__":
    main(sys.argv[1])
