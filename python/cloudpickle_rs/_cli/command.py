"""The command line: ``inspect``, ``deps`` and ``check`` (argument parsing, reading, printing)."""
import argparse
import json
import sys

from cloudpickle_rs._cli.analysis import analyse
from cloudpickle_rs._cli.deps import requirements
from cloudpickle_rs._cli.render import render


def _read(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _check_command(args):
    from cloudpickle_rs._receiver import NDIF_DENY, Receiver, check_stream

    deny = []
    for entry in (e.strip() for e in args.deny.split(",")):
        if entry == "ndif":
            deny.extend(NDIF_DENY)
        elif entry:
            deny.append(entry)
    modules = [m for m in args.modules.split(",") if m.strip()]
    try:
        kw = dict(python=args.python, modules=modules, deny=deny, max_bytes=args.max_bytes)
        receiver = Receiver.from_requirements(args.requirements, **kw) if args.requirements else Receiver(**kw)
    except (ValueError, OSError) as e:
        print(f"bad receiver: {e}", file=sys.stderr)
        return 2
    try:
        report = check_stream(_read(args.file), receiver)
    except OSError as e:
        print(f"cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{args.file}: not a readable pickle: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": [p.as_dict() for p in report.problems],
                          "by_value": report.by_value, "by_reference": report.by_reference,
                          "size": report.size, "largest": report.largest}, indent=2))
    else:
        print(report)
    return 0 if report.ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cloudpickle_rs",
                                description="Look inside a pickle without executing it.")
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("inspect", help="tree of objects, functions, classes, modules, sizes")
    pi.add_argument("file", help="pickle file, or - for standard input")
    pi.add_argument("--json", action="store_true", help="print JSON")
    pi.add_argument("--source-lines", type=int, default=12)
    pd = sub.add_parser("deps", help="requirements lines for the modules the receiver imports")
    pd.add_argument("file", help="pickle file, or - for standard input")
    pd.add_argument("--all", action="store_true", help="also list standard-library modules")
    pd.add_argument("--json", action="store_true")
    pc = sub.add_parser("check", help="judge the pickle for a receiver, without loading it (exit 1: not OK)")
    pc.add_argument("file", help="pickle file, or - for standard input")
    pc.add_argument("--python", help="the receiver's Python, e.g. 3.9")
    pc.add_argument("--modules", default="", help="top-level modules the receiver can import, comma-separated")
    pc.add_argument("--requirements", help="a requirements file of the receiver (adds its modules)")
    pc.add_argument("--deny", default="", help="modules and builtins the receiver refuses to run, "
                    "comma-separated ('ndif' for NDIF's list)")
    pc.add_argument("--max-bytes", type=int, help="the largest pickle the receiver takes")
    pc.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.command == "check":
        return _check_command(args)
    try:
        data = _read(args.file)
        info = analyse(data)
    except OSError as e:
        print(f"cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # pickletools: truncated or malformed stream
        print(f"{args.file}: not a readable pickle: {e}", file=sys.stderr)
        return 1
    if args.command == "inspect":
        if args.json:
            print(json.dumps(info, indent=2, default=repr))
        else:
            sys.stdout.write(render(info, args.source_lines))
    else:
        lines = requirements(info, show_all=args.all)
        if args.json:
            print(json.dumps({"modules": info["modules"], "requirements": lines}, indent=2))
        else:
            print("\n".join(lines))
    return 0
