"""Text output of ``inspect``: the object tree, functions, classes and modules of :func:`.analysis.analyse`'s description."""
import io


def _fmt_size(n):
    return f"{n:,} B"


def render(info, source_lines=12):
    out = io.StringIO()
    w = out.write
    recon = ", ".join(info["reconstructor_modules"]) or "none (plain pickle)"
    w(f"pickle: {_fmt_size(info['size'])}, protocol {info['protocol']}, "
      f"{info['opcodes']} opcodes; reconstructors: {recon}\n\n")
    w("objects:\n")
    _render_tree(info["tree"], w, "", True, top=True)
    fns = info["functions"]
    w(f"\nfunctions shipped by value: {len(fns)}\n")
    for f in fns:
        where = f"{f.get('file') or '?'}:{f.get('line') or '?'}"
        how = f"source, Python {f['python']}" if f["mode"] == "source" else (
            f"bytecode ({f['bytecode_size']} B of code)" if f.get("bytecode_size") else f["mode"])
        if f["mode"] == "bytecode":
            how += f", loads on {f['python']}"
        w(f"  {f['name']}  [{how}]  {where}  module {f.get('module')!s}  {_fmt_size(f['size'])}\n")
        if f.get("globals"):
            w("    globals: " + ", ".join(f"{k} = {v}" for k, v in f["globals"].items()) + "\n")
        if f.get("closure"):
            w("    closure: " + ", ".join(f"{k} = {v}" for k, v in f["closure"].items()) + "\n")
        if f.get("defaults"):
            w("    defaults: " + ", ".join(f["defaults"]) + "\n")
        if f.get("source"):
            lines = f["source"].split("\n")
            for ln in lines[:source_lines]:
                w(f"    | {ln}\n")
            if len(lines) > source_lines:
                w(f"    | ... {len(lines) - source_lines} more lines\n")
    cls = info["classes"]
    w(f"\nclasses shipped by value: {len(cls)}\n")
    for c in cls:
        methods = ", ".join(f"{k} ({v})" for k, v in c["methods"].items()) or "-"
        w(f"  {c['kind']} {c['qualname']}({', '.join(c['bases'])})  module {c.get('module')!s}  "
          f"{_fmt_size(c['size'])}\n    methods: {methods}\n")
    w(f"\nmodules the receiver must import: {len(info['modules'])}\n")
    for m, reasons in info["modules"].items():
        shown = ", ".join(reasons[:6]) + (f", ... {len(reasons) - 6} more" if len(reasons) > 6 else "")
        w(f"  {m}: {shown}\n")
    return out.getvalue()


def _render_tree(node, w, prefix, last, top=False):
    if node is None:
        return
    branch = "" if top else ("└─ " if last else "├─ ")
    keys = node.get("keys")
    w(f"{prefix}{branch}{node['text']}  [{node['kind']}, {_fmt_size(node['size'])}]\n")
    kids = node.get("children", [])
    child_prefix = prefix + ("" if top else ("   " if last else "│  "))
    for i, k in enumerate(kids):
        if keys and i < len(keys):
            k = dict(k, text=f"{keys[i]}: {k['text']}")
        _render_tree(k, w, child_prefix, i == len(kids) - 1 and not node.get("more"))
    if node.get("more"):
        w(f"{child_prefix}└─ ... {node['more']} more\n")
