"""The local node's configuration, without starting it: what each component is told
keeps the node inside its sandbox (its own state, its own DNS, nothing routed beyond
the cluster), the address plan keeps nodes apart from each other and from the
simulated servers, and the binaries are stamped with the release they are."""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from pathlib import Path

import pytest

from smart_sim.boot.network import PROVIDER_RANGE
from smart_sim.controlplane import binaries
from smart_sim.node import config, node
from smart_sim.node.link import NODE_NETWORK, slot_addresses, slot_count
from smart_sim.serving import listenable

PATHS = config.NodePaths(Path("/tmp/node-test"))


def test_containerd_keeps_its_state_and_socket_under_the_node_folder() -> None:
    parsed = tomllib.loads(config.containerd_config(PATHS, "localhost/pause:1", "/usr/lib/cni"))
    assert parsed["root"].startswith(str(PATHS.root))
    assert parsed["state"].startswith(str(PATHS.root))
    assert parsed["grpc"]["address"] == str(PATHS.containerd_socket)
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    # The sandbox lacks CAP_SYS_RESOURCE: without this no pod sandbox starts.
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == "localhost/pause:1"
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["cni"]["conf_dir"] == str(PATHS.cni_conf_dir)
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_kubelet_runs_in_the_sandbox_without_losing_imported_images() -> None:
    kubelet = config.kubelet_config(
        PATHS,
        node_address="198.19.0.2",
        cgroup_root="/smartserver-ssn-abc",
        ca=Path("ca.crt"),
        serving_cert=Path("k.crt"),
        serving_key=Path("k.key"),
    )
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["cgroupRoot"] == "/smartserver-ssn-abc"
    assert kubelet["failSwapOn"] is False
    assert kubelet["imageGCHighThresholdPercent"] == 100
    assert kubelet["clusterDNS"] == ["198.19.0.2"]
    assert kubelet["resolvConf"] == "", "pods would inherit the host's resolver"
    assert kubelet["authorization"]["mode"] == "AlwaysAllow"
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{PATHS.containerd_socket}"


def test_kube_proxy_leaves_the_kernel_wide_conntrack_settings_alone() -> None:
    proxy = config.kube_proxy_config(Path("kp.kubeconfig"), "node", "198.19.0.2")
    assert proxy["clusterCIDR"] == config.POD_CIDR
    assert all(value in (0, "0s") for value in proxy["conntrack"].values())


def test_kube_proxy_serves_node_ports_on_the_link_and_a_provider_network_only() -> None:
    proxy = config.kube_proxy_config(Path("kp.kubeconfig"), "node", "198.19.0.2")
    networks = [ipaddress.ip_network(n) for n in proxy["nodePortAddresses"]]
    # The booted servers reach the intake's NodePort on the node's provider address.
    assert ipaddress.ip_network(config.PROVIDER_NETWORKS) == PROVIDER_RANGE
    assert networks == [ipaddress.ip_network("198.19.0.2/32"), PROVIDER_RANGE]
    assert not any(n.overlaps(ipaddress.ip_network("127.0.0.0/8")) for n in networks)


def test_coredns_answers_the_cluster_and_forwards_nothing() -> None:
    corefile = config.corefile("198.19.0.2", Path("coredns.kubeconfig"))
    assert "bind 198.19.0.2" in corefile
    assert f"kubernetes {config.CLUSTER_DOMAIN}" in corefile
    assert "forward" not in corefile, "names outside the cluster would be sent out"


def test_pods_get_addresses_from_the_node_share_of_the_pod_network() -> None:
    bridge = config.cni_config(PATHS)["plugins"][0]
    (subnet,) = bridge["ipam"]["ranges"][0]
    assert ipaddress.ip_network(subnet["subnet"]).subnet_of(ipaddress.ip_network(config.POD_CIDR))
    assert bridge["ipMasq"] is True and bridge["isGateway"] is True


def test_node_links_take_disjoint_pairs_of_198_19_0_0_24() -> None:
    assert slot_addresses(0) == ("198.19.0.1", "198.19.0.2")
    seen: set[str] = set()
    for slot in range(slot_count()):
        host, node = slot_addresses(slot)
        for address in (host, node):
            assert ipaddress.ip_address(address) in NODE_NETWORK
            assert address not in seen
            seen.add(address)
    # The simulated servers' network is the lower half of 198.18.0.0/15.
    assert not NODE_NETWORK.overlaps(ipaddress.ip_network("198.18.0.0/16"))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.42.0.9", True),
        ("198.19.0.1", True),
        ("0.0.0.0", False),  # noqa: S104 (the address it must refuse)
        ("10.0.0.5", False),
        ("192.168.1.10", False),
        ("8.8.8.8", False),
    ],
)
def test_simulators_listen_only_on_loopback_or_a_test_link(host: str, allowed: bool) -> None:
    assert listenable(host) is allowed


def test_kubernetes_binaries_are_stamped_with_the_pinned_release() -> None:
    version = binaries.kube_version()
    flags = binaries.kube_ldflags(version)
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in flags
    major, minor = version.removeprefix("v").split(".")[:2]
    assert f"-X k8s.io/component-base/version.gitMinor={minor}" in flags
    assert f"-X k8s.io/component-base/version.gitMajor={major}" in flags


def test_build_flags_are_part_of_the_cache_key() -> None:
    plain = binaries.GoBuild("Kubernetes", "kubernetes", binaries.KUBE_MODULE)
    stamped = binaries.kube_build()
    assert plain.key() != stamped.key(), "stamped binaries would reuse the unstamped cache"
    # The plain flags keep the key every cached build already has: the module files'.
    helm = binaries.GoBuild("Helm", "helm", binaries.HELM_MODULE)
    module = binaries.HELM_MODULE
    files = (module / "go.mod").read_bytes() + (module / "go.sum").read_bytes()
    assert helm.key() == hashlib.sha256(files).hexdigest()[:16]


def test_a_node_refuses_to_start_when_inotify_instances_are_used_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared machines run out: booted servers' systemd holds several each, and they
    all count against root's one limit. The node says so instead of failing halfway."""
    limit = tmp_path / "max_user_instances"
    monkeypatch.setattr(node, "INOTIFY_LIMIT", limit)
    monkeypatch.setattr(node, "inotify_instances_of_root", lambda: {"systemd": 76, "dbus": 40})
    limit.write_text("128\n")
    with pytest.raises(node.NodeError, match=r"root's processes hold 116 of the 128 .*systemd 76"):
        node.check_inotify_room()
    limit.write_text("1024\n")
    node.check_inotify_room()
