"""The integration tests' interpreters, built on demand: ``.venvs/integ`` with the engines of
``requirements/integrations.txt`` (Dask, distributed, Ray, joblib, loky) and ``.venvs/spark``
with ``requirements/spark.txt`` (PySpark, which runs on the machine's Java 17).

cloudpickle_rs is NOT installed there: scripts run with ``PYTHONPATH=<repo>/python`` so they test
the extension that ``make build`` put in the source tree (override the directory with
``CLOUDPICKLE_RS_INTEG_PYTHONPATH``, e.g. to a stable copy while others rebuild).  The variable
reaches every worker the engines start (spawned workers inherit the environment).

Building holds ``fcntl.flock`` on ``.venvs/<name>.lock``; an environment is complete when its
stamp (sha256 of the requirements file) is written.  A failed build raises: tests fail, never skip.

    python tests/integrations/integ_env.py build [NAME ...]     # what `make integ-env` runs
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: Environment name -> its requirements file.
ENVS = {"integ": REPO / "requirements" / "integrations.txt",
        "spark": REPO / "requirements" / "spark.txt",
        "beam": REPO / "requirements" / "beam.txt"}
REQUIREMENTS = ENVS["integ"]
SCRIPTS = HERE / "scripts"
_LAYOUT = 1


class IntegEnvError(RuntimeError):
    pass


def venvs_root() -> Path:
    override = os.environ.get("CLOUDPICKLE_RS_VENVS")
    return Path(override) if override else REPO / ".venvs"


def env_dir(name="integ") -> Path:
    return venvs_root() / name


def python(name="integ") -> Path:
    return env_dir(name) / "bin" / "python"


def _fingerprint(name) -> str:
    h = hashlib.sha256(ENVS[name].read_bytes())
    h.update(f"layout={_LAYOUT}".encode())
    return h.hexdigest()


def _stamp_path(name) -> Path:
    return env_dir(name) / f"{name}-stamp.json"


def _stamp_ok(name) -> bool:
    try:
        stamp = json.loads(_stamp_path(name).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("fingerprint") == _fingerprint(name) and python(name).exists()


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _base_python() -> str:
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        return getattr(sys, "_base_executable", None) or sys.executable
    found = shutil.which("python3.11")
    if not found:
        raise IntegEnvError("no CPython 3.11 to build .venvs/integ with")
    return found


def _run(cmd, step, timeout=1200):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=_clean_env(), stdin=subprocess.DEVNULL, timeout=timeout)
    if proc.returncode:
        raise IntegEnvError(f"{step}: {' '.join(map(str, cmd))} exited {proc.returncode}\n"
                            f"{proc.stdout[-6000:]}")
    return proc.stdout


def ensure(name="integ") -> Path:
    """Build .venvs/<name> if needed; return its interpreter."""
    if _stamp_ok(name):
        return python(name)
    root = venvs_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if _stamp_ok(name):
                return python(name)
            t0 = time.monotonic()
            target = env_dir(name)
            if target.exists():
                shutil.rmtree(target)
            print(f"[integ_env] building {target} from {ENVS[name]}", file=sys.stderr, flush=True)
            _run([_base_python(), "-m", "venv", str(target)], "venv")
            _run([str(python(name)), "-m", "pip", "install", "-q", "--no-input",
                  "--disable-pip-version-check", "-r", str(ENVS[name])], "pip install")
            freeze = _run([str(python(name)), "-m", "pip", "freeze"], "pip freeze").split()
            if any(line.lower().startswith("cloudpickle-rs") or line.lower().startswith("cloudpickle_rs")
                   for line in freeze):
                raise IntegEnvError(f"cloudpickle_rs must not be installed in .venvs/{name}")
            stamp = {"fingerprint": _fingerprint(name), "freeze": freeze,
                     "build_seconds": round(time.monotonic() - t0, 1)}
            _stamp_path(name).write_text(json.dumps(stamp, indent=2) + "\n")
            return python(name)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def package_dir() -> str:
    return os.environ.get("CLOUDPICKLE_RS_INTEG_PYTHONPATH") or str(REPO / "python")


def script_env(extra=None):
    """Environment of an integration script: clean, PYTHONPATH = the package, no audit leftovers."""
    env = _clean_env()
    for k in list(env):
        if k.startswith(("DASK_", "CLOUDPICKLE_RS_", "LOKY_", "RAY_", "SPARK_", "PYSPARK_")) \
                and k != "CLOUDPICKLE_RS_VENVS":
            del env[k]
    env["PYTHONPATH"] = package_dir()
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


class ScriptResult:
    def __init__(self, returncode, stdout, stderr, result, seconds):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.result = result
        self.seconds = seconds

    def explain(self):
        return (f"exit {self.returncode} after {self.seconds:.1f}s\n--- stdout ---\n"
                f"{self.stdout[-8000:]}\n--- stderr ---\n{self.stderr[-12000:]}")


RESULT_MARK = "INTEG-RESULT: "


def run_script(name, *args, env=None, timeout=180, cwd=None, venv="integ"):
    """Run ``scripts/<name>`` as ``__main__`` with the ``venv`` interpreter in its own process group.

    The script prints one line ``INTEG-RESULT: <json>``; its value is ``.result`` (None when
    missing).  On timeout the whole group (workers included) is killed and the error says so.
    """
    py = ensure(venv)
    t0 = time.monotonic()
    proc = subprocess.Popen([str(py), str(SCRIPTS / name), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=script_env(env), cwd=cwd or str(SCRIPTS),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"{name} timed out after {timeout}s\n--- stdout ---\n{out[-6000:]}"
                             f"\n--- stderr ---\n{err[-10000:]}") from None
    finally:
        kill_group(proc)
    result = None
    for line in out.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
    return ScriptResult(proc.returncode, out, err, result, time.monotonic() - t0)


def kill_group(proc):
    """Kill what is left of the process group of `proc` (workers a script failed to stop)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        for env_name in sys.argv[2:] or list(ENVS):
            print(ensure(env_name))
    else:
        print(__doc__)
        sys.exit(2)
