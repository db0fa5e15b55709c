#!/usr/bin/env python3
"""Differential fuzzing of cloudpickle_rs against stock cloudpickle (and PicklerBase against the C
pickler), for `make fuzz`.

    python tools/fuzz_differential.py                    # 100 000 examples from seed 0
    python tools/fuzz_differential.py -n 20000 --start 10**6 --jobs 2
    python tools/fuzz_differential.py --replay 4242      # one example, in the foreground

Each example is one random object graph (tests/reliability/fuzz_gen.py), one protocol (0-5) and
one API (dumps, dump to a file, a Pickler subclass with Python hooks, dumps(by_source=True),
PicklerBase bytes against pickle.dumps), all drawn from the seed. Batches run in child processes: a crash or hang is
reported with the seed that caused it, and `--replay SEED` reproduces it. Exit status 1 when any
example fails.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reliability"))

import fuzz_harness  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--examples", type=lambda s: int(eval(s, {})), default=100_000)
    ap.add_argument("--start", type=lambda s: int(eval(s, {})), default=0, help="first seed (default 0)")
    ap.add_argument("--batch", type=int, default=2000, help="examples per child process")
    ap.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    ap.add_argument("--json", help="write the failures to this file as JSON")
    ap.add_argument("--replay", type=int, metavar="SEED", help="run one seed in the foreground and show it")
    args = ap.parse_args(argv)
    if args.replay is not None:
        return fuzz_harness.replay(args.replay)
    done, failures, secs = fuzz_harness.run(
        args.start, args.examples, batch=args.batch, jobs=args.jobs,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    for f in failures:
        print(f"seed {f['seed']} [{f['kind']}]: {f['detail']}\n    replay: {f['replay']}")
    print(f"{done} examples (seeds {args.start}..{args.start + args.examples - 1}) in {secs:.1f}s, "
          f"{len(failures)} failures")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"examples": done, "seconds": secs, "failures": failures}, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
