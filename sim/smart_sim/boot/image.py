"""The Debian image every booted simulated server starts from, built once and cached.

``ensure_image("debian-12")`` returns the root folder of a Debian 12 system made with
``mmdebstrap --variant=minbase``: what a real Hetzner ``debian-12`` image holds (systemd,
cloud-init, OpenSSH, Python 3, sudo, unattended-upgrades, ifupdown, iproute2, locales)
plus what the operator's user-data asks for under ``packages:`` (nginx-light, ufw,
fail2ban, python3-venv, python3-systemd), since the simulated servers reach no package
mirror: their apt sources are emptied, so cloud-init's ``packages:`` step finds
everything installed already. A package that is not baked in can still come from a
read-only folder of ``.deb`` files (:class:`~smart_sim.boot.server.BootedServer`'s
``debs``).

cloud-init is told to read only the NoCloud seed (``datasource_list: [ NoCloud, None ]``,
as the issue checked on this machine); the machine-id, the SSH host keys and
``/var/lib/cloud`` are cleared so that every server is a first boot with its own
identity, exactly like a fresh cloud image.

The image is cached under ``~/.cache/smartserver/images/<name>-<hash>/rootfs`` (or
``$SMARTSERVER_CACHE``), keyed by the hash of everything that goes into it (suite,
packages, customisation, this module's build recipe): a changed recipe builds anew, an
unchanged one never does. It is built in a temporary folder beside its final place and
renamed into place, so concurrent builds (other engineers, two test sessions) never see
half an image. The cached root folder is only ever a read-only lower layer: servers
write to overlays of their own. This module must not boot anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from smart_sim.controlplane.binaries import cache_root

__all__ = ["IMAGES", "ImageError", "ImageSpec", "ensure_image", "image_for"]

MIRROR = "http://deb.debian.org/debian"


class ImageError(RuntimeError):
    """The image cannot be built (a missing tool, a failed mmdebstrap)."""


@dataclass(frozen=True)
class ImageSpec:
    """A bootable image: the Hetzner image name it stands for and how it is made."""

    name: str
    """The Hetzner image name servers ask for (``debian-12``)."""
    suite: str
    packages: tuple[str, ...]
    python: str
    """The image's Python (``cp311``): the agent bundle must carry wheels for it."""
    architecture: str = "x86"
    """Hetzner's architecture name; only images of this machine's can boot here."""
    files: tuple[tuple[str, str], ...] = field(default=())
    """Extra files written into the image (path, content)."""

    def key(self) -> str:
        """The content hash the cache is keyed by."""
        recipe = {
            "name": self.name,
            "suite": self.suite,
            "packages": sorted(self.packages),
            "files": sorted(self.files),
            "customize": CUSTOMIZE,
            "mirror": MIRROR,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# Only the NoCloud seed: the servers boot without a metadata service (checked here: with
# the default list, ds-identify probes for a cloud and cloud-init may disable itself).
# https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html
DATASOURCE_CFG = """\
# smart_sim: simulated servers are seeded from /var/lib/cloud/seed/nocloud only.
datasource_list: [ NoCloud, None ]
"""

# Run inside the finished tree (mmdebstrap's --customize-hook, "$1" is the root).
CUSTOMIZE = r"""
set -eu
root="$1"
# No mirror is reachable from a simulated server: apt has no sources, so every package
# the user-data asks for must already be here (or come from a local folder of .debs).
rm -f "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
: > "$root/etc/apt/sources.list"
# A fresh image: no identity. systemd makes the machine-id at first boot; cloud-init
# writes the host keys from the user-data (or generates them).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
rm -rf "$root/var/lib/cloud"
# cloud-init's locale step needs en_US.UTF-8 generated.
echo "en_US.UTF-8 UTF-8" > "$root/etc/locale.gen"
chroot "$root" locale-gen >/dev/null
chroot "$root" update-locale LANG=en_US.UTF-8
echo "localhost" > "$root/etc/hostname"
# No resolver is reachable from the provider network (no internet): a lookup must fail
# at once, not after the default 5 s times 2 attempts.
rm -f "$root/etc/resolv.conf"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$root/etc/resolv.conf"
# No console in a container: a getty there would only spin.
rm -f "$root/etc/systemd/system/getty.target.wants/getty@tty1.service"
"""

DEBIAN_12 = ImageSpec(
    name="debian-12",
    suite="bookworm",
    python="cp311",
    packages=(
        # What a Hetzner debian-12 image has.
        "systemd",
        "systemd-sysv",
        "dbus",
        "cloud-init",
        "openssh-server",
        "python3",
        "sudo",
        "locales",
        "unattended-upgrades",
        "iproute2",
        "ifupdown",
        "iptables",
        "netbase",
        "ca-certificates",
        "less",
        # What the operator's user-data installs (packages:), baked in.
        "nginx-light",
        "ufw",
        "fail2ban",
        "python3-venv",
        "python3-systemd",
    ),
    files=(("etc/cloud/cloud.cfg.d/90_smart_sim_datasource.cfg", DATASOURCE_CFG),),
)

IMAGES: dict[str, ImageSpec] = {DEBIAN_12.name: DEBIAN_12}
"""The Hetzner image names a booted server can start from."""


def image_for(name: str, architecture: str = "x86") -> ImageSpec:
    """The image for a Hetzner image name; ImageError naming the supported ones."""
    spec = IMAGES.get(name)
    if spec is None:
        raise ImageError(
            f"no bootable image for {name!r}; booted servers support: {', '.join(sorted(IMAGES))}"
        )
    if spec.architecture != architecture:
        raise ImageError(
            f"{name} for {architecture} cannot boot on this {spec.architecture} machine; "
            "choose an x86 server type (cx23, cpx22, ...)"
        )
    return spec


def image_dir(spec: ImageSpec) -> Path:
    return cache_root() / "images" / f"{spec.name}-{spec.key()}"


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(name: str = "debian-12", *, quiet: bool = False) -> Path:
    """The root folder of the named image, built once (about 40 s) and then cached."""
    spec = image_for(name)
    final = image_dir(spec)
    rootfs = final / "rootfs"
    if rootfs.is_dir():
        return rootfs
    # One build at a time per image on this machine; a waiter finds the result.
    with _build_lock(final.with_name(final.name + ".lock")):
        if rootfs.is_dir():
            return rootfs
        build(spec, final, quiet=quiet)
    return rootfs


def build(spec: ImageSpec, final: Path, *, quiet: bool = False) -> float:
    """Build ``spec`` into ``final/rootfs`` (through a temporary folder); seconds taken."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageError("mmdebstrap is missing: apt-get install mmdebstrap (make system)")
    staging = final.with_name(f"{final.name}.partial-{time.time_ns()}")
    staging.mkdir(parents=True)
    started = time.monotonic()
    if not quiet:
        print(
            f"Building the {spec.name} image for booted servers into {final} "
            "(one time; about 40 s)...",
            file=sys.stderr,
            flush=True,
        )
    hooks = [f"--customize-hook={CUSTOMIZE}"]
    for path, content in spec.files:
        # Written with printf so the content needs no quoting beyond %s.
        hooks.append(
            "--customize-hook="
            f'mkdir -p "$1/{Path(path).parent}" && printf %s {_shell_quote(content)} '
            f'> "$1/{path}"'
        )
    argv = [
        mmdebstrap,
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        f"--include={','.join(spec.packages)}",
        *hooks,
        spec.suite,
        str(staging / "rootfs"),
        MIRROR,
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap failed:\n{(result.stdout + result.stderr)[-4000:]}")
        (staging / "image.json").write_text(
            json.dumps({"name": spec.name, "suite": spec.suite, "key": spec.key()}) + "\n"
        )
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    if not quiet:
        print(f"Built the {spec.name} image in {seconds:.0f} s.", file=sys.stderr, flush=True)
    return seconds


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
