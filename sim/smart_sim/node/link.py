"""The node's network link: a private network namespace joined to the host by a veth
pair, one /30 of 198.19.0.0/24 per node (the first: host side 198.19.0.1, node
198.19.0.2), so several nodes on one machine (two test sessions) never clash.

The host side is where the API server and the services pods must reach (the
simulators, the intake) listen. Nothing is routed beyond the pair: no forwarding or NAT
on the host, no host setting changed. A node can also join a run's provider network
(:meth:`NodeLink.join_provider_network`): a second veth pair, ``eth1`` in the node with
an address of the run's /24, the other end a port of the run's bridge, so booted
servers and pods reach each other directly (pods leave masqueraded to that address,
servers reach NodePorts on it), again without any forwarding on the host.

Each link is registered under ``/run/smartserver-node`` with the PID of the process
that owns it; a link whose owner died (a killed test session) is removed, with its
node's processes, cgroups and veth pairs, the next time a link is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from smart_sim.node.cgroups import CgroupTree

NODE_NETWORK = ipaddress.IPv4Network("198.19.0.0/24")
SLOT_PREFIX = 30
REGISTRY = Path("/run/smartserver-node")
NETNS_DIR = Path("/run/netns")


class LinkError(RuntimeError):
    """The namespace or the veth pair could not be made; the message says which."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LinkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def slot_addresses(slot: int) -> tuple[str, str]:
    """The host and node addresses of slot ``slot`` (0: 198.19.0.1 and .2)."""
    subnets = list(NODE_NETWORK.subnets(new_prefix=SLOT_PREFIX))
    hosts = list(subnets[slot].hosts())
    return str(hosts[0]), str(hosts[1])


def slot_count() -> int:
    return int(2 ** (SLOT_PREFIX - NODE_NETWORK.prefixlen))


@dataclass(frozen=True)
class NodeLink:
    """One node's namespace and veth pair. ``name`` names the namespace, the host-side
    interface and the node's cgroup tree."""

    name: str
    slot: int
    owner: int

    @property
    def host_address(self) -> str:
        return slot_addresses(self.slot)[0]

    @property
    def node_address(self) -> str:
        return slot_addresses(self.slot)[1]

    @property
    def netns(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def cgroups(self) -> CgroupTree:
        return CgroupTree(f"smartserver-{self.name}")

    @property
    def provider_veth(self) -> str:
        """The host end of the node's port on a provider network (at most 15 characters)."""
        return f"{self.name}p"

    @classmethod
    def create(cls) -> NodeLink:
        """Make a namespace and a veth pair on the first free slot."""
        REGISTRY.mkdir(parents=True, exist_ok=True)
        with _registry_lock():
            taken = {link.slot for link in _live_links()}
            free = [slot for slot in range(slot_count()) if slot not in taken]
            if not free:
                raise LinkError(f"every /{SLOT_PREFIX} of {NODE_NETWORK} is in use by a node")
            link = cls(name=f"ssn-{secrets.token_hex(3)}", slot=free[0], owner=os.getpid())
            (REGISTRY / f"{link.name}.json").write_text(json.dumps(asdict(link)))
            try:
                link._plumb()
            except BaseException:
                link.delete()
                raise
        return link

    def _plumb(self) -> None:
        host, node = self.host_address, self.node_address
        _ip("netns", "add", self.name)
        # The node's end is eth0 inside its namespace; kubelet needs a non-loopback
        # address to call its own.
        _ip("link", "add", self.name, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        _ip("addr", "add", f"{host}/{SLOT_PREFIX}", "dev", self.name)
        _ip("link", "set", self.name, "up")
        _ip("-n", self.name, "addr", "add", f"{node}/{SLOT_PREFIX}", "dev", "eth0")
        _ip("-n", self.name, "link", "set", "eth0", "up")
        _ip("-n", self.name, "link", "set", "lo", "up")

    def join_provider_network(self, bridge: str, address: str, prefix: int) -> None:
        """Plug the node into a booted servers' provider network (``smart_sim.boot``):
        a veth pair whose host end is a port of ``bridge`` and whose node end is
        ``eth1`` with ``address``/``prefix``, an address no server gets. Undone by
        :meth:`leave_provider_network`, and with the namespace by :meth:`delete`."""
        if not bridge.startswith("ssb-"):
            raise LinkError(f"{bridge} is not a provider network's bridge (ssb-*)")
        try:
            _ip("link", "add", self.provider_veth, "type", "veth",
                "peer", "name", "eth1", "netns", self.name)  # fmt: skip
            _ip("link", "set", self.provider_veth, "master", bridge, "up")
            _ip("-n", self.name, "addr", "add", f"{address}/{prefix}", "dev", "eth1")
            _ip("-n", self.name, "link", "set", "eth1", "up")
        except BaseException:
            self.leave_provider_network()
            raise

    def leave_provider_network(self) -> None:
        """Remove the node's port on a provider network, if it has one (idempotent)."""
        _ip("link", "del", self.provider_veth, check=False)

    def delete(self) -> None:
        """Remove the veth pairs, the namespace and the registration (idempotent)."""
        self.leave_provider_network()
        _ip("link", "del", self.name, check=False)
        _ip("netns", "del", self.name, check=False)
        (REGISTRY / f"{self.name}.json").unlink(missing_ok=True)

    def __enter__(self) -> NodeLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    with (REGISTRY / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_links() -> list[NodeLink]:
    """The registered links whose owner still runs; the others are torn down."""
    live = []
    for entry in sorted(REGISTRY.glob("ssn-*.json")):
        try:
            link = NodeLink(**json.loads(entry.read_text()))
        except (ValueError, TypeError):
            entry.unlink(missing_ok=True)
            continue
        if _alive(link.owner):
            live.append(link)
        else:
            remove_stale(link)
    return live


def remove_stale(link: NodeLink) -> None:
    """Tear down what a node whose owner died left: its processes, cgroups and link."""
    with contextlib.suppress(RuntimeError, OSError):
        link.cgroups.kill_all()
        link.cgroups.remove()
    link.delete()
