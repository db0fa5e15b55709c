"""The class benches/isolate_bench.py runs in a child interpreter (never imported by the bench)."""


class Worker:
    def tiny(self, x):
        return x + 1

    def echo(self, b):
        return b

    def loop(self, f, n):
        total = 0
        for i in range(n):
            total += f(i)
        return total


def tiny(x):
    return x + 1


def echo(b):
    return b
