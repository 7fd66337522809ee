"""``make dev``: the whole platform on this machine. Starts the local control plane,
the Hetzner Cloud and Cloudflare simulators (servers boot as simulated hosts), installs
the CRDs and the RBAC, runs the operator as its own ServiceAccount, applies the sample
Customer and Domain and prints how to look around. Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from smart_sim import platform
from smart_sim.controlplane import ControlPlane, kube_version
from smart_sim.processes import Clouds, OperatorProcess

DEV_DIR = platform.ROOT / ".dev"


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(dev_dir: Path = DEV_DIR) -> None:
    stop = threading.Event()
    # Explicit handlers: a shell may start us with SIGINT ignored (a background job).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    shutil.rmtree(dev_dir, ignore_errors=True)
    started = time.monotonic()
    _say(f"starting the local control plane (Kubernetes {kube_version()}) with the CRDs")
    with contextlib.ExitStack() as stack:
        plane = ControlPlane(dev_dir / "cluster")
        stack.callback(plane.stop)
        # The CRDs go in before the controllers start, so quotas count them at once.
        plane.start(setup=platform.install)
        _say("starting the Hetzner Cloud and Cloudflare simulators")
        clouds = stack.enter_context(Clouds(dev_dir / "clouds"))
        _say("starting the operator as its ServiceAccount")
        kubeconfig = platform.operator_kubeconfig(plane, dev_dir / "operator.kubeconfig")
        operator = OperatorProcess(kubeconfig, dev_dir / "logs", env=clouds.operator_env())
        stack.enter_context(operator)
        _say("applying the sample Customer")
        plane.kubectl("apply", "-f", str(platform.SAMPLES / "customer.yaml"))
        platform.wait_for(plane, ["customer", "acme"], "True", timeout=60)
        _say("applying the sample Domain; its zone is delegated to Cloudflare at once here")
        sample = yaml.safe_load((platform.SAMPLES / "domain.yaml").read_text())
        clouds.delegate_zone(sample["spec"]["domain"])
        plane.kubectl("apply", "-f", str(platform.SAMPLES / "domain.yaml"))
        platform.wait_for(
            plane,
            ["domain", sample["metadata"]["name"], "-n", sample["metadata"]["namespace"]],
            "Provisioning",
            timeout=120,
        )
        assert plane.binaries is not None
        env_file = dev_dir / "env"
        env_file.write_text(
            f"export KUBECONFIG={plane.kubeconfig}\n"
            f"export PATH={plane.binaries.kubectl.parent}:$PATH\n"
        )
        print(plane.kubectl("get", "smartserver", "-A"))
        print(
            f"Smart Server is running ({time.monotonic() - started:.0f} s to start).\n"
            f"  Look around, in another shell:\n"
            f"    source {env_file}          # KUBECONFIG and a kubectl {kube_version()}\n"
            f"    kubectl get customers       # or: kubectl get smartserver -A\n"
            f"    kubectl describe customer acme\n"
            f"    kubectl get resourcequota,serviceaccount,secret -n customer-acme\n"
            f"    kubectl describe domain acme-example -n customer-acme\n"
            f"  Simulated servers: {clouds.hetzner.root_url}/_sim/servers "
            f"(hosts under {clouds.hosts_dir})\n"
            f"  Simulated DNS:     {clouds.cloudflare.root_url}/_sim/zones\n"
            f"  Operator log: {operator.log_path}\n"
            f"  Metrics:      {operator.metrics_url}\n"
            f"  Cluster logs: {plane.logs}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(1.0):
            if operator.process is not None and operator.process.poll() is not None:
                print(f"the operator exited:\n{operator.log_tail()}", file=sys.stderr)
                break
        _say("stopping")
    _say("stopped")


if __name__ == "__main__":
    run()
