"""The symbolic machine: replay a pickle's opcodes on a stack of nodes, never executing them.

``pickletools.genops`` decodes the stream; each opcode's handler (the ``_DISPATCH`` table, opcode
name -> handler) pushes, pops or fills :mod:`.nodes`.  Each call is handed to
:func:`.roles.on_call` as it is made, which marks cloudpickle's reconstructor calls.
"""
import pickletools

from cloudpickle_rs._cli.nodes import Call, Const, Dict, Global, Opaque, Seq, _const
from cloudpickle_rs._cli.roles import on_call


class _Machine:
    def __init__(self):
        self.stack, self.starts, self.marks, self.mark_pos, self.memo = [], [], [], [], {}
        self.proto = 0
        self.calls = []
        self.globals_seen = []
        self.next_buffer = 0
        self.root = None

    def push(self, node, start):
        self.stack.append(node)
        self.starts.append(start)

    def pop(self):
        self.starts.pop()
        return self.stack.pop()

    def pop_mark(self):
        i = self.marks.pop()
        items, item_starts = self.stack[i:], self.starts[i:]
        del self.stack[i:]
        del self.starts[i:]
        mark_start = self.mark_pos.pop()
        return items, min([mark_start, *item_starts])

    def push_new(self, node, start, end):
        node.start, node.end = start, end
        self.push(node, start)
        return node

    def push_call(self, node, start, end):
        self.calls.append(self.push_new(node, start, end))
        return node


# Handlers: (machine, opcode name, argument, position, end of the opcode) -> True to stop.

def _nothing(m, name, arg, pos, end):
    pass


def _proto(m, name, arg, pos, end):
    m.proto = arg


def _stop(m, name, arg, pos, end):
    m.root = m.pop()
    return True


def _mark(m, name, arg, pos, end):
    m.marks.append(len(m.stack))
    m.mark_pos.append(pos)


_FIXED_CONSTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _const_op(m, name, arg, pos, end):
    m.push_new(Const(_FIXED_CONSTS.get(name, arg)), pos, end)


def _next_buffer(m, name, arg, pos, end):
    m.push_new(Opaque("buffer", f"out-of-band buffer #{m.next_buffer}"), pos, end)
    m.next_buffer += 1


_EMPTY = {"EMPTY_LIST": lambda: Seq("list", []), "EMPTY_TUPLE": lambda: Seq("tuple", []),
          "EMPTY_DICT": Dict, "EMPTY_SET": lambda: Seq("set", [])}


def _empty(m, name, arg, pos, end):
    m.push_new(_EMPTY[name](), pos, end)


_MARKED_SEQ = {"TUPLE": "tuple", "LIST": "list", "FROZENSET": "frozenset"}


def _marked_seq(m, name, arg, pos, end):
    items, start = m.pop_mark()
    m.push_new(Seq(_MARKED_SEQ[name], items), start, end)


def _small_tuple(m, name, arg, pos, end):
    n = int(name[-1])
    items = m.stack[-n:]
    start = min(m.starts[-n:])
    del m.stack[-n:]
    del m.starts[-n:]
    m.push_new(Seq("tuple", items), start, end)


def _dict(m, name, arg, pos, end):
    items, start = m.pop_mark()
    m.push_new(Dict(zip(items[::2], items[1::2])), start, end)


def _append(m, name, arg, pos, end):
    item = m.pop()
    target = m.stack[-1]
    if isinstance(target, Seq):
        target.items.append(item)
    target.end = end


def _appends(m, name, arg, pos, end):  # APPENDS, ADDITEMS
    items, _ = m.pop_mark()
    target = m.stack[-1]
    if isinstance(target, Seq):
        target.items.extend(items)
    target.end = end


def _setitem(m, name, arg, pos, end):
    v = m.pop()
    k = m.pop()
    target = m.stack[-1]
    if isinstance(target, Dict):
        target.pairs.append((k, v))
    target.end = end


def _setitems(m, name, arg, pos, end):
    items, _ = m.pop_mark()
    target = m.stack[-1]
    if isinstance(target, Dict):
        target.pairs.extend(zip(items[::2], items[1::2]))
    target.end = end


def _pop(m, name, arg, pos, end):
    m.pop()


def _pop_mark(m, name, arg, pos, end):
    m.pop_mark()


def _dup(m, name, arg, pos, end):
    m.push(m.stack[-1], m.starts[-1])


def _global(m, name, arg, pos, end):  # GLOBAL, STACK_GLOBAL, INST
    if name == "STACK_GLOBAL":
        gname = m.pop()
        gmod = m.pop()
        module, qual = _const(gmod, "?"), _const(gname, "?")
        # the strings may be memo references: count only this opcode
    else:
        module, qual = arg.split(" ", 1) if " " in arg else (arg, "")
    g = Global(str(module), str(qual))
    g.start, g.end = pos, end
    m.globals_seen.append(g)
    if name == "INST":
        items, start = m.pop_mark()
        m.push_call(Call(g, Seq("tuple", items), how="inst"), start, end)
    else:
        m.push(g, pos)


def _obj(m, name, arg, pos, end):
    items, start = m.pop_mark()
    cls, args = (items[0], Seq("tuple", items[1:])) if items else (Opaque("?"), Seq("tuple", []))
    m.push_call(Call(cls, args, how="obj"), start, end)


def _reduce(m, name, arg, pos, end):  # REDUCE, NEWOBJ
    start = min(m.starts[-2], m.starts[-1])
    args = m.pop()
    func = m.pop()
    node = Call(func, args, how=name.lower())
    node.start, node.end = start, end
    m.calls.append(node)
    on_call(node)
    m.push(node, start)


def _newobj_ex(m, name, arg, pos, end):
    start = min(m.starts[-3:])
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    m.push_call(Call(cls, args, kwargs, how="newobj_ex"), start, end)


def _build(m, name, arg, pos, end):
    state = m.pop()
    target = m.stack[-1]
    if isinstance(target, Call):
        target.states.append(state)
    target.end = end


def _put(m, name, arg, pos, end):
    m.memo[arg] = m.stack[-1]


def _memoize(m, name, arg, pos, end):
    m.memo[len(m.memo)] = m.stack[-1]


def _get(m, name, arg, pos, end):
    m.push(m.memo.get(arg, Opaque("missing-memo", str(arg))), pos)


def _persid(m, name, arg, pos, end):
    pid = arg if name == "PERSID" else m.pop()
    m.push_new(Opaque("persistent_id", repr(_const(pid, pid))), pos, end)


def _ext(m, name, arg, pos, end):
    m.push_new(Opaque("extension", f"copyreg extension code {arg}"), pos, end)


def _unknown(m, name, arg, pos, end):
    """An opcode this reader does not model: keep going with a placeholder."""
    m.push_new(Opaque("unknown", name), pos, end)


def _table(*groups):
    out = {}
    for names, handler in groups:
        for n in names.split():
            out[n] = handler
    return out


#: Opcode name -> handler; opcodes not named here get an ``unknown`` placeholder.
_DISPATCH = _table(
    ("PROTO", _proto),
    ("FRAME READONLY_BUFFER", _nothing),
    ("STOP", _stop),
    ("MARK", _mark),
    ("NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING "
     "BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES "
     "SHORT_BINBYTES BINBYTES8 BYTEARRAY8", _const_op),
    ("NEXT_BUFFER", _next_buffer),
    ("EMPTY_LIST EMPTY_TUPLE EMPTY_DICT EMPTY_SET", _empty),
    ("TUPLE LIST FROZENSET", _marked_seq),
    ("TUPLE1 TUPLE2 TUPLE3", _small_tuple),
    ("DICT", _dict),
    ("APPEND", _append),
    ("APPENDS ADDITEMS", _appends),
    ("SETITEM", _setitem),
    ("SETITEMS", _setitems),
    ("POP", _pop),
    ("POP_MARK", _pop_mark),
    ("DUP", _dup),
    ("GLOBAL STACK_GLOBAL INST", _global),
    ("OBJ", _obj),
    ("REDUCE NEWOBJ", _reduce),
    ("NEWOBJ_EX", _newobj_ex),
    ("BUILD", _build),
    ("PUT BINPUT LONG_BINPUT", _put),
    ("MEMOIZE", _memoize),
    ("GET BINGET LONG_BINGET", _get),
    ("PERSID BINPERSID", _persid),
    ("EXT1 EXT2 EXT4", _ext),
)


def _machine(data):
    """Replay the opcodes on a symbolic stack; return (root, protocol, globals, calls, size, ops)."""
    m = _Machine()
    ops_list = list(pickletools.genops(data))
    ops = 0
    for idx, (op, arg, pos) in enumerate(ops_list):
        ops += 1
        nxt = ops_list[idx + 1][2] if idx + 1 < len(ops_list) else len(data)
        if _DISPATCH.get(op.name, _unknown)(m, op.name, arg, pos, nxt):
            break
    # Node starts recorded at creation; memo references keep the original node.
    return m.root, m.proto, m.globals_seen, m.calls, len(data), ops
