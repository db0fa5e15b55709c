#!/usr/bin/env python3
"""The module graph of the extension crate (crates/cloudpickle_rs/src), from its `crate::` paths.

    python3 tools/import_graph.py          # one line per module: what it names
    python3 tools/import_graph.py --check  # fail when a cycle is not the known one (make lint)

An edge `a -> b` means a file of module `a` names `crate::b` (in a `use` or inline). Issue 11
removes the known cycle (the core walk and the cloudpickle layer naming each other); until then
`--check` is a ratchet: it fails when a module joins that cycle or a new cycle appears, and when
the known cycle shrinks (update KNOWN_CYCLE so the ratchet follows). Standard library only.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "crates" / "cloudpickle_rs" / "src"
KNOWN_CYCLE = {"bysource", "byvalue", "cloud", "dumper", "globals", "receiver"}


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
        for m in re.finditer(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
            parts = m.group(1).split("::")
            # the longest prefix that is a module of the crate
            for n in range(len(parts), 0, -1):
                target = "::".join(parts[:n])
                if target in modules:
                    if target != me:
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
    bad = [c for c in found if c != KNOWN_CYCLE]
    if bad or KNOWN_CYCLE not in found:
        for c in bad:
            print("import cycle between crate modules:", ", ".join(sorted(c)), file=sys.stderr)
        if KNOWN_CYCLE not in found:
            print("the known cycle is gone or changed: update KNOWN_CYCLE in tools/import_graph.py",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
