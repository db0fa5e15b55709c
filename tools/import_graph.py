#!/usr/bin/env python3
"""The module graph of the extension crate (crates/cloudpickle_rs/src), from its `crate::` paths.

    python3 tools/import_graph.py          # one line per module: what it names
    python3 tools/import_graph.py --check  # fail when a cycle is not the known one (make lint)

An edge `a -> b` means a file of module `a` names `crate::b` or, through `super::`, a module
`b` (in a `use` or inline). A module naming one of its own ancestors is not an edge: the parent
declares the child, and a child using its parent's items is how Rust nests modules (the
dumper's parts use `super::Dumper`). Every other edge counts, siblings' included, and `--check`
fails on any cycle except those in KNOWN_CYCLES, a ratchet that also fails when a known cycle
goes away (so whoever removes one updates the list). Standard library only.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "crates" / "cloudpickle_rs" / "src"
KNOWN_CYCLES = []


def module_of(path):
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p not in ("mod", "lib")]
    return "::".join(parts) or "crate"


def graph():
    files = sorted(SRC.rglob("*.rs"))
    modules = {module_of(f) for f in files}
    edges = {m: set() for m in modules}
    for f in files:
        me = module_of(f)
        text = re.sub(r"//[^\n]*", "", f.read_text())
        for m in re.finditer(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
            parts = m.group(2).split("::")
            if m.group(1) == "super":
                parent = me.split("::")[:-1]
                parts = parent + parts
            ancestors = {"::".join(me.split("::")[:k]) for k in range(1, me.count("::") + 1)}
            # the longest prefix that is a module of the crate
            for n in range(len(parts), 0, -1):
                target = "::".join(parts[:n])
                if target in modules:
                    if target != me and target not in ancestors:
                        edges[me].add(target)
                    break
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    edges = graph()
    found = cycles(edges)
    if "--check" not in argv:
        for m in sorted(edges):
            print(f"{m:10s} -> {', '.join(sorted(edges[m])) or '-'}")
        for c in found:
            print("cycle:", " <-> ".join(sorted(c)))
        return 0
    bad = [c for c in found if c not in KNOWN_CYCLES]
    gone = [c for c in KNOWN_CYCLES if c not in found]
    if bad or gone:
        for c in bad:
            print("import cycle between crate modules:", ", ".join(sorted(c)), file=sys.stderr)
        for c in gone:
            print("a known cycle is gone or changed:", ", ".join(sorted(c)),
                  "(update KNOWN_CYCLES in tools/import_graph.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
