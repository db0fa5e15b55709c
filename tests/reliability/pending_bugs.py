"""Reproducers of known bugs, kept out of the collected suite until the Rust side is fixed.

pytest does not collect this file on its own (it is not ``test_*.py``); run it explicitly:

    .venv/bin/python -m pytest tests/reliability/pending_bugs.py -v

Each test fails today and passes once its bug is fixed; then move it (or its case) into the
collected tests. Hostile cases defined here run in a child process like test_hostile.py's.
"""
import io
import os
import pickle
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostile_cases as hc  # noqa: E402
from hostile_cases import PENDING, case  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


PENDING_CASES = [(name, fam) for name, c in PENDING.items() for fam in c.families]


@pytest.mark.parametrize("name,family", PENDING_CASES)
def test_pending_hostile(name, family):
    import test_hostile

    c = PENDING[name]
    ours, refs, _ = test_hostile.run_case(name, c.timeout)
    test_hostile.check_outcome(name, c, family, ours[family], refs.get(family) if c.ref else None)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
