"""The interpreters the project supports, and where to find them on this machine.

One table for the whole test tree (loaders, the version matrix, ``tools/versions.py``):

    SENDERS     CPython minor versions cloudpickle_rs is built and tested for
    RECEIVERS   CPython minor versions (plus PyPy 3.9) that must load what any sender writes
    COMPILE_ONLY  versions with no interpreter here: ``cargo check`` only (tools/versions.py)

``find_cpython("3.12")`` returns a base (non-venv) interpreter of that minor version or raises
:class:`MissingInterpreter`, whose message names the version and where it looked. Nothing here
skips: a supported interpreter that is missing is a failure of the machine, reported as such.

Lookup order: the environment variable ``CLOUDPICKLE_RS_CPYTHON_3_12`` (a path), then pyenv's
versions folder (``$PYENV_ROOT/versions/3.12.*``, newest patch first), then ``python3.12`` on PATH
when it is not a pyenv shim. Standard library only; valid Python 3.8 syntax.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

SENDERS = ("3.9", "3.10", "3.11", "3.12", "3.13")
RECEIVERS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
PYPY_RECEIVER = "pypy3.9"
COMPILE_ONLY = ("3.14", "3.14t", "3.15")


class MissingInterpreter(RuntimeError):
    """A supported interpreter is not installed where it should be."""


def _pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    exe = shutil.which("pyenv")
    if exe:
        try:
            out = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    return Path.home() / ".pyenv"


def _patch_key(path):
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)$", path.name)
    return tuple(int(x) for x in m.groups()) if m else (-1,)


def _reported_version(exe):
    try:
        out = subprocess.run(
            [str(exe), "-I", "-c", "import sys,platform;print(platform.python_implementation(),"
             "'%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


_FOUND = {}


def find_cpython(minor):
    """Path of a base CPython interpreter of `minor` ("3.12"); raises MissingInterpreter."""
    if minor in _FOUND:
        return _FOUND[minor]
    tried = []
    candidates = []
    env_name = "CLOUDPICKLE_RS_CPYTHON_" + minor.replace(".", "_")
    if os.environ.get(env_name):
        candidates.append(Path(os.environ[env_name]))
    versions = _pyenv_root() / "versions"
    if versions.is_dir():
        found = [p for p in versions.iterdir()
                 if re.match(r"^%s\.\d+$" % re.escape(minor), p.name)]
        for d in sorted(found, key=_patch_key, reverse=True):
            candidates.append(d / "bin" / ("python" + minor))
    on_path = shutil.which("python" + minor)
    if on_path and "/shims/" not in on_path:
        candidates.append(Path(on_path))
    for cand in candidates:
        tried.append(str(cand))
        if cand.exists() and _reported_version(cand) == "CPython " + minor:
            _FOUND[minor] = cand
            return cand
    raise MissingInterpreter(
        "CPython %s is a supported version but no interpreter of it was found (tried: %s). "
        "Install it (`pyenv install %s`) or set %s to its path."
        % (minor, ", ".join(tried) or "nothing: no pyenv versions folder, no python%s on PATH"
           % minor, minor, env_name))


def version_tuple(minor):
    return tuple(int(x) for x in minor.rstrip("t").split("."))
