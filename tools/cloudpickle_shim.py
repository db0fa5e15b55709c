"""Install (or check) the `cloudpickle` shim in the running interpreter's site-packages.

Run with the interpreter of the venv to patch, after `pip install --force-reinstall --no-deps
cloudpickle==3.1.2` into it:

    .venvs/cp-suite/bin/python tools/cloudpickle_shim.py install --target cloudpickle_rs
    .venvs/cp-suite/bin/python tools/cloudpickle_shim.py install --target stock   # baseline
    .venvs/cp-suite/bin/python tools/cloudpickle_shim.py check

Shape (see tools/run_cloudpickle_suite.sh for why): stock cloudpickle 3.1.2 stays installed as the
`cloudpickle` distribution; its `cloudpickle/cloudpickle.py` is left byte-for-byte as shipped, so
the reconstructors (`_make_function`, `_make_cell`, `_class_setstate`, ...) are the real ones,
really live in `cloudpickle.cloudpickle` (their `__module__` says so), and share one class
tracker.  Only `cloudpickle/__init__.py` is replaced.  Importing `cloudpickle.cloudpickle` always
runs the package `__init__` first, so after `import cloudpickle` (or `cloudpickle.cloudpickle`):

- the package `cloudpickle` exports cloudpickle_rs's public API (its `__all__`), and stock's
  other public names (`is_tornado_coroutine`, ...) for the names ours does not have;
- in the submodule `cloudpickle.cloudpickle`, the names a caller uses to *pickle* (`Pickler`,
  `CloudPickler`, `dump`, `dumps`, `DEFAULT_PROTOCOL` and the pickle-by-value registry functions)
  are rebound to cloudpickle_rs's, so stock code that calls them (e.g. its `cloudpickle_fast`
  alias module) uses ours too.  Stock's originals stay reachable as `cloudpickle._stock_<name>`.

cloudpickle_rs is imported by the shim *before* the rebinding, so if cloudpickle_rs takes
anything from `cloudpickle.cloudpickle` at import time it gets stock's objects.  It must not look
up `cloudpickle.cloudpickle.Pickler/dumps/dump` at call time: here those are its own.
"""
import argparse
import hashlib
import base64
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

STOCK_VERSION = "3.1.2"

# Rebound in the submodule cloudpickle.cloudpickle (and the package) when ours has them.
SUBMODULE_NAMES = (
    "Pickler",
    "CloudPickler",
    "dump",
    "dumps",
    "DEFAULT_PROTOCOL",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
)

SHIM_INIT = '''\
"""cloudpickle shim written by cloudpickle-rs tools/cloudpickle_shim.py (target: {target}).

NOT stock cloudpickle: its public API is cloudpickle_rs's; cloudpickle.cloudpickle is stock
cloudpickle {version}'s module with the pickling entry points rebound to cloudpickle_rs's.
"""
_SHIM_TARGET = {target!r}
_SHIM_SUBMODULE_NAMES = {names!r}

from . import cloudpickle
from .cloudpickle import *  # noqa: F401,F403  (stock's public names first)

__doc__ = cloudpickle.__doc__
__version__ = {version!r}

__all__ = [  # noqa
    "__version__",
    "Pickler",
    "CloudPickler",
    "dumps",
    "loads",
    "dump",
    "load",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
]

# Names for which ours had nothing and stock's object is still used (reported by the runner).
_SHIM_FALLBACKS = []

if _SHIM_TARGET == "cloudpickle_rs":
    import cloudpickle_rs as _impl

    for _name in _SHIM_SUBMODULE_NAMES:
        if hasattr(cloudpickle, _name):
            globals()["_stock_" + _name] = getattr(cloudpickle, _name)
    _impl_public = list(getattr(_impl, "__all__", ()))
    for _name in sorted(set(_impl_public) | set(_SHIM_SUBMODULE_NAMES)):
        if hasattr(_impl, _name):
            globals()[_name] = getattr(_impl, _name)
        elif _name in _SHIM_SUBMODULE_NAMES:
            _SHIM_FALLBACKS.append(_name)
    for _name in _SHIM_SUBMODULE_NAMES:
        if hasattr(_impl, _name):
            setattr(cloudpickle, _name, getattr(_impl, _name))
    __all__ = sorted(set(__all__) | set(_impl_public))
    del _name, _impl_public
elif _SHIM_TARGET != "stock":
    raise ImportError("cloudpickle shim: unknown target %r" % (_SHIM_TARGET,))
'''


def _package_dir() -> Path:
    spec = importlib.util.find_spec("cloudpickle")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("cloudpickle is not installed in this interpreter")
    return Path(list(spec.submodule_search_locations)[0])


def _record_hash(dist, relpath):
    for f in dist.files or ():
        if str(f).replace(os.sep, "/") == relpath:
            return f.hash.value if f.hash else None
    return None


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def install(target: str) -> None:
    dist = importlib.metadata.distribution("cloudpickle")
    if dist.version != STOCK_VERSION:
        sys.exit(f"cloudpickle {dist.version} installed; the shim needs stock {STOCK_VERSION}")
    pkg = _package_dir()
    mod = pkg / "cloudpickle.py"
    want = _record_hash(dist, "cloudpickle/cloudpickle.py")
    if want is None or _file_hash(mod) != want:
        sys.exit(f"{mod} is not stock cloudpickle {STOCK_VERSION}'s file (reinstall it first)")
    (pkg / "__init__.py").write_text(
        SHIM_INIT.format(target=target, version=STOCK_VERSION, names=SUBMODULE_NAMES)
    )
    print(f"cloudpickle shim installed: {pkg}/__init__.py (target {target})")


def check(expect_target=None) -> None:
    import pickle

    import cloudpickle
    import cloudpickle.cloudpickle as cpm

    target = getattr(cloudpickle, "_SHIM_TARGET", None)
    assert target is not None, f"{cloudpickle.__file__} is not the shim"
    if expect_target:
        assert target == expect_target, (target, expect_target)
    # The reconstructors are stock's, living where the streams name them.
    for name in ("_make_function", "_make_cell", "_make_empty_cell", "_function_setstate",
                 "_make_skeleton_class", "_class_setstate", "subimport", "_builtin_type"):
        f = getattr(cpm, name)
        assert f.__module__ == "cloudpickle.cloudpickle", (name, f.__module__)
    if target == "cloudpickle_rs":
        import cloudpickle_rs

        assert cloudpickle.dumps is cloudpickle_rs.dumps
        assert cpm.dumps is cloudpickle_rs.dumps
        assert cloudpickle.Pickler is cloudpickle_rs.Pickler
    # A round trip of a closure through whatever dumps is now in place.  Informative only: the
    # shim is in place either way, and the suite reports what our dumps gets wrong.
    k = 5
    try:
        f = pickle.loads(cloudpickle.dumps(lambda x: x + k))
        roundtrip = "ok" if f(1) == 6 else "WRONG RESULT"
    except Exception as e:  # noqa: BLE001
        roundtrip = f"FAILED ({type(e).__name__}: {e})"
    impl = getattr(cloudpickle.dumps, "__module__", "?")
    print(f"cloudpickle shim OK: target={target} dumps from {impl}; "
          f"stock fallbacks: {cloudpickle._SHIM_FALLBACKS or 'none'}; closure round trip: {roundtrip}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install")
    i.add_argument("--target", choices=("cloudpickle_rs", "stock"), default="cloudpickle_rs")
    c = sub.add_parser("check")
    c.add_argument("--target", choices=("cloudpickle_rs", "stock"), default=None)
    args = p.parse_args(argv)
    if args.cmd == "install":
        install(args.target)
    else:
        check(args.target)


if __name__ == "__main__":
    main()
