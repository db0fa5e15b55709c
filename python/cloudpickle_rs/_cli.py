"""``python -m cloudpickle_rs``: look inside a pickle without running it.

    python -m cloudpickle_rs inspect FILE|-  [--json] [--depth N] [--source-lines N]
    python -m cloudpickle_rs deps FILE|-     [--all]

``inspect`` prints the tree of objects a pickle holds, in human terms: each function shipped by
value (name, file and line, whether it travels as source text or as bytecode, its source, the
globals and closure values it carries), classes shipped by value, the modules and globals the
receiver must import, and the size in bytes of each part.  ``--json`` prints the same as JSON.

``deps`` prints the import-level modules the receiver needs (globals referenced by name and
modules a shipped function imports, ``subimport``), mapped to the distributions installed here
that provide them, as requirements lines (``name==version``); standard-library modules and
modules no installed distribution provides are listed as comments.

The pickle is never executed: it is read with ``pickletools.genops`` and replayed on a symbolic
stack (no ``pickle.loads``, no import of anything it names), so it is safe on untrusted input.
cloudpickle's reconstructors (``cloudpickle.cloudpickle`` or Ray's ``ray.cloudpickle.cloudpickle``)
are recognised by name: ``_make_function`` + ``_function_setstate`` (functions),
``_builtin_type('CodeType')`` (bytecode), ``builtins.compile`` of a factory source (by_source),
``_make_skeleton_class``/``_make_skeleton_enum`` + ``_class_setstate`` (classes), ``subimport`` /
``dynamic_subimport`` (modules), ``_make_empty_cell``/``_make_cell`` + ``setattr(cell,
'cell_contents', v)`` (closure cells).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickletools
import re
import sys

__all__ = ["analyse", "render", "requirements", "main"]

RECONSTRUCTOR_MODULES = ("cloudpickle.cloudpickle", "ray.cloudpickle.cloudpickle",
                         "cloudpickle.cloudpickle_fast", "ray.cloudpickle.cloudpickle_fast")


# ------------------------------------------------------------------------------------------
# Symbolic nodes

class Node:
    kind = "node"
    start = 0
    end = 0

    def children(self):
        return []


class Const(Node):
    kind = "const"

    def __init__(self, value):
        self.value = value


class Global(Node):
    kind = "global"

    def __init__(self, module, name):
        self.module, self.name = module, name

    @property
    def dotted(self):
        return f"{self.module}.{self.name}"

    def is_reconstructor(self, *names):
        return self.module in RECONSTRUCTOR_MODULES and (not names or self.name in names)


class Seq(Node):
    """list, tuple, set, frozenset."""

    def __init__(self, kind, items):
        self.kind = kind
        self.items = list(items)

    def children(self):
        return self.items


class Dict(Node):
    kind = "dict"

    def __init__(self, pairs=()):
        self.pairs = list(pairs)
        self.executed = []  # exec(compile(source, ...), this dict) calls (by_source factories)

    def children(self):
        return [x for kv in self.pairs for x in kv] + self.executed

    def get(self, key):
        for k, v in self.pairs:
            if isinstance(k, Const) and k.value == key:
                return v
        return None


class Call(Node):
    """REDUCE / NEWOBJ / NEWOBJ_EX / OBJ / INST: ``func(*args)``, plus states set by BUILD."""

    kind = "call"

    def __init__(self, func, args, kwargs=None, how="reduce"):
        self.func, self.args, self.kwargs, self.how = func, args, kwargs, how
        self.states = []
        self.role = None  # "function", "class", "enum", "module", "code", "cell", ...
        self.info = {}

    def children(self):
        out = [self.func, self.args]
        if self.kwargs is not None:
            out.append(self.kwargs)
        return out + self.states

    def arg(self, i):
        if isinstance(self.args, Seq) and i < len(self.args.items):
            return self.args.items[i]
        return None


class Opaque(Node):
    """Persistent ids, extension codes, out-of-band buffers, placeholders."""

    def __init__(self, kind, detail=""):
        self.kind, self.detail = kind, detail


def _const(node, default=None):
    return node.value if isinstance(node, Const) else default


# ------------------------------------------------------------------------------------------
# The symbolic machine

class _Mark:
    pass


def _machine(data):
    """Replay the opcodes on a symbolic stack; return (root, protocol, globals, calls, size)."""
    stack, starts, marks, memo = [], [], [], {}
    proto = 0
    ops = 0
    calls = []
    globals_seen = []
    next_buffer = 0
    root = None
    last_pos = 0

    def push(node, start):
        stack.append(node)
        starts.append(start)

    def pop():
        starts.pop()
        return stack.pop()

    def pop_mark():
        i = marks.pop()
        items, item_starts = stack[i:], starts[i:]
        del stack[i:]
        del starts[i:]
        mark_start = stack_mark_pos.pop()
        return items, min([mark_start, *item_starts])

    stack_mark_pos = []

    def new(node, start, pos, length):
        node.start = start
        node.end = pos + length
        return node

    ops_list = list(pickletools.genops(data))
    for idx, (op, arg, pos) in enumerate(ops_list):
        ops += 1
        nxt = ops_list[idx + 1][2] if idx + 1 < len(ops_list) else len(data)
        length = nxt - pos
        last_pos = nxt
        name = op.name
        if name == "PROTO":
            proto = arg
        elif name in ("FRAME", "READONLY_BUFFER"):
            pass
        elif name == "STOP":
            root = pop()
            break
        elif name == "MARK":
            marks.append(len(stack))
            stack_mark_pos.append(pos)
        elif name in ("NONE", "NEWTRUE", "NEWFALSE") or op.arg is not None and name in (
                "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
                "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
                "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
                "BYTEARRAY8"):
            value = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}.get(name, arg)
            push(new(Const(value), pos, pos, length), pos)
        elif name == "NEXT_BUFFER":
            push(new(Opaque("buffer", f"out-of-band buffer #{next_buffer}"), pos, pos, length), pos)
            next_buffer += 1
        elif name == "EMPTY_LIST":
            push(new(Seq("list", []), pos, pos, length), pos)
        elif name == "EMPTY_TUPLE":
            push(new(Seq("tuple", []), pos, pos, length), pos)
        elif name == "EMPTY_DICT":
            push(new(Dict(), pos, pos, length), pos)
        elif name == "EMPTY_SET":
            push(new(Seq("set", []), pos, pos, length), pos)
        elif name in ("TUPLE", "LIST", "FROZENSET"):
            items, start = pop_mark()
            kind = {"TUPLE": "tuple", "LIST": "list", "FROZENSET": "frozenset"}[name]
            push(new(Seq(kind, items), start, pos, length), start)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = stack[-n:]
            start = min(starts[-n:])
            del stack[-n:]
            del starts[-n:]
            push(new(Seq("tuple", items), start, pos, length), start)
        elif name == "DICT":
            items, start = pop_mark()
            push(new(Dict(zip(items[::2], items[1::2])), start, pos, length), start)
        elif name == "APPEND":
            item = pop()
            target = stack[-1]
            if isinstance(target, Seq):
                target.items.append(item)
            target.end = pos + length
        elif name in ("APPENDS", "ADDITEMS"):
            items, _ = pop_mark()
            target = stack[-1]
            if isinstance(target, Seq):
                target.items.extend(items)
            target.end = pos + length
        elif name == "SETITEM":
            v = pop()
            k = pop()
            target = stack[-1]
            if isinstance(target, Dict):
                target.pairs.append((k, v))
            target.end = pos + length
        elif name == "SETITEMS":
            items, _ = pop_mark()
            target = stack[-1]
            if isinstance(target, Dict):
                target.pairs.extend(zip(items[::2], items[1::2]))
            target.end = pos + length
        elif name == "POP":
            pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            push(stack[-1], starts[-1])
        elif name in ("GLOBAL", "STACK_GLOBAL", "INST"):
            if name == "STACK_GLOBAL":
                gname = pop()
                gmod = pop()
                module, qual = _const(gmod, "?"), _const(gname, "?")
                start = pos  # the strings may be memo references: count only this opcode
            else:
                module, qual = arg.split(" ", 1) if " " in arg else (arg, "")
                start = pos
            g = new(Global(str(module), str(qual)), start, pos, length)
            globals_seen.append(g)
            if name == "INST":
                items, start = pop_mark()
                node = new(Call(g, Seq("tuple", items), how="inst"), start, pos, length)
                calls.append(node)
                push(node, start)
            else:
                push(g, start)
        elif name == "OBJ":
            items, start = pop_mark()
            cls, args = (items[0], Seq("tuple", items[1:])) if items else (Opaque("?"), Seq("tuple", []))
            node = new(Call(cls, args, how="obj"), start, pos, length)
            calls.append(node)
            push(node, start)
        elif name in ("REDUCE", "NEWOBJ"):
            start = min(starts[-2], starts[-1])
            args = pop()
            func = pop()
            node = new(Call(func, args, how=name.lower()), start, pos, length)
            calls.append(node)
            _on_call(node)
            push(node, start)
        elif name == "NEWOBJ_EX":
            start = min(starts[-3:])
            kwargs = pop()
            args = pop()
            cls = pop()
            node = new(Call(cls, args, kwargs, how="newobj_ex"), start, pos, length)
            calls.append(node)
            push(node, start)
        elif name == "BUILD":
            state = pop()
            target = stack[-1]
            if isinstance(target, Call):
                target.states.append(state)
            target.end = pos + length
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            push(memo.get(arg, Opaque("missing-memo", str(arg))), pos)
        elif name in ("PERSID", "BINPERSID"):
            pid = arg if name == "PERSID" else pop()
            push(new(Opaque("persistent_id", repr(_const(pid, pid))), pos, pos, length), pos)
        elif name in ("EXT1", "EXT2", "EXT4"):
            push(new(Opaque("extension", f"copyreg extension code {arg}"), pos, pos, length), pos)
        else:  # an opcode this reader does not model: keep going with a placeholder
            push(new(Opaque("unknown", name), pos, pos, length), pos)
    # Node starts recorded at creation; memo references keep the original node.
    return root, proto, globals_seen, calls, len(data), ops


_HELPER_NAME = "__cloudpickle_rs_compile__"
_PADDING_AS_STRING = 16  # as bysource.rs writes the padding (a string literal from 16 lines on)


def _compiled(node):
    """(source, file name) of a compile call of the stream (builtins.compile or the receiver's
    compile helper, which takes the padding as a count), each None when not a plain value."""
    if node.info.get("helper"):
        head, pad, body = _eval_str(node.arg(2)), _const(node.arg(3)), _eval_str(node.arg(4))
        if head is None or body is None or type(pad) is not int or not 0 <= pad <= 10_000_000:
            return None, _eval_str(node.arg(1))
        padding = "'''" + "\n" * (pad - 1) + "'''\n" if pad >= _PADDING_AS_STRING else "\n" * pad
        return head + padding + body, _eval_str(node.arg(1))
    return _eval_str(node.arg(0)), _eval_str(node.arg(1))


def _is_compile_fn(node):
    """`builtins.compile`, or the stream's cached form of it (see `_on_call`)."""
    if isinstance(node, Global):
        return node.module == "builtins" and node.name == "compile"
    return isinstance(node, Call) and node.role == "compile_fn"


def _on_call(node):
    """Recognise cloudpickle's reconstructor calls as they are made."""
    f = node.func
    if not isinstance(f, Global):
        if isinstance(f, Call) and f.role == "builtin_type" and f.info.get("name") == "CodeType":
            node.role = "code"
            node.info["mode"] = "bytecode"
        elif isinstance(f, Call) and f.role == "compile_fn":
            node.role = "compile"
        elif (isinstance(f, Call) and isinstance(f.func, Global)
              and f.func.dotted in ("_operator.getitem", "operator.getitem")
              and _const(f.arg(1)) == _HELPER_NAME):
            # the receiver's compile helper: (key, filename, head, padding, body)
            node.role = "compile"
            node.info["helper"] = True
        elif _is_compile_fn(node.arg(0)) or _is_compile_fn(node.arg(1)):
            # functools.lru_cache(n)(compile), and the receiver's setdefault that keeps it
            node.role = "compile_fn"
        return
    if f.is_reconstructor("_make_function"):
        node.role = "function"
    elif f.is_reconstructor("_function_setstate", "_class_setstate"):
        target, state = node.arg(0), node.arg(1)
        if isinstance(target, Call):
            target.states.append(state)
            target.end = max(target.end, node.end)
        node.role = "setstate"
    elif f.is_reconstructor("_make_skeleton_class"):
        node.role = "class"
    elif f.is_reconstructor("_make_skeleton_enum"):
        node.role = "enum"
    elif f.is_reconstructor("subimport", "dynamic_subimport"):
        node.role = "module"
    elif f.is_reconstructor("_builtin_type"):
        node.role = "builtin_type"
        node.info["name"] = _const(node.arg(0))
    elif f.is_reconstructor("_make_empty_cell", "_make_cell"):
        node.role = "cell"
        if f.name == "_make_cell":
            node.info["value"] = node.arg(0)
    elif f.module == "builtins" and f.name == "setattr" and _const(node.arg(1)) == "cell_contents":
        cell = node.arg(0)
        if isinstance(cell, Call):
            cell.info["value"] = node.arg(2)
        node.role = "setstate"
    elif f.module == "builtins" and f.name == "compile":
        node.role = "compile"
    elif f.module == "builtins" and f.name == "exec" and isinstance(node.arg(1), Dict):
        node.arg(1).executed.append(node)
        node.role = "exec"
    elif f.module in ("copyreg", "copy_reg") and f.name in ("__newobj__", "__newobj_ex__"):
        node.role = "instance"
    elif f.module in ("copyreg", "copy_reg") and f.name == "_reconstructor":
        node.role = "instance"


# ------------------------------------------------------------------------------------------
# Analysis

def _walk(node, seen=None):
    """Every node reachable from `node`, each once."""
    seen = set() if seen is None else seen
    todo = [node]
    while todo:
        n = todo.pop()
        if not isinstance(n, Node) or id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        todo.extend(reversed(n.children()))


def _function_state(fn):
    """cloudpickle's function state ``(__dict__, slotstate)`` merged: (Dict, attributes Dict)."""
    for st in fn.states:
        if isinstance(st, Seq) and st.items:
            dicts = [d for d in st.items if isinstance(d, Dict)]
            if dicts:
                merged = Dict([kv for d in reversed(dicts) for kv in d.pairs])
                return merged, dicts[0]
        if isinstance(st, Dict):
            return st, None
    return None, None


def _describe_value(node, limit=60):
    if isinstance(node, Const):
        text = repr(node.value)
    elif isinstance(node, Global):
        text = node.dotted
    elif isinstance(node, Call) and node.role == "module":
        text = f"module {_const(node.arg(0), '?')}"
    elif isinstance(node, Call) and node.role == "function":
        text = f"function {_fn_name(node)}"
    elif isinstance(node, Call) and node.role in ("class", "enum"):
        text = f"class {_const(node.arg(1), '?')}"
    elif isinstance(node, Call):
        text = f"{_callee(node)}(...)"
    elif isinstance(node, Seq):
        text = f"{node.kind} of {len(node.items)}"
    elif isinstance(node, Dict):
        text = f"dict of {len(node.pairs)}"
    elif isinstance(node, Opaque):
        text = node.detail or node.kind
    else:
        text = "?"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _callee(call):
    f = call.func
    if isinstance(f, Global):
        return f.dotted
    if isinstance(f, Call) and f.role in ("class", "enum"):
        return f"<class {_const(f.arg(1), '?')} by value>"
    if isinstance(f, Call):
        return _callee(f) + "(...)"
    return "?"


def _fn_name(fn):
    state, _ = _function_state(fn)
    if state is not None:
        q = _const(state.get("__qualname__")) or _const(state.get("__name__"))
        if q:
            return q
    return fn.info.get("code_name") or "<function>"


def _factory_exec(code):
    """The `exec` that made a by_source code object: `getattr(getitem(NS, RESULT), '__code__')`
    takes it from the namespace every factory of the stream runs in, right after its own exec,
    so it is the last exec of NS before that getitem. None for other shapes."""
    inner = code.arg(0) if isinstance(code, Call) else None
    ns = inner.arg(0) if isinstance(inner, Call) else None
    if not isinstance(ns, Dict) or not ns.executed:
        return None
    before = [e for e in ns.executed if e.end <= inner.start]
    return max(before, key=lambda e: e.end) if before else None


def _code_info(fn):
    """How the function's code travels: ('source', file, text) or ('bytecode', file, line, name)."""
    code = fn.arg(0)
    out = {"mode": "unknown"}
    made = _factory_exec(code)
    if made is not None:
        compiled = made.arg(0)
        if isinstance(compiled, Call) and compiled.role == "compile":
            src, file = _compiled(compiled)
            out.update(mode="source", file=file, source=src)
            return out
    for n in _walk(code):
        if isinstance(n, Call) and n.role == "compile":
            src, file = _compiled(n)
            out.update(mode="source", file=file, source=src)
            return out
        if isinstance(n, Call) and n.role == "code":
            args = n.args.items if isinstance(n.args, Seq) else []
            strs = [a.value for a in args if isinstance(a, Const) and isinstance(a.value, str)]
            ints = [a.value for a in args if isinstance(a, Const) and type(a.value) is int]
            blobs = [a.value for a in args if isinstance(a, Const) and isinstance(a.value, (bytes, bytearray))]
            # CodeType(...): the strings are filename, name, qualname (3.11+); the int right
            # after them is co_firstlineno.
            free = args[-2] if len(args) >= 2 and isinstance(args[-2], Seq) else None
            if free is not None:
                out["freevars"] = [_const(x, "?") for x in free.items]
            out.update(mode="bytecode", file=strs[0] if strs else None, code_args=len(args),
                       code_name=strs[1] if len(strs) > 1 else None,
                       bytecode_size=len(blobs[0]) if blobs else None)
            try:
                i = next(k for k, a in enumerate(args)
                         if isinstance(a, Const) and a.value == strs[-1] and isinstance(a.value, str))
                after = [a.value for a in args[i + 1:] if isinstance(a, Const) and type(a.value) is int]
                out["line"] = after[0] if after else None
            except (StopIteration, IndexError):
                pass
            return out
    return out


_STR_OPS = {("_operator", "add"), ("operator", "add"), ("_operator", "concat"),
            ("operator", "concat"), ("_operator", "mul"), ("operator", "mul")}


def _eval_str(node, depth=0):
    """The value of a string built by the stream with stdlib string operations (padding such as
    ``operator.add(operator.mul('\n', k), text)``), computed here without running anything;
    None when it is not such an expression."""
    if isinstance(node, Const):
        return node.value if isinstance(node.value, str) else None
    if depth > 50 or not isinstance(node, Call):
        return None
    f = node.func
    if (isinstance(f, Call) and isinstance(f.func, Global) and f.func.dotted == "builtins.getattr"
            and _const(f.arg(0)) == "" and _const(f.arg(1)) == "join"):
        # ''.join([...]): the factory text from its own lines and slices of the original lines
        parts = node.arg(0)
        if not isinstance(parts, Seq):
            return None
        texts = [_eval_str(p, depth + 1) for p in parts.items]
        return None if any(t is None for t in texts) else "".join(texts)
    if not isinstance(f, Global):
        return None
    if f.dotted in ("_operator.getitem", "operator.getitem"):
        text, where = _eval_str(node.arg(0), depth + 1), node.arg(1)
        if (text is None or not isinstance(where, Call) or not isinstance(where.func, Global)
                or where.func.dotted != "builtins.slice"):
            return None
        bounds = [_const(x) for x in (where.args.items if isinstance(where.args, Seq) else [])]
        if not all(x is None or type(x) is int for x in bounds):
            return None
        return text[slice(*bounds)]
    if (f.module, f.name) not in _STR_OPS:
        return None
    a, b = node.arg(0), node.arg(1)
    if node.func.name == "mul":
        text, times = (a, b) if type(_const(b)) is int else (b, a)
        s, k = _eval_str(text, depth + 1), _const(times)
        if s is None or type(k) is not int or k < 0 or len(s) * k > 10_000_000:
            return None
        return s * k
    x, y = _eval_str(a, depth + 1), _eval_str(b, depth + 1)
    return x + y if x is not None and y is not None else None


def _source_line(source, name):
    """Line of ``def name`` / ``class`` / ``lambda`` in a padded factory source (original numbering)."""
    if not source:
        return None
    short = name.rsplit(".", 1)[-1]
    lines = source.split("\n")
    for prefix in (f"def {short}(", f"async def {short}("):
        for i, line in enumerate(lines):
            if line.lstrip().startswith(prefix):
                return i + 1
    if short == "<lambda>":
        found = _lambda_in(source)
        return found[0] if found else None
    return None


def _lambda_in(source):
    """``(line, text)`` of the lambda a factory source builds, or None.

    The factory keeps the lambda at its original line and column, on the line that assigns it to
    ``__function_source_result__`` (``__function_source_result__ = (   lambda y: ...`` with the
    closing bracket on the next line), so a line search cannot find it and several lambdas of one
    source line cannot be told apart by text: the parse finds the assigned lambda and cuts exactly
    its own text."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    first = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda) and any(
                isinstance(t, ast.Name) and t.id == "__function_source_result__" for t in node.targets):
            first = node.value
            break
        if first is None and isinstance(node, ast.Lambda):
            first = node
    if first is None:
        return None
    return first.lineno, ast.get_source_segment(source, first)


def _own_source(source, name):
    """The function's own lines out of the factory source (wrapper lines dropped)."""
    if not source:
        return None
    lines = source.split("\n")
    if name.rsplit(".", 1)[-1] == "<lambda>":
        found = _lambda_in(source)
        if found is not None and found[1] is not None:
            return found[1]
    line = _source_line(source, name)
    if line is None:
        body = [ln for ln in lines if ln.strip() and "__function_source_result__" not in ln]
        return "\n".join(body)
    first = lines[line - 1]
    indent = len(first) - len(first.lstrip())
    out = [first]
    for ln in lines[line:]:
        if "__function_source_result__" in ln:
            break
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent and not first.lstrip().startswith("lambda"):
            break
        out.append(ln)
    while out and not out[-1].strip():
        out.pop()
    if first.lstrip().startswith("lambda") and len(out) > 1 and out[-1].strip() == ")":
        out.pop()  # the factory's own bracket around the lambda
    return "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in out)


def analyse(data):
    """Read a pickle (bytes) without executing it; return a JSON-able description."""
    data = bytes(data)
    root, proto, globals_seen, calls, size, nops = _machine(data)
    functions, classes, modules = [], [], {}
    reconstructor_modules = sorted({g.module for g in globals_seen if g.is_reconstructor()})
    fn_ids = {}
    for c in calls:
        if c.role == "function":
            fn_ids[id(c)] = len(functions)
            functions.append(c)
    described_functions = [_describe_function(fn) for fn in functions]
    described_classes = []
    for c in calls:
        if c.role in ("class", "enum"):
            described_classes.append(_describe_class(c))
    for c in calls:
        if c.role == "module":
            name = _const(c.arg(0))
            if isinstance(name, str):
                modules.setdefault(name, set()).add("import (subimport)")
    for g in globals_seen:
        if g.is_reconstructor():
            modules.setdefault(g.module, set()).add("cloudpickle reconstructors")
        elif g.module:
            modules.setdefault(g.module, set()).add(f"global {g.name}")
    globals_list = sorted({g.dotted for g in globals_seen if not g.is_reconstructor()})
    tree = _tree(root, depth=0, max_depth=64, seen=set()) if root is not None else None
    return {
        "size": size,
        "protocol": proto,
        "opcodes": nops,
        "reconstructor_modules": reconstructor_modules,
        "functions": described_functions,
        "classes": described_classes,
        "modules": {m: sorted(r) for m, r in sorted(modules.items())},
        "globals": globals_list,
        "tree": tree,
    }


_REQUIRES = re.compile(r"^# cloudpickle-rs: requires Python (\d+)\.(\d+)\+$", re.M)


def _source_python(source):
    """Minimum receiver Python of a by_source factory: the sender marks text that needs more
    than 3.8 (the oldest receiver) with a ``# cloudpickle-rs: requires Python X.Y+`` line."""
    found = [(int(a), int(b)) for a, b in _REQUIRES.findall(source or "")]
    major, minor = max(found) if found else (3, 8)
    return f"{major}.{minor}+"


def _describe_function(fn):
    state, _slots = _function_state(fn)
    get = (lambda k: state.get(k)) if state is not None else (lambda k: None)
    code = _code_info(fn)
    name = _const(get("__qualname__")) or _const(get("__name__")) or code.get("code_name") or "<function>"
    module = _const(get("__module__"))
    out = {"name": name, "module": module, "mode": code["mode"], "file": code.get("file"),
           "line": code.get("line"), "size": fn.end - fn.start}
    if code["mode"] == "source":
        out["line"] = _source_line(code.get("source"), name)
        out["source"] = _own_source(code.get("source"), name)
        out["factory_source"] = code.get("source")
        out["python"] = _source_python(code.get("source"))
    elif code["mode"] == "bytecode":
        out["bytecode_size"] = code.get("bytecode_size")
        # CodeType takes 18 arguments on 3.11+ (co_qualname, co_exceptiontable), 16 on 3.8-3.10;
        # bytecode loads only on the sender's own version either way.
        layout = "3.11+" if code.get("code_args", 0) >= 18 else "3.8-3.10"
        out["python"] = f"the sender's version only ({layout} code layout)"
    glob = get("__globals__")
    if isinstance(glob, Dict):
        out["globals"] = {str(_const(k, "?")): _describe_value(v) for k, v in glob.pairs}
    closure = {}
    base = fn.arg(4)
    names = {}
    for n in _walk(base) if base is not None else []:
        if isinstance(n, Dict):
            for k, v in n.pairs:
                if isinstance(v, Call) and v.role == "cell":
                    names[id(v)] = _const(k, "?")
    cells = [n for n in _walk(base)] if base is not None else []
    freevars = code.get("freevars") or []
    i = 0
    for n in cells:
        if isinstance(n, Call) and n.role == "cell":
            label = names.get(id(n)) or (freevars[i] if i < len(freevars) else f"cell{i}")
            i += 1
            value = n.info.get("value")
            closure[str(label)] = _describe_value(value) if value is not None else "<empty cell>"
    if closure:
        out["closure"] = closure
    defaults = get("__defaults__")
    if isinstance(defaults, Seq) and defaults.items:
        out["defaults"] = [_describe_value(d) for d in defaults.items]
    submods = get("_cloudpickle_submodules")
    if isinstance(submods, Seq) and submods.items:
        out["submodules"] = [_describe_value(d) for d in submods.items]
    return out


def _describe_class(c):
    if c.role == "enum":
        # _make_skeleton_enum(bases, name, qualname, members, module, tracker_id, extra)
        name, qualname, module = _const(c.arg(1)), _const(c.arg(2)), _const(c.arg(4))
        bases = c.arg(0)
    else:
        # _make_skeleton_class(type_constructor, name, bases, type_kwargs, tracker_id, extra)
        name, bases = _const(c.arg(1)), c.arg(2)
        qualname, module = None, None
        kwargs = c.arg(3)
        if isinstance(kwargs, Dict):
            module = _const(kwargs.get("__module__"), None)
    methods = {}
    for st in c.states:
        d = st.items[0] if isinstance(st, Seq) and st.items and isinstance(st.items[0], Dict) else st
        if isinstance(d, Dict):
            for k, v in d.pairs:
                key = _const(k, "?")
                if key == "__qualname__":
                    qualname = qualname or _const(v)
                if key == "__module__":
                    module = module or _const(v)
                target = v
                if isinstance(v, Call) and v.role != "function":  # staticmethod/classmethod/property
                    inner = [n for n in _walk(v) if isinstance(n, Call) and n.role == "function"]
                    target = inner[0] if inner else v
                if isinstance(target, Call) and target.role == "function":
                    methods[str(key)] = _code_info(target)["mode"]
    return {"name": name, "qualname": qualname or name, "module": module, "kind": c.role,
            "bases": [_describe_value(b) for b in bases.items] if isinstance(bases, Seq) else [],
            "methods": methods, "size": c.end - c.start}


def _tree(node, depth, max_depth, seen, max_items=20):
    if not isinstance(node, Node):
        return {"kind": "?", "text": "?"}
    ref = id(node) in seen and not isinstance(node, (Const, Global))
    entry = {"kind": node.kind if not isinstance(node, Call) or not node.role else node.role,
             "text": _describe_value(node, limit=100), "size": max(0, node.end - node.start)}
    if isinstance(node, Call) and node.role is None:
        entry["kind"] = "object" if node.how in ("newobj", "newobj_ex", "obj", "inst") else "call"
    if isinstance(node, Call) and node.role == "instance":
        cls = node.arg(0)
        entry["kind"] = "object"
        entry["text"] = f"instance of {_describe_value(cls)}"
    elif isinstance(node, Call) and node.how in ("newobj", "newobj_ex"):
        entry["text"] = f"instance of {_describe_value(node.func)}"
    if ref:
        entry["text"] += " (shared reference, shown above)"
        return entry
    seen.add(id(node))
    if depth >= max_depth:
        return entry
    kids = []
    if isinstance(node, Seq):
        kids = node.items
    elif isinstance(node, Dict):
        kids = [v for _, v in node.pairs]
        entry["keys"] = [_describe_value(k, 40) for k, _ in node.pairs[:max_items]]
    elif isinstance(node, Call) and node.role in ("function", "class", "enum", "module", "cell",
                                                   "code", "compile", "builtin_type"):
        kids = []  # described in the functions/classes/modules sections
    elif isinstance(node, Call):
        kids = [a for a in (node.args.items if isinstance(node.args, Seq) else [node.args])]
        if node.role == "instance":
            kids = kids[1:]
        kids += node.states
    if kids:
        shown = [_tree(k, depth + 1, max_depth, seen) for k in kids[:max_items]]
        entry["children"] = shown
        if len(kids) > max_items:
            entry["more"] = len(kids) - max_items
    return entry


# ------------------------------------------------------------------------------------------
# Output

def _fmt_size(n):
    return f"{n:,} B"


def render(info, source_lines=12):
    out = io.StringIO()
    w = out.write
    recon = ", ".join(info["reconstructor_modules"]) or "none (plain pickle)"
    w(f"pickle: {_fmt_size(info['size'])}, protocol {info['protocol']}, "
      f"{info['opcodes']} opcodes; reconstructors: {recon}\n\n")
    w("objects:\n")
    _render_tree(info["tree"], w, "", True, top=True)
    fns = info["functions"]
    w(f"\nfunctions shipped by value: {len(fns)}\n")
    for f in fns:
        where = f"{f.get('file') or '?'}:{f.get('line') or '?'}"
        how = f"source, Python {f['python']}" if f["mode"] == "source" else (
            f"bytecode ({f['bytecode_size']} B of code)" if f.get("bytecode_size") else f["mode"])
        if f["mode"] == "bytecode":
            how += f", loads on {f['python']}"
        w(f"  {f['name']}  [{how}]  {where}  module {f.get('module')!s}  {_fmt_size(f['size'])}\n")
        if f.get("globals"):
            w("    globals: " + ", ".join(f"{k} = {v}" for k, v in f["globals"].items()) + "\n")
        if f.get("closure"):
            w("    closure: " + ", ".join(f"{k} = {v}" for k, v in f["closure"].items()) + "\n")
        if f.get("defaults"):
            w("    defaults: " + ", ".join(f["defaults"]) + "\n")
        if f.get("source"):
            lines = f["source"].split("\n")
            for ln in lines[:source_lines]:
                w(f"    | {ln}\n")
            if len(lines) > source_lines:
                w(f"    | ... {len(lines) - source_lines} more lines\n")
    cls = info["classes"]
    w(f"\nclasses shipped by value: {len(cls)}\n")
    for c in cls:
        methods = ", ".join(f"{k} ({v})" for k, v in c["methods"].items()) or "-"
        w(f"  {c['kind']} {c['qualname']}({', '.join(c['bases'])})  module {c.get('module')!s}  "
          f"{_fmt_size(c['size'])}\n    methods: {methods}\n")
    w(f"\nmodules the receiver must import: {len(info['modules'])}\n")
    for m, reasons in info["modules"].items():
        shown = ", ".join(reasons[:6]) + (f", ... {len(reasons) - 6} more" if len(reasons) > 6 else "")
        w(f"  {m}: {shown}\n")
    return out.getvalue()


def _render_tree(node, w, prefix, last, top=False):
    if node is None:
        return
    branch = "" if top else ("└─ " if last else "├─ ")
    keys = node.get("keys")
    w(f"{prefix}{branch}{node['text']}  [{node['kind']}, {_fmt_size(node['size'])}]\n")
    kids = node.get("children", [])
    child_prefix = prefix + ("" if top else ("   " if last else "│  "))
    for i, k in enumerate(kids):
        if keys and i < len(keys):
            k = dict(k, text=f"{keys[i]}: {k['text']}")
        _render_tree(k, w, child_prefix, i == len(kids) - 1 and not node.get("more"))
    if node.get("more"):
        w(f"{child_prefix}└─ ... {node['more']} more\n")


def _stdlib_names():
    """Top-level names of the standard library (``sys.stdlib_module_names`` from 3.10 on; on
    3.9, what the interpreter's stdlib folder holds, plus the built-in modules)."""
    names = set(sys.builtin_module_names)
    if hasattr(sys, "stdlib_module_names"):
        return names | set(sys.stdlib_module_names)
    import sysconfig

    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib"):
        root = paths.get(key)
        if not root or not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            if entry in ("site-packages", "dist-packages"):
                continue
            name, ext = os.path.splitext(entry)
            if ext == ".py" or (not ext and os.path.isdir(os.path.join(root, entry))):
                names.add(name)
        dynload = os.path.join(root, "lib-dynload")
        if os.path.isdir(dynload):
            names.update(e.split(".", 1)[0] for e in os.listdir(dynload))
    return names


def _packages_distributions(metadata):
    """``importlib.metadata.packages_distributions()`` (3.10+), rebuilt on 3.9 from each
    distribution's ``top_level.txt`` or, without one, the top-level entries of its RECORD."""
    # 3.10's packages_distributions reads top_level.txt only, which wheels built by newer tools
    # (numpy's, ours) do not have: the inference below fills in what it misses.
    out = {}
    if hasattr(metadata, "packages_distributions"):
        for top, names in metadata.packages_distributions().items():
            out[top] = list(names)
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:
            for f in dist.files or ():
                parts = f.parts
                if len(parts) > 1 and not parts[0].endswith((".dist-info", ".egg-info", ".data")) \
                        and not parts[0].startswith((".", "__")):
                    tops.append(parts[0])
                elif len(parts) == 1 and parts[0].endswith(".py"):
                    tops.append(parts[0][:-3])
        for top in dict.fromkeys(tops):
            names = out.setdefault(top, [])
            if name not in names:
                names.append(name)
    return out


def requirements(info, show_all=False):
    """Requirements lines for the modules a receiver must import."""
    from importlib import metadata

    stdlib = _stdlib_names()
    try:
        by_module = _packages_distributions(metadata)
    except Exception:  # pragma: no cover
        by_module = {}
    dists, std, missing = {}, set(), {}
    for module in info["modules"]:
        top = module.split(".", 1)[0]
        if top in stdlib or top == "__main__":
            std.add(top)
            continue
        names = by_module.get(top)
        if not names:
            missing.setdefault(top, []).append(module)
            continue
        for dist in names:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = None
            dists.setdefault(dist, (version, set()))[1].add(top)
    lines = ["# requirements of the receiver (import-level modules named by the pickle)"]
    for dist, (version, tops) in sorted(dists.items(), key=lambda kv: kv[0].lower()):
        req = f"{dist}=={version}" if version else dist
        lines.append(f"{req:<40} # {', '.join(sorted(tops))}")
    for top, mods in sorted(missing.items()):
        lines.append(f"# {top}: no installed distribution provides it ({', '.join(sorted(set(mods)))})")
    if show_all and std:
        lines.append("# standard library: " + ", ".join(sorted(std)))
    return lines


def _read(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _check_command(args):
    from cloudpickle_rs._receiver import NDIF_DENY, Receiver, check_stream

    deny = []
    for entry in (e.strip() for e in args.deny.split(",")):
        if entry == "ndif":
            deny.extend(NDIF_DENY)
        elif entry:
            deny.append(entry)
    modules = [m for m in args.modules.split(",") if m.strip()]
    try:
        kw = dict(python=args.python, modules=modules, deny=deny, max_bytes=args.max_bytes)
        receiver = Receiver.from_requirements(args.requirements, **kw) if args.requirements else Receiver(**kw)
    except (ValueError, OSError) as e:
        print(f"bad receiver: {e}", file=sys.stderr)
        return 2
    try:
        report = check_stream(_read(args.file), receiver)
    except OSError as e:
        print(f"cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{args.file}: not a readable pickle: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": [p.as_dict() for p in report.problems],
                          "by_value": report.by_value, "by_reference": report.by_reference,
                          "size": report.size, "largest": report.largest}, indent=2))
    else:
        print(report)
    return 0 if report.ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cloudpickle_rs",
                                description="Look inside a pickle without executing it.")
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("inspect", help="tree of objects, functions, classes, modules, sizes")
    pi.add_argument("file", help="pickle file, or - for standard input")
    pi.add_argument("--json", action="store_true", help="print JSON")
    pi.add_argument("--source-lines", type=int, default=12)
    pd = sub.add_parser("deps", help="requirements lines for the modules the receiver imports")
    pd.add_argument("file", help="pickle file, or - for standard input")
    pd.add_argument("--all", action="store_true", help="also list standard-library modules")
    pd.add_argument("--json", action="store_true")
    pc = sub.add_parser("check", help="judge the pickle for a receiver, without loading it (exit 1: not OK)")
    pc.add_argument("file", help="pickle file, or - for standard input")
    pc.add_argument("--python", help="the receiver's Python, e.g. 3.9")
    pc.add_argument("--modules", default="", help="top-level modules the receiver can import, comma-separated")
    pc.add_argument("--requirements", help="a requirements file of the receiver (adds its modules)")
    pc.add_argument("--deny", default="", help="modules and builtins the receiver refuses to run, "
                    "comma-separated ('ndif' for NDIF's list)")
    pc.add_argument("--max-bytes", type=int, help="the largest pickle the receiver takes")
    pc.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.command == "check":
        return _check_command(args)
    try:
        data = _read(args.file)
        info = analyse(data)
    except OSError as e:
        print(f"cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # pickletools: truncated or malformed stream
        print(f"{args.file}: not a readable pickle: {e}", file=sys.stderr)
        return 1
    if args.command == "inspect":
        if args.json:
            print(json.dumps(info, indent=2, default=repr))
        else:
            sys.stdout.write(render(info, args.source_lines))
    else:
        lines = requirements(info, show_all=args.all)
        if args.json:
            print(json.dumps({"modules": info["modules"], "requirements": lines}, indent=2))
        else:
            print("\n".join(lines))
    return 0
