"""The receiver's linecache gets exactly the lines of the functions a by_source stream carries.

One dump writes one text per run of nearby functions of a file (gaps filled with bare
newlines, a long gap starting a new run), after the object. These tests load in this process
after removing the file's linecache entry, and compare line by line with the file.
"""
import importlib.util
import linecache
import pickle
import sys
import textwrap

import cloudpickle_rs

SOURCE = textwrap.dedent(
    '''
    import math

    SECRET_BETWEEN = "this line is in no pickled function"

    def outer(k):
        def inner(x):
            return x + k
        return inner

    def first(x, y=3):
        return x * y

    def second(x):
        return first(x) + 1
    '''
) + "\n" * 60 + textwrap.dedent(
    '''
    OTHER_SECRET = "nor is this one"

    def far_away(x):
        return math.sqrt(x)

    lam = lambda v: v - 1  # noqa: E731
    '''
)


def load_module(tmp_path, name):
    path = tmp_path / (name + ".py")
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle_rs.register_pickle_by_value(module)
    return module, str(path)


def function_lines(func):
    import inspect

    lines, start = inspect.getsourcelines(func)
    return start, lines


def test_lines_of_sent_functions_only(tmp_path):
    mod, path = load_module(tmp_path, "bs_linecache_case_a")
    try:
        inner = mod.outer(5)
        payload = [mod.second, mod.first, inner, mod.far_away, mod.lam, mod.outer]
        data = cloudpickle_rs.dumps(payload, by_source=True)
        file_lines = SOURCE.splitlines(True)
        expected = {}
        for f in (mod.outer, mod.first, mod.second, mod.far_away, mod.lam):
            start, lines = function_lines(f)
            for i, line in enumerate(lines):
                expected[start + i] = line
        linecache.cache.pop(path, None)
        loaded = pickle.loads(data)
        assert [f(4) for f in loaded[:2]] == [mod.second(4), mod.first(4)]
        assert loaded[2](1) == 6 and loaded[4](3) == 2
        got = linecache.cache[path][2]
        assert len(got) == max(expected)
        for n, line in enumerate(got, start=1):
            if n in expected:
                assert line == file_lines[n - 1] == expected[n], n
            else:
                assert line == "\n", (n, line)
        assert not any("SECRET" in line for line in got)
    finally:
        cloudpickle_rs.unregister_pickle_by_value(mod)
        del sys.modules["bs_linecache_case_a"]


def test_existing_longer_entry_is_not_grown(tmp_path):
    """A receiver whose linecache already holds more lines keeps its length; the sent lines
    replace theirs."""
    mod, path = load_module(tmp_path, "bs_linecache_case_b")
    try:
        data = cloudpickle_rs.dumps(mod.first, by_source=True)
        start, lines = function_lines(mod.first)
        linecache.cache[path] = (0, None, ["#\n"] * 500, path)
        pickle.loads(data)
        got = linecache.cache[path][2]
        assert len(got) == 500
        assert got[start - 1:start - 1 + len(lines)] == lines
        assert got[start - 2] == "#\n" and got[start - 1 + len(lines)] == "#\n"
    finally:
        cloudpickle_rs.unregister_pickle_by_value(mod)
        del sys.modules["bs_linecache_case_b"]
