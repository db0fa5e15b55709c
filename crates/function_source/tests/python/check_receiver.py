"""Run factory sources on an older receiver (PyPy 3.9) and check what can be checked there.

    pypy3 check_receiver.py FILE FACTORIES_JSON

FACTORIES_JSON is a list of {"source", "result_name", "newer_syntax", "expect": {...}} built
from CPython 3.11's description of each function. Bytecode differs between interpreters, so
this checks what must survive the trip: the source compiles (and fails to compile exactly
when the crate flagged syntax newer than 3.9), runs in a fresh namespace without evaluating
the original's decorators, defaults or annotations, and yields a function with the original
name, qualified name, first line, parameter names and free variables. Prints a JSON list of
problems per entry.
"""
import json
import re
import sys

# PyPy puts `.<locals>` after comprehension scopes in qualified names, where CPython does not
# (`<listcomp>.<locals>.<lambda>` for CPython's `<listcomp>.<lambda>`). That is the receiver's
# own naming, not a difference in the source; the pickler sets `__qualname__` anyway.
PYPY_COMPREHENSION_LOCALS = re.compile(r"(<(?:listcomp|setcomp|dictcomp|genexpr)>)\.<locals>")


def check(entry, path):
    expect = entry["expect"]
    try:
        code = compile(entry["source"], path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        if entry["newer_syntax"]:
            return []
        return ["does not compile: %r" % (exc,)]
    if entry["newer_syntax"]:
        return ["flagged as newer than 3.9 but compiles"]
    namespace = {"__function_source_keep__": lambda f: f}  # function_source::KEEP_NAME
    try:
        exec(code, namespace)
    except BaseException as exc:
        return ["running the factory raised %r" % (exc,)]
    function = namespace[entry["result_name"]]
    co = function.__code__
    n = len(expect["arg_names"])
    got = {
        "name": co.co_name,
        "qualname": PYPY_COMPREHENSION_LOCALS.sub(r"\1", function.__qualname__),
        "first_line": co.co_firstlineno,
        "arg_names": list(co.co_varnames[:n]),
        "free_vars": sorted(co.co_freevars),
    }
    want = dict(expect, free_vars=sorted(expect["free_vars"]))
    return ["%s: expected %r, got %r" % (k, want[k], got[k]) for k in want if want[k] != got[k]]


def main():
    path, factories_path = sys.argv[1], sys.argv[2]
    with open(factories_path, encoding="utf-8") as fh:
        entries = json.load(fh)
    json.dump([check(entry, path) for entry in entries], sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
