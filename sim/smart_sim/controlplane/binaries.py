"""Finds or builds the Kubernetes binaries: the control plane (etcd, kube-apiserver,
kube-controller-manager and a kubectl of the same release), the local node (kubelet,
kube-proxy, kube-scheduler and CoreDNS), and ``helm``, which lints, renders and
installs the chart.

A binary is taken from ``$KUBEBUILDER_ASSETS`` when that folder has it (the envtest
layout); otherwise it is built once from the pinned Go modules in ``sim/kube`` with the
machine's Go toolchain and cached outside the work tree, keyed by the hash of the
module files and of the build flags, so a changed pin or flag builds anew and an
unchanged one never does. Kubernetes binaries are stamped with the pinned release
(``-X k8s.io/component-base/version.gitVersion=...``): unstamped ones report v0.0.0,
and Helm refuses a cluster of that version.

This module only builds and finds; it starts nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KUBE_MODULE = Path(__file__).resolve().parents[2] / "kube"
ETCD_MODULE = KUBE_MODULE / "etcd"
HELM_MODULE = KUBE_MODULE / "helm"
COREDNS_MODULE = KUBE_MODULE / "coredns"

KUBE_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
}
NODE_PACKAGES = {
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
}
ETCD_PACKAGES = {"etcd": "go.etcd.io/etcd/server/v3"}
HELM_PACKAGES = {"helm": "helm.sh/helm/v4/cmd/helm"}
COREDNS_PACKAGES = {"coredns": "github.com/coredns/coredns"}

# Part of every cache key: bump it when the way binaries are built changes in a way
# the module files and flags do not show.
BUILD_RECIPE = "2"

# Strip symbols and nothing else: the flags every build had before stamping.
PLAIN_LDFLAGS = ("-s", "-w")

# How often a running build says it is still running.
PROGRESS_SECONDS = 30.0


class BuildError(RuntimeError):
    """The Go toolchain could not build a binary."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    kube_scheduler: Path
    coredns: Path


@dataclass(frozen=True)
class GoBuild:
    """Binaries built from one pinned Go module with one set of linker flags."""

    what: str  # shown while building, for example "Kubernetes v1.37.2"
    slug: str  # the cache folder's prefix
    module: Path
    ldflags: tuple[str, ...] = PLAIN_LDFLAGS

    def key(self) -> str:
        """Hash of the module files, the flags and the recipe: the cache folder's name."""
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            digest.update((self.module / name).read_bytes())
        # The plain flags leave the key as it always was, so binaries already cached
        # (etcd, helm) stay valid; any other flag makes a new key.
        if self.ldflags != PLAIN_LDFLAGS:
            digest.update("\0".join(self.ldflags).encode())
            digest.update(BUILD_RECIPE.encode())
        return digest.hexdigest()[:16]

    def folder(self) -> Path:
        return cache_root() / "bin" / f"{self.slug}-{self.key()}"


def cache_root() -> Path:
    base = os.environ.get("SMARTSERVER_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "smartserver"


def _required_version(module: Path, path: str) -> str:
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(path)}\s+(v\S+)", re.MULTILINE)
    found = pattern.search((module / "go.mod").read_text())
    return found.group(1) if found else "unknown"


def kube_version() -> str:
    """The pinned Kubernetes release, for example ``v1.37.2``."""
    return _required_version(KUBE_MODULE, "k8s.io/kubernetes")


def kube_ldflags(version: str) -> tuple[str, ...]:
    """Linker flags that stamp a Kubernetes binary with its release, as the release
    build does (hack/lib/version.sh sets both packages)."""
    found = re.match(r"v(\d+)\.(\d+)\.", version)
    if found is None:
        raise BuildError(f"cannot stamp binaries with the version {version!r}")
    major, minor = found.groups()
    stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor}
    return (
        "-s",
        "-w",
        *(
            f"-X {package}.{name}={value}"
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for name, value in stamps.items()
        ),
    )


def kube_build() -> GoBuild:
    version = kube_version()
    return GoBuild(f"Kubernetes {version}", "kubernetes", KUBE_MODULE, kube_ldflags(version))


def _go_build(build: GoBuild, name: str, package: str, output: Path) -> None:
    """``go build`` one package, saying every half minute that it still runs (a cold
    build of a Kubernetes binary takes minutes on 2 cores)."""
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain (`go`) is not on PATH; it builds the binaries")
    argv = [go, "build", "-trimpath", f"-ldflags={' '.join(build.ldflags)}", "-o", str(output)]
    print(f"  go build {package}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*argv, package], cwd=build.module, stdout=log, stderr=subprocess.STDOUT
        )
        while True:
            try:
                process.wait(timeout=PROGRESS_SECONDS)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                print(f"    still building {name} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
        if process.returncode != 0:
            log.seek(0)
            raise BuildError(f"go build {package} failed:\n{log.read().decode()[-4000:]}")


def _build(build: GoBuild, packages: dict[str, str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Others may build into the same folder at once: each build stages in its own
    # folder and renames finished binaries into place (a rename is atomic).
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    print(
        f"Building {build.what} ({', '.join(packages)}) from Go modules into {out} "
        "(one time; minutes on 2 cores)...",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    try:
        for name, package in packages.items():
            _go_build(build, name, package, staging / name)
        for name in packages:
            (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Built {build.what} in {time.monotonic() - started:.0f} s.", file=sys.stderr, flush=True)


def _from_assets(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    candidate = Path(assets) / name
    return candidate if os.access(candidate, os.X_OK) else None


def _ensure(build: GoBuild, packages: dict[str, str]) -> dict[str, Path]:
    found = {name: _from_assets(name) for name in packages}
    missing = {name: pkg for name, pkg in packages.items() if found[name] is None}
    if missing:
        out = build.folder()
        absent = {name: pkg for name, pkg in missing.items() if not (out / name).exists()}
        if absent:
            _build(build, absent, out)
        found.update({name: out / name for name in missing})
    return {name: path for name, path in found.items() if path is not None}


def ensure_binaries() -> Binaries:
    """Return the four control-plane binaries, building what is missing (once)."""
    kube = _ensure(kube_build(), KUBE_PACKAGES)
    etcd_version = _required_version(ETCD_MODULE, "go.etcd.io/etcd/server/v3")
    etcd = _ensure(GoBuild(f"etcd {etcd_version}", "etcd", ETCD_MODULE), ETCD_PACKAGES)
    return Binaries(
        etcd=etcd["etcd"],
        kube_apiserver=kube["kube-apiserver"],
        kube_controller_manager=kube["kube-controller-manager"],
        kubectl=kube["kubectl"],
    )


def coredns_version() -> str:
    return _required_version(COREDNS_MODULE, "github.com/coredns/coredns")


def ensure_node_binaries() -> NodeBinaries:
    """Return the local node's binaries, building what is missing (once): kubelet,
    kube-proxy and kube-scheduler from the control plane's own Kubernetes pins, and
    CoreDNS from ``sim/kube/coredns``."""
    kube = _ensure(kube_build(), NODE_PACKAGES)
    coredns = _ensure(
        GoBuild(f"CoreDNS {coredns_version()}", "coredns", COREDNS_MODULE), COREDNS_PACKAGES
    )
    return NodeBinaries(
        kubelet=kube["kubelet"],
        kube_proxy=kube["kube-proxy"],
        kube_scheduler=kube["kube-scheduler"],
        coredns=coredns["coredns"],
    )


def ensure_helm() -> Path:
    """Return the ``helm`` binary pinned in ``sim/kube/helm``, building it once."""
    version = _required_version(HELM_MODULE, "helm.sh/helm/v4")
    return _ensure(GoBuild(f"Helm {version}", "helm", HELM_MODULE), HELM_PACKAGES)["helm"]
