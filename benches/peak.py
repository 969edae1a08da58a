"""Runs a command and prints its wall time and the peak memory of its whole process tree.

    python3 benches/peak.py [-o FILE] COMMAND [ARGS...]

Prints one JSON line on stdout (or appends it to FILE): {"seconds": wall time, "peak_bytes": the largest sum of the
resident memory of the command and all its descendants, sampled every 50 ms}. GNU time's
"maximum resident set size" is that of the largest single process; a Spark job (a JVM, Python
workers, convbill processes) or shards run side by side are several at once. Exits with the
command's exit code.
"""

import json
import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root):
    """The resident bytes of `root` and its descendants."""
    children = {}
    rss = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def main():
    command = sys.argv[1:]
    into = None
    if command[:1] == ["-o"]:
        into, command = command[1], command[2:]
    if not command:
        sys.exit(__doc__)
    started = time.monotonic()
    process = subprocess.Popen(command)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.05)
    seconds = time.monotonic() - started
    line = json.dumps({"seconds": round(seconds, 3), "peak_bytes": peak})
    if into:
        with open(into, "a") as f:
            f.write(line + "\n")
    else:
        print(line, flush=True)
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
