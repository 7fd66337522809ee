"""Installs the platform's cluster-side pieces into a control plane: the CRDs, kopf's
peering resources, and the operator's namespace, account and least-privilege RBAC,
all from the same files a real installation uses (``crds/``, ``manifests/``)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from smart_sim.controlplane import ControlPlane
from smart_sim.controlplane.cluster import KubectlError

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
MANIFESTS = ROOT / "manifests"
SAMPLES = CRDS / "samples"
OPERATOR_NAMESPACE = "smartserver-system"
OPERATOR_ACCOUNT = "smart-operator"


def install(plane: ControlPlane) -> None:
    """Apply the CRDs and the operator's RBAC, and wait until the CRDs are served."""
    plane.kubectl("apply", "--server-side", "-k", str(CRDS))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    rendered = plane.kubectl("kustomize", str(MANIFESTS / "rbac"))
    plane.kubectl("apply", "--server-side", "-f", "-", input=rendered)


def operator_kubeconfig(plane: ControlPlane, path: Path, hours: int = 12) -> Path:
    """A kubeconfig that acts as the operator's ServiceAccount, so RBAC is the real one."""
    token = plane.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, f"--duration={hours}h"
    ).strip()
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": OPERATOR_ACCOUNT, "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = OPERATOR_ACCOUNT
    path.write_text(yaml.safe_dump(admin, sort_keys=False))
    path.chmod(0o600)
    return path


def wait_for(plane: ControlPlane, args: list[str], expect: str, timeout: float = 60) -> str:
    """Poll ``kubectl get ...`` until its output contains ``expect``; return it."""
    deadline = time.monotonic() + timeout
    output = ""
    while time.monotonic() < deadline:
        try:
            output = plane.kubectl("get", *args)
        except KubectlError as error:
            output = str(error)
        if expect in output:
            return output
        time.sleep(0.2)
    raise TimeoutError(f"kubectl get {' '.join(args)} did not show {expect!r}; last: {output}")
