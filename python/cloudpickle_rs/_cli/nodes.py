"""The symbolic nodes the machine builds: constants, globals, containers, calls, placeholders."""
from cloudpickle_rs._cli.shape import RECONSTRUCTOR_MODULES


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
