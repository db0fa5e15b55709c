"""Does a code object recompiled from source do what the original does?

by_source compiles a function's text again (on the sender, once per code object) and checks it
against the running code before sending it, so that a file edited after it was imported is
refused rather than sent. Byte equality is too strict: CPython 3.11 compiles
`module.attr(...)` as LOAD_ATTR when `module` comes from an `import` in the same compilation
unit and as LOAD_METHOD otherwise (the recompiled text lacks the module's imports), which also
shifts jump offsets (and adds a PUSH_NULL on the LOAD_ATTR side). So instructions are compared
by name and meaning: jump targets as instruction indices, LOAD_METHOD as LOAD_ATTR, PUSH_NULL
ignored, constants and names by value, nested code recursively.
"""
import dis
import types

_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_SAME_OP = {"LOAD_METHOD": "LOAD_ATTR"}
_DROPPED = frozenset({"PUSH_NULL"})


def _normal(code):
    # PUSH_NULL only exists on the LOAD_ATTR side of the LOAD_METHOD/LOAD_ATTR choice: drop it
    # (a jump to it lands on the instruction after it).
    instructions = [ins for ins in dis.get_instructions(code)]
    kept = [ins for ins in instructions if ins.opname not in _DROPPED]
    index = {}
    position = 0
    for ins in instructions:
        index[ins.offset] = position
        if ins.opname not in _DROPPED:
            position += 1
    out = []
    for ins in kept:
        name = _SAME_OP.get(ins.opname, ins.opname)
        if ins.opcode in _JUMPS:
            arg = ("jump", index.get(ins.argval, ins.argval))
        elif isinstance(ins.argval, types.CodeType):
            arg = ("code",)
        else:
            arg = (type(ins.argval).__name__, repr(ins.argval))
        out.append((name, arg))
    return out


def same_code(original, rebuilt, _depth=0):
    """True when `rebuilt` is `original` compiled again from the same text."""
    if _depth > 64:
        return False
    for field in ("co_name", "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_argcount",
                  "co_kwonlyargcount", "co_posonlyargcount"):
        if getattr(original, field) != getattr(rebuilt, field):
            return False
    if _normal(original) != _normal(rebuilt):
        return False
    a, b = original.co_consts, rebuilt.co_consts
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if type(x) is not type(y):
            return False
        if isinstance(x, types.CodeType):
            if not same_code(x, y, _depth + 1):
                return False
        elif x is not y and not (x == y and repr(x) == repr(y)):
            return False
    return True
