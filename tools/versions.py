#!/usr/bin/env python3
"""Every supported Python, built and tested: wheels, sender venvs, per-version suites, and
compile-only checks for the versions this machine has no interpreter of.

    python3 tools/versions.py wheels   [3.12 ...]   # dist/cloudpickle_rs-*-cp3X-*.whl, one per version
    python3 tools/versions.py senders  [3.12 ...]   # .venvs/send-3.X: the wheel + requirements/sender.txt
    python3 tools/versions.py suite    [3.12 ...]   # the pytest suite on each sender's wheel (2 at a time)
    python3 tools/versions.py future                # cargo check + clippy for 3.14, 3.14t, 3.15

Without versions: every sender of tests/support/pythons.py (``suite``: all but 3.11, which
``make test-python`` runs on the dev build). Each step is cached: a wheel is rebuilt only when the
sources changed (a hash of crates/, python/ and the build files), a venv only when its wheel or
requirements changed. A supported interpreter that is missing fails the step, naming it.

Standard library only. Builds hold ``.venvs/versions.lock`` so that two runs do not interleave.
"""

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))
import pythons  # noqa: E402

VENVS = REPO / ".venvs"
DIST = REPO / "dist"
WHEEL_TARGET = REPO / "target" / "wheels"
SENDER_REQUIREMENTS = REPO / "requirements" / "sender.txt"
# Tests that drive the engines of .venvs/integ (CPython 3.11 only: Ray and Dask are pinned for
# it) and the version matrix (run once, from the 3.11 suite, over every sender): not per version.
PER_VERSION_IGNORES = (
    "tests/matrix",
    "tests/integrations/test_integ_dask.py",
    "tests/integrations/test_integ_ray.py",
    "tests/integrations/test_integ_loky.py",
    "tests/integrations/test_integ_executor.py",
)


def log(msg):
    print(f"[versions] {msg}", file=sys.stderr, flush=True)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(extra)
    return env


def run(cmd, step, env=None, cwd=None, timeout=1800):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"[versions] {step} failed (exit {proc.returncode}):\n{proc.stdout[-8000:]}")
    return proc.stdout


class Lock:
    def __init__(self, name):
        VENVS.mkdir(exist_ok=True)
        self.f = open(VENVS / f"{name}.lock", "a+")

    def __enter__(self):
        fcntl.flock(self.f.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f.fileno(), fcntl.LOCK_UN)
        self.f.close()


def source_hash():
    """A hash of everything a wheel is built from."""
    h = hashlib.sha256()
    files = [REPO / n for n in ("Cargo.toml", "Cargo.lock", "pyproject.toml")]
    for top in ("crates", "python"):
        for dirpath, dirnames, filenames in os.walk(REPO / top):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "target"))
            files += [Path(dirpath) / f for f in sorted(filenames)
                      if not f.endswith((".so", ".pyc", ".pyd"))]
    for f in files:
        h.update(str(f.relative_to(REPO)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def file_hash(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path, doc):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def maturin():
    for cand in (REPO / ".venv" / "bin" / "maturin", shutil.which("maturin")):
        if cand and Path(cand).exists():
            return str(cand)
    raise SystemExit("[versions] maturin not found: run `make venv` first")


def tag(minor):
    return "cp" + minor.replace(".", "")


def wheel(minor, src=None):
    """Build (or reuse) the wheel for `minor`; return its path."""
    src = src or source_hash()
    stamp_path = VENVS / f"wheel-{minor}.json"
    stamp = read_json(stamp_path)
    if stamp and stamp.get("source") == src and Path(stamp["wheel"]).exists():
        return Path(stamp["wheel"])
    py = pythons.find_cpython(minor)
    DIST.mkdir(exist_ok=True)
    pattern = f"cloudpickle_rs-*-{tag(minor)}-{tag(minor)}-*.whl"
    for old in DIST.glob(pattern):
        old.unlink()
    t0 = time.monotonic()
    log(f"building the {minor} wheel with {py}")
    run([maturin(), "build", "--release", "--quiet", "-i", py, "-o", DIST],
        f"maturin build for {minor}", env=clean_env(CARGO_TARGET_DIR=str(WHEEL_TARGET)), cwd=REPO)
    built = sorted(DIST.glob(pattern))
    if len(built) != 1:
        raise SystemExit(f"[versions] expected one {pattern} in {DIST}, found {built}")
    write_json(stamp_path, {"source": src, "wheel": str(built[0]), "python": str(py),
                            "seconds": round(time.monotonic() - t0, 1)})
    log(f"{minor}: {built[0].name} in {time.monotonic() - t0:.0f}s")
    return built[0]


def sender_env(minor, whl):
    """.venvs/send-3.X with requirements/sender.txt and `whl` installed; return its python."""
    target = VENVS / f"send-{minor}"
    py = target / "bin" / "python"
    want = {"wheel": file_hash(whl), "requirements": file_hash(SENDER_REQUIREMENTS),
            "layout": 1}
    stamp_path = target / "sender-stamp.json"
    stamp = read_json(stamp_path)
    if stamp and {k: stamp.get(k) for k in want} == want and py.exists():
        return py
    base = pythons.find_cpython(minor)
    if not (stamp and stamp.get("requirements") == want["requirements"] and py.exists()):
        shutil.rmtree(target, ignore_errors=True)
        log(f"send-{minor}: creating the venv from {base}")
        run([base, "-m", "venv", target], f"venv for {minor}")
        run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
             SENDER_REQUIREMENTS], f"pip install -r requirements/sender.txt on {minor}")
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--force-reinstall",
         "--no-deps", whl], f"pip install {whl.name}")
    where = run([py, "-I", "-c", "import cloudpickle_rs, cloudpickle_rs._native as n; print(n.__file__)"],
                f"import cloudpickle_rs on {minor}").strip()
    if str(target) not in where:
        raise SystemExit(f"[versions] send-{minor} imports cloudpickle_rs from {where}, not its venv")
    write_json(stamp_path, {**want, "native": where, "python": str(base)})
    return py


def senders(minors):
    with Lock("versions"):
        src = source_hash()
        return {m: sender_env(m, wheel(m, src)) for m in minors}


def run_suite(minor, py, extra):
    log_dir = VENVS / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"suite-{minor}.log"
    cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp=/tmp/cprs-suite-{minor}",
           "tests", *[f"--ignore={p}" for p in PER_VERSION_IGNORES], *extra]
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.run([str(c) for c in cmd], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                              env=clean_env(CLOUDPICKLE_RS_EXPECT_INSTALLED="1"),
                              stdin=subprocess.DEVNULL, timeout=3600)
    lines = log_path.read_text(errors="replace").strip().splitlines()
    summary = lines[-1] if lines else "(no output)"
    return minor, proc.returncode, summary, time.monotonic() - t0, log_path


def suite(minors, extra, jobs):
    envs = senders(minors)
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(run_suite, m, envs[m], extra) for m in minors]
        for fut in concurrent.futures.as_completed(futs):
            minor, rc, summary, secs, log_path = fut.result()
            print(f"CPython {minor:5s} {'ok    ' if rc == 0 else 'FAILED'} {summary}  "
                  f"({secs:.0f}s, log {log_path.relative_to(REPO)})", flush=True)
            if rc != 0:
                failed.append((minor, log_path))
    for minor, log_path in failed:
        text = log_path.read_text(errors="replace")
        print(f"\n===== CPython {minor}: the failures (from {log_path}) =====")
        start = text.find("= FAILURES =")
        print(text[max(0, start - 200):][-20000:] if start >= 0 else text[-20000:])
    return 1 if failed else 0


# --- compile-only versions ------------------------------------------------------------------

def pyo3_config(version):
    """A PYO3_CONFIG_FILE for an interpreter that is not installed: an extension module does
    not link libpython, so version, implementation and build flags are all pyo3 needs."""
    free_threaded = version.endswith("t")
    minor = version.rstrip("t")
    return "\n".join([
        "implementation=CPython",
        f"version={minor}",
        "shared=true",
        "abi3=false",
        f"lib_name=python{minor}{'t' if free_threaded else ''}",
        "pointer_width=64",
        f"build_flags={'Py_GIL_DISABLED' if free_threaded else ''}",
        "suppress_build_script_link_lines=false",
        "",
    ])


def future(versions):
    failed = []
    for v in versions:
        cfg = REPO / "target" / "pyo3-config" / f"{v}.txt"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(pyo3_config(v))
        env = clean_env(PYO3_CONFIG_FILE=str(cfg), CARGO_TARGET_DIR=str(REPO / "target" / f"check-{v}"))
        for what, cmd in (("cargo check", ["cargo", "check", "--quiet", "-p", "cloudpickle_rs"]),
                          ("cargo clippy", ["cargo", "clippy", "--quiet", "-p", "cloudpickle_rs",
                                            "--", "-D", "warnings"])):
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
            ok = proc.returncode == 0
            print(f"CPython {v:6s} {what:13s} {'ok' if ok else 'FAILED'} ({time.monotonic() - t0:.0f}s)",
                  flush=True)
            if not ok:
                print(proc.stdout[-8000:])
                failed.append((v, what))
    return 1 if failed else 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("wheels", "senders", "suite"):
        s = sub.add_parser(name)
        s.add_argument("versions", nargs="*")
        if name == "suite":
            s.add_argument("--jobs", type=int, default=2)
            s.add_argument("pytest_args", nargs=argparse.REMAINDER, default=[])
    f = sub.add_parser("future")
    f.add_argument("versions", nargs="*")
    args = p.parse_args(argv)
    if args.cmd == "future":
        return future(args.versions or list(pythons.COMPILE_ONLY))
    default = [v for v in pythons.SENDERS if args.cmd != "suite" or v != "3.11"]
    minors = args.versions or default
    unknown = [m for m in minors if m not in pythons.SENDERS]
    if unknown:
        p.error(f"not a sender version: {unknown} (senders: {pythons.SENDERS})")
    try:
        if args.cmd == "wheels":
            with Lock("versions"):
                src = source_hash()
                for m in minors:
                    print(wheel(m, src))
            return 0
        if args.cmd == "senders":
            for m, py in senders(minors).items():
                print(f"{m}: {py}")
            return 0
        extra = [a for a in args.pytest_args if a != "--"]
        return suite(minors, extra, args.jobs)
    except pythons.MissingInterpreter as e:
        print(f"[versions] {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
