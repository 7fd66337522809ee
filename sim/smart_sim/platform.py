"""Installs the platform's cluster-side pieces into a control plane: the CRDs, the
template catalogue, kopf's peering resources, and the namespace, accounts and
least-privilege RBAC of the operator and the results intake, with the admission
policies that narrow it, all from the same files a real installation uses (``crds/``,
``manifests/``)."""

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
INTAKE_ACCOUNT = "smart-intake"


def install(plane: ControlPlane) -> None:
    """Apply the CRDs, wait until they are served, then the template catalogue and the
    operator's RBAC."""
    plane.kubectl("apply", "--server-side", "-k", str(CRDS))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    plane.kubectl("apply", "--server-side", "-k", str(MANIFESTS / "catalog"))
    rendered = plane.kubectl("kustomize", str(MANIFESTS / "rbac"))
    plane.kubectl("apply", "--server-side", "-f", "-", input=rendered)
    wait_for_operator_policies(plane)


def wait_for_operator_policies(plane: ControlPlane, timeout: float = 60) -> None:
    """Wait until the API server enforces the operator's admission policies (it loads
    new policies and bindings a moment after they are written), so the operator never
    runs without them: a namespace the platform did not make is refused to its account
    (a server-side dry run; nothing is created)."""
    deadline = time.monotonic() + timeout
    output = ""
    while time.monotonic() < deadline:
        output = plane.kubectl(
            "create", "namespace", "smartserver-policy-probe", "--dry-run=server",
            f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}",
            check=False,
        )  # fmt: skip
        if "smart-operator-namespaces" in output:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the operator's admission policies are not enforced; last: {output}")


def account_kubeconfig(
    plane: ControlPlane,
    path: Path,
    account: str,
    namespace: str = OPERATOR_NAMESPACE,
    hours: int = 12,
) -> Path:
    """A kubeconfig that acts as the ServiceAccount ``namespace/account``, so its RBAC
    is the real one."""
    token = plane.kubectl(
        "create", "token", account, "-n", namespace, f"--duration={hours}h"
    ).strip()
    return token_kubeconfig(plane, path, token, account)


def token_kubeconfig(plane: ControlPlane, path: Path, token: str, user: str = "token") -> Path:
    """A kubeconfig for ``plane`` that presents the bearer ``token``."""
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": user, "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = user
    path.write_text(yaml.safe_dump(admin, sort_keys=False))
    path.chmod(0o600)
    return path


def operator_kubeconfig(plane: ControlPlane, path: Path, hours: int = 12) -> Path:
    """A kubeconfig that acts as the operator's ServiceAccount."""
    return account_kubeconfig(plane, path, OPERATOR_ACCOUNT, hours=hours)


def intake_kubeconfig(plane: ControlPlane, path: Path, hours: int = 12) -> Path:
    """A kubeconfig that acts as the results intake's ServiceAccount."""
    return account_kubeconfig(plane, path, INTAKE_ACCOUNT, hours=hours)


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


def add_provider_accounts(plane: ControlPlane, accounts: dict[str, dict[str, str]]) -> None:
    """Provider account Secrets in the operator's namespace (``{secret name: data}``, the
    keys of docs/operations.md), and what the chart's Role grants the operator with
    ``operator.providerAccounts`` set to their names: ``get`` on them, by name. The
    operator reads them with ``SMART_ACCOUNT_SECRETS`` set to the same names."""
    names = sorted(accounts)
    documents: list[dict[str, object]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
            "type": "Opaque",
            "stringData": accounts[name],
        }
        for name in names
    ]
    documents += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "smart-operator-accounts", "namespace": OPERATOR_NAMESPACE},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": names,
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "smart-operator-accounts", "namespace": OPERATOR_NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "smart-operator-accounts",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": OPERATOR_ACCOUNT,
                    "namespace": OPERATOR_NAMESPACE,
                }
            ],
        },
    ]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
