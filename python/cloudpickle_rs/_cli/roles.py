"""Recognise cloudpickle's reconstructor calls as the machine makes them (a call's ``role``).

The names and call shapes come from :mod:`.shape`.
"""
from cloudpickle_rs._cli import shape as S
from cloudpickle_rs._cli.nodes import Call, Dict, Global, _const


def _is_compile_fn(node):
    """`builtins.compile`, or the stream's cached form of it (see `on_call`)."""
    if isinstance(node, Global):
        return node.module == S.BUILTINS and node.name == S.COMPILE
    return isinstance(node, Call) and node.role == "compile_fn"


def _on_call_of_call(node, f):
    """Calls whose callable is itself made by the stream (not a global)."""
    if isinstance(f, Call) and f.role == "builtin_type" and f.info.get("name") == S.CODE_TYPE:
        node.role = "code"
        node.info["mode"] = "bytecode"
    elif isinstance(f, Call) and f.role == "compile_fn":
        node.role = "compile"
    elif (isinstance(f, Call) and isinstance(f.func, Global)
          and f.func.dotted in S.GETITEM and _const(f.arg(1)) == S.HELPER_NAME):
        # the receiver's compile helper: (key, filename, head, padding, body)
        node.role = "compile"
        node.info["helper"] = True
    elif _is_compile_fn(node.arg(0)) or _is_compile_fn(node.arg(1)):
        # functools.lru_cache(n)(compile), and the receiver's setdefault that keeps it
        node.role = "compile_fn"


def _setstate(node):
    target, state = node.arg(0), node.arg(1)
    if isinstance(target, Call):
        target.states.append(state)
        target.end = max(target.end, node.end)
    node.role = "setstate"


def _builtin_type(node):
    node.role = "builtin_type"
    node.info["name"] = _const(node.arg(0))


def _cell(node):
    node.role = "cell"
    if node.func.name == S.MAKE_CELL_WITH_VALUE:
        node.info["value"] = node.arg(0)


def _role(name):
    def set_role(node):
        node.role = name
    return set_role


#: Reconstructor name -> what its call does to the node.
_RECONSTRUCTORS = {
    S.MAKE_FUNCTION: _role("function"),
    **{n: _setstate for n in S.SETSTATE},
    S.MAKE_CLASS: _role("class"),
    S.MAKE_ENUM: _role("enum"),
    **{n: _role("module") for n in S.SUBIMPORT},
    S.BUILTIN_TYPE: _builtin_type,
    **{n: _cell for n in S.MAKE_CELL},
}


def _set_cell_contents(node):
    cell = node.arg(0)
    if isinstance(cell, Call):
        cell.info["value"] = node.arg(2)
    node.role = "setstate"


def _exec(node):
    node.arg(1).executed.append(node)
    node.role = "exec"


def on_call(node):
    """Recognise cloudpickle's reconstructor calls as they are made."""
    f = node.func
    if not isinstance(f, Global):
        _on_call_of_call(node, f)
        return
    if f.is_reconstructor() and f.name in _RECONSTRUCTORS:
        _RECONSTRUCTORS[f.name](node)
    elif f.module == S.BUILTINS and f.name == S.SETATTR and _const(node.arg(1)) == S.CELL_CONTENTS:
        _set_cell_contents(node)
    elif f.module == S.BUILTINS and f.name == S.COMPILE:
        node.role = "compile"
    elif f.module == S.BUILTINS and f.name == S.EXEC and isinstance(node.arg(1), Dict):
        _exec(node)
    elif f.module in S.COPYREG_MODULES and f.name in S.COPYREG_NEWOBJ:
        node.role = "instance"
    elif f.module in S.COPYREG_MODULES and f.name == S.COPYREG_RECONSTRUCTOR:
        node.role = "instance"
