"""by_source end to end (issue 4, DESIGN.md sections 1-2).

Every scenario of bs_scenarios.py is a script run as ``__main__`` in a fresh CPython 3.11 (the
.venv interpreter, which has cloudpickle_rs) that pickles its object with ``by_source=True``. It is
run twice, with PYTHONHASHSEED=1 and 2 (the bytes must be identical); then the script file is
DELETED and the pickles are loaded by one batch process per loader environment:
  * ``stock-cp312``: CPython 3.11 with only stock cloudpickle 3.1.2
  * ``pypy39``: PyPy 3.9 with only stock cloudpickle 3.1.2
Each loader runs the scenario's check on the loaded object and must get what the producer's check
computed on the original object. Scenarios with syntax PyPy 3.9 cannot parse must fail there with a
SyntaxError in the script's file. No by_source stream may build a code object (pickletools audit).

Scenarios that fail because of a bug in cloudpickle_rs are listed in KNOWN_FAILING with the reason;
they are not tested as passing, and ``test_known_failing_still_fails`` asserts that they still fail
(so the list cannot rot: fix the bug, then drop the entry).
"""
import json
import os
import pickletools
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bs_scenarios import NOTSET, by_name  # noqa: E402
from bs_scenarios import SCENARIOS as _ALL_SCENARIOS  # noqa: E402

# Scenarios this interpreter can run at all (match needs 3.10, except* 3.11 on the sender too).
SCENARIOS = [s for s in _ALL_SCENARIOS if max(s.needs, s.sender_needs) <= sys.version_info[:2]]

ENVS = ("stock-cp312", "pypy39")
PRODUCER = sys.executable  # the .venv CPython 3.11, which has cloudpickle_rs

# name -> why it fails (a cloudpickle_rs bug; see the module docstring).
KNOWN_FAILING = {
}

# name -> a fragment of the failure text that shows it still fails for the listed reason.
KNOWN_SYMPTOM = {
}

SCEN = by_name()
ALL = [s.name for s in SCENARIOS]
PASSING = [n for n in ALL if n not in KNOWN_FAILING]
LOADED = [n for n in ALL if SCEN[n].mode != "error"]


# ------------------------------------------------------------------------------------------------
# Producing and loading (once per module)


def _produce(script: Path, outbase: Path, hashseed: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONHASHSEED=hashseed, PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([PRODUCER, str(script), str(outbase)], cwd=str(script.parent), env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    meta = None
    try:
        meta = json.loads(Path(str(outbase) + ".json").read_text())
    except (OSError, ValueError):
        pass
    return {"returncode": proc.returncode, "stderr": proc.stderr[-4000:], "meta": meta}


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    root = tmp_path_factory.mktemp("by_source")
    scripts = root / "scripts"
    scripts.mkdir()
    outs = {seed: root / f"seed{seed}" for seed in ("1", "2")}
    for d in outs.values():
        d.mkdir()
    for s in SCENARIOS:
        with open(scripts / f"{s.name}.py", "w", encoding=s.encoding, newline=s.newline) as f:
            f.write(s.script())
    def both_seeds(name):  # one after the other: a script may touch its own file (and restore it)
        return [_produce(scripts / f"{name}.py", outs[seed] / name, seed) for seed in outs]

    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = {}
        for name, res in zip(ALL, pool.map(both_seeds, ALL)):
            runs.update({(name, seed): r for seed, r in zip(outs, res)})
    shutil.rmtree(scripts)  # the loaders must work without the source files
    assert not scripts.exists()
    return {"root": root, "dir": outs["1"], "dir2": outs["2"], "runs": runs}


def _load_batch(env_name, produced, tmp_path_factory):
    from support.loaders import loader_python

    python = loader_python(env_name)
    batch = tmp_path_factory.mktemp(f"load-{env_name}")
    cases = {}
    for name in LOADED:
        scen, run = SCEN[name], produced["runs"][(name, "1")]
        if env_name == "pypy39" and scen.pypy == "skip":
            continue
        pkl = produced["dir"] / f"{name}.pkl"
        if run["meta"] is None or not pkl.exists():
            continue
        shutil.copy(pkl, batch / pkl.name)
        cases[name] = {"check": scen.check, "script": run["meta"]["script"]}
    (batch / "load_cases.json").write_text(json.dumps(cases))
    shutil.copy(HERE / "bs_check_prelude.py", batch / "bs_check_prelude.py")
    cwd = batch / "cwd"
    cwd.mkdir()
    out = batch / "results.json"
    proc = subprocess.run([str(python), "-I", str(HERE / "bs_load_batch.py"), str(batch), str(out)],
                          cwd=str(cwd), capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert out.exists(), f"{env_name} batch loader crashed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    results = json.loads(out.read_text())
    setup = results.pop("__setup__")
    assert setup["cloudpickle_rs_importable"] is False, setup
    assert setup["cloudpickle_rs_imported"] is False, setup
    assert setup["cloudpickle_version"] == "3.1.2", setup
    return results


@pytest.fixture(scope="module")
def loaded(produced, tmp_path_factory):
    return {env: _load_batch(env, produced, tmp_path_factory) for env in ENVS}


# ------------------------------------------------------------------------------------------------
# What "passes" means, per scenario and environment (also used to prove KNOWN_FAILING still fail)


def producer_problems(name, produced):
    scen, run = SCEN[name], produced["runs"][(name, "1")]
    meta = run["meta"]
    if run["returncode"] != 0 or meta is None:
        return [f"producer failed (exit {run['returncode']}):\n{run['stderr']}"]
    if scen.mode == "error":
        return error_mode_problems(meta, scen.error_needles)
    probs = []
    if "check_error" in meta:
        probs.append(f"check failed on the ORIGINAL object (fix the scenario):\n{meta['check_error']}")
    elif scen.expect is not NOTSET:
        ok = scen.expect(meta["expected"]) if callable(scen.expect) else meta["expected"] == scen.expect
        if not ok:
            probs.append(f"the original gives {meta['expected']!r}, not what the scenario expects")
    if scen.mode == "source" and meta["warnings"]:
        probs.append(f"by_source=True warned: {meta['warnings']}")
    if scen.mode == "auto":
        probs += auto_mode_problems(meta)
    return probs


def error_mode_problems(meta, needles):
    msg = meta.get("error_message") or ""
    probs = []
    if meta.get("error_type") is None:
        return ["by_source=True pickled a function that has no source instead of raising"]
    if "_pickle.PicklingError" not in meta["error_mro"] and "pickle.PicklingError" not in meta["error_mro"]:
        probs.append(f"raised {meta['error_type']} ({meta['error_mro']}), not a pickle.PicklingError")
    for needle in needles:
        if needle not in msg:
            probs.append(f"message does not mention {needle!r}: {msg!r}")
    return probs


def auto_mode_problems(meta):
    ws = meta["warnings"]
    probs = []
    if len(ws) != 1:
        probs.append(f"expected exactly one warning (for 'orphan'), got {ws}")
    for w in ws:
        if "orphan" not in w["message"] or "with_source" in w["message"]:
            probs.append(f"warning does not name exactly the function that fell back: {w['message']!r}")
        if not w["is_native_SourceFallbackWarning"]:
            probs.append(f"warning category is {w['category']}, not SourceFallbackWarning")
        if not w["filename"].endswith("bs_producer.py"):
            probs.append(f"the warning points at {w['filename']}, not at the caller of dumps "
                         "(bs_producer.py)")
        if not w["is_SourceFallbackWarning"]:
            probs.append("the warning is not a cloudpickle_rs.SourceFallbackWarning "
                         f"(package exports it: {meta['package_exports_SourceFallbackWarning']})")
    return probs


def load_problems(name, env, produced, loaded):
    scen, meta = SCEN[name], produced["runs"][(name, "1")]["meta"]
    if scen.mode == "error" or (env == "pypy39" and scen.pypy == "skip"):
        return []
    if meta is None or "expected" not in meta:
        return ["no producer result to compare with (see the producer problems)"]
    r = loaded[env].get(name)
    if r is None:
        return ["the producer wrote no pickle"]
    if env == "pypy39" and scen.pypy == "syntax":
        e = r.get("error")
        if e is None:
            return ["PyPy 3.9 loaded syntax it cannot parse without a SyntaxError"]
        if e["phase"] != "loads" or e["type"] != "SyntaxError" or e["filename"] != meta["script"]:
            return [f"expected a SyntaxError in {meta['script']} while loading, got: {e['type']} "
                    f"({e['phase']}, file {e['filename']!r}): {e['message']}\n{e['traceback']}"]
        return []
    if "error" in r:
        e = r["error"]
        return [f"{e['phase']} failed on {env}: {e['type']}: {e['message']}\n{e['traceback']}"]
    probs = []
    if r["load_output"]:
        probs.append(f"loading printed (a decorator or other code ran on load?): {r['load_output']!r}")
    if r["script_exists"]:
        probs.append("the script file still exists: the test would not prove anything")
    if r["result"] != meta["expected"]:
        probs.append(f"loaded object gives {r['result']!r}\n   the original gave {meta['expected']!r}")
    return probs


# --- the no-code-object audit -------------------------------------------------------------------

_PUSH_ARG = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
             "BINSTRING", "STRING", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BININT", "BININT1",
             "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"}
_KEEP_FIRST = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "BUILD", "ADDITEMS"}


class _Mark:
    pass


def audit_stream(data):
    """Symbolically run the opcodes: every global referenced and every REDUCE call (callable,
    args), with strings/ints/tuples tracked through the stack and the memo."""
    stack, memo, globs, calls = [], {}, [], []
    for op, arg, _pos in pickletools.genops(data):
        n = op.name
        if n == "MARK":
            stack.append(_Mark())
            continue
        if n in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
            continue
        if n == "MEMOIZE":
            memo[len(memo)] = stack[-1]
            continue
        if n in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
            continue
        if n == "DUP":
            stack.append(stack[-1])
            continue
        before = op.stack_before
        if pickletools.markobject in before:
            i = max(k for k, x in enumerate(stack) if isinstance(x, _Mark))
            items = stack[i + 1:]
            del stack[i:]
            k = before.index(pickletools.markobject)
            prefix = stack[len(stack) - k:] if k else []
            del stack[len(stack) - k:]
            popped = prefix + [tuple(items)]
        else:
            k = len(before)
            popped = stack[len(stack) - k:] if k else []
            del stack[len(stack) - k:]
        if n in _PUSH_ARG:
            stack.append(arg)
        elif n == "GLOBAL":
            mod, _, name = arg.partition(" ")
            mod = {"__builtin__": "builtins"}.get(mod, mod)  # protocols 0-2 with fix_imports
            globs.append((mod, name))
            stack.append(("global", mod, name))
        elif n == "STACK_GLOBAL":
            mod, name = popped
            globs.append((mod, name))
            stack.append(("global", mod, name))
        elif n in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
            stack.append(popped[0] if n == "TUPLE" else tuple(popped))
        elif n == "REDUCE":
            calls.append((popped[0], popped[1]))
            stack.append(("call", popped[0]))
        elif n in _KEEP_FIRST:
            stack.append(popped[0])
        else:
            stack.extend(("?", n) for _ in op.stack_after)
    return globs, calls


def code_objects_in(data):
    """Ways the stream builds a code object (empty = none)."""
    globs, calls = audit_stream(data)
    found = [f"global {m}.{n}" for m, n in globs
             if n in ("CodeType", "code") and m in ("types", "builtins", "__builtin__")
             or m == "marshal" or n == "CodeType"]
    for func, args in calls:
        if func[:1] == ("global",) and func[2] == "_builtin_type" and isinstance(args, tuple) \
                and any(a in ("CodeType", "code") for a in args):
            found.append(f"{func[1]}._builtin_type{args!r}")
    return found


def stream_problems(name, produced):
    scen = SCEN[name]
    if scen.mode == "error":
        return []
    a, b = produced["dir"] / f"{name}.pkl", produced["dir2"] / f"{name}.pkl"
    if not (a.exists() and b.exists()):
        return ["no pickle written (see the producer problems)"]
    data = a.read_bytes()
    probs = []
    if data != b.read_bytes():
        probs.append("PYTHONHASHSEED=1 and =2 wrote different bytes")
    found = code_objects_in(data)
    if scen.mode == "source":
        if found:
            probs.append(f"by_source stream builds a code object: {found}")
        globs, _ = audit_stream(data)
        if scen.sends_source and ("builtins", "compile") not in globs:
            probs.append("no builtins.compile in the stream: was any function sent as source?")
        bad = [g for g in globs if g[0] == "__main__" or g[0].startswith("cloudpickle_rs")]
        if bad:
            probs.append(f"the stream references {bad}")
    elif scen.mode == "auto" and not found:
        probs.append("by_source='auto' fallback stream has no code object: the audit is blind")
    return probs


def all_problems(name, produced, loaded):
    probs = [f"[producer] {p}" for p in producer_problems(name, produced)]
    probs += [f"[stream] {p}" for p in stream_problems(name, produced)]
    for env in ENVS:
        probs += [f"[{env}] {p}" for p in load_problems(name, env, produced, loaded)]
    return probs


# ------------------------------------------------------------------------------------------------
# Tests


def test_enough_scenarios():
    loadable = [n for n in ALL if SCEN[n].mode == "source"]
    assert len(loadable) >= 50, len(loadable)
    assert not set(KNOWN_FAILING) - set(ALL), "KNOWN_FAILING names unknown scenarios"
    assert set(KNOWN_SYMPTOM) == set(KNOWN_FAILING)


def test_audit_sees_code_objects():
    """The audit is not blind: stock bytecode mode builds a code object it finds."""
    import cloudpickle_rs

    f = eval("lambda x: x + 1")
    data = cloudpickle_rs.dumps(f, by_source=False)
    assert code_objects_in(data), "the audit finds no code object in a bytecode-mode stream"


@pytest.mark.parametrize("name", PASSING)
def test_producer(name, produced):
    probs = producer_problems(name, produced)
    assert not probs, "\n".join(probs)


@pytest.mark.parametrize("name", [n for n in PASSING if SCEN[n].mode != "error"])
def test_stream_no_code_object_and_deterministic(name, produced):
    probs = stream_problems(name, produced)
    assert not probs, "\n".join(probs)


@pytest.mark.parametrize("name", [n for n in PASSING if SCEN[n].mode != "error"])
def test_load_cpython311_stock(name, produced, loaded):
    probs = load_problems(name, "stock-cp312", produced, loaded)
    assert not probs, "\n".join(probs)


@pytest.mark.parametrize("name", [n for n in PASSING if SCEN[n].mode != "error" and SCEN[n].pypy != "skip"])
def test_load_pypy39(name, produced, loaded):
    probs = load_problems(name, "pypy39", produced, loaded)
    assert not probs, "\n".join(probs)


@pytest.mark.parametrize("name", sorted(KNOWN_FAILING) or ["(none)"])
def test_known_failing_still_fails(name, produced, loaded):
    if name == "(none)":
        return
    probs = all_problems(name, produced, loaded)
    assert probs, (f"{name} now passes everywhere: remove it from KNOWN_FAILING "
                   f"(was: {KNOWN_FAILING[name]})")
    text = "\n".join(probs)
    assert KNOWN_SYMPTOM[name] in text, f"{name} fails, but no longer as listed:\n{text}"
