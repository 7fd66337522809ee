"""The local node itself: it runs a pod, changes no setting of the host while it runs,
and leaves nothing behind when it stops (no namespace, interface, cgroup, mount or
process), even when the process that started it died without stopping it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smart_sim.boot.network import ProviderNetwork
from smart_sim.controlplane import ControlPlane
from smart_sim.node import Node, NodeLink
from smart_sim.node.config import KUBELET_SYSCTLS
from smart_sim.node.link import NETNS_DIR, REGISTRY, LinkError
from smart_sim.node.pause import ensure_pause_image
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the local node needs root (network namespaces, mounts, cgroups)"
)

HOST_SETTINGS = (*KUBELET_SYSCTLS, "net/ipv4/ip_forward")


def host_settings() -> dict[str, str]:
    return {name: Path("/proc/sys", name).read_text() for name in HOST_SETTINGS}


def interfaces() -> set[str]:
    output = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in output.stdout.splitlines()}


def mounts_under(folder: Path) -> list[str]:
    return [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(folder) in line
    ]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_a_node_runs_a_pod_changing_nothing_on_the_host_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    settings_before = host_settings()
    pause = ensure_pause_image()
    with NodeLink.create() as link:
        cgroups = link.cgroups
        with (
            ControlPlane(tmp_path / "control-plane", listen_address=link.host_address) as plane,
            Node(plane, link, tmp_path / "node") as node,
        ):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "sleeper", "namespace": "default"},
                "spec": {
                    "containers": [
                        {"name": "pause", "image": pause.reference, "imagePullPolicy": "Never"}
                    ]
                },
            }
            plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))

            def running() -> bool:
                obj = json.loads(plane.kubectl("get", "pod", "sleeper", "-o", "json"))
                return bool(obj["status"].get("phase") == "Running")

            eventually(running, 60, "the pod runs on the node")
            # kubelet did set what it sets (in the node's own masked copy)...
            masked = node.paths.sysctl_masks / "vm.overcommit_memory"
            assert masked.read_text().strip() == "1"
            # ...and the host's settings are untouched while the node runs.
            assert host_settings() == settings_before
            assert cgroups.processes(), "the node's processes are not in its cgroups"
            assert link.name in interfaces()
        # The control plane stops after the node; the link goes last.
    assert host_settings() == settings_before
    # Others' interfaces come and go on a shared machine: only the node's must be gone.
    assert link.name not in interfaces()
    assert not (NETNS_DIR / link.name).exists()
    assert not (REGISTRY / f"{link.name}.json").exists()
    assert not any(folder.exists() for folder in cgroups.folders())
    assert mounts_under(tmp_path) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_a_node_whose_owner_died_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """A test session killed with SIGKILL stops nothing: the next link made on the
    machine finds the dead owner's link and removes it with its node's processes."""
    stale = NodeLink.create()
    try:
        stale.cgroups.create("node")
        survivor = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: stale.cgroups.join("node"))
        gone = subprocess.Popen(["true"])
        gone.wait()
        record = REGISTRY / f"{stale.name}.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "owner": gone.pid}))

        fresh = NodeLink.create()
        fresh.delete()
        deadline = time.monotonic() + 10
        while survivor.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert survivor.returncode == -9, "the dead node's process still runs"
        assert not (NETNS_DIR / stale.name).exists()
        assert stale.name not in interfaces()
        assert not record.exists()
        assert not any(folder.exists() for folder in stale.cgroups.folders())
    finally:
        stale.cgroups.kill_all()
        stale.cgroups.remove()
        stale.delete()


def test_a_node_joins_a_provider_network_and_leaves_it_without_a_trace() -> None:
    """The node's port on a booted servers' provider network: from its address there,
    the node reaches the bridge (here the host's gateway address) directly, with no
    forwarding on the host; the port goes when the node leaves the network, and with
    the node's namespace when the link is removed without leaving."""
    settings_before = host_settings()
    network = ProviderNetwork().up()
    try:
        (address,) = network.spare_addresses(1)
        with NodeLink.create() as link, socket.create_server((network.gateway, 0)) as server:
            with pytest.raises(LinkError, match="not a provider network's bridge"):
                link.join_provider_network("eth0", address, 24)
            link.join_provider_network(network.bridge, address, 24)
            assert link.provider_veth in ports_of(network.bridge)
            port = server.getsockname()[1]
            connect = f"import socket; socket.create_connection(('{network.gateway}', {port}), 5)"
            subprocess.run(
                ["ip", "netns", "exec", link.name, sys.executable, "-c", connect],
                check=True,
                timeout=30,
            )
            server.settimeout(5)
            accepted, (source, _) = server.accept()
            accepted.close()
            assert source == address, "the node does not speak from its provider address"
            link.leave_provider_network()
            assert link.provider_veth not in interfaces()
            link.join_provider_network(network.bridge, address, 24)
        assert link.provider_veth not in interfaces()
        assert ports_of(network.bridge) == set()
    finally:
        network.close()
    assert host_settings() == settings_before


def ports_of(bridge: str) -> set[str]:
    output = subprocess.run(
        ["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True, check=True
    )
    return {link["ifname"] for link in json.loads(output.stdout or "[]")}
