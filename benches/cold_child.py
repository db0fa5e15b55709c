"""One cold measurement in a fresh interpreter, for benches/run.py's cold_start rows.

    python cold_child.py dumps WRITER       # first dumps of 200 functions of a file written now
    python cold_child.py loads STREAM_PATH  # first pickle.loads of a stream, cloudpickle imported

Prints the seconds of the one timed call. WRITER is cloudpickle, ours or ours_src (by_source).
"""
import importlib.util
import os
import pickle
import sys
import tempfile
import time

N_FRESH_FUNCTIONS = 200

FRESH_FUNCTION = '''
def g_{i}(x, y={i}):
    """Function {i} of a file nobody pickled from before."""
    z = x * {i} + y
    if z > 3:
        return math.sqrt(abs(z)) + {i}
    return [z, {i}, "g_{i}"]

'''


def fresh_functions():
    """Write, import and return the functions of a new module file (no cache has seen it)."""
    folder = tempfile.mkdtemp(prefix="cloudpickle_rs_cold_")
    path = os.path.join(folder, "cold_fresh.py")
    with open(path, "w") as f:
        f.write("import math\n\n" + "".join(FRESH_FUNCTION.format(i=i) for i in range(N_FRESH_FUNCTIONS)))
    spec = importlib.util.spec_from_file_location("cold_fresh", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cold_fresh"] = module
    spec.loader.exec_module(module)
    return module, [getattr(module, "g_%d" % i) for i in range(N_FRESH_FUNCTIONS)]


def first_dumps(writer):
    module, funcs = fresh_functions()
    if writer == "cloudpickle":
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
        dumps, kwargs = cloudpickle.dumps, {}
    else:
        import cloudpickle_rs

        cloudpickle_rs.register_pickle_by_value(module)
        dumps, kwargs = cloudpickle_rs.dumps, ({"by_source": True} if writer == "ours_src" else {})
    dumps([len], **kwargs)  # the pickler's own first call (imports, statics), not the file's
    t = time.perf_counter()
    data = dumps(funcs, protocol=5, **kwargs)
    elapsed = time.perf_counter() - t
    assert len(pickle.loads(data)) == N_FRESH_FUNCTIONS
    return elapsed


def first_loads(path):
    import cloudpickle  # noqa: F401 - the receiver has it imported, as a worker does

    with open(path, "rb") as f:
        data = f.read()
    t = time.perf_counter()
    pickle.loads(data)
    return time.perf_counter() - t


if __name__ == "__main__":
    mode, arg = sys.argv[1], sys.argv[2]
    print(first_dumps(arg) if mode == "dumps" else first_loads(arg))
