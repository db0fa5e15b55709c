"""Check factory sources against the code objects CPython compiles from the original file.

    python3 check_factories.py FACTORIES_JSON

FACTORIES_JSON is a list of {"path": FILE, "index": i, "sources": [...], "result_name": ...},
where i is the position of the function in dump_codes.py's order for FILE, and "sources" the
factories of every
candidate node (usually one; several when the code object could not tell them apart, and the
caller keeps the first whose code equals the original). Each source is run the way a receiver
runs it, `exec(compile(source, FILE, "exec"), {})`, in a fresh namespace: if it evaluated a
decorator, default or annotation of the original, the names those use are missing and it
fails. The rebuilt function's code object must equal the original: `==` (which on 3.11
compares co_code, co_consts recursively, co_names, co_varnames/cellvars/freevars, co_flags,
co_firstlineno, co_linetable, co_exceptiontable) and explicitly co_qualname, co_freevars,
co_varnames, co_firstlineno and co_positions(). Prints, per index, the problems of each candidate.
"""
import json
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from dump_codes import walk  # noqa: E402


def compare(original, rebuilt):
    problems = []
    for attr in ("co_code", "co_qualname", "co_name", "co_freevars", "co_cellvars", "co_varnames",
                 "co_names", "co_firstlineno", "co_flags", "co_argcount", "co_kwonlyargcount",
                 "co_posonlyargcount"):
        a, b = getattr(original, attr, None), getattr(rebuilt, attr, None)
        if a != b:
            problems.append("%s: original %r, rebuilt %r" % (attr, a, b))
    if list(original.co_positions()) != list(rebuilt.co_positions()):
        problems.append("co_positions differ")
    if original != rebuilt and not problems:
        problems.append("code objects differ (==) in another attribute")
    return problems


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        factories = json.load(fh)
    originals = {}
    results = []
    for entry in factories:
        path = entry["path"]
        if path not in originals:
            with open(path, "rb") as fh:
                originals[path] = list(walk(compile(fh.read(), path, "exec", dont_inherit=True)))
        original = originals[path][entry["index"]]
        candidates = []
        for source in entry["sources"]:
            try:
                namespace = {"__function_source_keep__": lambda f: f}  # function_source::KEEP_NAME
                exec(compile(source, path, "exec", dont_inherit=True), namespace)
                rebuilt = namespace[entry["result_name"]].__code__
                candidates.append(compare(original, rebuilt))
            except BaseException as exc:  # report, never crash the harness
                candidates.append(["running the factory raised %r" % (exc,)])
        results.append({"path": path, "index": entry["index"], "qualname": original.co_qualname,
                        "candidates": candidates})
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
