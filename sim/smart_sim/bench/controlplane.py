"""How long the local control plane takes: the one-time build from Go modules (cold,
with an empty Go build cache) and a start with the binaries cached (warm)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from smart_sim.controlplane import ControlPlane, ensure_binaries, kube_version
from smart_sim.controlplane import binaries as builds


def cold_build() -> float:
    """Build every binary into a fresh folder with an empty Go build cache."""
    with tempfile.TemporaryDirectory(prefix="smartserver-cold-") as scratch:
        saved = {key: os.environ.get(key) for key in ("GOCACHE", "SMARTSERVER_CACHE")}
        os.environ["GOCACHE"] = str(Path(scratch) / "go-build")
        os.environ["SMARTSERVER_CACHE"] = str(Path(scratch) / "cache")
        try:
            started = time.monotonic()
            builds.ensure_binaries()
            return time.monotonic() - started
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def warm_starts(runs: int) -> list[float]:
    binaries = ensure_binaries()
    times = []
    for _ in range(runs):
        started = time.monotonic()
        with ControlPlane(binaries=binaries):
            times.append(time.monotonic() - started)
    return times


def run(cold: bool, runs: int = 5) -> None:
    print(f"control plane: Kubernetes {kube_version()} on {os.cpu_count()} cores")
    if cold:
        print(f"  cold build (empty Go build cache): {cold_build():.0f} s")
    times = warm_starts(runs)
    print(
        f"  warm start to ready (etcd, kube-apiserver, kube-controller-manager), {runs} runs: "
        f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s"
    )
