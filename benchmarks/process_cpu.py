"""What a server process tree costs, for the benchmarks: CPU ticks of a process and all its
live descendants from /proc, and py-spy profiles of the tree with their busy self samples."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Leaves where a thread only waits (a lock, the executor's queue, epoll): py-spy's idle check does
# not always see them as idle, and they would fill the top of the list.
IDLE_LEAVES = frozenset({"Condition.wait (threading.py)", "_worker (concurrent/futures/thread.py)",
                         "EpollSelector.select (selectors.py)", "Event.wait (threading.py)"})


def stat_fields(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: the fields start after its last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant, found by walking /proc by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            children.setdefault(int(stat_fields(int(entry.name))[1]), []).append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # exited while we looked
    tree, todo = [], [root]
    while todo:  # a tree of live pids: every pid is visited once
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_ticks(root: int) -> dict[tuple[int, int], int]:
    """utime+stime ticks of `root` and each live descendant, keyed by (pid, start time) so a reused
    pid is not mistaken for the same process. Read live: cutime/cstime count only reaped children."""
    ticks: dict[tuple[int, int], int] = {}
    for pid in process_tree(root):
        try:
            fields = stat_fields(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        ticks[(pid, int(fields[19]))] = int(fields[11]) + int(fields[12])
    return ticks


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on the server and its subprocesses; None (with the reason printed) if it can't."""
    if not PY_SPY.is_file():
        print(f"  py-spy: not installed at {PY_SPY}; no profile", flush=True)
        return None
    base = [str(PY_SPY), "record", "--pid", str(pid), "--subprocesses", "--rate", "200",
            "--duration", str(int(seconds)), "--format", "raw", "-o", str(out)]
    # Without ptrace rights py-spy fails at once; --nonblocking reads memory without pausing the
    # process, which some sandboxes still allow.
    for command in (base, [*base, "--nonblocking"]):
        log = out.with_suffix(".log")
        with log.open("w") as stderr:  # a file, not a pipe: nobody reads py-spy's output while it runs
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        time.sleep(1.0)
        if process.poll() is None or process.returncode == 0:
            print(f"  py-spy: {shlex.join(command)}", flush=True)
            return process
        print(f"  py-spy failed ({process.returncode}): {log.read_text().strip()[-300:]}", flush=True)
    print("  py-spy: no profile (ptrace restricted? try as root or with CAP_SYS_PTRACE)", flush=True)
    return None


def self_samples(collapsed: Path) -> tuple[Counter[str], Counter[str], int]:
    """Busy self samples by function (line numbers dropped) and by process, and the idle samples,
    from py-spy's raw `process N:"cmd";frame;...;leaf COUNT` lines."""
    functions: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not (stack and n.isdigit()):
            continue
        frames = stack.split(";")
        name, _, where = frames[-1].partition(" (")
        leaf = f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name
        if leaf in IDLE_LEAVES:
            idle += int(n)
            continue
        functions[leaf] += int(n)
        owner = [f for f in frames if f.startswith("process ")]
        processes[owner[-1].split(":", 1)[0] if owner else "?"] += int(n)
    return functions, processes, idle
