"""Loader environments: interpreters that have stock cloudpickle and NOT cloudpickle_rs.

The wire contract (DESIGN.md section 2) says a stream written by cloudpickle_rs loads with plain
``pickle.loads`` in a process that has only stock cloudpickle >= 3.0.  These helpers build such
processes on demand and run a load in them:

    from support.loaders import load_in, loader_python, LoaderError

    value = load_in("stock-cp312", data, "result = obj(3)")      # -> JSON-able value
    path = loader_python("pypy39")                               # -> Path to its interpreter

Environments (virtualenvs under ``<repo>/.venvs/``, gitignored):

    stock-cp312   the sender's own CPython version (the interpreter running the tests), only
                  cloudpickle==3.1.2: bytecode streams load only on the version that wrote them
    stock-cp300   the same, only cloudpickle==3.0.0
    pypy39        Debian's PyPy 3.9 (``apt-get install -y pypy3`` when missing), only cloudpickle==3.1.2
    recv-3.8 ... recv-3.13   CPython 3.8-3.13 (tests/support/pythons.py finds them), only
                  cloudpickle==3.1.2: the receivers of the version matrix
    recv-3.13-cp313  CPython 3.13 with cloudpickle==3.1.3; recv-3.9-cp300  CPython 3.9 with 3.0.0

"The sender's own version" is resolved when the environment is first asked for; its folder is
``.venvs/<name>-py3.X`` so that test runs on several versions share one ``.venvs``.

Each is built the first time it is asked for and then reused.  Building holds an exclusive
``fcntl.flock`` on ``.venvs/<name>.lock``, so two pytest processes asking at once build it once.
An environment is complete only when its stamp file ``.venvs/<name>/loader-stamp.json`` exists
(written last, with the interpreter and package versions); a missing or outdated stamp means the
directory is deleted and built again.  A build that fails raises :class:`LoaderBuildError`:
tests that use a loader then fail, they never skip.

Command line (used by ``make loaders``; needs only the standard library):

    python3 tests/support/loaders.py build [NAME ...]    # default: all
    python3 tests/support/loaders.py info
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pythons as _pythons  # noqa: E402  (tests/support/pythons.py; this file also runs as a script)

__all__ = [
    "ENVS",
    "EnvSpec",
    "LoadResult",
    "LoaderBuildError",
    "LoaderError",
    "build_all",
    "ensure_env",
    "load_in",
    "loader_python",
    "run_in",
    "venvs_root",
]

# Bump to force every cached environment to be rebuilt (e.g. after changing how they are made).
_LAYOUT_VERSION = 1
_STAMP_NAME = "loader-stamp.json"
_LOCK_WAIT_SECONDS = 1800


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    name: str
    interpreter: str  # "cpython3.X", "pypy3.9" or "cpython-sender" (the running CPython's version)
    requirements: tuple  # pip requirement strings, each pinned
    expect_cloudpickle: str  # the version `cloudpickle.__version__` must report
    description: str

    def fingerprint(self) -> Dict[str, Any]:
        return {
            "layout": _LAYOUT_VERSION,
            "interpreter": _interpreter(self),
            "requirements": list(self.requirements),
        }


ENVS: Dict[str, EnvSpec] = {
    spec.name: spec
    for spec in (
        EnvSpec("stock-cp312", "cpython-sender", ("cloudpickle==3.1.2",), "3.1.2",
                "the sender's CPython with only stock cloudpickle 3.1.2"),
        EnvSpec("stock-cp300", "cpython-sender", ("cloudpickle==3.0.0",), "3.0.0",
                "the sender's CPython with only stock cloudpickle 3.0.0"),
        EnvSpec("pypy39", "pypy3.9", ("cloudpickle==3.1.2",), "3.1.2",
                "Debian's PyPy 3.9 with only stock cloudpickle 3.1.2"),
        *(EnvSpec(f"recv-{v}", f"cpython{v}", ("cloudpickle==3.1.2",), "3.1.2",
                  f"CPython {v} with only stock cloudpickle 3.1.2") for v in _pythons.RECEIVERS),
        EnvSpec("recv-3.13-cp313", "cpython3.13", ("cloudpickle==3.1.3",), "3.1.3",
                "CPython 3.13 with only stock cloudpickle 3.1.3"),
        EnvSpec("recv-3.9-cp300", "cpython3.9", ("cloudpickle==3.0.0",), "3.0.0",
                "CPython 3.9 with only stock cloudpickle 3.0.0"),
        EnvSpec("recv-3.9-numpy", "cpython3.9", ("cloudpickle==3.1.2", "numpy==2.0.2"), "3.1.2",
                "CPython 3.9 with stock cloudpickle 3.1.2 and numpy: a Receiver(python='3.9', "
                "modules=['numpy']) for real"),
    )
}

# What may be installed in a loader environment besides the requirements (the venv's own tools).
# Distributions that ship with the base interpreter (PyPy's cffi, greenlet, hpy, readline) live
# outside the venv and are recorded in the stamp as "base_dists", not checked.
_ALLOWED_EXTRA_DISTS = {"pip", "setuptools", "wheel"}


class LoaderBuildError(RuntimeError):
    """A loader environment could not be built (the message says which step and why)."""


class LoaderError(AssertionError):
    """Loading (or the check code) failed in the loader process.

    Attributes: ``env`` (loader name), ``phase`` ("setup", "loads", "check", "result", "timeout",
    "crash"), ``exc_type`` (name of the child's exception class, e.g. "TypeError", or None),
    ``exc_message``, ``child_traceback``, ``stdout``, ``stderr``, ``returncode``.
    """

    def __init__(self, env, phase, exc_type, exc_message, child_traceback, stdout, stderr,
                 returncode):
        self.env = env
        self.phase = phase
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.child_traceback = child_traceback
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        head = f"[{env}] {phase} failed"
        if exc_type:
            head += f": {exc_type}: {exc_message}"
        parts = [head, f"(exit code {returncode})"]
        if stderr.strip():
            parts.append("--- child stderr ---\n" + stderr.rstrip())
        if stdout.strip():
            parts.append("--- child stdout ---\n" + stdout.rstrip())
        super().__init__("\n".join(parts))


@dataclasses.dataclass
class LoadResult:
    value: Any  # what the check code put in `result` (JSON round-tripped)
    meta: Dict[str, Any]  # interpreter, versions, modules seen by the child
    stdout: str
    stderr: str


# --------------------------------------------------------------------------------------------
# Locations


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def venvs_root() -> Path:
    override = os.environ.get("CLOUDPICKLE_RS_VENVS")
    return Path(override) if override else repo_root() / ".venvs"


def _sender_minor() -> str:
    return "%d.%d" % sys.version_info[:2]


def _interpreter(spec: EnvSpec) -> str:
    """The concrete interpreter of `spec`: "cpython3.X" or "pypy3.9"."""
    if spec.interpreter == "cpython-sender":
        if sys.implementation.name != "cpython":
            raise LoaderBuildError(f"{spec.name}: the sender is {sys.implementation.name}, not CPython")
        return "cpython" + _sender_minor()
    return spec.interpreter


def _dir_name(name: str) -> str:
    spec = ENVS.get(name)
    if spec is not None and spec.interpreter == "cpython-sender":
        return f"{name}-py{_sender_minor()}"
    return name


def _env_dir(name: str) -> Path:
    return venvs_root() / _dir_name(name)


def _env_python(name: str) -> Path:
    return _env_dir(name) / "bin" / "python"


# --------------------------------------------------------------------------------------------
# Building


def _log(msg: str) -> None:
    print(f"[loaders] {msg}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], step: str, timeout: float = 900, env=None) -> str:
    try:
        proc = subprocess.run(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=timeout, env=env, stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise LoaderBuildError(f"{step}: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise LoaderBuildError(f"{step}: timed out after {timeout}s: {' '.join(cmd)}") from e
    if proc.returncode != 0:
        raise LoaderBuildError(
            f"{step}: `{' '.join(cmd)}` exited {proc.returncode}\n{proc.stdout[-6000:]}"
        )
    return proc.stdout


def _clean_env() -> Dict[str, str]:
    """Environment for child interpreters: no PYTHON* variables, no user site, no venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _python_version(exe: str) -> Optional[str]:
    try:
        out = subprocess.run(
            [exe, "-I", "-c",
             "import sys,platform;print(platform.python_implementation(),"
             "'%d.%d.%d' % sys.version_info[:3])"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _find_cpython(minor: str) -> str:
    """A base (non-venv) CPython interpreter of `minor` ("3.12"): the running one when it is of
    that version, else the one tests/support/pythons.py finds (pyenv's)."""
    if sys.implementation.name == "cpython" and _sender_minor() == minor:
        base = getattr(sys, "_base_executable", None) or sys.executable
        ver = _python_version(base)
        if ver and ver.startswith(f"CPython {minor}."):
            return base
    try:
        return str(_pythons.find_cpython(minor))
    except _pythons.MissingInterpreter as e:
        raise LoaderBuildError(str(e)) from None


def _find_cpython311() -> str:
    return _find_cpython("3.11")


def _apt_install_pypy3() -> None:
    if os.geteuid() != 0:
        raise LoaderBuildError("pypy3 is not installed and we are not root: apt-get install -y pypy3")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", "install", "-y", "pypy3"], "apt-get install pypy3", env=env)
        return
    except LoaderBuildError:
        _log("apt-get install pypy3 failed; running apt-get update and retrying")
    _run(["apt-get", "update"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "pypy3"], "apt-get install pypy3 (after update)", env=env)


def _find_pypy39() -> str:
    exe = shutil.which("pypy3")
    if exe is None:
        _log("pypy3 not found: installing Debian's pypy3")
        _apt_install_pypy3()
        exe = shutil.which("pypy3") or "/usr/bin/pypy3"
    ver = _python_version(exe)
    if not ver or not ver.startswith("PyPy 3.9."):
        raise LoaderBuildError(f"{exe} is {ver!r}, expected PyPy 3.9")
    return exe


def _make_venv(base: str, target: Path) -> None:
    proc = subprocess.run([base, "-m", "venv", str(target)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=_clean_env(), timeout=600)
    if proc.returncode == 0 and (target / "bin" / "python").exists():
        r = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "--version"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_clean_env())
        if r.returncode == 0:
            return
    # Fallback: a Debian interpreter without venv/ensurepip.  Try the Debian package that
    # provides it, then virtualenv from PyPI run by CPython.
    _log(f"`{base} -m venv` failed ({proc.stdout.strip()[-300:]}); trying fallbacks")
    shutil.rmtree(target, ignore_errors=True)
    if os.geteuid() == 0 and "pypy" in os.path.basename(base):
        for pkg in ("pypy3-venv",):
            try:
                _run(["apt-get", "install", "-y", pkg], f"apt-get install {pkg}")
                proc = subprocess.run([base, "-m", "venv", str(target)], env=_clean_env())
                if proc.returncode == 0:
                    return
            except LoaderBuildError:
                pass
            shutil.rmtree(target, ignore_errors=True)
    helper = venvs_root() / "_virtualenv-tool"
    if not (helper / "bin" / "python").exists():
        _run([_find_cpython311(), "-m", "venv", str(helper)], "venv for virtualenv",
             env=_clean_env())
        _run([str(helper / "bin" / "python"), "-m", "pip", "install", "-q", "virtualenv"],
             "pip install virtualenv", env=_clean_env())
    _run([str(helper / "bin" / "python"), "-m", "virtualenv", "-p", base, str(target)],
         f"virtualenv -p {base}", env=_clean_env())


def _inspect_env(py: Path) -> Dict[str, Any]:
    code = r"""
import json, sys, platform
try:
    from importlib import metadata
except ImportError:
    metadata = None
out = {"implementation": platform.python_implementation(),
       "python_version": "%d.%d.%d" % sys.version_info[:3],
       "sys_version": sys.version, "executable": sys.executable}
import cloudpickle
out["cloudpickle_version"] = cloudpickle.__version__
out["cloudpickle_file"] = cloudpickle.__file__
try:
    import cloudpickle_rs
    out["cloudpickle_rs"] = cloudpickle_rs.__file__
except ImportError:
    out["cloudpickle_rs"] = None
import os
prefix = os.path.realpath(sys.prefix) + os.sep
out["dists"] = sorted("%s==%s" % (d.metadata["Name"], d.version) for d in metadata.distributions()
                      if os.path.realpath(str(d.locate_file(""))).startswith(prefix))
out["base_dists"] = sorted("%s==%s" % (d.metadata["Name"], d.version)
                           for d in metadata.distributions()
                           if not os.path.realpath(str(d.locate_file(""))).startswith(prefix))
print(json.dumps(out))
"""
    out = _run([str(py), "-I", "-c", code], f"inspect {py}", timeout=120, env=_clean_env())
    return json.loads(out.strip().splitlines()[-1])


def _read_stamp(name: str) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((_env_dir(name) / _STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _stamp_ok(spec: EnvSpec) -> bool:
    stamp = _read_stamp(spec.name)
    if not stamp or stamp.get("spec") != spec.fingerprint():
        return False
    py = _env_python(spec.name)
    # The base interpreter may have gone (a machine without pypy3 any more): check it still runs.
    return py.exists() and _python_version(str(py)) is not None


def _build(spec: EnvSpec) -> Dict[str, Any]:
    target = _env_dir(spec.name)
    t0 = time.monotonic()
    if target.exists():
        _log(f"{spec.name}: removing incomplete or outdated {target}")
        shutil.rmtree(target)
    interp = _interpreter(spec)
    base = _find_pypy39() if interp == "pypy3.9" else _find_cpython(interp[len("cpython"):])
    _log(f"{spec.name}: creating venv from {base}")
    _make_venv(base, target)
    py = str(target / "bin" / "python")
    _run([py, "-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check",
          *spec.requirements], f"{spec.name}: pip install {' '.join(spec.requirements)}",
         env=_clean_env())
    info = _inspect_env(Path(py))
    if info["cloudpickle_version"] != spec.expect_cloudpickle:
        raise LoaderBuildError(f"{spec.name}: cloudpickle {info['cloudpickle_version']} installed, "
                               f"expected {spec.expect_cloudpickle}")
    if info["cloudpickle_rs"] is not None:
        raise LoaderBuildError(f"{spec.name}: cloudpickle_rs is importable: {info['cloudpickle_rs']}")
    allowed = {r.split("==")[0].lower() for r in spec.requirements} | _ALLOWED_EXTRA_DISTS
    extra = [d for d in info["dists"] if d.split("==")[0].lower() not in allowed]
    if extra:
        raise LoaderBuildError(f"{spec.name}: unexpected packages installed: {extra}")
    stamp = {
        "name": spec.name,
        "description": spec.description,
        "spec": spec.fingerprint(),
        "base_interpreter": base,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.monotonic() - t0, 1),
        **info,
    }
    tmp = target / (_STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, target / _STAMP_NAME)
    _log(f"{spec.name}: built in {stamp['build_seconds']}s ({info['implementation']} "
         f"{info['python_version']}, cloudpickle {info['cloudpickle_version']})")
    return stamp


# Environments already verified by this process: (venvs root, name) -> stamp.
_VERIFIED: Dict[tuple, Dict[str, Any]] = {}


def _remember(name: str, stamp: Dict[str, Any]) -> Dict[str, Any]:
    _VERIFIED[(str(venvs_root()), name)] = stamp
    return stamp


def ensure_env(name: str) -> Dict[str, Any]:
    """Build loader environment `name` if needed; return its stamp (a dict of versions)."""
    try:
        spec = ENVS[name]
    except KeyError:
        raise KeyError(f"unknown loader environment {name!r}; known: {sorted(ENVS)}") from None
    cached = _VERIFIED.get((str(venvs_root()), name))
    if cached is not None and _env_python(name).exists():
        return cached
    if _stamp_ok(spec):  # fast path, no lock
        return _remember(name, _read_stamp(name))
    root = venvs_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "a+") as lock:
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        waited = False
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    _log(f"{name}: another process is building it; waiting for the lock")
                    waited = True
                if time.monotonic() > deadline:
                    raise LoaderBuildError(f"{name}: waited {_LOCK_WAIT_SECONDS}s for {lock.name}")
                time.sleep(0.5)
        try:
            if _stamp_ok(spec):  # built by whoever held the lock before us
                return _remember(name, _read_stamp(name))
            return _remember(name, _build(spec))
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def loader_python(name: str) -> Path:
    """Path to the interpreter of loader environment `name`, building the environment if needed."""
    ensure_env(name)
    return _env_python(name)


def build_all(names: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Any]]:
    return {n: ensure_env(n) for n in (names or list(ENVS))}


# --------------------------------------------------------------------------------------------
# Loading

# Runs in the loader with `python -I -c`.  argv: workdir, number of out-of-band buffers.
# Must stay valid Python 3.8 syntax (PyPy 3.9 and future older loaders).
_CHILD = r'''
import sys, os, json, traceback
workdir = sys.argv[1]
nbuf = int(sys.argv[2])
out_path = os.path.join(workdir, "result.json")
def _finish(doc, code):
    with open(out_path, "w") as f:
        json.dump(doc, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
def _fail(phase, exc):
    traceback.print_exc()
    _finish({"ok": False, "phase": phase, "exc_type": type(exc).__name__,
             "exc_message": str(exc), "traceback": traceback.format_exc()}, 1)
import platform, pickle
meta = {"implementation": platform.python_implementation(),
        "python_version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable}
try:
    import cloudpickle_rs
except ImportError:
    meta["cloudpickle_rs_importable"] = False
else:
    _finish({"ok": False, "phase": "setup", "exc_type": "LoaderSetupError",
             "exc_message": "cloudpickle_rs is importable in this loader: %s"
             % getattr(cloudpickle_rs, "__file__", "?"), "traceback": ""}, 3)
meta["cloudpickle_imported_before_loads"] = "cloudpickle" in sys.modules
try:
    with open(os.path.join(workdir, "payload.pkl"), "rb") as f:
        data = f.read()
    buffers = []
    for i in range(nbuf):
        with open(os.path.join(workdir, "buffer%d.bin" % i), "rb") as f:
            buffers.append(f.read())
    with open(os.path.join(workdir, "check.py")) as f:
        check_source = f.read()
    check_code = compile(check_source, "<check>", "exec")
except BaseException as e:
    _fail("setup", e)
try:
    obj = pickle.loads(data, buffers=buffers) if nbuf else pickle.loads(data)
except BaseException as e:
    _fail("loads", e)
cp = sys.modules.get("cloudpickle")
meta["cloudpickle_imported_by_loads"] = cp is not None
meta["cloudpickle_version"] = getattr(cp, "__version__", None) if cp else None
ns = {"obj": obj, "pickle": pickle, "__name__": "__loader_check__"}
try:
    exec(check_code, ns)
except BaseException as e:
    _fail("check", e)
try:
    result = json.loads(json.dumps(ns.get("result")))
except BaseException as e:
    _fail("result", e)
_finish({"ok": True, "result": result, "meta": meta}, 0)
'''


def run_in(name: str, pickle_bytes: bytes, check_source: str = "", timeout: float = 60,
           buffers: Optional[Sequence[bytes]] = None) -> LoadResult:
    """Unpickle `pickle_bytes` with plain ``pickle.loads`` in loader `name` and run `check_source`.

    The child is ``<env>/bin/python -I -c ...`` with a fresh empty temporary directory as cwd, no
    PYTHON* environment variables and no user site.  It first proves ``import cloudpickle_rs``
    fails, then loads (``pickle.loads(data, buffers=...)`` when `buffers` is given), then executes
    `check_source` with ``obj`` (the loaded object) and ``pickle`` in its namespace.  Whatever the
    check code assigns to ``result`` must be JSON-serialisable; it is returned as ``.value``.
    Any failure raises :class:`LoaderError` carrying the child's exception type and stderr.
    """
    py = loader_python(name)
    buffers = list(buffers or [])
    with tempfile.TemporaryDirectory(prefix=f"loader-{name}-") as tmp:
        work = Path(tmp)
        (work / "payload.pkl").write_bytes(bytes(pickle_bytes))
        for i, buf in enumerate(buffers):
            (work / f"buffer{i}.bin").write_bytes(bytes(buf))
        (work / "check.py").write_text(check_source)
        cwd = work / "cwd"
        cwd.mkdir()
        try:
            proc = subprocess.run(
                [str(py), "-I", "-c", _CHILD, str(work), str(len(buffers))],
                cwd=str(cwd), env=_clean_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise LoaderError(name, "timeout", None, f"no answer within {timeout}s", "",
                              _text(e.stdout), _text(e.stderr), None) from None
        stdout, stderr = _text(proc.stdout), _text(proc.stderr)
        try:
            doc = json.loads((work / "result.json").read_text())
        except (OSError, ValueError):
            raise LoaderError(name, "crash", None, "the loader wrote no result", "", stdout,
                              stderr, proc.returncode) from None
    if not doc.get("ok") or proc.returncode != 0:
        raise LoaderError(name, doc.get("phase", "crash"), doc.get("exc_type"),
                          doc.get("exc_message", ""), doc.get("traceback", ""), stdout, stderr,
                          proc.returncode)
    return LoadResult(doc["result"], doc["meta"], stdout, stderr)


def load_in(name: str, pickle_bytes: bytes, check_source: str = "", timeout: float = 60,
            buffers: Optional[Sequence[bytes]] = None) -> Any:
    """Like :func:`run_in`, returning only the JSON-able ``result`` set by `check_source`."""
    return run_in(name, pickle_bytes, check_source, timeout, buffers).value


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or verify) loader environments")
    b.add_argument("names", nargs="*", help=f"default: all of {sorted(ENVS)}")
    sub.add_parser("info", help="print the stamps of built environments")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        names = args.names or list(ENVS)
        for n in names:
            if n not in ENVS:
                parser.error(f"unknown environment {n!r}; known: {sorted(ENVS)}")
        failed = False
        for n in names:
            t0 = time.monotonic()
            try:
                st = ensure_env(n)
            except LoaderBuildError as e:
                print(f"{n}: BUILD FAILED: {e}", file=sys.stderr)
                failed = True
                continue
            print(f"{n:12s} {st['implementation']} {st['python_version']:8s} "
                  f"cloudpickle {st['cloudpickle_version']:6s} {_env_python(n)} "
                  f"(ready in {time.monotonic() - t0:.1f}s; built {st['built_at']} "
                  f"in {st['build_seconds']}s)")
        return 1 if failed else 0
    for n in ENVS:
        print(json.dumps(_read_stamp(n), indent=2) if _read_stamp(n) else f"{n}: not built")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
