"""What the engine rows of `make bench` share (benches/engine_*.py, each run in its engine's venv)."""
import json
import statistics


def alternate(rounds, default, integration, one_round):
    """Time ``one_round()`` (-> (seconds, dumps calls)) with the engine's default pickler and with
    ours, alternating which goes first each round; the first round warms both up.  Returns the
    medians, samples, call counts and the ratio ours / default."""
    samples = {default: [], "ours": []}
    calls = {}
    for r in range(rounds + 1):
        for name in ((default, "ours") if r % 2 else ("ours", default)):
            if name == "ours":
                integration.install()
            else:
                integration.uninstall()
            seconds, n = one_round()
            calls[name] = n
            if r:
                samples[name].append(seconds)
    integration.uninstall()
    out = {name: {"median": statistics.median(v), "samples": v, "dumps_calls": calls[name]}
           for name, v in samples.items()}
    out["ratio"] = out["ours"]["median"] / out[default]["median"]
    return out


def report(out):
    print("ENGINE-RESULT: " + json.dumps(out), flush=True)
