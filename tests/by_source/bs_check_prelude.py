# Helpers available to every scenario's check code, in the producer (on the original object) and
# in the loaders (on the loaded one). Must stay valid Python 3.9 syntax (PyPy 3.9 loader).
import asyncio
import traceback


def run_async(coro):
    return asyncio.run(coro)


def collect_async(agen):
    async def _collect():
        return [x async for x in agen]
    return asyncio.run(_collect())


def frames_in(fn, filename):
    """Call fn(), which must raise: the traceback entries that belong to `filename` (the deleted
    script), and whether the formatted traceback text shows each of them with its source line."""
    try:
        fn()
    except Exception as e:
        tb = e.__traceback__
        entries = [[fs.filename, fs.lineno, fs.name, fs.line]
                   for fs in traceback.extract_tb(tb) if fs.filename == filename]
        text = "".join(traceback.format_exception(type(e), e, tb))
        shown = [('File "%s", line %d, in %s' % (f, l, n)) in text and ("    " + (ln or "?")) in text
                 for f, l, n, ln in entries]
        return {"exc": type(e).__name__, "msg": str(e), "frames": entries, "shown": shown}
    raise AssertionError("expected an exception")
