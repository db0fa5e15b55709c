"""Run fuzz examples in batches in child processes, so a crash or hang is pinned to one seed.

Parent side: ``run(start, total)`` splits seeds ``start .. start+total-1`` into batches, runs each
batch in a child (``python fuzz_harness.py child START COUNT PROGRESS``), at most ``jobs`` at a
time. Before each example the child writes its seed into its progress file (8 bytes, pwrite), so
when a child dies on a signal or stops making progress, the parent knows the seed, records it as a
crash or hang, and starts a new child at the next seed. Mismatches come back as JSON lines.

Child side: ``python fuzz_harness.py child START COUNT PROGRESS`` runs ``fuzz_gen.check`` on each
seed; ``python fuzz_harness.py replay SEED`` runs one seed in the foreground, verbosely.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# A single example takes milliseconds; one that makes no progress for this long is a hang.
STALL_SECONDS = float(os.environ.get("FUZZ_STALL_SECONDS", "60"))


def replay_command(seed):
    return f"python tools/fuzz_differential.py --replay {seed}"


def run(start, total, batch=500, jobs=2, python=sys.executable, log=None, stall=None):
    """Fuzz ``total`` seeds from ``start``; returns (examples_run, failures, seconds)."""
    stall = STALL_SECONDS if stall is None else stall
    t0 = time.monotonic()
    pending = [(s, min(batch, start + total - s)) for s in range(start, start + total, batch)]
    running = []
    failures = []
    done = 0
    tmp = tempfile.mkdtemp(prefix="fuzz-")
    try:
        while pending or running:
            while pending and len(running) < jobs:
                s, n = pending.pop(0)
                running.append(_Child(python, s, n, tmp, stall))
            time.sleep(0.05)
            for child in list(running):
                state = child.poll()
                if state is None:
                    continue
                running.remove(child)
                done += child.examples_done()
                failures.extend(child.failures)
                if state in ("crash", "hang"):
                    seed = child.current_seed()
                    done += 1
                    failures.append({"seed": seed, "kind": state, "detail": child.describe_end(),
                                     "replay": replay_command(seed)})
                    rest = child.start + child.count - (seed + 1)
                    if rest > 0:
                        pending.insert(0, (seed + 1, rest))
                if log:
                    log(f"seeds {child.start}..{child.start + child.count - 1}: {state}, "
                        f"{len(failures)} failures so far, {done} examples, {time.monotonic() - t0:.0f}s")
                child.cleanup()
    finally:
        for child in running:
            child.kill()
            child.cleanup()
        try:
            os.rmdir(tmp)
        except OSError:
            pass
    return done, failures, time.monotonic() - t0


class _Child:
    def __init__(self, python, start, count, tmp, stall):
        self.start, self.count, self.stall = start, count, stall
        self.progress = os.path.join(tmp, f"progress-{start}")
        self.out_path = os.path.join(tmp, f"out-{start}")
        with open(self.progress, "wb") as f:
            f.write(struct.pack("<q", start))
        self.out = open(self.out_path, "w+")
        self.proc = subprocess.Popen(
            [python, os.path.join(HERE, "fuzz_harness.py"), "child", str(start), str(count), self.progress],
            stdout=self.out, stderr=subprocess.STDOUT, cwd=HERE,
        )
        self.last_seed = start
        self.last_change = time.monotonic()
        self.failures = []
        self.state = None
        self._done = None

    def current_seed(self):
        with open(self.progress, "rb") as f:
            return struct.unpack("<q", f.read(8))[0]

    def poll(self):
        rc = self.proc.poll()
        if rc is None:
            seed = self.current_seed()
            if seed != self.last_seed:
                self.last_seed, self.last_change = seed, time.monotonic()
            elif time.monotonic() - self.last_change > self.stall:
                self.kill()
                self._read()
                self.state = "hang"
                return self.state
            return None
        self._read()
        self.state = "ok" if rc == 0 and self._done is not None else "crash"
        return self.state

    def _read(self):
        self.out.flush()
        self.out.seek(0)
        self.text = self.out.read()
        for line in self.text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "done" in rec:
                self._done = rec["done"]
            elif "seed" in rec:
                rec["replay"] = replay_command(rec["seed"])
                self.failures.append(rec)

    def examples_done(self):
        if self._done is not None:
            return self._done
        return self.current_seed() - self.start  # the parent counts the example that crashed

    def describe_end(self):
        tail = [ln for ln in self.text.splitlines() if not ln.startswith("{")][-8:]
        return f"child exit status {self.proc.returncode}; last output: {' | '.join(tail)[-600:]}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.out.close()
        for p in (self.progress, self.out_path):
            try:
                os.unlink(p)
            except OSError:
                pass


def child_main(start, count, progress):
    import faulthandler

    faulthandler.enable()
    import fuzz_gen

    # Self-test hooks of the harness (tests/reliability/test_differential.py): die or hang on a seed.
    crash_at = int(os.environ.get("FUZZ_INJECT_CRASH", "-1"))
    hang_at = int(os.environ.get("FUZZ_INJECT_HANG", "-1"))
    fd = os.open(progress, os.O_WRONLY)
    for seed in range(start, start + count):
        os.pwrite(fd, struct.pack("<q", seed), 0)
        if seed == crash_at:
            os.abort()
        if seed == hang_at:
            time.sleep(3600)
        try:
            msg = fuzz_gen.check(seed)
        except BaseException as e:  # noqa: BLE001 - PanicException is a BaseException
            msg = f"checker raised {type(e).__module__}.{type(e).__qualname__}: {str(e)[:300]}"
        if msg:
            print(json.dumps({"seed": seed, "kind": "mismatch", "detail": msg}), flush=True)
    os.pwrite(fd, struct.pack("<q", start + count), 0)
    print(json.dumps({"done": count}), flush=True)


def replay(seed):
    import pprint

    import fuzz_gen

    obj, protocol, api = fuzz_gen.example(seed)
    print(f"seed {seed}: protocol {protocol}, api {api}")
    text = pprint.pformat(obj, width=100)
    print(text if len(text) < 4000 else text[:4000] + " ...")
    result = fuzz_gen.check(seed)
    print("OK: ours and stock agree" if result is None else f"MISMATCH: {result}")
    return 0 if result is None else 1


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    if sys.argv[1] == "child":
        child_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "replay":
        sys.exit(replay(int(sys.argv[2])))
    else:
        sys.exit(f"usage: {sys.argv[0]} child START COUNT PROGRESS | replay SEED")
