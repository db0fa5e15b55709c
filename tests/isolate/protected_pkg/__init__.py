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
