"""Threads and re-entrancy (issue 6).

- 8 threads dump shared mutable objects while other threads mutate them: every dump either
  succeeds (and loads) or raises the RuntimeError a container changed during iteration raises;
- re-entrant dumps from inside ``__reduce__``/``reducer_override``/``persistent_id`` with other
  picklers work and nest correctly;
- a Pickler reused with and without ``clear_memo`` writes what ``pickle.Pickler`` writes;
- one Pickler used from two threads at once raises a clear RuntimeError in the second, never
  crashes or deadlocks (stock cloudpickle on the C pickler segfaults here).

The stress tests run in a child process with a timeout, so a crash or a deadlock fails the test
instead of taking pytest down.
"""
import io
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest

import cloudpickle_rs
import fuzz_objects as fo

HERE = os.path.dirname(os.path.abspath(__file__))


def _run_child(code, timeout=180):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=HERE, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    assert proc.returncode == 0, f"child exit status {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


STRESS = r"""
import collections, io, pickle, random, sys, threading, time
sys.path.insert(0, ".")
import cloudpickle_rs
import fuzz_objects as fo

sys.setswitchinterval(1e-6)  # switch threads as often as possible

class Yield:
    '''Reduced in Python: a point where another thread can run mid-walk.'''
    def __init__(self, v):
        self.v = v
    def __reduce__(self):
        time.sleep(0)
        return (Yield, (self.v,))

shared_list = [Yield(i) for i in range(50)]
shared_dict = {i: Yield(i) for i in range(50)}
shared_set = set(range(50))
shared_obj = fo.Plain(items=shared_list, mapping=shared_dict, f=fo.make_closure(shared_list, shared_dict))
roots = [shared_list, shared_dict, shared_set, shared_obj, [shared_list, shared_dict, shared_set]]
stop = threading.Event()
counts = collections.Counter()
errors = []
lock = threading.Lock()

def mutate(seed):
    r = random.Random(seed)
    while not stop.is_set():
        k = r.randrange(6)
        try:
            if k == 0: shared_list.append(Yield(r.random()))
            elif k == 1 and shared_list: shared_list.pop(r.randrange(len(shared_list)))
            elif k == 2: shared_dict[r.randrange(100)] = Yield(r.random())
            elif k == 3: shared_dict.pop(r.randrange(100), None)
            elif k == 4: shared_set.add(r.randrange(100))
            else: shared_set.discard(r.randrange(100))
        except (IndexError, KeyError):
            pass
        time.sleep(0)

def dump(seed, n):
    r = random.Random(seed)
    for i in range(n):
        obj = r.choice(roots)
        proto = r.randrange(6)
        # PicklerBase has no by-value layer: not for the object holding a closure
        how = r.randrange(2 if obj is shared_obj else 3)
        try:
            if how == 0:
                data = cloudpickle_rs.dumps(obj, proto)
            elif how == 1:
                f = io.BytesIO(); cloudpickle_rs.Pickler(f, proto).dump(obj); data = f.getvalue()
            else:
                f = io.BytesIO(); cloudpickle_rs.PicklerBase(f, proto).dump(obj); data = f.getvalue()
            pickle.loads(data)
            with lock: counts["ok"] += 1
        except RuntimeError as e:
            # CPython's two words for a container another thread changed mid-iteration (the
            # second from its own dict iterator, when the size came back: seen on 3.10)
            if "changed size during iteration" not in str(e) and "keys changed during iteration" not in str(e):
                errors.append(repr(e))
            with lock: counts["changed size"] += 1
        except BaseException as e:
            errors.append(f"{type(e).__module__}.{type(e).__qualname__}: {e}")

mutators = [threading.Thread(target=mutate, args=(s,)) for s in range(3)]
dumpers = [threading.Thread(target=dump, args=(100 + s, N)) for s in range(8)]
for t in mutators + dumpers: t.start()
for t in dumpers: t.join(120)
stop.set()
for t in mutators: t.join(10)
alive = [t.name for t in mutators + dumpers if t.is_alive()]
print(dict(counts), "errors:", errors[:5], "alive:", alive)
assert not alive, alive
assert not errors, errors[:5]
assert counts["ok"] > 0
"""


def test_eight_threads_dump_shared_mutable_objects():
    out = _run_child("N = 300\n" + STRESS)
    print(out)


# ----- re-entrancy with other picklers ------------------------------------------------------------


class Nested:
    """``__reduce__`` that pickles its payload with a fresh top-level dumps, nested ``depth`` deep."""

    def __init__(self, depth, payload):
        self.depth, self.payload = depth, payload

    def __reduce__(self):
        inner = self.payload if self.depth == 0 else Nested(self.depth - 1, self.payload)
        return (pickle.loads, (cloudpickle_rs.dumps([inner, self.depth]),))


def _unwrap(x):
    while isinstance(x, list) and len(x) == 2 and isinstance(x[1], int):
        x = x[0]
    return x


def test_reentrant_dumps_from_reduce():
    payload = {"f": fo.make_closure(1, 2), "l": [1, 2]}
    out = pickle.loads(cloudpickle_rs.dumps([Nested(5, payload), Nested(0, payload)]))
    assert _unwrap(out[0])["l"] == [1, 2] and _unwrap(out[0])["f"]()[:2] == [1, 2]
    assert _unwrap(out[1])["l"] == [1, 2]


def test_reentrant_other_pickler_from_hooks():
    """reducer_override and persistent_id of one Pickler dump with another Pickler."""
    inner_file = io.BytesIO()
    inner = cloudpickle_rs.Pickler(inner_file)

    class Outer(cloudpickle_rs.Pickler):
        def reducer_override(self, obj):
            if type(obj) is fo.Plain:
                inner.dump(obj.__dict__)
                inner.clear_memo()
                return (fo.Plain, ())
            return super().reducer_override(obj)

        def persistent_id(self, obj):
            if obj == "pid":
                return cloudpickle_rs.dumps(["nested from persistent_id"])
            return None

    f = io.BytesIO()
    Outer(f).dump([fo.Plain(a=1), "pid", fo.make_lambda(3)])

    class Loader(pickle.Unpickler):
        def persistent_load(self, pid):
            return pickle.loads(pid)

    loaded = Loader(io.BytesIO(f.getvalue())).load()
    assert loaded[1] == ["nested from persistent_id"] and loaded[2]()[0] == 3
    assert pickle.loads(inner_file.getvalue()) == {"a": 1}


# ----- one pickler, many dumps ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_reuse_with_and_without_clear_memo_matches_pickle(protocol):
    shared = [1, "s", (2, 3)]
    objs = [{"a": shared}, shared, {"b": shared}]

    def run(cls):
        f = io.BytesIO()
        p = cls(f, protocol)
        p.dump(objs[0])
        p.dump(objs[1])  # refers to the first dump's memo
        p.clear_memo()
        p.dump(objs[2])  # stands alone
        return f.getvalue()

    ours, ref = run(cloudpickle_rs.PicklerBase), run(pickle.Pickler)
    assert ours == ref
    for data in (ours, run(cloudpickle_rs.Pickler)):
        u = pickle.Unpickler(io.BytesIO(data))
        a, b, c = u.load(), u.load(), u.load()
        assert b is a["a"], "the second dump refers to the first through the memo"
        assert c == {"b": shared} and c["b"] is not a["a"]


def test_reuse_many_dumps_of_functions_with_clear_memo():
    f = io.BytesIO()
    p = cloudpickle_rs.Pickler(f)
    funcs = [fo.make_closure(i, [i]) for i in range(50)]
    offsets = []
    for fn in funcs:
        offsets.append(f.tell())
        p.dump(fn)
        p.clear_memo()
    data = f.getvalue()
    for i, start in enumerate(offsets):
        g = pickle.loads(data[start:])
        assert g()[:2] == [i, [i]]


# ----- one pickler, two threads -----------------------------------------------------------------


class Blocker:
    """Blocks its ``__reduce__`` (GIL released) until told to go on."""

    def __init__(self, entered, release):
        self.entered, self.release = entered, release

    def __reduce__(self):
        self.entered.set()
        assert self.release.wait(30), "never released"
        return (int, (5,))


@pytest.mark.parametrize("cls", [cloudpickle_rs.Pickler, cloudpickle_rs.PicklerBase])
def test_shared_pickler_second_thread_gets_runtime_error(cls):
    f = io.BytesIO()
    p = cls(f)
    entered, release = threading.Event(), threading.Event()
    result = {}

    def first():
        try:
            p.dump([Blocker(entered, release), "after"])
            result["first"] = "ok"
        except BaseException as e:  # noqa: BLE001
            result["first"] = e

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(30)
    with pytest.raises(RuntimeError, match="already running"):
        p.dump(["second"])
    # the other methods stay usable and harmless while the dump runs
    p.memo  # noqa: B018
    p.clear_memo()
    release.set()
    t.join(30)
    assert not t.is_alive(), "deadlock"
    assert result["first"] == "ok"
    assert pickle.loads(f.getvalue()) == [5, "after"]
    p.clear_memo()
    p.dump("later")  # usable again afterwards


SHARED_PICKLER_STRESS = r"""
import io, pickle, sys, threading, time
sys.path.insert(0, ".")
import cloudpickle_rs
import fuzz_objects as fo
sys.setswitchinterval(1e-6)

class Yield:
    def __reduce__(self):
        time.sleep(0)
        return (int, (1,))

for cls in (cloudpickle_rs.Pickler, cloudpickle_rs.PicklerBase):
    f = io.BytesIO()
    p = cls(f)
    counts = {"ok": 0, "busy": 0}
    errors = []
    def hammer(k):
        for i in range(400):
            try:
                p.dump([Yield(), [Yield(), {"k": k, "i": i}], fo.make_lambda(i) if cls is cloudpickle_rs.Pickler else i])
                counts["ok"] += 1
            except RuntimeError as e:
                if "already running" not in str(e):
                    errors.append(repr(e))
                counts["busy"] += 1
            except BaseException as e:
                errors.append(repr(e))
            if i % 7 == 0:
                p.clear_memo()
    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads: t.start()
    for t in threads: t.join(120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors[:5]
    print(cls.__name__, counts)
"""


def test_shared_pickler_hammered_by_eight_threads():
    print(_run_child(SHARED_PICKLER_STRESS))
