"""Print, as JSON, what CPython's code objects say about every function in a file.

    python3 dump_codes.py FILE                 # {"python": [3, 11, 7], "codes": [...]}
    python3 dump_codes.py --batch FILE...      # {"python": ..., "files": {FILE: {"codes": [...]}
                                               #                          or {"error": "..."}}}

Compiles each FILE (without running it) and walks the code objects depth-first through
`co_consts`. For every function and lambda (not module, class or comprehension bodies) it
prints the attributes a pyo3 caller passes to `function_source::CodeQuery`. The Rust tests
use this output as their queries; `tests/fixtures/*.codes.json` are this script's output on CPython 3.11. In batch mode a file CPython does not compile is
reported, not fatal (the generated-program test skips those).
"""
import json
import sys
import types

CO_OPTIMIZED, CO_VARARGS, CO_VARKEYWORDS = 0x01, 0x04, 0x08


def is_function(code):
    # Module and class bodies are not optimized; comprehensions are named <listcomp> etc.
    name = code.co_name
    return bool(code.co_flags & CO_OPTIMIZED) and (name == "<lambda>" or not name.startswith("<"))


def walk(code):
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if is_function(const):
                yield const
            yield from walk(const)


def describe(code):
    n = (code.co_argcount + code.co_kwonlyargcount
         + bool(code.co_flags & CO_VARARGS) + bool(code.co_flags & CO_VARKEYWORDS))
    return {
        "name": code.co_name,
        "qualname": getattr(code, "co_qualname", None),
        "first_line": code.co_firstlineno,
        "arg_names": list(code.co_varnames[:n]),
        "positions": [list(p) for p in code.co_positions()],
        "free_vars": list(code.co_freevars),
        "nested_code_names": [c.co_name for c in code.co_consts if isinstance(c, types.CodeType)],
    }


def codes(path):
    with open(path, "rb") as fh:
        module = compile(fh.read(), path, "exec", dont_inherit=True)
    return [describe(c) for c in walk(module)]


def main():
    version = list(sys.version_info[:3])
    if sys.argv[1] == "--batch":
        files = {}
        for path in sys.argv[2:]:
            try:
                files[path] = {"codes": codes(path)}
            except (SyntaxError, ValueError) as exc:
                files[path] = {"error": repr(exc)}
        out = {"python": version, "files": files}
    else:
        out = {"python": version, "codes": codes(sys.argv[1])}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
