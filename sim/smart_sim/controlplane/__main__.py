"""``python -m smart_sim.controlplane``: start a local control plane and keep it
running until Ctrl-C, printing how to reach it. With ``--node`` it also starts a local
node that runs pods (root only), with the platform's image loaded, so
``helm install`` of the chart works against it."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from pathlib import Path

from smart_sim.controlplane import ControlPlane, ensure_binaries, kube_version
from smart_sim.controlplane.binaries import ensure_helm, ensure_node_binaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep certificates, etcd data and logs here (default: a temporary folder)",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="build or find the binaries, then exit"
    )
    parser.add_argument(
        "--with-helm", action="store_true", help="also build or find helm (for the chart tests)"
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="also start a local node (kubelet, containerd, ...) with the platform's image",
    )
    parser.add_argument(
        "--no-image", action="store_true", help="with --node: do not build or load the image"
    )
    args = parser.parse_args()
    binaries = ensure_binaries()
    node_binaries = ensure_node_binaries() if args.node else None
    if args.build_only:
        print(f"Kubernetes {kube_version()} binaries:")
        for name, path in {
            **vars(binaries),
            **(vars(node_binaries) if node_binaries else {}),
        }.items():
            print(f"  {name:<24} {path}")
        if args.with_helm:
            # Not part of the control plane: the chart tests lint and render with it.
            print(f"  {'helm':<24} {ensure_helm()}")
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        listen = None
        link = None
        if args.node:
            from smart_sim.node import NodeLink

            link = stack.enter_context(NodeLink.create())
            listen = link.host_address
        image = None
        if args.node and not args.no_image:
            from smart_sim.image import ensure_image

            image = ensure_image()
        started = time.monotonic()
        plane = stack.enter_context(ControlPlane(args.workdir, binaries, listen_address=listen))
        elapsed = time.monotonic() - started
        print(f"Control plane (Kubernetes {kube_version()}) ready in {elapsed:.1f} s")
        print(f"  API server:  {plane.server}")
        print(f"  kubeconfig:  {plane.kubeconfig}")
        print(f"  logs:        {plane.logs}")
        if link is not None:
            from smart_sim.node import Node

            started = time.monotonic()
            workdir = args.workdir / "node" if args.workdir else None
            node = stack.enter_context(Node(plane, link, workdir, node_binaries))
            if image is not None:
                node.import_image(image)
            print(f"Node {node.name} ready in {time.monotonic() - started:.1f} s")
            print(f"  address:     {node.address} (the host is {link.host_address})")
            print(f"  logs:        {node.paths.logs}")
            if image is not None:
                print(f"  image:       {image.reference} loaded")
                print(
                    "  try:         helm install smartserver charts/smartserver "
                    f"-n smartserver-system --create-namespace --kubeconfig={plane.kubeconfig}"
                )
        print(f"  try:         {binaries.kubectl} --kubeconfig={plane.kubeconfig} get ns")
        print("Ctrl-C stops it.", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
