"""The machine's processes as a tree (from /proc): which belong to a simulated node, a cell, a run."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str  # its command line, shortened (Ray renames its workers: "ray::IDLE", "ray::NodeAgent")


def parse_stat_ppid(stat: str) -> int:
    """The parent pid from ``/proc/PID/stat`` (the command name in parentheses may hold spaces)."""
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_table(proc: Path = Path("/proc")) -> dict[int, Proc]:
    """Every process on the machine now: pid -> (parent, command line)."""
    table = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = parse_stat_ppid((entry / "stat").read_text())
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        table[int(entry.name)] = Proc(int(entry.name), ppid, cmdline)
    return table


def descendants(root: int, table: dict[int, Proc]) -> list[int]:
    """``root`` and every process below it (depth first), as far as ``table`` knows them."""
    children = defaultdict(list)
    for p in table.values():
        children[p.ppid].append(p.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table or pid == root:
            found.append(pid)
            todo.extend(sorted(children.get(pid, ())))
    return found
