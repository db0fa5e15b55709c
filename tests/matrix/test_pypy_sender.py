"""PyPy 3.9 as a sender: pyo3 0.30 supports PyPy 3.11 and later only, so building the extension
for PyPy 3.9 must fail, and say why, before anything is compiled (PyPy 3.9 stays a receiver:
the version matrix loads every by_source stream there)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from support import loaders  # noqa: E402


def test_building_for_pypy39_fails_with_the_reason():
    pypy = loaders._find_pypy39()  # installs Debian's pypy3 when missing; fails loudly otherwise
    maturin = REPO / ".venv" / "bin" / "maturin"
    assert maturin.exists(), "run `make venv` first"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env["CARGO_TARGET_DIR"] = str(REPO / "target" / "pypy39-refusal")
    out = REPO / "target" / "pypy39-refusal" / "wheels"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([str(maturin), "build", "--release", "-i", pypy, "-o", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"a PyPy 3.9 build succeeded: update the README's support matrix\n{text[-3000:]}"
    assert "lower than PyO3's minimum supported version (3.11)" in text, text[-3000:]
    assert not list(out.glob("*.whl"))
