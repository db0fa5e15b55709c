"""CPython's own pickle conformance suites, run against our pickler.

The abstract test classes live in ``test.pickletester`` (and a few wiring classes with extra tests in
``test.test_pickle``) inside the interpreter's own ``test`` package; they are imported at run time,
never copied. Each concrete class below is wired the way ``Lib/test/test_pickle.py`` wires the C
pickler, with ``cloudpickle_rs`` dumping and the stdlib unpicklers (C ``_pickle`` and pure-Python
``pickle._Unpickler``) loading, so every stream we write must be readable by both.

pytest collects the ``unittest.TestCase`` subclasses directly.
"""
import collections
import io
import pickle
import unittest

import pytest

try:
    import _pickle
    from test import pickletester, test_pickle
except ImportError as exc:  # pragma: no cover - environment problem, must not pass silently
    raise ImportError(
        "the conformance suite needs CPython's test package (test.pickletester, test.test_pickle) "
        f"and the C accelerator _pickle; this interpreter lacks it: {exc!r}. Install the "
        "interpreter's test package (Debian: libpythonX.Y-testsuite) instead of skipping."
    ) from exc

import cloudpickle_rs

OurPickler = cloudpickle_rs.Pickler

# Tests excluded by name, with the reason each one cannot hold for a cloudpickle-compatible pickler.
# Keys are "ClassName.test_name" or "*.test_name" (every class). The lead decides what goes here;
# nothing is excluded to make a failing test pass. Every entry below also fails, the same way, with
# stock cloudpickle 3.1.2's CloudPickler wired in (checked by hand; see the helper's report).
_STOCK = " Stock cloudpickle 3.1.2 fails it identically."
EXCLUDED = {
    "*.test_local_lookup_error":
        "A local function cannot be found by module and qualname; the stdlib raises, cloudpickle "
        "pickles it by value (its reason to exist)." + _STOCK,
    "*.test_py_methods":
        "Its last part requires staticmethod/classmethod objects to raise TypeError; cloudpickle "
        "pickles them (its classmethod/staticmethod reducer). The method round trips before that "
        "part pass." + _STOCK,
    "*.test_c_methods":
        "Its last part requires the built-in staticmethod object bytearray.__dict__['maketrans'] "
        "and classmethod_descriptor dict.__dict__['fromkeys'] to raise TypeError; cloudpickle "
        "pickles them. The method round trips before that part pass." + _STOCK,
    "*.test_in_band_buffers":
        "ZeroCopyBytes reduces to the bound classmethod ZeroCopyBytes._reconstruct; looking its "
        "qualname up yields a bound method, not the function, so cloudpickle's rule sends the "
        "function by value and its code's bytes add SHORT_BINBYTES the opcode counts reject." + _STOCK,
    "*.test_oob_buffers":
        "Same cause as test_in_band_buffers: the by-value _reconstruct function adds in-band "
        "bytes opcodes to the counts." + _STOCK,
}

UNPICKLERS = {
    "C": _pickle.Unpickler,
    "Py": pickle._Unpickler,
}
MODULE_LOADERS = {
    # (load, loads, Unpickler) as the pickle module exposes them.
    "C": (pickle.load, pickle.loads, _pickle.Unpickler),
    "Py": (pickle._load, pickle._loads, pickle._Unpickler),
}

if not hasattr(pickletester, "AbstractCustomPicklerClass"):  # present in 3.8+
    raise ImportError("test.pickletester has no AbstractCustomPicklerClass: unexpected CPython version")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # Some tests write support.os_helper.TESTFN, a relative file name: keep it out of the checkout.
    monkeypatch.chdir(tmp_path)


def _define(name, bases, attrs):
    """Create a TestCase class in this module's namespace, so pytest collects it."""
    cls = type(name, bases, {"__module__": __name__, "__qualname__": name, **attrs})
    globals()[name] = cls
    return cls


def _in_memory_dumps(self, arg, protocol=None, **kwargs):
    return cloudpickle_rs.dumps(arg, protocol, **kwargs)


for _tag, _unpickler in UNPICKLERS.items():
    _loads = MODULE_LOADERS[_tag][1]

    # AbstractPickleTests through a Pickler writing to a file (test_pickle's CPicklerTests and
    # CDumpPickle_LoadPickle), and through the module-level dumps() (InMemoryPickleTests, with
    # `pickler` set too so the tests that need one run instead of skipping).
    _define(f"Rs{_tag}PicklerTests", (test_pickle.PyPicklerTests,),
            {"pickler": OurPickler, "unpickler": _unpickler})
    _define(f"Rs{_tag}InMemoryPickleTests",
            (pickletester.AbstractPickleTests, pickletester.BigmemPickleTests, unittest.TestCase),
            {"dumps": _in_memory_dumps,
             "loads": (lambda loads: lambda self, buf, **kw: loads(buf, **kw))(_loads),
             "pickler": OurPickler})

    # persistent_id() returning ids / returning the object itself (incl. test_pickle's
    # reference-cycle and dispatch-table leak tests).
    _define(f"Rs{_tag}PersPicklerTests", (test_pickle.PyPersPicklerTests,),
            {"pickler": OurPickler, "unpickler": _unpickler})
    _define(f"Rs{_tag}IdPersPicklerTests", (test_pickle.PyIdPersPicklerTests,),
            {"pickler": OurPickler, "unpickler": _unpickler})

    _define(f"Rs{_tag}PicklerUnpicklerObjectTests",
            (pickletester.AbstractPicklerUnpicklerObjectTests, unittest.TestCase),
            {"pickler_class": OurPickler, "unpickler_class": _unpickler})

    _load, _loads_fn, _module_unpickler = MODULE_LOADERS[_tag]
    _define(f"Rs{_tag}PickleModuleTests", (pickletester.AbstractPickleModuleTests, unittest.TestCase),
            {"dump": staticmethod(cloudpickle_rs.dump), "dumps": staticmethod(cloudpickle_rs.dumps),
             "load": staticmethod(_load), "loads": staticmethod(_loads_fn),
             "Pickler": OurPickler, "Unpickler": _module_unpickler})


# These load with pickle.loads internally: one variant each.
_define("RsDispatchTableTests", (pickletester.AbstractDispatchTableTests, unittest.TestCase),
        {"pickler_class": OurPickler,
         "get_dispatch_table": lambda self: pickle.dispatch_table.copy()})
_define("RsChainDispatchTableTests", (pickletester.AbstractDispatchTableTests, unittest.TestCase),
        {"pickler_class": OurPickler,
         "get_dispatch_table": lambda self: collections.ChainMap({}, pickle.dispatch_table)})


# test_pickle.py puts the hook mixin after the pickler class, which works because _pickle.Pickler has
# no reducer_override of its own. Ours has one (cloudpickle's Pickler does too, and subclasses
# override it and call super()), so the user's hook goes first in the MRO, as a user would write it.
class _CustomRsPicklerClass(pickletester.AbstractCustomPicklerClass, OurPickler):
    pass


_define("RsPicklerHookTests", (pickletester.AbstractHookTests, unittest.TestCase),
        {"pickler_class": _CustomRsPicklerClass})


def _apply_exclusions():
    known = set()
    for obj in list(globals().values()):
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase) and obj.__module__ == __name__):
            continue
        for test in [n for n in dir(obj) if n.startswith("test_")]:
            reason = EXCLUDED.get(f"{obj.__name__}.{test}") or EXCLUDED.get(f"*.{test}")
            if reason is not None:
                known.add(test)
                setattr(obj, test, unittest.skip(f"EXCLUDED: {reason}")(getattr(obj, test)))
    unknown = {key for key in EXCLUDED if key.split(".", 1)[-1] not in known}
    if unknown:
        raise RuntimeError(f"EXCLUDED names tests that do not exist: {sorted(unknown)}")


_apply_exclusions()
del _tag, _unpickler, _loads, _load, _loads_fn, _module_unpickler
