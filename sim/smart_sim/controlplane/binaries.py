"""Finds or builds the control-plane binaries: etcd, kube-apiserver,
kube-controller-manager and a kubectl of the same release; and ``helm``, which lints
and renders the chart.

A binary is taken from ``$KUBEBUILDER_ASSETS`` when that folder has it (the envtest
layout); otherwise it is built once from the pinned Go modules in ``sim/kube`` with the
machine's Go toolchain and cached outside the work tree, keyed by the hash of the
module files, so a changed pin builds anew and an unchanged one never does.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KUBE_MODULE = Path(__file__).resolve().parents[2] / "kube"
ETCD_MODULE = KUBE_MODULE / "etcd"
HELM_MODULE = KUBE_MODULE / "helm"

KUBE_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
}
ETCD_PACKAGES = {"etcd": "go.etcd.io/etcd/server/v3"}
HELM_PACKAGES = {"helm": "helm.sh/helm/v4/cmd/helm"}


class BuildError(RuntimeError):
    """The Go toolchain could not build a control-plane binary."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path


def cache_root() -> Path:
    base = os.environ.get("SMARTSERVER_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "smartserver"


def _module_key(module: Path) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((module / name).read_bytes())
    return digest.hexdigest()[:16]


def _required_version(module: Path, path: str) -> str:
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(path)}\s+(v\S+)", re.MULTILINE)
    found = pattern.search((module / "go.mod").read_text())
    return found.group(1) if found else "unknown"


def kube_version() -> str:
    """The pinned Kubernetes release, for example ``v1.37.2``."""
    return _required_version(KUBE_MODULE, "k8s.io/kubernetes")


def _build(module: Path, packages: dict[str, str], out: Path, what: str) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain (`go`) is not on PATH; it builds the control plane")
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    print(
        f"Building {what} from Go modules into {out} (one time; several minutes on 2 cores)...",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    for name, package in packages.items():
        print(f"  go build {package}", file=sys.stderr, flush=True)
        result = subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(staging / name), package],
            cwd=module,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BuildError(f"go build {package} failed:\n{result.stderr[-4000:]}")
    for name in packages:
        (staging / name).replace(out / name)
    staging.rmdir()
    print(f"Built {what} in {time.monotonic() - started:.0f} s.", file=sys.stderr, flush=True)


def _from_assets(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    candidate = Path(assets) / name
    return candidate if os.access(candidate, os.X_OK) else None


def _ensure(module: Path, packages: dict[str, str], what: str) -> dict[str, Path]:
    found = {name: _from_assets(name) for name in packages}
    missing = {name: pkg for name, pkg in packages.items() if found[name] is None}
    if missing:
        out = cache_root() / "bin" / f"{what.split()[0].lower()}-{_module_key(module)}"
        if not all((out / name).exists() for name in missing):
            _build(module, missing, out, what)
        found.update({name: out / name for name in missing})
    return {name: path for name, path in found.items() if path is not None}


def ensure_binaries() -> Binaries:
    """Return the four binaries, building what is missing (once)."""
    kube = _ensure(KUBE_MODULE, KUBE_PACKAGES, f"Kubernetes {kube_version()}")
    etcd_version = _required_version(ETCD_MODULE, "go.etcd.io/etcd/server/v3")
    etcd = _ensure(ETCD_MODULE, ETCD_PACKAGES, f"etcd {etcd_version}")
    return Binaries(
        etcd=etcd["etcd"],
        kube_apiserver=kube["kube-apiserver"],
        kube_controller_manager=kube["kube-controller-manager"],
        kubectl=kube["kubectl"],
    )


def ensure_helm() -> Path:
    """Return the ``helm`` binary pinned in ``sim/kube/helm``, building it once."""
    version = _required_version(HELM_MODULE, "helm.sh/helm/v4")
    return _ensure(HELM_MODULE, HELM_PACKAGES, f"Helm {version}")["helm"]
