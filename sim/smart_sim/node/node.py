"""A local Kubernetes node that runs the platform's pods: containerd (Debian's, with
runc), kubelet, kube-proxy and CoreDNS inside a private network namespace joined to
the host by a veth (``NodeLink``), plus kube-scheduler on the host, all started and
stopped by PID like the control plane.

Nothing on the host changes: the node's processes share one private mount namespace
(held by a ``sleep`` process) in which the kernel settings kubelet rewrites are masked
by files of the node's own, containerd's runtime folders are a private tmpfs, and
every mount containerd and kubelet make (image snapshots, pod volumes) lives and dies.
Every process, the node's own and every container's, is in the node's cgroup tree;
``stop()`` kills what is left there, removes the tree and the namespaces, so nothing
survives a node, even one whose test failed. A node needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import yaml

from smart_sim.controlplane.binaries import NodeBinaries, ensure_node_binaries
from smart_sim.controlplane.cluster import ControlPlane, KubectlError, write_kubeconfig
from smart_sim.image.build import Image
from smart_sim.node import config
from smart_sim.node.link import NodeLink
from smart_sim.node.pause import ensure_pause_image

NODE_NAME = "smartserver-node"
CNI_BIN_DIR = "/usr/lib/cni"
# Folders of the host the node's components write to whatever their configuration
# says (runc's and the shims' state, CNI's cache, kubelet's device-plugin socket and
# container-log links); inside the node's mount namespace each is a private tmpfs.
PRIVATE_FOLDERS = (
    "/run/containerd",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
)


# Room for the images (the platform's unpacks to about 600 MB) and the containers'
# writable layers; a tmpfs takes memory only for what it holds.
CONTAINERD_TMPFS = "4g"


class NodeError(RuntimeError):
    """A node component did not start; the message names it and ends with its log."""


class Node:
    """One node of a control plane started with ``listen_address=link.host_address``."""

    def __init__(
        self,
        plane: ControlPlane,
        link: NodeLink,
        workdir: Path | None = None,
        binaries: NodeBinaries | None = None,
        name: str = NODE_NAME,
    ) -> None:
        if not plane.serves_nodes or plane.address != link.host_address:
            raise NodeError(
                "the control plane must listen on the node link's host address "
                f"({link.host_address}): ControlPlane(listen_address=link.host_address)"
            )
        self.plane = plane
        self.link = link
        self.name = name
        self._own_workdir = workdir is None
        self.paths = config.NodePaths(workdir or Path(tempfile.mkdtemp(prefix="smartserver-node-")))
        self.binaries = binaries
        self.cgroups = link.cgroups
        self.holder: subprocess.Popen[bytes] | None = None
        self._kubeconfigs: dict[str, Path] = {}
        self._processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    @property
    def address(self) -> str:
        return self.link.node_address

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Node:
        """Start every component and wait until the node is Ready and schedulable."""
        if os.geteuid() != 0:
            raise NodeError("a local node needs root (namespaces, mounts, cgroups)")
        binaries = self.binaries = self.binaries or ensure_node_binaries()
        pause = ensure_pause_image()
        check_inotify_room()
        deadline = time.monotonic() + timeout
        try:
            self._write_files(pause)
            self.cgroups.create("node")
            self._start_holder(deadline)
            self._spawn_in_node(
                "containerd", ["containerd", "--config", str(self.paths.containerd_config)]
            )
            self._wait("containerd", self._containerd_answers, deadline, "answers on its socket")
            self.import_image(pause)
            self._spawn(
                "kube-scheduler",
                [
                    str(binaries.kube_scheduler),
                    f"--kubeconfig={self._kubeconfigs['scheduler']}",
                    f"--authentication-kubeconfig={self._kubeconfigs['scheduler']}",
                    f"--authorization-kubeconfig={self._kubeconfigs['scheduler']}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                ],
                in_node=False,
            )
            self._spawn_in_node(
                "kubelet",
                [
                    str(binaries.kubelet),
                    f"--config={self.paths.kubelet_config}",
                    f"--kubeconfig={self._kubeconfigs['kubelet']}",
                    f"--root-dir={self.paths.kubelet_root}",
                    f"--cert-dir={self.paths.pki}",
                    f"--hostname-override={self.name}",
                    f"--node-ip={self.address}",
                    "--v=1",
                ],
            )
            self._spawn_in_node(
                "kube-proxy", [str(binaries.kube_proxy), f"--config={self.paths.kube_proxy_config}"]
            )
            self.plane.kubectl(
                "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(config.coredns_rbac())
            )
            self._spawn_in_node(
                "coredns", [str(binaries.coredns), "-conf", str(self.paths.corefile)]
            )
            self._wait(
                "kubelet",
                self._ready_and_schedulable,
                deadline,
                "registers the node as Ready without taints",
            )
            self._wait(
                "coredns",
                lambda: _http_ok(f"http://{self.address}:8181/ready"),
                deadline,
                "answers /ready",
            )
            self._wait(
                "kube-proxy",
                lambda: _http_ok(f"http://{self.address}:10256/healthz"),
                deadline,
                "answers /healthz",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component, kill whatever still runs in the node's cgroups
        (containers, shims), and remove the cgroups, namespaces and, if the node made
        it, its folder. Safe to call more than once."""
        for _name, process, _log in reversed(self._processes):
            _terminate(process, timeout=10)
        with contextlib.suppress(RuntimeError, OSError):
            self.cgroups.kill_all()
        if self.holder is not None:
            _terminate(self.holder, timeout=5)
            self.holder = None
        for _name, _process, log in self._processes:
            log.close()
        self._processes.clear()
        self.cgroups.remove()
        if self._own_workdir:
            shutil.rmtree(self.paths.root, ignore_errors=True)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- images --------------------------------------------------------------------------

    def import_image(self, image: Image) -> None:
        """Load an OCI archive into containerd, where kubelet finds it by name."""
        repository = image.reference.rsplit(":", 1)[0]
        self._ctr("images", "import", "--base-name", repository, str(image.archive))

    def images(self) -> list[str]:
        return self._ctr("images", "list", "--quiet").split()

    def _ctr(self, *args: str) -> str:
        result = subprocess.run(
            ["ctr", f"--address={self.paths.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    # -- setup ---------------------------------------------------------------------------

    def _write_files(self, pause: Image) -> None:
        paths = self.paths
        for folder in (
            paths.containerd_root,
            paths.containerd_state,
            paths.cni_conf_dir,
            paths.cni_data_dir,
            paths.kubelet_root,
            paths.pod_logs,
            paths.sysctl_masks,
            paths.pki,
            paths.logs,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        ca = self.plane.ca
        assert ca is not None, "the control plane is not started"
        server = self.plane.server
        identities = {
            # The Node authorizer knows a kubelet by this name and group.
            "kubelet": (f"system:node:{self.name}", "system:nodes"),
            # Bound to their roles by the API server's default bindings.
            "kube-proxy": ("system:kube-proxy", None),
            "scheduler": ("system:kube-scheduler", None),
            "coredns": (config.COREDNS_USER, None),
        }
        for component, (user, group) in identities.items():
            pair = ca.issue(f"node-{component}", user, org=group)
            self._kubeconfigs[component] = write_kubeconfig(
                paths.root / f"{component}.kubeconfig", server, ca.cert_path, user, pair
            )
        serving = ca.issue(
            "node-kubelet-serving", f"system:node:{self.name}", server=True, hosts=(self.address,)
        )
        paths.containerd_config.write_text(
            config.containerd_config(paths, pause.reference, CNI_BIN_DIR)
        )
        (paths.cni_conf_dir / "10-smartserver.conflist").write_text(config.cni_config_text(paths))
        kubelet = config.kubelet_config(
            paths,
            node_address=self.address,
            cgroup_root=f"/{self.cgroups.name}",
            ca=ca.cert_path,
            serving_cert=serving.cert,
            serving_key=serving.key,
        )
        paths.kubelet_config.write_text(yaml.safe_dump(kubelet))
        proxy = config.kube_proxy_config(self._kubeconfigs["kube-proxy"], self.name, self.address)
        paths.kube_proxy_config.write_text(yaml.safe_dump(proxy))
        paths.corefile.write_text(config.corefile(self.address, self._kubeconfigs["coredns"]))
        for setting in config.KUBELET_SYSCTLS:
            # Start from the host's value: kubelet writes only what differs.
            mask = paths.sysctl_masks / setting.replace("/", ".")
            mask.write_text(Path("/proc/sys", setting).read_text())

    def _holder_script(self) -> str:
        lines = ["set -eu"]
        for setting in config.KUBELET_SYSCTLS:
            mask = self.paths.sysctl_masks / setting.replace("/", ".")
            lines.append(f"mount --bind {mask} /proc/sys/{setting}")
        for folder in PRIVATE_FOLDERS:
            lines.append(f"mount -t tmpfs -o mode=0755 smartserver-node {folder}")
        # Images and containers' files in memory: unpacking the platform's image onto
        # a busy disk takes several times longer, and the node keeps nothing anyway.
        lines.append(
            f"mount -t tmpfs -o mode=0700,size={CONTAINERD_TMPFS} smartserver-node "
            f"{self.paths.containerd_root}"
        )
        # Where kubelet's cAdvisor looks for containerd, whatever the configuration says.
        lines.append(f"ln -s {self.paths.containerd_socket} /run/containerd/containerd.sock")
        # Forwarding between the pods' bridge and eth0, in the node's namespace only.
        lines.append("echo 1 > /proc/sys/net/ipv4/ip_forward")
        lines.append(f"touch {self.paths.root / 'holder.ready'}")
        lines.append("exec sleep infinity")
        return "\n".join(lines)

    def _start_holder(self, deadline: float) -> None:
        """The process whose mount namespace (private, a child of the host's) and
        network namespace (the link's) every node component joins."""
        for folder in PRIVATE_FOLDERS:
            # Mount points must exist; an empty folder changes nothing on the host.
            Path(folder).mkdir(parents=True, exist_ok=True)
        log = (self.paths.logs / "holder.log").open("wb")
        self.holder = subprocess.Popen(
            [
                "nsenter",
                f"--net={self.link.netns}",
                "unshare",
                "--mount",
                "--propagation=private",
                "/bin/sh",
                "-c",
                self._holder_script(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: self.cgroups.join("node"),
        )
        log.close()
        ready = self.paths.root / "holder.ready"
        while not ready.exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                tail = (self.paths.logs / "holder.log").read_text(errors="replace")
                raise NodeError(f"the node's namespaces could not be set up:\n{tail}")
            time.sleep(0.02)

    def _spawn(self, name: str, argv: list[str], in_node: bool = True) -> None:
        assert self.holder is not None
        if in_node:
            # nsenter joins without forking, so the PID is the component's own.
            argv = ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv]
        log = (self.paths.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: self.cgroups.join("node"),
        )
        self._processes.append((name, process, log))

    def _spawn_in_node(self, name: str, argv: list[str]) -> None:
        self._spawn(name, argv, in_node=True)

    def _wait(self, name: str, ready: Callable[[], bool], deadline: float, what: str) -> None:
        process = next(p for n, p, _ in self._processes if n == name)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if ready():
                return
            time.sleep(0.1)
        tail = (self.paths.logs / f"{name}.log").read_text(errors="replace")[-3000:]
        state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
        raise NodeError(f"{name} {state} before it {what}; log tail:\n{tail}")

    # -- readiness -----------------------------------------------------------------------

    def _containerd_answers(self) -> bool:
        """containerd answers, and its CRI plugin (what kubelet talks to) loaded."""
        try:
            plugins = self._ctr("plugins", "list")
        except NodeError:
            return False
        cri = [
            line
            for line in plugins.splitlines()
            if line.split()[:2] == ["io.containerd.grpc.v1", "cri"]
        ]
        if cri and cri[0].split()[-1] != "ok":
            log = (self.paths.logs / "containerd.log").read_text(errors="replace")
            why = [line for line in log.splitlines() if "io.containerd.grpc.v1.cri" in line]
            raise NodeError(f"containerd's CRI plugin did not load: {why[-1] if why else cri[0]}")
        return bool(cri)

    def _ready_and_schedulable(self) -> bool:
        try:
            text = self.plane.kubectl("get", "node", self.name, "-o", "json", check=True)
        except KubectlError:
            return False
        node = json.loads(text)
        conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        return conditions.get("Ready") == "True" and not node["spec"].get("taints")


# inotify instances the node opens: 8 counted on a running node with the platform
# (kubelet 6: its cAdvisor, config and certificate watchers; containerd's CRI plugin 1;
# kube-proxy 1), with room to spare.
INOTIFY_INSTANCES_NEEDED = 16
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


def inotify_instances_of_root() -> dict[str, int]:
    """inotify instances open in processes of uid 0, by process name: they share one
    limit (fs.inotify.max_user_instances), whatever namespace the process is in."""
    counts: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != 0:
                continue
            fds = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        found = sum(1 for target in fds if target == "anon_inode:inotify")
        if found:
            counts[name] = counts.get(name, 0) + found
    return counts


def check_inotify_room() -> None:
    """Refuse to start, saying why, when the machine's processes of root have used up
    the inotify instances the kernel allows them (containerd and kubelet would fail
    with "too many open files" halfway through starting)."""
    limit = int(INOTIFY_LIMIT.read_text())
    used = inotify_instances_of_root()
    total = sum(used.values())
    if limit - total >= INOTIFY_INSTANCES_NEEDED:
        return
    biggest = ", ".join(f"{name} {n}" for name, n in sorted(used.items(), key=lambda i: -i[1])[:5])
    raise NodeError(
        f"too few inotify instances left for a node: root's processes hold {total} of the "
        f"{limit} the kernel allows (fs.inotify.max_user_instances; {biggest}) and a node "
        f"needs about {INOTIFY_INSTANCES_NEEDED}. Stop what holds them, or raise the limit "
        "(sysctl fs.inotify.max_user_instances=1024, as kind and k3d document)."
    )


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (node link)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
