#!/usr/bin/env python3
"""Run a subset of the reliability tests under valgrind (memcheck); not part of CI (slow).

    python tools/fuzz_valgrind.py [--python .venv/bin/python] [--seeds 200] [--dumps 2000]

Each run uses PYTHONMALLOC=malloc (so valgrind sees every Python allocation) and Debian's
python3.supp suppressions, and is compared against a baseline run that only imports the packages:
  - fuzz: fuzz_harness child over --seeds differential examples;
  - leak: leak_check.py --dumps N (every entry point, raising dumps included);
  - hostile: a handful of hostile cases (each in its own valgrind run).
Reported per run: memcheck error contexts (invalid reads/writes, uninitialised values, bad
frees) not seen in the baseline and those with a frame in our extension, and "definitely lost"
bytes (one-time allocations at module init and tracemalloc's own excluded). Exit status 1 on an
error context in _native, a crash, or a definite loss over --lost-slack bytes in one run.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "tests", "reliability")
SUPP = "/usr/lib/valgrind/python3.supp"
HOSTILE = ["reduce_returns_seven_tuple", "hook_GetStateRaises", "list_cleared_during_walk", "dict_grows_during_walk",
           "set_grows_during_walk", "attr_GetattrRecurses", "persistent_id_raises", "reducer_override_raises",
           "reducer_override_calls_dump", "file_write_raises_on_large", "deep_list", "deep_reduce_chain",
           "picklebuffer_released", "reduce_calls_dumps_nested", "unpicklable_frame"]

_RECORD = re.compile(r"\n==\d+== \n")
_ERROR_KINDS = ("Invalid ", "Conditional jump", "Use of uninitialised", "Syscall param", "Mismatched free",
                "Source and destination overlap", "Argument 'size'")
# One-time allocations that live as long as the process (pyo3 method defs and type specs made at
# module init) and tracemalloc's own bookkeeping: not leaks of a dump.
_ONCE = ("PyInit__native", "_tracemalloc.c")


def _frames(record):
    return [re.sub(r"^==\d+== +", "", ln).split(": ", 1)[-1] for ln in record.splitlines()
            if re.match(r"^==\d+== +(at|by) ", ln)]


def parse(text):
    """(error contexts, definitely-lost records) of a memcheck log."""
    errors, lost = [], []
    for rec in _RECORD.split(text):
        body = [re.sub(r"^==\d+== ?", "", ln) for ln in rec.splitlines() if ln.startswith("==")]
        if not body:
            continue
        head = body[0].strip()
        frames = _frames(rec)
        if head.startswith(_ERROR_KINDS):
            errors.append((head, tuple(f[:120] for f in frames[:4]), any("_native" in f for f in frames)))
        m = re.match(r"([\d,]+) bytes in ([\d,]+) blocks are definitely lost", head)
        if m:
            lost.append((int(m.group(1).replace(",", "")), tuple(f[:120] for f in frames[1:4]),
                         any(o in f for f in frames for o in _ONCE), any("_native" in f for f in frames)))
    return errors, lost


def valgrind(python, args, log):
    cmd = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
           "--errors-for-leak-kinds=none", "--num-callers=30", f"--log-file={log}"]
    if os.path.exists(SUPP):
        cmd.append(f"--suppressions={SUPP}")
    # PYTHONHASHSEED=0: valgrind does not see getrandom() fill the hash key, and everything
    # ordered by str hashes (set iteration, so memo indices) would be reported as uninitialised.
    env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONHASHSEED="0")
    t0 = time.monotonic()
    proc = subprocess.run(cmd + [python] + args, capture_output=True, text=True, cwd=REL, env=env)
    secs = time.monotonic() - t0
    errors, lost = parse(open(log).read())
    return {"rc": proc.returncode, "errors": errors, "lost": lost, "seconds": round(secs, 1), "log": log,
            "stderr": proc.stderr[-400:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--dumps", type=int, default=2000)
    ap.add_argument("--lost-slack", type=int, default=4096)
    ap.add_argument("--logs", default=tempfile.mkdtemp(prefix="valgrind-"))
    args = ap.parse_args(argv)
    os.makedirs(args.logs, exist_ok=True)
    runs = {
        # imports, plus a protocol-0 round trip with stdlib pickle: CPython 3.11's own reports
        # (PyLong_FromString of "0" in load_put/load_get reads an uninitialised digit) land in the
        # baseline
        "baseline": ["-c", "import cloudpickle, cloudpickle_rs, fuzz_gen, leak_check, pickle; a = [1, None]; a.append(a); "
                           "pickle.loads(pickle.dumps(a, 0)); pickle.loads(pickle.dumps([a, a, 'a', {'k': a}], 0))"],
        "fuzz": [os.path.join(REL, "fuzz_harness.py"), "child", "700000", str(args.seeds), os.devnull],
        "leak": [os.path.join(REL, "leak_check.py"), "--dumps", str(args.dumps)],
    }
    for name in HOSTILE:
        runs[f"hostile:{name}"] = [os.path.join(REL, "hostile_runner.py"), name]
    results = {}
    for name, a in runs.items():
        results[name] = valgrind(args.python, a, os.path.join(args.logs, name.replace(":", "_") + ".log"))
    base_contexts = {(h, f) for h, f, _ in results["baseline"]["errors"]}
    bad = []
    for name, r in results.items():
        new_errors = [e for e in r["errors"] if (e[0], e[1]) not in base_contexts]
        in_ours = [e for e in new_errors if e[2]]
        lost = sum(b for b, _, once, _ in r["lost"] if not once)
        lost_ours = sum(b for b, _, once, ours in r["lost"] if ours and not once)
        print(f"{name:42} rc={r['rc']:<3} error contexts: {len(r['errors'])} ({len(new_errors)} not in baseline, "
              f"{len(in_ours)} in _native)  definitely lost: {lost} B ({lost_ours} B from _native)  {r['seconds']}s",
              flush=True)
        for head, frames, _ in new_errors[:3]:
            print(f"    {head}  at {' <- '.join(frames[:3])}")
        groups = {}
        for b, frames, once, _ in r["lost"]:
            if not once:
                groups[frames[:2]] = groups.get(frames[:2], 0) + b
        for frames, b in sorted(groups.items(), key=lambda kv: -kv[1])[:2]:
            print(f"    lost {b} B at {' <- '.join(frames)}")
        if (r["rc"] != 0 and name != "baseline") or in_ours or lost > args.lost_slack:
            bad.append(name)
    print(f"logs in {args.logs}")
    print("FAILED: " + ", ".join(bad) if bad else "OK: no memcheck errors in _native, no definite loss over the slack")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
