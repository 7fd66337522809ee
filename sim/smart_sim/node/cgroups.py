"""The node's cgroup tree: one folder of the same name in every cgroup hierarchy the
machine mounts, holding the node's own processes (``node/``) and, under kubelet's
``cgroupRoot``, every pod's. Whatever runs in it (containerd's shims, containers that
outlived kubelet) is found there and killed, and the folders removed, so a node
leaves no process and no cgroup behind.

Works with cgroup v1 hierarchies (this machine kind, plus the hybrid ``unified``
one) and a pure cgroup v2 mount. Touches nothing outside its own folders.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


def hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, named ones, v2)."""
    found = []
    for line in MOUNTINFO.read_text().splitlines():
        before, _, after = line.partition(" - ")
        fstype = after.split()[0]
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(before.split()[4]))
    return sorted(set(found))


def _is_v2(hierarchy: Path) -> bool:
    return (hierarchy / "cgroup.controllers").exists()


@dataclass(frozen=True)
class CgroupTree:
    """``/<name>`` in every hierarchy."""

    name: str

    def folders(self, child: str = "") -> list[Path]:
        return [h / self.name / child if child else h / self.name for h in hierarchies()]

    def create(self, *children: str) -> None:
        for hierarchy in hierarchies():
            top = hierarchy / self.name
            for folder in (top, *(top / child for child in children)):
                folder.mkdir(exist_ok=True)
                _inherit_cpuset(folder)
            if _is_v2(hierarchy) and hierarchy == Path("/sys/fs/cgroup"):
                # On a pure v2 machine kubelet needs the controllers delegated to
                # its cgroupRoot's children.
                wanted = (hierarchy / "cgroup.subtree_control").read_text().split()
                with contextlib.suppress(OSError):
                    (top / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))

    def join(self, child: str) -> None:
        """Move the calling process into ``child`` in every hierarchy (run in a new
        process before it executes the component, so all it starts is inside)."""
        for folder in self.folders(child):
            with contextlib.suppress(OSError):
                (folder / "cgroup.procs").write_text("0")

    def processes(self) -> set[int]:
        pids: set[int] = set()
        for top in self.folders():
            if not top.exists():
                continue
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        return pids

    def kill_all(self, timeout: float = 20.0) -> None:
        """SIGKILL everything in the tree until it is empty."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.processes()
            if not pids:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes in cgroup {self.name} survive SIGKILL: {pids}")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def remove(self, timeout: float = 20.0) -> None:
        """Remove every folder of the tree, deepest first (a cgroup goes away only
        once its processes have exited, which takes a moment after SIGKILL)."""
        deadline = time.monotonic() + timeout
        for top in self.folders():
            if not top.exists():
                continue
            folders = sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True)
            for folder in [*folders, top]:
                while True:
                    try:
                        folder.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)


def _inherit_cpuset(folder: Path) -> None:
    """A new v1 cpuset cgroup has no CPUs and no memory nodes until given its
    parent's; nothing could run in it."""
    cpus = folder / "cpuset.cpus"
    if _is_v2(folder) or not cpus.exists() or cpus.read_text().strip():
        return
    for name in ("cpuset.cpus", "cpuset.mems"):
        (folder / name).write_text((folder.parent / name).read_text())
