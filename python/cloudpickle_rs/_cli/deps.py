"""``deps``: the distributions installed here that provide the modules a stream's receiver imports."""
import os
import sys


def _stdlib_names():
    """Top-level names of the standard library (``sys.stdlib_module_names`` from 3.10 on; on
    3.9, what the interpreter's stdlib folder holds, plus the built-in modules)."""
    names = set(sys.builtin_module_names)
    if hasattr(sys, "stdlib_module_names"):
        return names | set(sys.stdlib_module_names)
    import sysconfig

    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib"):
        root = paths.get(key)
        if not root or not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            if entry in ("site-packages", "dist-packages"):
                continue
            name, ext = os.path.splitext(entry)
            if ext == ".py" or (not ext and os.path.isdir(os.path.join(root, entry))):
                names.add(name)
        dynload = os.path.join(root, "lib-dynload")
        if os.path.isdir(dynload):
            names.update(e.split(".", 1)[0] for e in os.listdir(dynload))
    return names


def _packages_distributions(metadata):
    """``importlib.metadata.packages_distributions()`` (3.10+), rebuilt on 3.9 from each
    distribution's ``top_level.txt`` or, without one, the top-level entries of its RECORD."""
    # 3.10's packages_distributions reads top_level.txt only, which wheels built by newer tools
    # (numpy's, ours) do not have: the inference below fills in what it misses.
    out = {}
    if hasattr(metadata, "packages_distributions"):
        for top, names in metadata.packages_distributions().items():
            out[top] = list(names)
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:
            for f in dist.files or ():
                parts = f.parts
                if len(parts) > 1 and not parts[0].endswith((".dist-info", ".egg-info", ".data")) \
                        and not parts[0].startswith((".", "__")):
                    tops.append(parts[0])
                elif len(parts) == 1 and parts[0].endswith(".py"):
                    tops.append(parts[0][:-3])
        for top in dict.fromkeys(tops):
            names = out.setdefault(top, [])
            if name not in names:
                names.append(name)
    return out


def requirements(info, show_all=False):
    """Requirements lines for the modules a receiver must import."""
    from importlib import metadata

    stdlib = _stdlib_names()
    try:
        by_module = _packages_distributions(metadata)
    except Exception:  # pragma: no cover
        by_module = {}
    dists, std, missing = {}, set(), {}
    for module in info["modules"]:
        top = module.split(".", 1)[0]
        if top in stdlib or top == "__main__":
            std.add(top)
            continue
        names = by_module.get(top)
        if not names:
            missing.setdefault(top, []).append(module)
            continue
        for dist in names:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = None
            dists.setdefault(dist, (version, set()))[1].add(top)
    lines = ["# requirements of the receiver (import-level modules named by the pickle)"]
    for dist, (version, tops) in sorted(dists.items(), key=lambda kv: kv[0].lower()):
        req = f"{dist}=={version}" if version else dist
        lines.append(f"{req:<40} # {', '.join(sorted(tops))}")
    for top, mods in sorted(missing.items()):
        lines.append(f"# {top}: no installed distribution provides it ({', '.join(sorted(set(mods)))})")
    if show_all and std:
        lines.append("# standard library: " + ", ".join(sorted(std)))
    return lines
