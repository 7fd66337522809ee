"""``python -m smart_sim.controlplane``: start a local control plane and keep it
running until Ctrl-C, printing how to reach it."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from smart_sim.controlplane import ControlPlane, ensure_binaries, kube_version
from smart_sim.controlplane.binaries import ensure_helm


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
    args = parser.parse_args()
    binaries = ensure_binaries()
    if args.build_only:
        print(f"Kubernetes {kube_version()} binaries:")
        for name, path in vars(binaries).items():
            print(f"  {name:<24} {path}")
        if args.with_helm:
            # Not part of the control plane: the chart tests lint and render with it.
            print(f"  {'helm':<24} {ensure_helm()}")
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    with ControlPlane(args.workdir, binaries) as plane:
        elapsed = time.monotonic() - started
        print(f"Control plane (Kubernetes {kube_version()}) ready in {elapsed:.1f} s")
        print(f"  API server:  {plane.server}")
        print(f"  kubeconfig:  {plane.kubeconfig}")
        print(f"  logs:        {plane.logs}")
        print(f"  try:         {binaries.kubectl} --kubeconfig={plane.kubeconfig} get ns")
        print("Ctrl-C stops it.", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
