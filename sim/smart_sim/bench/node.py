"""What the platform's image and the local node cost: the image build (cold, the
platform layer alone, cached) and its size, the node's start, loading the image, ``helm
install --wait`` of the chart until every pod is Ready, and the memory (RSS) of the
node's own processes and of the platform's pods. Needs root, like the node."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smart_sim.controlplane import ControlPlane
from smart_sim.controlplane.binaries import ensure_helm, ensure_node_binaries
from smart_sim.image import build, spec
from smart_sim.node import Node, NodeLink
from smart_sim.platform import ROOT

NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy", "coredns", "kube-scheduler")


@contextmanager
def cache(folder: Path) -> Iterator[None]:
    saved = os.environ.get("SMARTSERVER_CACHE")
    os.environ["SMARTSERVER_CACHE"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SMARTSERVER_CACHE", None)
        else:
            os.environ["SMARTSERVER_CACHE"] = saved


def timed_image() -> float:
    started = time.monotonic()
    build.ensure_image()
    return time.monotonic() - started


def image_figures(cold: bool) -> None:
    if cold:
        with (
            tempfile.TemporaryDirectory(prefix="smartserver-image-") as scratch,
            cache(Path(scratch)),
        ):
            print(f"  image, cold (Debian root, wheels, both layers): {timed_image():.0f} s")
            for entry in (Path(scratch) / "smartserver" / "image").glob("operator-*"):
                shutil.rmtree(entry)
            print(f"  image, platform layer only (a changed source): {timed_image():.1f} s")
    image = build.ensure_image()
    print(f"  image, cached (unchanged tree): {timed_image():.2f} s")
    rootfs = build.image_cache() / f"base-{build.base_key()}" / "rootfs"
    unpacked = sum(p.lstat().st_size for p in rootfs.rglob("*") if p.is_file())
    print(
        f"  image size: {image.size / 1e6:.0f} MB archive (compressed layers), "
        f"{unpacked / 1e6:.0f} MB base root filesystem unpacked"
    )


def rss_kib(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def node_figures(runs: int) -> None:
    node_binaries, helm, image = ensure_node_binaries(), ensure_helm(), build.ensure_image()
    starts = []
    with NodeLink.create() as link, ControlPlane(listen_address=link.host_address) as plane:
        for run in range(runs):
            node = Node(plane, link, binaries=node_binaries)
            started = time.monotonic()
            node.start()
            starts.append(time.monotonic() - started)
            if run < runs - 1:
                node.stop()
                plane.kubectl("delete", "node", node.name, "--wait=true")
        try:
            print(
                f"  node start to Ready (containerd, kubelet, kube-proxy, CoreDNS, scheduler), "
                f"{runs} runs: median {statistics.median(starts):.2f} s, "
                f"min {min(starts):.2f} s, max {max(starts):.2f} s"
            )
            started = time.monotonic()
            node.import_image(image)
            print(f"  loading the image into containerd: {time.monotonic() - started:.1f} s")
            processes = {pid: name_of(pid) for pid in node.cgroups.processes()}
            idle = rss_kib({pid for pid, name in processes.items() if name in NODE_PROCESSES})
            started = time.monotonic()
            result = subprocess.run(
                [
                    str(helm), f"--kubeconfig={plane.kubeconfig}", "install", "smartserver",
                    str(ROOT / "charts" / "smartserver"), "-n", "smartserver-system",
                    "--create-namespace", "--wait", "--timeout=5m",
                ],
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise RuntimeError(f"helm install failed: {result.stderr}")
            print(
                f"  helm install --wait (5 pods Running and Ready): "
                f"{time.monotonic() - started:.1f} s"
            )
            processes = {pid: name_of(pid) for pid in node.cgroups.processes()}
            by_name: dict[str, int] = {}
            for pid, name in processes.items():
                if name in NODE_PROCESSES:
                    by_name[name] = by_name.get(name, 0) + rss_kib({pid})
            node_kib = sum(by_name.values())
            shims = rss_kib({p for p, n in processes.items() if n.startswith("containerd-shim")})
            pods = rss_kib(
                {p for p, n in processes.items() if n.startswith("smart-")}
                | {p for p, n in processes.items() if n in ("python3", "pause")}
            )
            print(f"  node processes' RSS, idle: {idle / 1024:.0f} MiB")
            print(
                f"  node processes' RSS with the platform running: {node_kib / 1024:.0f} MiB ("
                + ", ".join(f"{n} {k / 1024:.0f}" for n, k in sorted(by_name.items()))
                + f"), plus {shims / 1024:.0f} MiB of containerd shims"
            )
            print(f"  the platform's 5 pods (processes and pause): {pods / 1024:.0f} MiB")
        finally:
            node.stop()


def run(cold: bool, runs: int = 3) -> None:
    if os.geteuid() != 0:
        print("node: skipped, the image build and the local node need root")
        return
    print(f"node and image: {spec.reference()} on {os.cpu_count()} cores")
    image_figures(cold)
    node_figures(runs)
