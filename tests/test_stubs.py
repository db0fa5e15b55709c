"""The `.pyi` stubs describe the extension as it is (mypy.stubtest against the built module)."""
import subprocess
import sys


def test_native_stubs_match_the_extension():
    proc = subprocess.run([sys.executable, "-m", "mypy.stubtest", "cloudpickle_rs._native"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
