"""The simulated provider network that booted servers sit on, and its clean-up.

One run (a test session, ``make dev``, a benchmark) owns one :class:`ProviderNetwork`: a
Linux bridge on this machine with the gateway address, in a /24 of its own inside
198.18.0.0/16 (the benchmarking range, RFC 2544; 198.19.0.0/24 is another engineer's
local Kubernetes node, so it is never used). The first run on the machine gets
198.18.0.0/24 with the gateway 198.18.0.1; a second run at the same time gets
198.18.1.0/24, and so on. Host processes (the operator, the intake, the tests) reach
the servers directly and the servers reach the host at the gateway address; nothing is
forwarded or masqueraded, so a server reaches nothing else (no internet, no other run).

Each server gets a network namespace and a veth pair: ``eth0`` inside, the other end on
the bridge. Every name carries the run's random id (interfaces at most 15 characters),
so two runs never clash. Everything a run creates is written down in
``/run/smartserver/boot/<run>.json`` as it is created; a run whose owning process died
(``kill -9`` of a test session) is swept by the next run that starts: its containers
killed by PID, its overlays unmounted, its namespaces, interfaces and cgroups removed.

Needs root. Must not touch anything whose name does not carry a run id of ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROVIDER_RANGE",
    "NetworkError",
    "ProviderNetwork",
    "ServerLink",
    "spare_addresses",
    "sweep_stale_runs",
]

PROVIDER_RANGE = ipaddress.IPv4Network("198.18.0.0/16")
STATE_DIR = Path("/run/smartserver/boot")
CGROUP_ROOTS = (
    Path("/sys/fs/cgroup/systemd"),
    Path("/sys/fs/cgroup/unified"),
    Path("/sys/fs/cgroup/memory"),
)
CGROUP_PARENT = "smartserver-boot"


class NetworkError(RuntimeError):
    """A network step failed; the message holds the command and its output."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result


@dataclass(frozen=True)
class ServerLink:
    """One server's place on the network."""

    netns: str
    host_veth: str
    address: str
    """The server's public IPv4 (inside the run's /24)."""
    prefix: int
    gateway: str

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


@contextmanager
def _machine_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _used_networks() -> set[ipaddress.IPv4Network]:
    """Every IPv4 network configured on an interface of this machine (its own netns)."""
    result = run("ip", "-j", "-4", "addr", "show")
    used = set()
    for link in json.loads(result.stdout or "[]"):
        for info in link.get("addr_info", []):
            used.add(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return used


def spare_addresses(subnet: ipaddress.IPv4Network, count: int = 1) -> list[str]:
    """The first ``count`` addresses of a run's /24 that no server gets (just above the
    gateway; the servers' pool is the upper half): for a host process in another
    network namespace, such as a local node, that joins the bridge."""
    if not 0 < count <= 100:
        raise ValueError("at most 100 spare addresses")
    return [str(subnet.network_address + 2 + i) for i in range(count)]


class ProviderNetwork:
    """A run's bridge, gateway and per-server links; ``close`` removes all of it."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(3)
        self.bridge = f"ssb-{self.run_id}"
        self.subnet: ipaddress.IPv4Network | None = None
        self._next = 0
        self._links: dict[str, ServerLink] = {}
        self._record: dict[str, Any] = {"run": self.run_id, "pid": os.getpid(), "servers": {}}
        # Servers attach and detach from worker threads at the same time.
        self._lock = threading.RLock()

    # -- the bridge --------------------------------------------------------------------

    @property
    def gateway(self) -> str:
        """The host's address on the provider network (where servers reach host processes)."""
        if self.subnet is None:
            raise RuntimeError("the provider network is not up")
        return str(self.subnet.network_address + 1)

    @property
    def cidr(self) -> str:
        if self.subnet is None:
            raise RuntimeError("the provider network is not up")
        return str(self.subnet)

    def up(self) -> ProviderNetwork:
        """Sweep dead runs, pick a free /24, create the bridge with the gateway address."""
        with _machine_lock():
            sweep_stale_runs()
            used = _used_networks()
            for candidate in PROVIDER_RANGE.subnets(new_prefix=24):
                if not any(candidate.overlaps(net) for net in used):
                    self.subnet = candidate
                    break
            else:
                raise NetworkError("every /24 of 198.18.0.0/16 is in use on this machine")
            self._record.update(bridge=self.bridge, subnet=str(self.subnet))
            self._save()
            run("ip", "link", "add", self.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")
        return self

    def spare_addresses(self, count: int = 1) -> list[str]:
        """Addresses of the run's /24 that no server gets (just above the gateway): a
        test adds one to the bridge to connect from somewhere other than the gateway."""
        assert self.subnet is not None
        return spare_addresses(self.subnet, count)

    def server_pool(self) -> str:
        """The range the Hetzner simulator hands servers' addresses from: the upper half
        of the run's /24 (126 servers), clear of the gateway and the spare addresses."""
        assert self.subnet is not None
        return str(list(self.subnet.subnets(new_prefix=25))[1])

    def is_server_address(self, address: str) -> bool:
        assert self.subnet is not None
        pool = ipaddress.IPv4Network(self.server_pool())
        ip = ipaddress.IPv4Address(address)
        return ip in pool and ip != pool.broadcast_address

    # -- servers -----------------------------------------------------------------------

    def attach(self, key: str, address: str) -> ServerLink:
        """A namespace for one server, joined to the bridge; ``eth0`` inside has no address
        yet (cloud-init configures it from the seed's network-config)."""
        if self.subnet is None:
            raise RuntimeError("the provider network is not up")
        if not self.is_server_address(address):
            raise NetworkError(f"{address} is not a server address of {self.subnet}")
        with self._lock:
            index = self._next
            self._next += 1
        link = ServerLink(
            netns=f"ss-{self.run_id}-{index}",
            host_veth=f"ssv{self.run_id}{index:x}",
            address=address,
            prefix=self.subnet.prefixlen,
            gateway=self.gateway,
        )
        with self._lock:
            self._links[key] = link
            self._record["servers"][key] = {"netns": link.netns, "veth": link.host_veth}
            self._save()
        run("ip", "netns", "add", link.netns)
        run("ip", "link", "add", link.host_veth, "type", "veth", "peer", "name", "eth0",
            "netns", link.netns)  # fmt: skip
        run("ip", "link", "set", link.host_veth, "master", self.bridge, "up")
        run("ip", "-n", link.netns, "link", "set", "lo", "up")
        return link

    def note(self, key: str, **facts: object) -> None:
        """Remember more about a server for a later sweep (its nspawn PID, mounts, cgroups)."""
        with self._lock:
            self._record["servers"].setdefault(key, {}).update(facts)
            self._save()

    def detach(self, key: str) -> None:
        """Remove a server's namespace and interfaces (its processes must be gone)."""
        with self._lock:
            link = self._links.pop(key, None)
            facts = self._record["servers"].get(key) or {}
        if link is not None:
            facts.setdefault("netns", link.netns)
            facts.setdefault("veth", link.host_veth)
        _remove_server(facts)
        with self._lock:  # forgotten only once removed: a crash before this is swept
            self._record["servers"].pop(key, None)
            self._save()

    def close(self) -> None:
        """Remove every server's leftovers, the bridge and the record (idempotent)."""
        with self._lock:
            keys = list(self._record["servers"])
        for key in keys:
            self.detach(key)
        run("ip", "link", "del", self.bridge, check=False)
        (STATE_DIR / f"{self.run_id}.json").unlink(missing_ok=True)
        self.subnet = None

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path = STATE_DIR / f"{self.run_id}.json"
        temporary = path.with_name(f".{self.run_id}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(self._record))
        temporary.replace(path)


# -- clean-up, also of runs whose process died ----------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_nspawn(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM a container's nspawn (a clean power-off), SIGKILL after ``grace`` s."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"systemd-nspawn" not in cmdline:
        return  # the PID was reused by something else: not ours to kill
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid) or _zombie(pid):
                return
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove_cgroup(name: str) -> None:
    """Remove a server's cgroups in every hierarchy, deepest first."""
    for root in CGROUP_ROOTS:
        top = root / CGROUP_PARENT / name
        if not top.is_dir():
            continue
        for folder in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _remove_server(facts: dict[str, Any]) -> None:
    pid = facts.get("nspawn_pid")
    if isinstance(pid, int):
        kill_nspawn(pid)
    merged = facts.get("merged")
    if isinstance(merged, str) and os.path.ismount(merged):
        run("umount", merged, check=False)
        if os.path.ismount(merged):
            run("umount", "-l", merged, check=False)
    netns = facts.get("netns")
    if isinstance(netns, str):
        run("ip", "netns", "del", netns, check=False)
    veth = facts.get("veth")
    if isinstance(veth, str):
        run("ip", "link", "del", veth, check=False)  # gone with the namespace, normally
    cgroup = facts.get("cgroup")
    if isinstance(cgroup, str):
        remove_cgroup(cgroup)


def sweep_stale_runs() -> list[str]:
    """Remove what runs whose process is gone left behind; the run ids swept."""
    swept = []
    for record_path in STATE_DIR.glob("*.json"):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        owner = record.get("pid")
        if isinstance(owner, int) and _alive(owner):
            continue
        for facts in record.get("servers", {}).values():
            _remove_server(facts)
        bridge = record.get("bridge")
        if isinstance(bridge, str) and bridge.startswith("ssb-"):
            run("ip", "link", "del", bridge, check=False)
        record_path.unlink(missing_ok=True)
        swept.append(str(record.get("run")))
    return swept
