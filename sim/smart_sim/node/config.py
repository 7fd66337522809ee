"""The local node's configuration files, as pure functions of its paths and addresses:
containerd's, the CNI network's, kubelet's, kube-proxy's and CoreDNS's.

Each setting that departs from a component's default says why: most exist because
the node runs inside a sandbox (no CAP_SYS_RESOURCE, cgroup v1, a private network
namespace) and must change nothing on the host. Nothing here touches the system.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
# The booted servers' provider networks (smart_sim.boot.network.PROVIDER_RANGE).
PROVIDER_NETWORKS = "198.18.0.0/16"
POD_CIDR = "10.244.0.0/16"
# The node's share of the pod network: the bridge's addresses come from here.
NODE_POD_SUBNET = "10.244.0.0/24"

# Settings kubelet writes on start (kubelet/cm/container_manager_linux.go,
# setupKernelTunables). They are global, not per network namespace, so the node masks
# them with files of its own inside its private mount namespace.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its state; everything is under ``root``."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "data"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def sysctl_masks(self) -> Path:
        return self.root / "sysctl"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def containerd_config(paths: NodePaths, sandbox_image: str, cni_bin_dir: str) -> str:
    """containerd 1.6's config (version 2) for a node that shares nothing with the
    host's own containerd, if there is one: its own root, state, socket and CNI."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
# Snapshotters that cannot work here only log errors at every start.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root / "containerd" / "opt"}"

[{cri}]
  # Built locally and imported before any pod starts: nothing is pulled.
  sandbox_image = "{sandbox_image}"
  # The sandbox lacks CAP_SYS_RESOURCE: without this every pod sandbox fails with
  # "failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Pod network namespaces are mounted under the node's own state, not /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = false

  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    # Locally imported images must stay unpacked for the CRI.
    discard_unpacked_layers = false

    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [{cri}.containerd.runtimes.runc.options]
        # kubelet's cgroupfs driver: nothing of systemd runs here.
        SystemdCgroup = false

  [{cri}.cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{paths.cni_conf_dir}"
    max_conf_num = 1
"""


def cni_config(paths: NodePaths) -> dict[str, Any]:
    """One bridge for the node's pods; traffic leaving the pod network is masqueraded
    to the node's address, so the host answers pods without a route to them."""
    return {
        "cniVersion": "0.4.0",
        "name": "smartserver",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                # A pod reaching its own Service's address is sent back to itself.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_data_dir / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def cni_config_text(paths: NodePaths) -> str:
    return json.dumps(cni_config(paths), indent=2)


def kubelet_config(
    paths: NodePaths,
    *,
    node_address: str,
    cgroup_root: str,
    ca: Path,
    serving_cert: Path,
    serving_key: Path,
) -> dict[str, Any]:
    """kubelet's KubeletConfiguration for this sandbox."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine kind has cgroup v1; kubelet refuses it unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Every pod's cgroup lives under the node's own tree, which the node removes.
        "cgroupRoot": cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        # Images are imported, not pulled: collecting them would lose them for good.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "87600h",
        # A busy shared machine must not make the node evict the platform's pods.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "address": node_address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": node_address,
        "healthzPort": 10248,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # The API server is the only client (logs, exec, port-forward), with a
        # certificate from the cluster's CA.
        "authentication": {
            "x509": {"clientCAFile": str(ca)},
            "webhook": {"enabled": False},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": CLUSTER_DOMAIN,
        # CoreDNS listens on the node's address (see corefile).
        "clusterDNS": [node_address],
        # Pods get the cluster's DNS only: nothing of the host's resolver leaks in.
        "resolvConf": "",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(paths.pod_logs),
        "makeIPTablesUtilChains": True,
        "maxPods": 110,
        "protectKernelDefaults": False,
        "kernelMemcgNotification": False,
        "serializeImagePulls": False,
        # Ready is reported within seconds of a change, so waits stay short.
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }


def kube_proxy_config(kubeconfig: Path, node_name: str, node_address: str) -> dict[str, Any]:
    """kube-proxy in iptables mode, inside the node's network namespace. Conntrack
    sizes and timeouts are left alone: they are kernel-wide here."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "bindAddress": node_address,
        "healthzBindAddress": f"{node_address}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": POD_CIDR,
        "mode": "iptables",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        # NodePorts on the node's link address, and on the address it may hold on a
        # booted servers' provider network (198.18.0.0/16, NodeLink.join_provider_network),
        # where the servers' agents reach the intake; never on loopback.
        "nodePortAddresses": [f"{node_address}/32", PROVIDER_NETWORKS],
    }


def corefile(node_address: str, kubeconfig: Path) -> str:
    """CoreDNS answering the cluster's names from the API server, on the node's
    address. No ``forward``: names outside the cluster are not resolved, so nothing
    in a pod is ever pointed at the internet."""
    return f"""\
.:53 {{
    bind {node_address}
    errors
    health {node_address}:8080
    ready {node_address}:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} smartserver-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    reload
}}
"""


COREDNS_USER = "system:coredns"


def coredns_rbac() -> list[dict[str, Any]]:
    """What CoreDNS's account may read: the role kubeadm gives it."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}
            ],
        },
    ]
