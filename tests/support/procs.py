"""Processes of this test run, read from /proc (no psutil)."""
import os


def child_pids():
    """Sorted pids of this process's direct children (a leak check compares two calls)."""
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.append(pid)
            except OSError:
                pass
    return sorted(out)
