"""The local Kubernetes control plane: real etcd, kube-apiserver and
kube-controller-manager processes on loopback, no Docker.

``python -m smart_sim.controlplane`` starts one by hand and prints its kubeconfig.
"""

from smart_sim.controlplane.binaries import Binaries, BuildError, ensure_binaries, kube_version
from smart_sim.controlplane.cluster import ControlPlane, ControlPlaneError

__all__ = [
    "Binaries",
    "BuildError",
    "ControlPlane",
    "ControlPlaneError",
    "ensure_binaries",
    "kube_version",
]
