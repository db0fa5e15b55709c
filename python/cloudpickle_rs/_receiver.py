"""``Receiver``: what the other side of a pickle is, checked before a byte is sent.

``dumps(obj, receiver=Receiver(python="3.9", modules=["numpy"]))`` pickles by reference exactly
what the receiver can import and refuses, with ``PicklingProhibitedError``, what would fail
there: objects that cannot work on another machine (open files, sockets, locks, ...), modules
and builtins the receiver denies, modules it cannot import, syntax its Python lacks, a stream
over its size budget (``PayloadTooLargeError``).  ``check()`` runs the same walk and reports
every problem instead of raising at the first.

The walk (Rust) asks ``Receiver._session()`` for a session per dump and consults it at four
places (see ``crates/cloudpickle_rs/src/cloud/receiver.rs``); everything else here is plain Python.
"""
from __future__ import annotations

import builtins
import re
import sys
import types
from pickle import PicklingError

__all__ = ["PicklingProhibitedError", "PayloadTooLargeError", "Receiver", "Report", "Problem", "check", "check_stream"]


class PicklingProhibitedError(PicklingError):
    """An object the receiver cannot use; raised before any byte is written.

    Also what a ``pickle_by_reference`` callback raises to refuse an object (it reaches the
    caller as is).  With a receiver, ``exc.problem`` is the :class:`Problem`."""

    __module__ = "cloudpickle_rs"


class PayloadTooLargeError(PicklingError):
    """The pickle (out-of-band buffers included) exceeds ``Receiver.max_bytes``;
    ``exc.largest`` lists the largest parts as ``(path, type name, bytes)``."""

    __module__ = "cloudpickle_rs"


# ----- the catalogue of objects that cannot work on another machine ---------------------------

_FILE = ("an open file belongs to this machine's file system and process",
         "read the content first and send the data (or send the path, if the receiver has the file)")
_SOCKET = ("a socket is a connection of this process", "send the address and connect on the receiver")
_DB = ("a database connection belongs to this process",
       "send the database path or URL and connect on the receiver")
_LOCK = ("a lock synchronises threads of this process only",
         "create the lock on the receiver (a module-level or class attribute made there)")
_THREAD = ("a thread runs in this process only", "send the function the thread runs, and start it on the receiver")
_PROCESS = ("a subprocess runs on this machine only", "send the command line and start it on the receiver")
_FRAME = ("a frame or traceback is the state of a running call here", "send the values you need from it")
_GENERATOR = ("a generator holds a running frame", "send a list of its values, or the function that makes it")
_HANDLER = ("a logging handler holds this process's streams and files",
            "configure logging on the receiver (logging.basicConfig or a handler made there)")
_TEST = ("a test-framework object belongs to the test session here", "send the values the test computed")
_DATAFRAME = ("the receiver cannot import pandas",
              "convert it first: df.to_numpy(), df.to_dict('list') or df.values.tolist()")
_FIGURE = ("the receiver cannot import matplotlib",
           "send the data, or render it to bytes (fig.savefig(buf, format='png'))")
_IMAGE = ("the receiver cannot import PIL (Pillow)", "convert it first: numpy.asarray(img), or its bytes in PNG")

#: ``"module.QualName": (reason, workaround)``; resolved by name through ``sys.modules``, so a
#: library need not be installed here (its objects cannot exist unless it is imported).
BUILTIN_CATALOGUE = {
    "_io.TextIOWrapper": _FILE, "_io.BufferedReader": _FILE, "_io.BufferedWriter": _FILE,
    "_io.BufferedRandom": _FILE, "_io.BufferedRWPair": _FILE, "_io.FileIO": _FILE,
    "socket.socket": _SOCKET, "_socket.socket": _SOCKET, "ssl.SSLSocket": _SOCKET,
    "sqlite3.Connection": _DB, "sqlite3.Cursor": _DB,
    "_thread.LockType": _LOCK, "_thread.lock": _LOCK, "_thread.RLock": _LOCK, "threading.Condition": _LOCK,
    "threading.Semaphore": _LOCK, "threading.Event": _LOCK, "multiprocessing.synchronize.Lock": _LOCK,
    "multiprocessing.synchronize.RLock": _LOCK,
    "threading.Thread": _THREAD,
    "subprocess.Popen": _PROCESS, "multiprocessing.process.BaseProcess": _PROCESS,
    "types.FrameType": _FRAME, "types.TracebackType": _FRAME,
    "types.GeneratorType": _GENERATOR, "types.CoroutineType": _GENERATOR, "types.AsyncGeneratorType": _GENERATOR,
    "logging.Handler": _HANDLER,
    "_pytest.fixtures.FixtureRequest": _TEST, "_pytest.fixtures.FixtureDef": _TEST,
    "_pytest.monkeypatch.MonkeyPatch": _TEST, "_pytest.capture.CaptureFixture": _TEST,
    "_pytest.tmpdir.TempPathFactory": _TEST, "_pytest.config.Config": _TEST,
    "_pytest.nodes.Node": _TEST, "unittest.case.TestCase": _TEST,
}
#: Entries that apply only when the receiver cannot import the library named first.
LIBRARY_CATALOGUE = {
    "pandas.core.frame.DataFrame": ("pandas", _DATAFRAME),
    "pandas.core.series.Series": ("pandas", _DATAFRAME),
    "matplotlib.figure.Figure": ("matplotlib", _FIGURE),
    "matplotlib.axes._base._AxesBase": ("matplotlib", _FIGURE),
    "PIL.Image.Image": ("PIL", _IMAGE),
}

#: NDIF's list of what its server refuses to run; pass ``deny=Receiver.NDIF_DENY``.
NDIF_DENY = (
    "os", "sys", "subprocess", "socket", "shutil", "ctypes", "pickle", "importlib", "builtins.eval",
    "builtins.exec", "builtins.compile", "builtins.open", "builtins.__import__", "builtins.getattr",
    "builtins.setattr", "builtins.delattr", "builtins.globals", "builtins.locals", "builtins.vars",
    "builtins.breakpoint", "builtins.input",
)

# Modules that implement a denied module under another name.
_ALIASES = {
    "os": ("posix", "nt", "posixpath", "ntpath"),
    "subprocess": ("_posixsubprocess",),
    "socket": ("_socket",),
    "pickle": ("_pickle",),
    "ctypes": ("_ctypes",),
    "importlib": ("_imp", "_frozen_importlib", "_frozen_importlib_external"),
}

# Standard-library modules that a receiver of another version lacks.
_STDLIB_ADDED = {"graphlib": (3, 9), "zoneinfo": (3, 9), "tomllib": (3, 11), "_interpreters": (3, 13)}
_STDLIB_REMOVED = {
    "distutils": (3, 12), "imp": (3, 12), "asynchat": (3, 12), "asyncore": (3, 12), "smtpd": (3, 12),
    **{m: (3, 13) for m in ("cgi", "cgitb", "crypt", "imghdr", "mailcap", "msilib", "nis", "nntplib",
                            "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
                            "audioop", "chunk", "aifc", "lib2to3")},
}

# Distribution names whose import name differs (for requirements files of packages not here).
_DIST_ALIASES = {
    "scikit-learn": "sklearn", "pillow": "PIL", "opencv-python": "cv2", "opencv-python-headless": "cv2",
    "pyyaml": "yaml", "beautifulsoup4": "bs4", "python-dateutil": "dateutil", "protobuf": "google",
    "attrs": "attr", "pytorch": "torch",
}

_STDLIB = None


def _stdlib():
    global _STDLIB
    if _STDLIB is None:
        from cloudpickle_rs._cli import _stdlib_names

        _STDLIB = frozenset(_stdlib_names())
    return _STDLIB


def _parse_version(python):
    if python is None:
        return None
    if isinstance(python, str):
        m = re.fullmatch(r"(\d+)\.(\d+)", python.strip())
        if not m:
            raise ValueError(f"python must look like '3.9' or (3, 9), not {python!r}")
        return int(m.group(1)), int(m.group(2))
    try:
        major, minor = tuple(python)[:2]
        return int(major), int(minor)
    except (TypeError, ValueError):
        raise ValueError(f"python must look like '3.9' or (3, 9), not {python!r}") from None


def _qualified(obj):
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return f"{module}.{name}" if module else str(name)


def _where(func):
    code = getattr(func, "__code__", None)
    if code is None:
        return ""
    return f" ({code.co_filename}:{code.co_firstlineno})"


class Problem:
    """One thing the receiver cannot use: where it is, what it is, why, and what to do."""

    __slots__ = ("path", "type", "reason", "workaround")

    def __init__(self, path, type, reason, workaround):
        self.path, self.type, self.reason, self.workaround = path, type, reason, workaround

    def message(self):
        return (f"cannot send {self.path} ({self.type}) to the receiver: {self.reason}. "
                f"Instead: {self.workaround}")

    def __repr__(self):
        return f"Problem({self.path!r}, {self.type!r}, {self.reason!r}, {self.workaround!r})"

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Receiver:
    """What the other side of a pickle is.

    ``python``: its version (``"3.9"`` or ``(3, 9)``): syntax and bytecode it cannot load are
    refused, as with ``target_python``.  ``modules``: top-level modules it can import (the
    standard library and ``cloudpickle`` always count).  ``forbid``: extra ``{type or
    "module.QualName": "what to do instead"}`` entries; a message of ``None`` removes a built-in
    entry.  ``deny``: modules (``"os"``) and builtins (``"builtins.eval"`` or ``"eval"``) that
    shipped code must not use (``Receiver.NDIF_DENY`` is NDIF's list).  ``max_bytes``: the
    largest pickle allowed, out-of-band buffers included."""

    NDIF_DENY = NDIF_DENY

    def __init__(self, python=None, modules=(), forbid=None, max_bytes=None, deny=None):
        self.python = _parse_version(python)
        if isinstance(modules, str):
            modules = [m for m in modules.split(",") if m.strip()]
        self.modules = frozenset(m.strip().split(".", 1)[0] for m in modules)
        self.forbid = dict(forbid or {})
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative int or None, not {max_bytes!r}")
        self.max_bytes = max_bytes
        deny_modules, deny_builtins = set(), set()
        for entry in deny or ():
            if not isinstance(entry, str):
                raise TypeError(f"deny entries are names like 'os' or 'builtins.eval', not {entry!r}")
            if entry.startswith("builtins."):
                deny_builtins.add(entry.split(".", 1)[1])
            elif hasattr(builtins, entry) and entry not in sys.modules and not entry.startswith("_"):
                deny_builtins.add(entry)
            else:
                top = entry.split(".", 1)[0]
                deny_modules.add(top)
                deny_modules.update(_ALIASES.get(top, ()))
        self.deny = tuple(deny or ())
        self.deny_modules = frozenset(deny_modules)
        self.deny_builtins = frozenset(deny_builtins)
        self._catalogue_cache = None
        self._reusable = None

    def __getstate__(self):
        # A receiver travels (to a worker, in a config) without what this process cached.
        state = dict(self.__dict__)
        for cache in ("_catalogue_cache", "_reusable", "_cprs_core"):
            state.pop(cache, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._catalogue_cache = None
        self._reusable = None

    def __repr__(self):
        version = f"{self.python[0]}.{self.python[1]}" if self.python else None
        return (f"Receiver(python={version!r}, modules={sorted(self.modules)!r}, "
                f"max_bytes={self.max_bytes!r}, deny={self._deny_repr()})")

    def _deny_repr(self):
        if self.deny == NDIF_DENY:
            return "Receiver.NDIF_DENY"
        return repr(list(self.deny))

    def with_modules(self, *modules):
        """This receiver with more importable top-level modules (itself when none is new)."""
        tops = {m.split(".", 1)[0] for m in modules}
        if tops <= self.modules:
            return self
        other = Receiver(python=self.python, modules=sorted(self.modules | tops), forbid=self.forbid,
                         max_bytes=self.max_bytes, deny=self.deny)
        return other

    @classmethod
    def from_requirements(cls, path, **kwargs):
        """A receiver whose modules are those of a requirements file (``-r`` includes followed;
        distribution names mapped to their top-level modules where installed here)."""
        import os

        from cloudpickle_rs._cli import _packages_distributions

        try:
            from importlib import metadata
            by_top = _packages_distributions(metadata)
        except Exception:  # pragma: no cover
            by_top = {}
        tops_of = {}
        for top, dists in by_top.items():
            for d in dists:
                tops_of.setdefault(re.sub(r"[-_.]+", "-", d).lower(), set()).add(top)
        modules = set(kwargs.pop("modules", ()))

        def read(p, seen):
            p = os.path.abspath(p)
            if p in seen:
                return
            seen.add(p)
            with open(p, encoding="utf-8") as f:
                for raw in f:
                    line = raw.split("#", 1)[0].strip()
                    if not line:
                        continue
                    if line.startswith(("-r ", "--requirement ")):
                        read(os.path.join(os.path.dirname(p), line.split(None, 1)[1]), seen)
                        continue
                    if line.startswith("-"):
                        continue
                    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
                    if not m:
                        continue
                    norm = re.sub(r"[-_.]+", "-", m.group(0)).lower()
                    found = tops_of.get(norm)
                    if found:
                        modules.update(found)
                    else:
                        modules.add(_DIST_ALIASES.get(norm, norm.replace("-", "_")))

        read(path, set())
        return cls(modules=sorted(modules), **kwargs)

    # ----- what the walk consults ---------------------------------------------------------------

    def can_import(self, top):
        """Whether the receiver can import the top-level module ``top``."""
        if top in self.modules or top == "cloudpickle":
            return True
        if top not in _stdlib():
            return False
        if self.python is not None:
            if top in _STDLIB_ADDED and self.python < _STDLIB_ADDED[top]:
                return False
            if top in _STDLIB_REMOVED and self.python >= _STDLIB_REMOVED[top]:
                return False
        return True

    def catalogue(self):
        """``{type: (reason, workaround)}`` for the types loaded in this process now."""
        key = len(sys.modules)
        cached = self._catalogue_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        out = {}
        entries = {name: entry for name, entry in BUILTIN_CATALOGUE.items()}
        for name, (library, entry) in LIBRARY_CATALOGUE.items():
            if not self.can_import(library):
                entries[name] = entry
        for what, instead in self.forbid.items():
            name = what if isinstance(what, str) else None
            if instead is None:
                if name is not None:
                    entries.pop(name, None)
                else:
                    for n in [n for n in entries if _resolve(n) is what]:
                        entries.pop(n)
                continue
            entry = (f"the receiver forbids {name or _qualified(what)}", str(instead))
            if name is None:
                out[what] = entry
            else:
                entries[name] = entry
        for name, entry in entries.items():
            t = _resolve(name)
            if isinstance(t, type):
                out.setdefault(t, entry)
        self._catalogue_cache = (key, out)
        return out

    def _session(self, user_callback):
        # Without a user callback or a size budget a session keeps no state the dump reads
        # back, so one is reused: the walk keeps what it reads of it (``_cprs_core``, made by
        # the extension) and asks again only when ``sys.modules`` changed size.
        if user_callback is None and self.max_bytes is None:
            s = self._reusable
            if s is None:
                s = self._reusable = _Session(self, None)
            else:
                s.catalogue = self.catalogue()
            return s
        return _Session(self, user_callback)


def _resolve(dotted):
    """The object ``module.QualName`` names, if its module is loaded (longest module prefix)."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is None:
            continue
        obj = module
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


_REFS_CACHE = {}
_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"}


def _code_refs(code):
    """(global names, imported modules) of a code object and the code nested in it."""
    hit = _REFS_CACHE.get(code)
    if hit is not None:
        return hit
    import dis

    names, imports = set(), set()
    for ins in dis.get_instructions(code):
        if ins.opname in _GLOBAL_OPS:
            names.add(ins.argval)
        elif ins.opname == "IMPORT_NAME":
            imports.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            n, i = _code_refs(const)
            names |= n
            imports |= i
    if len(_REFS_CACHE) > 4096:
        _REFS_CACHE.clear()
    out = (frozenset(names), frozenset(imports))
    _REFS_CACHE[code] = out
    return out


class _Session:
    """One dump's view of a :class:`Receiver` (what the Rust walk calls)."""

    def __init__(self, receiver, user_callback, collect=None):
        self.r = receiver
        self.user_callback = user_callback
        self.catalogue = receiver.catalogue()
        self.target_python = receiver.python
        self.collect = collect  # a _Collect during check(), else None
        self.oob = 0
        self.size = None
        self.by_value = []
        self.referenced = set()
        # What the walk reads to decide functions itself (no user callback, not check()).
        self.fast_functions = user_callback is None and collect is None
        self.deny_modules = receiver.deny_modules
        self.deny_builtins = receiver.deny_builtins
        self.needs_size = receiver.max_bytes is not None or collect is not None

    # -- refusals ----------------------------------------------------------------------------

    def _refuse(self, key, type_name, reason, workaround, also=()):
        if self.collect is not None and (key in self.collect.skip or any(a in self.collect.skip for a in also)):
            return True
        exc = PicklingProhibitedError(f"{type_name}: {reason}. Instead: {workaround}")
        exc.problem = Problem("obj", type_name, reason, workaround)
        exc._cprs_key = key
        exc._cprs_also = tuple(also)
        raise exc

    def refuse(self, obj):
        reason, workaround = None, None
        for base in type(obj).__mro__:
            entry = self.catalogue.get(base)
            if entry is not None:
                reason, workaround = entry
                break
        self._refuse(("obj", id(obj)), type(obj).__name__, reason, workaround)
        return None  # what check() writes in its place

    def check_global(self, obj, module, name):
        top = module.split(".", 1)[0]
        r = self.r
        if top in r.deny_modules:
            self._refuse(("global", module, name), _kind(obj),
                         f"it is {module}.{name}, and the receiver denies module {top}",
                         "do this work on this side and send the result, or use an allowed module",
                         also=(("denied", top),))
        elif top == "builtins":
            return
        elif not r.can_import(top):
            self._refuse(("global", module, name), _kind(obj),
                         f"it is {module}.{name}, and the receiver cannot import {top}",
                         f"add {top!r} to Receiver(modules=...) if the receiver has it, or send plain data instead")
        if self.collect is not None:  # what check() reports
            self.referenced.add(top)

    def finish_error(self, exc):
        problem = getattr(exc, "problem", None)
        if not isinstance(exc, PicklingProhibitedError) or problem is None:
            return
        path = _path_from_notes(exc)
        if problem.type in ("function", "class"):
            # found while the walk wrote the function's state: the path is the function's
            path = path.removesuffix(" (function state)")
        problem.path = path
        exc.args = (problem.message(),)

    # -- by value or by reference -------------------------------------------------------------

    def by_reference(self, obj):
        if isinstance(obj, types.ModuleType):
            return self._module_by_reference(obj)
        if self.user_callback is not None:
            ref = bool(self.user_callback(obj))
        else:
            ref = _importable_here(obj)
            if ref:
                module = obj.__module__
                verdict = self.module_verdict(module)
                if verdict == 2:
                    # An installed library the receiver lacks: its code by value would not run.
                    top = module.split(".", 1)[0]
                    self._refuse(("global", module, getattr(obj, "__qualname__", "")), _kind(obj),
                                 f"it is {_qualified(obj)}, and the receiver cannot import {top}",
                                 f"add {top!r} to Receiver(modules=...) if the receiver has it, "
                                 f"or send plain data instead")
                    return True
                ref = verdict == 0
        if not ref:
            if self.collect is not None:  # what check() reports
                self.by_value.append(_qualified(obj))
            self._scan(obj)
        return ref

    def module_verdict(self, module):
        """For a function its module and qualname find here: 0 by reference (the receiver
        imports the module), 1 by value (the user's own code the receiver lacks), 2 refused
        (an installed library the receiver lacks; ``by_reference`` words the refusal)."""
        top = module.split(".", 1)[0]
        if self.r.can_import(top):
            if self.collect is not None:  # what check() reports
                self.referenced.add(top)
            return 0
        mod = sys.modules.get(module)
        return 1 if mod is None or _is_local_code(mod) else 2

    def scan(self, obj):
        """What the walk calls for a function it sends by value and may refuse."""
        self._scan(obj)

    def _module_by_reference(self, module):
        name = module.__name__
        top = name.split(".", 1)[0]
        r = self.r
        if top in r.deny_modules:
            self._refuse(("module", name), "module", f"it is module {name}, which the receiver denies",
                         "do this work on this side and send the result, or use an allowed module",
                         also=(("denied", top),))
            return True
        if self.user_callback is not None:
            ref = bool(self.user_callback(module))
        elif _registered_by_value(name):
            ref = False
        elif r.can_import(top):
            ref = name in sys.modules
        elif name not in sys.modules or _is_local_code(module):
            ref = False
        else:
            self._refuse(("module", name), "module",
                         f"it is module {name}, which the receiver cannot import",
                         f"add {top!r} to Receiver(modules=...) if the receiver has it, "
                         f"or register_pickle_by_value({top}) to send its code")
            return True
        if self.collect is not None:  # what check() reports
            if ref:
                self.referenced.add(top)
            else:
                self.by_value.append(name)
        return ref

    def _scan(self, obj):
        """Refuse what by-value code would use on the receiver that it denies or lacks."""
        r = self.r
        if isinstance(obj, type):
            for attr, value in list(vars(obj).items()):
                if not isinstance(value, (types.FunctionType, classmethod, staticmethod, property)):
                    self._check_value(obj, attr, value, "class attribute")
            return
        code = getattr(obj, "__code__", None)
        if not isinstance(code, types.CodeType):
            return
        names, imports = _code_refs(code)
        g = getattr(obj, "__globals__", {}) or {}
        for n in sorted(names):
            if n in g:
                self._check_value(obj, n, g[n], "global")
            elif n in r.deny_builtins and hasattr(builtins, n):
                self._refuse(("builtin", id(obj), n), "function",
                             f"function {_qualified(obj)}{_where(obj)} calls builtin {n}, which the receiver denies",
                             "do this work on this side and send the result")
        for m in sorted(imports):
            top = m.split(".", 1)[0]
            if top in r.deny_modules:
                self._refuse(("import", id(obj), m), "function",
                             f"function {_qualified(obj)}{_where(obj)} imports {m}, which the receiver denies",
                             "do this work on this side and send the result, or use an allowed module")
            elif not r.can_import(top):
                self._refuse(("import", id(obj), m), "function",
                             f"function {_qualified(obj)}{_where(obj)} imports {m}, which the receiver cannot import",
                             f"add {top!r} to Receiver(modules=...) if the receiver has it")
        closure = getattr(obj, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, closure):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            self._check_value(obj, name, value, "closure variable")
        for value in getattr(obj, "__defaults__", None) or ():
            self._check_value(obj, "a default", value, "default")
        for name, value in (getattr(obj, "__kwdefaults__", None) or {}).items():
            self._check_value(obj, name, value, "default")

    def _check_value(self, owner, name, value, what):
        r = self.r
        if not (r.deny_modules or r.deny_builtins):
            return
        denied = None
        top = None
        if isinstance(value, types.ModuleType):
            top = value.__name__.split(".", 1)[0]
            if top in r.deny_modules:
                denied = f"module {value.__name__}"
        elif isinstance(value, (types.BuiltinFunctionType, types.FunctionType, type, types.MethodType)):
            if isinstance(value, types.BuiltinFunctionType) and getattr(value, "__self__", None) is builtins:
                if value.__name__ in r.deny_builtins:
                    denied = f"builtin {value.__name__}"
            else:
                module = getattr(value, "__module__", None) or ""
                top = module.split(".", 1)[0]
                if top in r.deny_modules:
                    denied = f"{module}.{getattr(value, '__qualname__', name)}"
        if denied is None:
            return
        kind = "class" if isinstance(owner, type) else "function"
        self._refuse((what, id(owner), name), kind,
                     f"{kind} {_qualified(owner)}{_where(owner)} uses {name!r} ({what}: {denied}), "
                     f"which the receiver denies",
                     "do this work on this side and send the result, or use an allowed module",
                     also=(("denied", top),) if top else ())
        if self.collect is not None and top:
            self.collect.skip.add(("denied", top))

    # -- size --------------------------------------------------------------------------------

    def count_buffers(self, callback):
        def counted(buf):
            in_band = callback(buf)
            if not in_band:
                with memoryview(buf) as m:
                    self.oob += m.nbytes
            return in_band

        return counted

    def check_size(self, obj, nbytes):
        self.size = nbytes + self.oob
        limit = self.r.max_bytes
        if limit is None or self.size <= limit:
            return
        if self.collect is not None:
            self.collect.too_large = True
            return
        largest = largest_parts(obj)
        lines = "\n".join(f"  {path} ({tname}) {_fmt(size)}" for path, tname, size in largest)
        exc = PayloadTooLargeError(
            f"the pickle is {_fmt(self.size)} ({self.size} bytes), over the receiver's max_bytes of "
            f"{_fmt(limit)} ({limit} bytes); its largest parts:\n{lines}")
        exc.largest = largest
        exc.size = self.size
        raise exc


def _kind(obj):
    return "class" if isinstance(obj, type) else type(obj).__name__


def _fmt(n):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


_PATH_NOTE = re.compile(r"^path to the object that failed, from the .* being pickled: (.*)$")


def _path_from_notes(exc):
    for note in getattr(exc, "__notes__", None) or ():
        m = _PATH_NOTE.match(note)
        if m:
            return m.group(1)
    return "obj"


def _registered_by_value(name):
    try:
        from cloudpickle import cloudpickle as stock
    except ImportError:  # pragma: no cover
        return False
    registry = stock._PICKLE_BY_VALUE_MODULES
    while name:
        if name in registry:
            return True
        name = name.rpartition(".")[0]
    return False


def _importable_here(obj):
    """cloudpickle's rule: reachable as module.qualname in an imported module other than
    ``__main__``, and not registered by value."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module in ("__main__", "__mp_main__"):
        return False
    if "<locals>" in qualname or _registered_by_value(module):
        return False
    cur = sys.modules.get(module)
    if cur is None:
        return False
    for part in qualname.split("."):
        cur = getattr(cur, part, _MISSING)
        if cur is _MISSING:
            return False
    return cur is obj


_MISSING = object()


def _is_local_code(module):
    """A module of the user's own project (not the standard library, not an installed package):
    its code can travel by value."""
    f = getattr(module, "__file__", None)
    if not f:
        return True
    return "site-packages" not in f and "dist-packages" not in f and module.__name__.split(".")[0] not in _stdlib()


# ----- sizes of parts ---------------------------------------------------------------------------

def _children(obj):
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in list(obj.items())[:200]]
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(obj[:200])]
    if isinstance(obj, (set, frozenset)):
        return [(" (set element)", v) for v in list(obj)[:200]]
    if isinstance(obj, types.FunctionType):
        out = []
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
            try:
                out.append((f".__closure__ cell {name!r}", cell.cell_contents))
            except ValueError:
                pass
        names, _ = _code_refs(obj.__code__)
        out += [(f".__globals__[{n!r}]", obj.__globals__[n]) for n in sorted(names) if n in obj.__globals__
                and not isinstance(obj.__globals__[n], types.ModuleType)]
        return out
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict) and not isinstance(obj, (type, types.ModuleType)):
        return [(f".{k}", v) for k, v in list(d.items())[:200]]
    return []


def _measure(obj):
    from cloudpickle_rs import dumps

    oob = [0]

    def cb(buf):
        with memoryview(buf) as m:
            oob[0] += m.nbytes
        return False

    try:
        return len(dumps(obj, protocol=5, buffer_callback=cb)) + oob[0]
    except Exception:
        return 0


def largest_parts(obj, limit=5, max_depth=4):
    """The ``limit`` largest parts of ``obj``'s pickle as ``(path, type name, bytes)``: leaves
    are preferred to the containers that hold them (a container is shown only where no single
    part of it accounts for most of its size)."""
    nodes = []  # (path, type, size, depth, dominated)

    def visit(o, path, depth, seen):
        size = _measure(o)
        index = len(nodes)
        nodes.append([path, type(o).__name__, size, False])
        if depth >= max_depth or id(o) in seen:
            return size
        seen = seen | {id(o)}
        biggest = 0
        for seg, child in _children(o):
            biggest = max(biggest, visit(child, path + seg, depth + 1, seen))
        if size and biggest >= 0.9 * size:
            nodes[index][3] = True
        return size

    visit(obj, "obj", 0, frozenset())
    candidates = sorted((n for n in nodes[1:] if not n[3] and n[2]), key=lambda n: -n[2]) or nodes[:1]
    picked = []
    for path, tname, size, _ in candidates:
        if any(path.startswith(p) or p.startswith(path) for p, _, _ in picked):
            continue
        picked.append((path, tname, size))
        if len(picked) == limit:
            break
    return picked


# ----- check() ----------------------------------------------------------------------------------

class _Collect:
    def __init__(self):
        self.skip = set()
        self.too_large = False


class _Checking:
    """The receiver as check() hands it to the walk: refusals already recorded are skipped."""

    def __init__(self, receiver, collect):
        self.receiver, self.collect, self.last = receiver, collect, None

    def _session(self, user_callback):
        self.last = _Session(self.receiver, user_callback, self.collect)
        return self.last


class Report:
    """What :func:`check` found: ``ok``, ``problems``, ``by_value``, ``by_reference`` (top-level
    modules the receiver must import), ``size`` (bytes, out-of-band buffers included) and
    ``largest`` (``(path, type name, bytes)``)."""

    def __init__(self, receiver, problems, by_value, by_reference, size, largest):
        self.receiver = receiver
        self.problems = problems
        self.by_value = by_value
        self.by_reference = by_reference
        self.size = size
        self.largest = largest

    @property
    def ok(self):
        return not self.problems

    def __bool__(self):
        return self.ok

    def __str__(self):
        lines = [f"{'OK' if self.ok else 'NOT OK'} for {self.receiver!r}: "
                 f"{_fmt(self.size) if self.size is not None else '?'}"
                 f"{'' if self.size is None else f' ({self.size} bytes)'}"]
        for p in self.problems:
            lines.append(f"  problem: {p.message()}")
        if self.by_value:
            lines.append("  by value: " + ", ".join(self.by_value))
        if self.by_reference:
            lines.append("  the receiver imports: " + ", ".join(self.by_reference))
        if self.largest:
            lines.append("  largest parts: " + "; ".join(f"{p} ({t}) {_fmt(s)}" for p, t, s in self.largest))
        return "\n".join(lines)

    __repr__ = __str__


def _error_problem(exc):
    """A Problem for an error the walk raised (not a catalogue refusal): the exception's type,
    its message as the reason, and its "Use ..." advice, when it gives one, as the workaround."""
    msg = str(exc).strip().rstrip(".")
    reason, sep, advice = msg.rpartition(". Use ")
    if sep:
        workaround = "use " + advice
    else:
        reason = msg
        workaround = ("leave this object out, or give its class a __reduce__ whose parts the "
                      "receiver can import")
    return Problem(_path_from_notes(exc), type(exc).__name__, reason, workaround)


def check(obj, by_source=False, receiver=None, protocol=None, pickle_by_reference=None, max_problems=50):
    """The walk of ``dumps(obj, by_source=..., receiver=receiver)`` without raising: a
    :class:`Report` of every problem (each refused object is recorded, replaced and the walk run
    again, up to ``max_problems``)."""
    from cloudpickle_rs import dumps

    if receiver is None:
        receiver = Receiver()
    collect = _Collect()
    checking = _Checking(receiver, collect)
    problems = []
    for _ in range(max_problems + 1):
        try:
            dumps(obj, protocol, by_source=by_source, pickle_by_reference=pickle_by_reference, receiver=checking)
            break
        except PicklingProhibitedError as exc:
            if not hasattr(exc, "_cprs_key"):  # a pickle_by_reference callback's own refusal
                problems.append(_error_problem(exc))
                break
            problems.append(exc.problem)
            collect.skip.add(exc._cprs_key)
            collect.skip.update(exc._cprs_also)
        except RecursionError:
            raise
        except Exception as exc:  # syntax for an older Python, unpicklable objects, ...
            problems.append(_error_problem(exc))
            break
    session = checking.last
    size = session.size if session is not None else None
    largest = largest_parts(obj)
    if collect.too_large:
        problems.append(Problem("obj", type(obj).__name__,
                                f"the pickle is {_fmt(size)}, over max_bytes={receiver.max_bytes}",
                                "send less: " + ", ".join(f"{p} is {_fmt(s)}" for p, _, s in largest)))
    by_value = list(dict.fromkeys(session.by_value)) if session else []
    by_reference = sorted(t for t in (session.referenced if session else ()) if t not in _stdlib())
    return Report(receiver, problems, by_value, by_reference, size, largest)


# ----- judging an existing pickle without loading it --------------------------------------------

_BYTECODE_LAYOUTS = {"3.11+": ((3, 11), (99, 0)), "3.8-3.10": ((3, 8), (3, 10))}


def _names_used(source):
    """Names a by-source factory's text reads (``ast``; None where this Python cannot parse it)
    and the modules it imports."""
    import ast

    try:
        tree = ast.parse(source or "")
    except SyntaxError:
        return None, set()
    names, imports = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imports.add(node.module)
    return names, imports


def _globals_used_as_values(data):
    """Dotted names of the stream's globals that appear as a value (an argument, an item, a
    state), not only as the callable of a reduce."""
    from cloudpickle_rs._cli import Call, Global, _machine, _walk

    root = _machine(bytes(data))[0]
    out = set()
    if root is None:
        return out
    if isinstance(root, Global):
        out.add(root.dotted)
    nodes = list(_walk(root))
    # The stream's cached compile (builtins.compile given to functools.lru_cache) is machinery.
    machinery = {id(n.args) for n in nodes if isinstance(n, Call) and n.role == "compile_fn"}
    for node in nodes:
        if id(node) in machinery:
            continue
        kids = node.children()
        if isinstance(node, Call):
            kids = [k for k in kids if k is not node.func]
        out.update(k.dotted for k in kids if isinstance(k, Global))
    return out


def check_stream(data, receiver=None):
    """Judge an existing pickle (bytes) for ``receiver`` without loading it: the modules it
    imports, denied modules and builtins, catalogue types named by its globals, the Python its
    functions need, and its size. A :class:`Report`, as :func:`check` returns; ``largest`` lists
    the biggest parts of the stream's top-level object."""
    from cloudpickle_rs._cli import analyse

    r = receiver if receiver is not None else Receiver()
    info = analyse(data)
    as_values = _globals_used_as_values(data)
    problems = []
    deny_fix = "do this work on this side and send the result, or use an allowed module"

    def add(path, kind, reason, workaround):
        if all((p.path, p.reason) != (path, reason) for p in problems):
            problems.append(Problem(path, kind, reason, workaround))

    catalogue = dict(BUILTIN_CATALOGUE)
    for name, (library, entry) in LIBRARY_CATALOGUE.items():
        if not r.can_import(library):
            catalogue[name] = entry
    for what, instead in r.forbid.items():
        name = what if isinstance(what, str) else _qualified(what)
        if instead is None:
            catalogue.pop(name, None)
        else:
            catalogue[name] = (f"the receiver forbids {name}", str(instead))
    referenced = {m.split(".", 1)[0] for m in info["reconstructor_modules"]}
    # Names the stream imports, grouped by top-level module: one problem per module.
    by_top = {}
    for dotted in info["globals"]:
        module, _, name = dotted.rpartition(".")
        top = module.split(".", 1)[0]
        if dotted in catalogue:
            reason, workaround = catalogue[dotted]
            add(f"global {dotted}", name, reason, workaround)
        if top == "builtins":
            # exec/compile/getattr called to rebuild a by-source function are the stream's
            # own reconstructors: only a builtin the stream uses as a value is the user's.
            if name in r.deny_builtins and dotted in as_values:
                add(f"global {dotted}", "builtin", f"it is builtin {name}, which the receiver denies", deny_fix)
            continue
        if top == "__main__":
            add(f"global {dotted}", "global",
                f"it is {name} of the sender's __main__, which the receiver does not have",
                "dump it with cloudpickle_rs (functions and classes of __main__ go by value)")
            continue
        by_top.setdefault(top, []).append(dotted)
    for module in info["modules"]:
        top = module.split(".", 1)[0]
        if top != "__main__":
            by_top.setdefault(top, []).append(f"module {module}")
    for top, names in sorted(by_top.items()):
        referenced.add(top)
        first = names[0] if names[0].startswith("module ") else f"global {names[0]}"
        more = f" (and {len(names) - 1} more of its names)" if len(names) > 1 else ""
        what = names[0][len("module "):] if names[0].startswith("module ") else names[0]
        if top in r.deny_modules:
            add(first, "module" if first.startswith("module ") else "global",
                f"it is {what}{more}, and the receiver denies module {top}", deny_fix)
        elif not r.can_import(top):
            add(first, "module" if first.startswith("module ") else "global",
                f"it is {what}{more}, and the receiver cannot import {top}",
                f"add {top!r} to Receiver(modules=...) if the receiver has it, or send plain data instead")
    by_value = []
    for fn in info["functions"]:
        qual = f"{fn['module']}.{fn['name']}" if fn.get("module") else fn["name"]
        by_value.append(qual)
        where = f"function {qual} ({fn.get('file')}:{fn.get('line')})"
        if fn["mode"] == "source":
            need = tuple(int(x) for x in fn["python"].rstrip("+").split("."))
            if r.python is not None and r.python < need:
                add(where, "function", f"its source needs Python {fn['python']}, the receiver runs "
                    f"{r.python[0]}.{r.python[1]}", "rewrite it without that syntax, or use a newer receiver")
            names, imports = _names_used(fn.get("source"))
            own = set(fn.get("globals") or ()) | set(fn.get("closure") or ())
            for n in sorted((names or set()) & r.deny_builtins - own):
                add(where, "function", f"it calls builtin {n}, which the receiver denies", deny_fix)
            for m in sorted(imports):
                top = m.split(".", 1)[0]
                if top in r.deny_modules:
                    add(where, "function", f"it imports {m}, which the receiver denies", deny_fix)
                elif not r.can_import(top):
                    add(where, "function", f"it imports {m}, which the receiver cannot import",
                        f"add {top!r} to Receiver(modules=...) if the receiver has it")
        elif fn["mode"] == "bytecode" and r.python is not None:
            layout = "3.11+" if "3.11+" in fn["python"] else "3.8-3.10"
            low, high = _BYTECODE_LAYOUTS[layout]
            if not low <= r.python <= high:
                add(where, "function", f"it travels as bytecode of Python {layout}, which Python "
                    f"{r.python[0]}.{r.python[1]} cannot load", "dump it with by_source=True")
    for c in info["classes"]:
        by_value.append(f"{c['module']}.{c['qualname']}" if c.get("module") else str(c["qualname"]))
    size = info["size"]
    tree = info.get("tree") or {}
    kids = sorted(tree.get("children") or (), key=lambda k: -k.get("size", 0))
    keys = tree.get("keys") or []
    largest = []
    for i, kid in enumerate(kids[:5]):
        idx = (tree.get("children") or []).index(kid)
        label = f"obj[{keys[idx]}]" if idx < len(keys) else f"obj[{idx}]"
        largest.append((label, kid.get("kind", "?"), kid.get("size", 0)))
    if r.max_bytes is not None and size > r.max_bytes:
        add("obj", "pickle", f"the pickle is {_fmt(size)}, over max_bytes={r.max_bytes}",
            "send less: " + ", ".join(f"{p} is {_fmt(s)}" for p, _, s in largest) if largest else "send less")
    by_reference = sorted(t for t in referenced if t not in _stdlib() and t != "__main__")
    return Report(r, problems, list(dict.fromkeys(by_value)), by_reference, size, largest)
