"""Starts a real Kubernetes control plane as plain processes: etcd,
kube-apiserver (with ``--authorization-mode=RBAC``) and kube-controller-manager (for
garbage collection, namespace deletion, quota status and service-account tokens).

By default it listens on loopback and serves no nodes: enough for an operator, its
CRDs and its RBAC. Given a ``listen_address`` (the host side of a local node's link,
see ``smart_sim.node``) it listens and advertises there, so a node and its pods reach
it (the ``kubernetes`` Service's endpoint is that address), authorizes kubelets with
the Node authorizer, talks to them with a client certificate of its CA, and runs
every controller a cluster with pods needs. Every process is stopped by ``stop()``,
which is safe to call more than once; use the class as a context manager so that
happens even on failure.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from smart_sim.controlplane.binaries import Binaries, ensure_binaries
from smart_sim.controlplane.pki import (
    SERVICE_IP,
    CertificateAuthority,
    KeyPair,
    service_account_keys,
)

# Only what the platform needs: owner-based garbage collection, namespace deletion,
# quota usage, and tokens for service-account Secrets.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "resourcequota-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
)
# With a node, pods need the rest: Deployments, StatefulSets, endpoints, the root CA
# ConfigMap every pod's service-account volume mounts, node lifecycle (taints).
NODE_CONTROLLERS = ("*",)
LOOPBACK = "127.0.0.1"


class ControlPlaneError(RuntimeError):
    """A component did not start; the message names it and ends with its log."""


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries what it printed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, pair: KeyPair) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "smartserver-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pair.cert),
                    "client-key-data": _b64(pair.key),
                },
            }
        ],
        "contexts": [
            {"name": "smartserver-local", "context": {"cluster": "smartserver-local", "user": user}}
        ],
        "current-context": "smartserver-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """One local control plane: ``start()``, use ``kubeconfig``, ``stop()``."""

    def __init__(
        self,
        workdir: Path | None = None,
        binaries: Binaries | None = None,
        listen_address: str | None = None,
    ) -> None:
        """``listen_address``: serve nodes, listening there instead of on loopback."""
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="smartserver-cp-"))
        self.binaries = binaries
        self.address = listen_address or LOOPBACK
        self.serves_nodes = listen_address is not None
        self.ca: CertificateAuthority | None = None
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.server = ""
        self._processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(
        self, timeout: float = 120.0, setup: Callable[[ControlPlane], None] | None = None
    ) -> ControlPlane:
        """Start every component. ``setup`` runs once the API server is up and before
        the controller manager starts, so the controllers discover what it installs
        (such as CRDs counted by quotas) at once instead of at their next resync."""
        binaries = self.binaries = self.binaries or ensure_binaries()
        self.pki.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            ca = self.ca = CertificateAuthority(self.pki)
            serving = ca.issue(
                "apiserver",
                "kube-apiserver",
                server=True,
                hosts=(
                    self.address,
                    "127.0.0.1",
                    "localhost",
                    SERVICE_IP,
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
            )
            admin = ca.issue("admin", "smartserver-admin", org="system:masters")
            kcm = ca.issue("controller-manager", "system:kube-controller-manager")
            sa = service_account_keys(self.pki)

            etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            peer_url = f"http://127.0.0.1:{etcd_peer}"
            self._spawn(
                "etcd",
                [
                    str(binaries.etcd),
                    "--name=default",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
            )
            self._wait("etcd", lambda: _http_ok(f"{etcd_url}/health"), deadline, "answers /health")

            self.server = f"https://{self.address}:{api_port}"
            self._spawn(
                "kube-apiserver",
                [
                    str(binaries.kube_apiserver),
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={self.address}",
                    f"--advertise-address={self.address}",
                    f"--secure-port={api_port}",
                    f"--tls-cert-file={serving.cert}",
                    f"--tls-private-key-file={serving.key}",
                    f"--client-ca-file={ca.cert_path}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={sa.cert}",
                    f"--service-account-signing-key-file={sa.key}",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--allow-privileged=true",
                    f"--cert-dir={self.pki}",
                    *self._node_serving_flags(ca),
                ],
            )
            context = ssl.create_default_context(cafile=str(ca.cert_path))
            context.load_cert_chain(str(admin.cert), str(admin.key))
            self._wait(
                "kube-apiserver",
                lambda: _http_ok(f"{self.server}/readyz", context),
                deadline,
                "answers /readyz",
            )
            write_kubeconfig(self.kubeconfig, self.server, ca.cert_path, "smartserver-admin", admin)
            if setup is not None:
                setup(self)
            kcm_config = write_kubeconfig(
                self.workdir / "controller-manager.kubeconfig",
                self.server,
                ca.cert_path,
                "system:kube-controller-manager",
                kcm,
            )
            self._spawn(
                "kube-controller-manager",
                [
                    str(binaries.kube_controller_manager),
                    f"--kubeconfig={kcm_config}",
                    f"--authentication-kubeconfig={kcm_config}",
                    f"--authorization-kubeconfig={kcm_config}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--cert-dir={self.pki}",
                    "--authentication-skip-lookup=true",
                    f"--client-ca-file={ca.cert_path}",
                    "--leader-elect=false",
                    # Each controller acts as its own service account with the
                    # system:controller:* role, as in a real cluster.
                    "--use-service-account-credentials=true",
                    f"--controllers={','.join(self._controllers())}",
                    f"--cluster-signing-cert-file={ca.cert_path}",
                    f"--cluster-signing-key-file={ca.key_path}",
                    f"--service-account-private-key-file={sa.key}",
                    f"--root-ca-file={ca.cert_path}",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                ],
            )
            # The controller manager is working once its service-account controller has
            # given the default namespace its ServiceAccount.
            self._wait(
                "kube-controller-manager",
                lambda: _http_ok(
                    f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", context
                ),
                deadline,
                "creates the default ServiceAccount",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # One at a time, dependents first: the API server shuts down quickly only while
        # etcd is still there to answer it.
        for _name, process, log in reversed(self._processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
            log.close()
        self._processes.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _controllers(self) -> tuple[str, ...]:
        return NODE_CONTROLLERS if self.serves_nodes else CONTROLLERS

    def _node_serving_flags(self, ca: CertificateAuthority) -> list[str]:
        if not self.serves_nodes:
            # No node ever reads the `kubernetes` Service's endpoints here.
            return ["--authorization-mode=RBAC", "--endpoint-reconciler-type=none"]
        kubelet_client = ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
        return [
            # kubelets act as system:node:<name>, limited to their own node's objects.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The default: the `kubernetes` Service points at the advertised address.
            "--endpoint-reconciler-type=lease",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={ca.cert_path}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    # -- helpers -------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> str:
        """Run the control plane's own kubectl against it and return its output."""
        assert self.binaries is not None
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout if check else result.stdout + result.stderr

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._processes.append((name, process, log))

    def _wait(self, name: str, ready: Any, deadline: float, what: str) -> None:
        process = next(p for n, p, _ in self._processes if n == name)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if ready():
                return
            time.sleep(0.1)
        tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
        state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
        raise ControlPlaneError(f"{name} {state} before it {what}; log tail:\n{tail}")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
