"""A local Kubernetes node without Docker: containerd, kubelet, kube-proxy, CoreDNS
and kube-scheduler in a private network namespace joined to the host by a veth, so
the platform's chart installs and its pods run in tests.

``python -m smart_sim.controlplane --node`` starts a control plane with one by hand.
"""

from smart_sim.node.link import LinkError, NodeLink
from smart_sim.node.node import NODE_NAME, Node, NodeError

__all__ = ["NODE_NAME", "LinkError", "Node", "NodeError", "NodeLink"]
