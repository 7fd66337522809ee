"""OCI images without Docker: a root filesystem packed into an OCI image layout with
``umoci``, then archived as one tarball that ``ctr images import`` loads.

Every timestamp is clamped to one instant and the archive is written in a fixed
order, so the same files give the same digests. Used by the platform's image and by
the node's pause image. Needs root (umoci keeps file owners only then); it talks to
no registry.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path


class OCIError(RuntimeError):
    """umoci refused; the message carries what it printed."""


def _umoci(*args: str) -> None:
    umoci = shutil.which("umoci")
    if umoci is None:
        raise OCIError("umoci is not installed (Debian package `umoci`); it packs the images")
    result = subprocess.run([umoci, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OCIError(f"umoci {' '.join(args)}: {result.stderr.strip() or result.stdout}")


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clamp_times(root: Path, epoch: int) -> None:
    """Set every file time under ``root`` that is later than ``epoch`` to ``epoch``
    (without following symlinks), as SOURCE_DATE_EPOCH asks of reproducible builds."""
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            if os.lstat(path).st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    if root.stat().st_mtime > epoch:
        os.utime(root, (epoch, epoch))


def new_layout(layout: Path, tag: str, epoch: int) -> None:
    """An OCI layout holding one empty image ``tag``."""
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", f"{layout}:{tag}")
    _umoci("config", "--image", f"{layout}:{tag}", "--no-history", "--created", rfc3339(epoch))


def unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """Unpack image ``tag`` into a runtime bundle; returns its root filesystem."""
    _umoci("unpack", "--image", f"{layout}:{tag}", str(bundle))
    return bundle / "rootfs"


def repack(layout: Path, bundle: Path, new_tag: str, epoch: int, comment: str) -> None:
    """Add what changed in ``bundle`` since it was unpacked as one new layer on the
    image it was unpacked from, saved as ``new_tag``."""
    clamp_times(bundle / "rootfs", epoch)
    _umoci(
        "repack",
        "--image",
        f"{layout}:{new_tag}",
        "--history.created",
        rfc3339(epoch),
        "--history.created_by",
        comment,
        str(bundle),
    )


def configure(
    layout: Path,
    tag: str,
    epoch: int,
    *,
    user: str,
    env: Mapping[str, str] = {},
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    workdir: str = "/",
    labels: Mapping[str, str] = {},
) -> None:
    """Set the image config: who runs, with what environment, which command."""
    args = ["--image", f"{layout}:{tag}", "--no-history", "--created", rfc3339(epoch)]
    args += ["--config.user", user, "--config.workingdir", workdir]
    for key, value in env.items():
        args += ["--config.env", f"{key}={value}"]
    for part in entrypoint:
        args += ["--config.entrypoint", part]
    for part in cmd:
        args += ["--config.cmd", part]
    for key, value in labels.items():
        args += ["--config.label", f"{key}={value}"]
    _umoci("config", *args)


def remove_tag(layout: Path, tag: str) -> None:
    _umoci("rm", "--image", f"{layout}:{tag}")
    _umoci("gc", "--layout", str(layout))


def manifest_digest(layout: Path) -> str:
    """The digest of the (only) image in the layout, ``sha256:...``."""
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = index["manifests"]
    return str(manifest["digest"])


def config_digest(layout: Path) -> str:
    """The digest of the image's config: the image ID containerd and kubelet report."""
    algorithm, hexdigest = manifest_digest(layout).split(":")
    manifest = json.loads((layout / "blobs" / algorithm / hexdigest).read_text())
    return str(manifest["config"]["digest"])


def archive(layout: Path, out: Path, epoch: int) -> None:
    """Write the layout as one tar (an OCI archive), in name order with fixed times and
    owners, so equal layouts give equal bytes."""
    paths = sorted(p for p in layout.rglob("*"))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)


def pack_rootfs(rootfs: Path, layout: Path, tag: str, epoch: int, comment: str) -> None:
    """A new layout whose image ``tag`` has ``rootfs`` as its one layer. ``rootfs``
    is lent to umoci's scratch bundle for the packing and given back unchanged."""
    new_layout(layout, "empty", epoch)
    bundle = layout.parent / f"{layout.name}.bundle"
    empty = unpack(layout, "empty", bundle)
    empty.rmdir()
    rootfs.rename(empty)
    try:
        repack(layout, bundle, tag, epoch, comment)
    finally:
        empty.rename(rootfs)
        shutil.rmtree(bundle, ignore_errors=True)
    remove_tag(layout, "empty")


def add_layer(
    layout: Path, tag: str, new_tag: str, changes: Path, epoch: int, comment: str
) -> None:
    """Append the folder ``changes`` (files added on top of image ``tag``, as an
    overlay's upper folder holds them) as one layer, saved as ``new_tag``."""
    for path in changes.rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            # An overlay's whiteout: something of the lower layers was deleted, which
            # an OCI layer says differently. The builds here only add files.
            raise OCIError(f"{path} deletes a file of the layer below; only additions pack")
    layer = changes.parent / f"{changes.name}.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(changes.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(changes)))
            info.mtime = epoch
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    try:
        _umoci(
            "raw",
            "add-layer",
            "--image",
            f"{layout}:{tag}",
            "--tag",
            new_tag,
            "--history.created",
            rfc3339(epoch),
            "--history.created_by",
            comment,
            str(layer),
        )
    finally:
        layer.unlink(missing_ok=True)
