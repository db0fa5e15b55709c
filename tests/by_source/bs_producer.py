"""Imported by each generated scenario script (run as ``__main__`` with ``python SCRIPT OUTBASE``):
pickles the script's object, writes OUTBASE.pkl, then runs the scenario's check on the ORIGINAL
object and writes what it computed (and notes) to OUTBASE.json."""
import json
import os
import pickle
import sys
import traceback
import warnings

import cloudpickle_rs

_PRELUDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bs_check_prelude.py")


def _check(obj, check, script):
    ns = {"obj": obj, "pickle": pickle, "SCRIPT": script, "__name__": "__check__"}
    with open(_PRELUDE) as f:
        exec(compile(f.read(), "<prelude>", "exec"), ns)
    exec(compile(check, "<check>", "exec"), ns)
    return json.loads(json.dumps(ns["result"]))


def finish(obj, check, mode="source", protocol=None):
    main = sys.modules["__main__"]
    script = os.path.abspath(main.__file__)
    out = sys.argv[1]
    meta = {"script": script, "mode": mode}
    if mode == "error":
        # by_source=True must refuse: record the error, write no pickle.
        try:
            cloudpickle_rs.dumps(obj, protocol=protocol, by_source=True)
        except BaseException as e:
            meta["error_type"] = type(e).__name__
            meta["error_mro"] = [c.__module__ + "." + c.__qualname__ for c in type(e).__mro__]
            meta["error_message"] = str(e)
        else:
            meta["error_type"] = None
    else:
        by_source = True if mode == "source" else "auto"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = cloudpickle_rs.dumps(obj, protocol=protocol, by_source=by_source)
        warning_cls = getattr(cloudpickle_rs, "SourceFallbackWarning", None)
        meta["warnings"] = [{"category": w.category.__name__, "message": str(w.message),
                             "filename": w.filename,
                             "is_SourceFallbackWarning": bool(warning_cls is not None
                                                              and issubclass(w.category, warning_cls)),
                             "is_native_SourceFallbackWarning": issubclass(
                                 w.category, cloudpickle_rs._native.SourceFallbackWarning)}
                            for w in caught]
        meta["package_exports_SourceFallbackWarning"] = warning_cls is not None
        with open(out + ".pkl", "wb") as f:
            f.write(data)
        if os.environ.get("BS_ALSO_BYTECODE") == "1":
            # The version matrix: the same object in bytecode mode, for same-version receivers.
            try:
                bytecode = cloudpickle_rs.dumps(obj, protocol=protocol, by_source=False)
            except BaseException:
                meta["bytecode_error"] = traceback.format_exc()
            else:
                with open(out + ".bytecode.pkl", "wb") as f:
                    f.write(bytecode)
        if os.environ.get("BS_TARGET_PYTHONS"):
            # The version matrix: the same dump with target_python=each receiver minor; the
            # ones refused keep their message (it must name the construct and its version).
            meta["target_python"] = {}
            for minor in os.environ["BS_TARGET_PYTHONS"].split(","):
                try:
                    cloudpickle_rs.dumps(obj, protocol=protocol, by_source=by_source,
                                         target_python=minor)
                except pickle.PicklingError as e:
                    meta["target_python"][minor] = str(e)
                else:
                    meta["target_python"][minor] = None
        try:
            meta["expected"] = _check(obj, check, script)
        except BaseException:
            meta["check_error"] = traceback.format_exc()
    with open(out + ".json", "w") as f:
        json.dump(meta, f)
