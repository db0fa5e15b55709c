"""What a stream holds, from the machine's nodes: functions (by source or bytecode, their
names, lines, own text, globals and closures), classes, modules by reference, and the tree of
objects (JSON-able, what ``inspect --json`` prints).  The stream's shape comes from :mod:`.shape`.
"""
from cloudpickle_rs._cli import shape as S
from cloudpickle_rs._cli.machine import _machine
from cloudpickle_rs._cli.nodes import Call, Const, Dict, Global, Node, Opaque, Seq, _const


def _compiled(node):
    """(source, file name) of a compile call of the stream (builtins.compile or the receiver's
    compile helper, which takes the padding as a count), each None when not a plain value."""
    if node.info.get("helper"):
        head, pad = _eval_str(node.arg(S.HELPER_HEAD_ARG)), _const(node.arg(S.HELPER_PAD_ARG))
        body = _eval_str(node.arg(S.HELPER_BODY_ARG))
        if head is None or body is None or type(pad) is not int or not 0 <= pad <= 10_000_000:
            return None, _eval_str(node.arg(S.HELPER_FILE_ARG))
        padding = "'''" + "\n" * (pad - 1) + "'''\n" if pad >= S.PADDING_AS_STRING else "\n" * pad
        return head + padding + body, _eval_str(node.arg(S.HELPER_FILE_ARG))
    return _eval_str(node.arg(0)), _eval_str(node.arg(1))


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


def _eval_str(node, depth=0):
    """The value of a string built by the stream with stdlib string operations (padding such as
    ``operator.add(operator.mul('\n', k), text)``), computed here without running anything;
    None when it is not such an expression."""
    if isinstance(node, Const):
        return node.value if isinstance(node.value, str) else None
    if depth > 50 or not isinstance(node, Call):
        return None
    f = node.func
    if (isinstance(f, Call) and isinstance(f.func, Global) and f.func.dotted == f"{S.BUILTINS}.{S.GETATTR}"
            and _const(f.arg(0)) == "" and _const(f.arg(1)) == S.JOIN):
        # ''.join([...]): the factory text from its own lines and slices of the original lines
        parts = node.arg(0)
        if not isinstance(parts, Seq):
            return None
        texts = [_eval_str(p, depth + 1) for p in parts.items]
        return None if any(t is None for t in texts) else "".join(texts)
    if not isinstance(f, Global):
        return None
    if f.dotted in S.GETITEM:
        text, where = _eval_str(node.arg(0), depth + 1), node.arg(1)
        if (text is None or not isinstance(where, Call) or not isinstance(where.func, Global)
                or where.func.dotted != f"{S.BUILTINS}.{S.SLICE}"):
            return None
        bounds = [_const(x) for x in (where.args.items if isinstance(where.args, Seq) else [])]
        if not all(x is None or type(x) is int for x in bounds):
            return None
        return text[slice(*bounds)]
    if (f.module, f.name) not in S.STR_OPS:
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
    its own text.  A lambda with free variables is assigned inside the wrapper that makes its
    closure (``shape.CLOSURE_WRAPPER``): the lambda is the wrapper's body."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    first = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == S.FACTORY_RESULT for t in node.targets):
            value = node.value
            # a closure's lambda: ``((lambda <free vars>=None: <the lambda>)())``
            while (isinstance(value, ast.Call) and isinstance(value.func, ast.Lambda)
                   and not value.args and not value.keywords):
                value = value.func.body
            if isinstance(value, ast.Lambda):
                first = value
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
        body = [ln for ln in lines if ln.strip() and S.FACTORY_RESULT not in ln]
        return "\n".join(body)
    first = lines[line - 1]
    indent = len(first) - len(first.lstrip())
    out = [first]
    for ln in lines[line:]:
        if S.FACTORY_RESULT in ln:
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


def _source_python(source):
    """Minimum receiver Python of a by_source factory: the sender marks text that needs more
    than 3.8 (the oldest receiver) with a ``# cloudpickle-rs: requires Python X.Y+`` line."""
    found = [(int(a), int(b)) for a, b in S.REQUIRES.findall(source or "")]
    major, minor = max(found) if found else S.OLDEST_RECEIVER
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
        layout = "3.11+" if code.get("code_args", 0) >= S.CODE_ARGS_311 else "3.8-3.10"
        out["python"] = f"the sender's version only ({layout} code layout)"
    glob = get("__globals__")
    if isinstance(glob, Dict):
        out["globals"] = {str(_const(k, "?")): _describe_value(v) for k, v in glob.pairs}
    closure = {}
    base = fn.arg(S.FUNCTION_CLOSURE_ARG)
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
        name, qualname = _const(c.arg(S.ENUM_NAME_ARG)), _const(c.arg(S.ENUM_QUALNAME_ARG))
        module, bases = _const(c.arg(S.ENUM_MODULE_ARG)), c.arg(S.ENUM_BASES_ARG)
    else:
        # _make_skeleton_class(type_constructor, name, bases, type_kwargs, tracker_id, extra)
        name, bases = _const(c.arg(S.CLASS_NAME_ARG)), c.arg(S.CLASS_BASES_ARG)
        qualname, module = None, None
        kwargs = c.arg(S.CLASS_KWARGS_ARG)
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
