#!/usr/bin/env bash
# Run cloudpickle's own test suite (a checkout of github cloudpipe/cloudpickle at tag v3.1.2)
# against cloudpickle_rs, through a shim package named `cloudpickle`.
#
#   tools/run_cloudpickle_suite.sh PATH_TO_CHECKOUT [pytest args...]
#   make cloudpickle-suite CP_CHECKOUT=/path [CP_SUITE_ARGS="-x -k closure"]
#
# Environment:
#   CP_SUITE_TARGET=cloudpickle_rs (default) | stock
#       stock = the same venv and shim, but the shim keeps stock cloudpickle's API (baseline run:
#       checks the harness; every test should pass).
#   CP_SUITE_REBUILD=1 (default) | 0      0 = reuse the cloudpickle_rs already in the venv.
#   CP_SUITE_TIMEOUT=300                  per-test timeout (pytest-timeout), seconds.
#   CP_SUITE_EXCLUSIONS=tools/cloudpickle_suite_exclusions.txt   test ids to deselect.
#   CP_SUITE_PYTHON=3.9                   run on that sender version instead of .venv's 3.11: its
#       CPython (tests/support/pythons.py), its wheel from `tools/versions.py wheels 3.9`, and the
#       venv .venvs/cp-suite-3.9.
#
# Nothing from the checkout is copied into this repository.  The suite runs from a staging copy
# (.venvs/cp-suite/stage) of the checkout's tests/ and tox.ini.
#
# How the pieces fit, and why:
#
# * Venv .venvs/cp-suite (gitignored): CPython 3.11 with the suite's test deps as listed in its
#   dev-requirements.txt (pytest, psutil, tornado, numpy, ./tests/cloudpickle_testpkg; not the
#   linters/coverage tools), plus pytest-timeout so one hanging test cannot stall the run.
#
# * Our package: `maturin build --release -i .venv/bin/python` then `pip install --no-deps` of
#   that wheel into the venv (a real installed copy, as users get it).  The build uses .venv's
#   interpreter, the one `make build` uses, so cargo reuses `make build`'s artefacts; a
#   `maturin develop` aimed at another venv changes PYO3_PYTHON and recompiles pyo3 and our
#   crates each time the two alternate.  --no-deps: our wheel depends on `cloudpickle`, which is
#   provided here by the shim below.  The build holds the repo's .build.lock like `make build`.
#
# * The shim (tools/cloudpickle_shim.py): stock cloudpickle 3.1.2 is pip-installed as the real
#   `cloudpickle` distribution, its cloudpickle/cloudpickle.py left byte-for-byte as shipped, and
#   only cloudpickle/__init__.py is replaced by one that re-exports cloudpickle_rs's public API and
#   rebinds the pickling entry points (Pickler, CloudPickler, dump, dumps, the by-value registry)
#   inside cloudpickle.cloudpickle to ours.  We chose this over vendoring stock as a renamed
#   `_stock_cloudpickle` package because:
#     - the reconstructors a stream names (cloudpickle.cloudpickle._make_function, _make_cell,
#       _class_setstate, subimport, ...) are then the real functions, defined in the module of
#       that name: their __module__ is "cloudpickle.cloudpickle".  Under a renamed copy their
#       __module__ would be "_stock_cloudpickle.cloudpickle", so any reconstructor that reaches
#       our pickler as an object (a stock reducer's return value, a test pickling _make_cell,
#       whichmodule) would be written as `_stock_cloudpickle.cloudpickle.X`: the suite would pass
#       while the stream breaks the wire contract on a real receiver;
#     - there is one module, so one class tracker (_DYNAMIC_CLASS_TRACKER_*) and one
#       pickle-by-value registry, shared by the reconstructors, the tests and our pickler;
#     - the tests that import private helpers (`from cloudpickle.cloudpickle import
#       _should_pickle_by_reference, _whichmodule, ...`) find them.
#   It is installed into the venv's site-packages, not put on PYTHONPATH, because the suite's
#   helpers (tests/testutils.py) overwrite PYTHONPATH for their child processes.
#
# * Staging: the suite's child processes run with cwd = the checkout root and
#   PYTHONPATH=<root>/tests:<root>, and pytest (rootdir import mode) puts <root> on sys.path.  In
#   the checkout, <root>/cloudpickle/ (stock's source) would shadow the shim in the test process
#   and every child, and the run would silently test stock.  So the runner copies tests/ and
#   tox.ini (its [pytest] section: addopts = -s) into a staging root with no cloudpickle/, and runs
#   `python -m pytest -r s tests` there with PYTHONPATH=.:tests, as upstream CI does.  Tests that
#   write into tests/ (old_pickles, mock_local_folder) write into the staging copy.
set -euo pipefail

usage() { sed -n '2,14p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
CHECKOUT=$(cd "$1" && pwd) || usage
shift

REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE_PYTHON=${CP_SUITE_PYTHON:-}
VENV="$REPO/.venvs/cp-suite${SUITE_PYTHON:+-$SUITE_PYTHON}"
PY="$VENV/bin/python"
STAGE="$VENV/stage"
TARGET=${CP_SUITE_TARGET:-cloudpickle_rs}
REBUILD=${CP_SUITE_REBUILD:-1}
TIMEOUT=${CP_SUITE_TIMEOUT:-300}
EXCLUSIONS=${CP_SUITE_EXCLUSIONS:-$REPO/tools/cloudpickle_suite_exclusions.txt}
BASE_PYTHON=${PYTHON:-python3}
NUMPY=numpy==2.2.6
if [[ -n "$SUITE_PYTHON" ]]; then
    BASE_PYTHON=$(python3 -c "import sys; sys.path.insert(0, '$REPO/tests/support'); import pythons; print(pythons.find_cpython('$SUITE_PYTHON'))")
    [[ "$SUITE_PYTHON" == 3.9 ]] && NUMPY=numpy==2.0.2   # the last numpy for 3.9
fi
# The suite's test deps (from its dev-requirements.txt), pinned.
DEPS=(pytest==8.3.5 pytest-timeout==2.3.1 psutil==7.0.0 tornado==6.5.2 "$NUMPY" setuptools)

case "$TARGET" in cloudpickle_rs|stock) ;; *) echo "CP_SUITE_TARGET must be cloudpickle_rs or stock" >&2; exit 2;; esac
[[ -f "$CHECKOUT/tests/cloudpickle_test.py" && -d "$CHECKOUT/tests/cloudpickle_testpkg" ]] \
    || { echo "$CHECKOUT is not a cloudpickle checkout (no tests/cloudpickle_test.py)" >&2; exit 2; }
if grep -q '__version__' "$CHECKOUT/cloudpickle/__init__.py" 2>/dev/null; then
    ver=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$CHECKOUT/cloudpickle/__init__.py")
    [[ "$ver" == 3.1.2 ]] || echo "warning: checkout is cloudpickle $ver, the shim is stock 3.1.2" >&2
fi

unset PYTHONPATH PYTHONHOME
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
t_start=$SECONDS

# --- 1. venv with the suite's test deps (stamped, so reruns are quick) -------------------------
mkdir -p "$REPO/.venvs"
exec 9>"$REPO/.venvs/cp-suite${SUITE_PYTHON:+-$SUITE_PYTHON}.lock"
flock 9   # one runner at a time: the shim and the staging copy are shared
DEPS_STAMP="$VENV/.deps-stamp"
want_stamp="${DEPS[*]} | testpkg $(cd "$CHECKOUT/tests/cloudpickle_testpkg" && find . -type f -name '*.py' | sort | xargs cat | sha256sum | cut -c1-16)"
if [[ ! -x "$PY" || "$(cat "$DEPS_STAMP" 2>/dev/null)" != "$want_stamp" ]]; then
    echo "== creating $VENV"
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q "${DEPS[@]}"
    # the suite's utility package, installed from a copy (pip builds in place otherwise)
    tmp_pkg=$(mktemp -d)
    cp -r "$CHECKOUT/tests/cloudpickle_testpkg/." "$tmp_pkg/"
    "$PY" -m pip install -q "$tmp_pkg"
    rm -rf "$tmp_pkg"
    echo "$want_stamp" > "$DEPS_STAMP"
fi

# --- 2. our package ---------------------------------------------------------------------------
if [[ "$TARGET" == cloudpickle_rs ]]; then
    if [[ "$REBUILD" == 1 || -z "$("$PY" -c 'import importlib.util as u; print(u.find_spec("cloudpickle_rs") or "")' 2>/dev/null)" ]]; then
        [[ -x "$REPO/.venv/bin/maturin" ]] || make -C "$REPO" venv
        if [[ -n "$SUITE_PYTHON" ]]; then
            echo "== the $SUITE_PYTHON wheel (tools/versions.py)"
            whl=$(python3 "$REPO/tools/versions.py" wheels "$SUITE_PYTHON" | tail -1)
            "$PY" -m pip install -q --no-deps --force-reinstall "$whl"
        else
            echo "== building cloudpickle_rs (release wheel)"
            WHEELS="$VENV/wheels"
            rm -rf "$WHEELS"
            (cd "$REPO" && VIRTUAL_ENV="$REPO/.venv" flock .build.lock "$REPO/.venv/bin/maturin" build \
                --release --quiet -i "$REPO/.venv/bin/python" --out "$WHEELS")
            "$PY" -m pip install -q --no-deps --force-reinstall "$WHEELS"/*.whl
        fi
    fi
fi

# --- 3. the shim: stock cloudpickle 3.1.2 with our API on top ----------------------------------
"$PY" -m pip install -q --no-deps --force-reinstall cloudpickle==3.1.2
"$PY" "$REPO/tools/cloudpickle_shim.py" install --target "$TARGET"
(cd / && "$PY" "$REPO/tools/cloudpickle_shim.py" check --target "$TARGET")

# --- 4. staging copy of the suite, without the checkout's cloudpickle/ ------------------------
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp -r "$CHECKOUT/tests" "$STAGE/tests"
[[ -f "$CHECKOUT/tox.ini" ]] && cp "$CHECKOUT/tox.ini" "$STAGE/"
find "$STAGE" -name '__pycache__' -prune -exec rm -rf {} +

deselect=()
if [[ -f "$EXCLUSIONS" ]]; then
    while IFS= read -r line; do
        id=${line%%#*}; id=$(echo "$id" | xargs)
        [[ -n "$id" ]] && deselect+=(--deselect "$id")
    done < "$EXCLUSIONS"
fi
echo "== running the suite: target=$TARGET, ${#deselect[@]} deselect args from $(basename "$EXCLUSIONS"), setup took $((SECONDS - t_start))s"

# --- 5. run ------------------------------------------------------------------------------------
cd "$STAGE"
t_run=$SECONDS
set +e
PYTHONPATH=".:tests" "$PY" -m pytest -r s -p no:cacheprovider --timeout="$TIMEOUT" \
    "${deselect[@]}" tests "$@" 2>&1 | tee "$VENV/last-run.log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed)\b.* in [0-9.]+s' "$VENV/last-run.log" | tail -1 | sed 's/^=* *//; s/ *=*$//')
echo "== cloudpickle suite ($TARGET): ${summary:-no summary line} [pytest $((SECONDS - t_run))s, total $((SECONDS - t_start))s, exit $rc, log $VENV/last-run.log]"
exit "$rc"
