import os

if os.environ.get("CLOUDPICKLE_RS_ISOLATE_FORBID") == str(os.getpid()):
    raise ImportError("protected_pkg must not be imported in the parent process")


class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n

    def apply(self, f, x):
        return f(x)

    def fail(self):
        raise KeyError("boom")

    def echo(self, x):
        return x

    def child(self):
        return Counter(self.n)

    def __len__(self):
        return self.n


def _block_forever():
    import threading

    threading.Event().wait()


Counter.block = lambda self: _block_forever()


class Resource:
    """A context manager, a container and a thing with properties and its own close()."""

    kind = "resource"

    def __init__(self, items=()):
        self.items = list(items)
        self.closed = False
        self.exits = []

    @property
    def size(self):
        return len(self.items)

    def close(self):
        self.closed = True
        return "target close"

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self.exits.append(None if et is None else (et.__name__, str(ev)))
        return isinstance(ev, KeyError)  # swallow KeyError, propagate the rest

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __contains__(self, x):
        return x in self.items

    def __getitem__(self, i):
        return self.items[i]

    def __repr__(self):
        return "Resource(%r)" % (self.items,)

    def gen(self, n):
        for i in range(n):
            yield i * i

    def call(self, f, *a):
        return f(*a)

    def call_twice(self, f, g):
        return f() is f and g is f

    def same(self, a, b):
        return a is b

    def ident(self, x):
        return x

    def div(self, a, b):
        return a / b


def _child_only_thing():
    import child_only  # written by the test into a directory only the child has on its path

    return child_only.Thing()


Resource.make_child_only = lambda self: _child_only_thing()
Resource.call_with_thing = lambda self, f: f(_child_only_thing())
