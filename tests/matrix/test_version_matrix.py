"""The version matrix (issue 13): every sender CPython x every receiver x by_source / bytecode.

Senders are the wheels of tools/versions.py installed in ``.venvs/send-3.X`` (CPython 3.9-3.13),
the package as a user gets it. Each runs every by_source scenario of bs_scenarios.py its parser
accepts as ``__main__`` (one process per scenario), writing the by_source pickle and, in the same
process, the bytecode pickle of the same object. The scripts are then DELETED, and one batch
process per (sender, receiver) loads the pickles with plain ``pickle.loads``:

  * by_source streams: on CPython 3.8-3.13 and PyPy 3.9, each with only stock cloudpickle 3.1.2
    (plus CPython 3.13 with cloudpickle 3.1.3 and CPython 3.9 with 3.0.0);
  * bytecode streams: on the sender's own version (bytecode loads nowhere else).

Expected per scenario and receiver: the check gives what it gave on the original; or, where the
receiver's parser is older than the scenario's syntax (``Scenario.needs``, PyPy 3.9 for
``pypy="syntax"``), a SyntaxError at load time naming the script; or, for the few scenarios that
use a library feature a receiver lacks (``Scenario.receiver_needs``), a failure there (listed,
never counted as passing). ``by_source="auto"`` streams carry bytecode and are loaded on the same
version only. The matrix is printed (and written to ``.venvs/logs/matrix.json``) as
sender x receiver x mode -> passed / failed / expected-syntax-error counts.
"""
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BS = REPO / "tests" / "by_source"
for p in (str(BS), str(REPO / "tools"), str(REPO / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import bs_scenarios  # noqa: E402
from support import loaders, pythons  # noqa: E402

SCENARIOS = bs_scenarios.SCENARIOS
SENDERS = pythons.SENDERS
SOURCE_RECEIVERS = [f"recv-{v}" for v in pythons.RECEIVERS] + ["pypy39", "recv-3.13-cp313",
                                                                  "recv-3.9-cp300"]
RECEIVER_VERSION = {"pypy39": (3, 9), "recv-3.13-cp313": (3, 13), "recv-3.9-cp300": (3, 9)}
RECEIVER_VERSION.update({f"recv-{v}": pythons.version_tuple(v) for v in pythons.RECEIVERS})
JOBS = 2


def _sender_pythons():
    import versions  # tools/versions.py

    return versions.senders(list(SENDERS))


def _produce(python, script, outbase):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env.update(PYTHONHASHSEED="1", PYTHONPATH=str(BS), PYTHONDONTWRITEBYTECODE="1",
               BS_ALSO_BYTECODE="1", BS_TARGET_PYTHONS=",".join(pythons.RECEIVERS))
    proc = subprocess.run([str(python), str(script), str(outbase)], cwd=str(script.parent), env=env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    try:
        meta = json.loads(Path(str(outbase) + ".json").read_text())
    except (OSError, ValueError):
        meta = None
    return {"returncode": proc.returncode, "stderr": proc.stderr[-3000:], "meta": meta}


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    pythons_by_sender = _sender_pythons()
    root = tmp_path_factory.mktemp("matrix")
    jobs = []
    for sender in SENDERS:
        scripts, out = root / sender / "scripts", root / sender / "out"
        scripts.mkdir(parents=True)
        out.mkdir()
        for s in SCENARIOS:
            if max(s.needs, s.sender_needs) > pythons.version_tuple(sender):
                continue  # the sender's own parser (or library) rejects the script
            with open(scripts / f"{s.name}.py", "w", encoding=s.encoding, newline=s.newline) as f:
                f.write(s.script())
            jobs.append((sender, s.name))

    def run(job):
        sender, name = job
        return job, _produce(pythons_by_sender[sender], root / sender / "scripts" / f"{name}.py",
                             root / sender / "out" / name)

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        runs = dict(pool.map(run, jobs))
    for sender in SENDERS:
        shutil.rmtree(root / sender / "scripts")  # loaders must not find the source files
    return {"root": root, "runs": runs}


def _batch(env_name, sender, mode, produced, tmp_path_factory):
    python = loaders.loader_python(env_name)
    batch = tmp_path_factory.mktemp(f"load-{sender}-{env_name}-{mode}")
    cases = {}
    suffix = ".pkl" if mode == "source" else ".bytecode.pkl"
    for (snd, name), run in produced["runs"].items():
        if snd != sender or run["meta"] is None or "expected" not in run["meta"]:
            continue
        pkl = produced["root"] / sender / "out" / (name + suffix)
        if not pkl.exists() or _expectation(bs_scenarios.by_name()[name], sender, env_name, mode) is None:
            continue  # e.g. by_source="auto"'s bytecode on another version: it may even segfault
        shutil.copy(pkl, batch / f"{name}.pkl")
        cases[name] = {"check": bs_scenarios.by_name()[name].check, "script": run["meta"]["script"]}
    (batch / "load_cases.json").write_text(json.dumps(cases))
    shutil.copy(BS / "bs_check_prelude.py", batch / "bs_check_prelude.py")
    (batch / "cwd").mkdir()
    out = batch / "results.json"
    proc = subprocess.run([str(python), "-I", str(BS / "bs_load_batch.py"), str(batch), str(out)],
                          cwd=str(batch / "cwd"), capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    if not out.exists():
        return {"__crash__": f"exit {proc.returncode}: {proc.stderr[-4000:]}"}
    return json.loads(out.read_text())


def _pairs():
    pairs = [(s, r, "source") for s in SENDERS for r in SOURCE_RECEIVERS]
    pairs += [(s, r, "bytecode") for s in SENDERS for r in RECEIVER_VERSION
              if r != "pypy39" and RECEIVER_VERSION[r] == pythons.version_tuple(s)]
    return pairs


@pytest.fixture(scope="module")
def loaded(produced, tmp_path_factory):
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        futs = {p: pool.submit(_batch, p[1], p[0], p[2], produced, tmp_path_factory) for p in _pairs()}
        return {p: f.result() for p, f in futs.items()}


def _expectation(scen, sender, receiver, mode):
    """"pass", "syntax", "lacks:<why>" or None (not loaded there)."""
    if scen.mode == "error":
        return None
    rv = RECEIVER_VERSION[receiver]
    # the same CPython minor (another cloudpickle counts: recv-3.13-cp313, recv-3.9-cp300)
    same_version = receiver != "pypy39" and rv == pythons.version_tuple(sender)
    if scen.mode == "auto" and not same_version:
        return None  # "auto" may fall back to bytecode, which loads on the sender's version only
    if receiver == "pypy39" and scen.pypy == "skip":
        return None
    if scen.needs > rv or (receiver == "pypy39" and scen.pypy == "syntax"):
        return "syntax"
    lacking = [why for version, why in scen.receiver_needs if rv < version]
    if lacking:
        return "lacks:" + "; ".join(lacking)
    return "pass"


def _no_source_lines(value):
    """A bytecode stream carries no source lines (as upstream's): the receiver's tracebacks show
    none once the script is deleted. The scenarios' frames_in() summaries are compared without
    the source text of each frame."""
    if isinstance(value, dict):
        if "frames" in value and "shown" in value:
            return {**value, "frames": [f[:3] for f in value["frames"]], "shown": None}
        return {k: _no_source_lines(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_source_lines(v) for v in value]
    return value


def _outcome(scen, meta, result, expectation, mode):
    """(counted as, problem or None)."""
    if result is None:
        return "failed", "no result from the loader"
    err = result.get("error")
    if expectation == "syntax":
        if err and err["phase"] == "loads" and err["type"] == "SyntaxError" and err["filename"] == meta["script"]:
            return "syntax-error (expected)", None
        return "failed", f"expected a SyntaxError in {meta['script']} at load, got {err or result.get('result')!r}"
    if expectation.startswith("lacks:"):
        if err:
            return "lacks-feature (expected)", None
        return "failed", f"listed as lacking a feature ({expectation[6:]}) but passed: update receiver_needs"
    if err:
        return "failed", f"{err['phase']}: {err['type']}: {err['message']}\n{err['traceback'][-1500:]}"
    if result.get("load_output"):
        return "failed", f"loading printed {result['load_output']!r}"
    if result.get("script_exists"):
        return "failed", "the script still exists"
    got, want = result.get("result"), meta["expected"]
    if mode == "bytecode":
        got, want = _no_source_lines(got), _no_source_lines(want)
        for i in scen.source_lines_at:
            if got[i] != "":
                return "failed", f"item {i} of the result should be no source line, is {got[i]!r}"
            got, want = got[:i] + [None] + got[i + 1:], want[:i] + [None] + want[i + 1:]
    if got != want:
        return "failed", f"gives {result.get('result')!r}, the original gave {meta['expected']!r}"
    return "passed", None


def _evaluate(produced, loaded):
    table, problems = {}, {}
    for (sender, receiver, mode), results in loaded.items():
        counts = table.setdefault(f"{sender} -> {receiver} [{mode}]", {})
        probs = problems.setdefault((sender, receiver, mode), [])
        if "__crash__" in results:
            probs.append(f"the loader crashed: {results['__crash__']}")
            continue
        setup = results.get("__setup__", {})
        if setup.get("cloudpickle_rs_importable") or setup.get("cloudpickle_rs_imported"):
            probs.append(f"cloudpickle_rs is importable or imported in {receiver}: {setup}")
        for scen in SCENARIOS:
            run = produced["runs"].get((sender, scen.name))
            if run is None:
                continue  # the sender cannot parse it
            expectation = _expectation(scen, sender, receiver, mode)
            if expectation is None:
                continue
            meta = run["meta"]
            if meta is None or "expected" not in meta or (mode == "bytecode" and "bytecode_error" in meta):
                counts["failed"] = counts.get("failed", 0) + 1
                probs.append(f"{scen.name}: the sender produced nothing: {run['stderr'][-1500:]}"
                             f"{(meta or {}).get('check_error', '')}{(meta or {}).get('bytecode_error', '')}")
                continue
            kind, problem = _outcome(scen, meta, results.get(scen.name), expectation, mode)
            counts[kind] = counts.get(kind, 0) + 1
            if problem:
                probs.append(f"{scen.name}: {problem}")
    return table, problems


@pytest.fixture(scope="module")
def matrix(produced, loaded):
    table, problems = _evaluate(produced, loaded)
    lines = ["", "version matrix (sender -> receiver [mode]: counts)"]
    for key in sorted(table, key=lambda k: (pythons.version_tuple(k.split()[0]), k)):
        counts = ", ".join(f"{v} {k}" for k, v in sorted(table[key].items()))
        lines.append(f"  {key:45s} {counts}")
    text = "\n".join(lines)
    print(text)
    logs = REPO / ".venvs" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "matrix.json").write_text(json.dumps(table, indent=1, sort_keys=True))
    (logs / "matrix.txt").write_text(text + "\n")
    return table, problems


def test_every_sender_produced_every_scenario(produced):
    bad = []
    for (sender, name), run in sorted(produced["runs"].items()):
        scen = bs_scenarios.by_name()[name]
        meta = run["meta"]
        if scen.mode == "error":
            if not meta or meta.get("error_type") is None:
                bad.append(f"{sender} {name}: by_source=True did not refuse")
        elif run["returncode"] != 0 or not meta or "expected" not in meta:
            bad.append(f"{sender} {name}: exit {run['returncode']}: {run['stderr'][-800:]}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("sender", SENDERS)
def test_target_python_refuses_at_dump_time(sender, produced):
    """Every source scenario dumped again with target_python=3.8..3.13: refused exactly where the
    matrix expects a SyntaxError (the scenario's syntax is newer than the target), with a
    message naming the function's construct and the version it needs; accepted elsewhere."""
    bad, refused = [], 0
    for (snd, name), run in sorted(produced["runs"].items()):
        scen = bs_scenarios.by_name()[name]
        if snd != sender or scen.mode != "source" or not run["meta"]:
            continue
        got = run["meta"].get("target_python")
        if got is None:
            bad.append(f"{name}: the producer did not try target_python")
            continue
        for minor in pythons.RECEIVERS:
            message = got.get(minor, "missing")
            if scen.needs > pythons.version_tuple(minor):
                refused += 1
                want = f"Python {scen.needs[0]}.{scen.needs[1]}+"
                if message is None:
                    bad.append(f"{name}: target_python={minor} accepted syntax that needs {want}")
                elif f"for Python {minor}" not in message or want not in message:
                    bad.append(f"{name}: target_python={minor}: the message does not say "
                               f"'for Python {minor}' and {want!r}: {message}")
            elif message is not None:
                bad.append(f"{name}: target_python={minor} refused a function {minor} can load: {message}")
    assert not bad, "\n".join(bad)
    assert refused > 0  # every sender parses something 3.8 cannot (3.9: parenthesized with)


@pytest.mark.parametrize("sender,receiver,mode", _pairs(),
                         ids=[f"{s}-{r}-{m}" for s, r, m in _pairs()])
def test_matrix_cell(sender, receiver, mode, matrix):
    table, problems = matrix
    counts = table[f"{sender} -> {receiver} [{mode}]"]
    probs = problems[(sender, receiver, mode)]
    assert not probs, f"{sender} -> {receiver} [{mode}] {counts}:\n" + "\n".join(probs)
    assert counts.get("passed", 0) > 0, f"nothing passed in {sender} -> {receiver} [{mode}]: {counts}"
