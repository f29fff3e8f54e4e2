"""A small-box lab mode: the hub's processes in a cgroup limited like the boxes hubs run on.

Target boxes are small ARM or old x86 machines several times slower than the machines the
tests run on, with 1-4 GB of RAM. ``SmallBox`` makes a cgroup with a CPU quota (a quarter
of a core by default) and a memory limit (1 GB), and ``prefix()`` gives the command words
that start a process inside it: its children (dnsmasq, nginx) inherit the cgroup. Works on
cgroup v1 (``cpu.cfs_quota_us``, ``memory.limit_in_bytes``: this machine) and on v2
(``cpu.max``, ``memory.max``). ``SmallBox.available()`` says why not where it cannot.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


@dataclass
class SmallBox:
    name: str = field(default_factory=lambda: f"relais-smallbox-{os.getpid()}")
    cpu_share: float = 0.25  # of one core
    memory_bytes: int = 1 << 30
    dirs: list[Path] = field(default_factory=list)

    @staticmethod
    def available() -> str | None:
        """None when a limited cgroup can be made here, else the reason."""
        if os.geteuid() != 0:
            return "needs root to create cgroups"
        if _v2():
            ctrl = (ROOT / "cgroup.controllers").read_text().split()
            return None if {"cpu", "memory"} <= set(ctrl) else "cgroup v2 without cpu/memory"
        if not (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
            return "no cgroup v1 cpu controller with CFS quota"
        if not (ROOT / "memory" / "memory.limit_in_bytes").exists():
            return "no cgroup v1 memory controller"
        return None

    def create(self) -> SmallBox:
        quota = int(PERIOD_US * self.cpu_share)
        if _v2():
            d = ROOT / self.name
            d.mkdir(exist_ok=True)
            (d / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            (d / "memory.max").write_text(f"{self.memory_bytes}\n")
            self.dirs = [d]
        else:
            cpu, mem = ROOT / "cpu" / self.name, ROOT / "memory" / self.name
            acct = ROOT / "cpuacct" / self.name
            for d in (cpu, mem, acct):
                d.mkdir(exist_ok=True)
            (cpu / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (cpu / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            (mem / "memory.limit_in_bytes").write_text(f"{self.memory_bytes}\n")
            self.dirs = [cpu, mem, acct]
        return self

    def prefix(self) -> tuple[str, ...]:
        """Words that run the rest of a command line inside the cgroup (or fail loudly).
        Put them *before* ``ip netns exec``: that command mounts a sysfs of its own, which
        hides /sys/fs/cgroup from what it runs (``Lab.spawn(..., outer=box.prefix())``)."""
        joins = " && ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return ("sh", "-c", f'{joins} && exec "$@"', "smallbox")

    def cpu_seconds(self) -> float:
        """CPU time the box's processes used so far."""
        if _v2():
            for line in (self.dirs[0] / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
            return 0.0
        acct = ROOT / "cpuacct" / self.name / "cpuacct.usage"
        return int(acct.read_text()) / 1e9 if acct.exists() else 0.0

    def throttled(self) -> int:
        """How many periods the quota held the box back (it really was slow)."""
        stat = self.dirs[0] / "cpu.stat"
        for line in stat.read_text().splitlines():
            if line.startswith(("nr_throttled", "throttled")):
                return int(line.split()[1])
        return 0

    def close(self) -> None:
        for d in self.dirs:
            procs = d / "cgroup.procs"
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():  # any left: to the parent, then rmdir
                    (d.parent / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                d.rmdir()
        self.dirs = []
