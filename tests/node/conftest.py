"""The node tier: a control plane with a local node that runs pods (kubelet,
containerd, kube-proxy, kube-scheduler, CoreDNS in a private network namespace), the
platform's image loaded into it, and the pinned ``helm``. Started once per session,
after the builds it needs (made by `make test` before pytest starts, or here with
their progress shown), and always stopped, even when a test fails.

The tests here install the platform the way a user does: the unmodified chart with
``helm install --wait``, or ``kubectl apply -k manifests/``; its processes run as pods
from the platform's image. The node needs root: without it, every test here is skipped
with that reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_sim.boot.network import spare_addresses
from smart_sim.controlplane import ControlPlane
from smart_sim.controlplane.binaries import ensure_binaries, ensure_helm, ensure_node_binaries
from smart_sim.controlplane.cluster import KubectlError
from smart_sim.image import Image, ensure_image
from smart_sim.node import Node, NodeLink
from smart_sim.processes import Clouds
from tests.waiting import eventually

NAMESPACE = "smartserver-system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.node)


@dataclass
class LocalCluster:
    """The session's control plane and node, with helpers over kubectl and helm."""

    plane: ControlPlane
    node: Node
    link: NodeLink
    helm_binary: Path
    image: Image

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        return self.plane.kubectl(*args, input=input, timeout=timeout)

    def try_kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl(*args, input=input, check=False)

    def get(self, *args: str) -> dict[str, Any] | None:
        output = self.kubectl("get", *args, "-o", "json", "--ignore-not-found")
        return json.loads(output) if output.strip() else None

    def apply(self, obj: dict[str, Any]) -> str:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.helm_binary), f"--kubeconfig={self.plane.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def pods(self, namespace: str = NAMESPACE, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace, *(["-l", selector] if selector else [])]
        return list((self.get(*args) or {"items": []})["items"])

    def exec(self, namespace: str, pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod's container (kubectl exec, through the API server
        to the node's kubelet)."""
        assert self.plane.binaries is not None
        return subprocess.run(
            [
                str(self.plane.binaries.kubectl),
                f"--kubeconfig={self.plane.kubeconfig}",
                "exec",
                "-n",
                namespace,
                pod,
                "--",
                *command,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


def ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


def wait_all_ready(cluster: LocalCluster, selector: str, count: int, timeout: float = 180) -> None:
    """Exactly ``count`` pods match ``selector``, none terminating, all Ready."""

    def check() -> list[str] | None:
        pods = cluster.pods(selector=selector)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(live) == count == len(pods) and all(ready(p) for p in live):
            return [p["metadata"]["name"] for p in live]
        return None

    eventually(check, timeout, f"{count} pods of {selector} Running and Ready")


@pytest.fixture(scope="session")
def local_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[LocalCluster]:
    if os.geteuid() != 0:
        pytest.skip("the local node needs root (network namespaces, mounts, cgroups)")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    # `make test` builds all of these before pytest starts; run alone on a fresh
    # machine the builds happen here, with their progress shown rather than captured.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        binaries, node_binaries = ensure_binaries(), ensure_node_binaries()
        helm, image = ensure_helm(), ensure_image()
    workdir = tmp_path_factory.mktemp("node-cluster")
    with contextlib.ExitStack() as stack:
        link = stack.enter_context(NodeLink.create())
        plane = stack.enter_context(
            ControlPlane(workdir / "control-plane", binaries, listen_address=link.host_address)
        )
        node = stack.enter_context(Node(plane, link, workdir / "node", node_binaries))
        started = time.monotonic()
        node.import_image(image)
        print(f"imported {image.reference} in {time.monotonic() - started:.1f} s")
        yield LocalCluster(plane, node, link, helm, image)


@dataclass
class PodClouds:
    """The provider simulators as the platform's pods see them, and the node's place
    on the booted servers' provider network."""

    clouds: Clouds
    address: str
    """The node's address on the provider network: pods reach the servers from it
    (masqueraded), and the servers reach the node's NodePorts on it."""

    @property
    def gateway(self) -> str:
        """The host's address on the provider network (where the tests send visitors from)."""
        return self.clouds.gateway

    def operator_env(self) -> dict[str, str]:
        """The simulators' settings for the operator in its pod: it connects to the
        servers from the node's provider address, and delivers the agent bundle its
        image carries (the image's own SMART_AGENT_BUNDLE, not a path of this host)."""
        env = self.clouds.operator_env()
        env.pop("SMART_AGENT_BUNDLE")
        env["SMART_SSH_SOURCES"] = json.dumps([f"{self.address}/32"])
        return env


@pytest.fixture(scope="session")
def pod_clouds(
    local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodClouds]:
    """The Hetzner Cloud and Cloudflare simulators on the node link's host address,
    where pods reach them. Every server they make boots Debian on a provider network
    of this session (``smart_sim.boot``), and the node joins that network with an
    address no server gets (a second veth, a port of the run's bridge; no forwarding on
    the host): the in-pod operator reaches the servers over SSH from it, and the
    servers' agents reach the intake's NodePort on it. The node leaves the network
    before the simulators stop (and with it, every server)."""
    with Clouds(
        tmp_path_factory.mktemp("pod-clouds"),
        ["--time-scale", "5"],
        # New zones count as delegated: Cloudflare's own first check activates them.
        ["--time-scale", "5", "--delegate-new-zones"],
        host=local_cluster.link.host_address,
    ) as clouds:
        network = ipaddress.IPv4Network(clouds.network["cidr"])
        (address,) = spare_addresses(network, 1)
        link = local_cluster.link
        link.join_provider_network(clouds.network["bridge"], address, network.prefixlen)
        try:
            yield PodClouds(clouds, address)
        finally:
            link.leave_provider_network()


def delete_and_wait(cluster: LocalCluster, kind: str, name: str, timeout: float = 60) -> None:
    with contextlib.suppress(KubectlError):
        cluster.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false")
    eventually(lambda: cluster.get(kind, name) is None, timeout, f"{kind} {name} gone")
