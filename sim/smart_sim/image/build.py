"""Builds the platform's image without Docker and caches it by content hash.

Two layers, each cached under ``~/.cache/smartserver/image`` (or
``$SMARTSERVER_CACHE``), built in a temporary folder and renamed into place, so
several builds at once never see a half-built one:

- the base: a Debian root filesystem (``mmdebstrap --variant=minbase`` with Python),
  the non-root account, and a virtualenv holding every locked dependency, installed
  offline from wheels downloaded on the host (pip inside the chroot cannot verify TLS
  here: the host trusts a CA the chroot lacks). Keyed by the lock and the recipe; it
  changes rarely.
- the platform: the project's own wheel installed into that virtualenv, the image
  config (user, environment, command) and, when one is given, the agent bundle. Keyed
  by the base and the project's sources, so an unchanged tree never rebuilds and a
  changed one rebuilds in seconds.

The result is an OCI archive (``image.tar``) that ``ctr -n k8s.io images import``
loads. Every time stamp is ``spec.SOURCE_DATE_EPOCH``, so equal inputs give an equal
digest. Needs root, ``mmdebstrap`` and ``umoci``; starts no container.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from smart_sim.controlplane.binaries import cache_root
from smart_sim.image import oci, spec

# Bump when the way a layer is made changes in a way its inputs do not show.
BASE_RECIPE = "1"
APP_RECIPE = "2"

DEBIAN_MIRROR = os.environ.get("SMARTSERVER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY = os.environ.get(
    "SMARTSERVER_DEBIAN_SECURITY", "http://deb.debian.org/debian-security"
)
# Manual pages and documentation are of no use in a container (copyright files stay).
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/info/*", "/usr/share/doc/*", "/usr/share/locale/*")

# Wheels for the image's Python on x86_64 Linux, whatever the host's Python is.
WHEEL_PLATFORM = (
    "--only-binary=:all:",
    "--implementation=cp",
    f"--python-version={spec.PYTHON_VERSION}",
    f"--abi=cp{spec.PYTHON_VERSION.replace('.', '')}",
    "--platform=manylinux_2_36_x86_64",
    "--platform=manylinux_2_28_x86_64",
    "--platform=manylinux_2_17_x86_64",
    "--platform=manylinux2014_x86_64",
    "--platform=any",
)
CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ImageBuildError(RuntimeError):
    """A step of the image build failed; the message names it and ends with its output."""


@dataclass(frozen=True)
class Image:
    """A built image: its name, its OCI archive, the digest of its manifest, and its
    ID (the digest of its config, which kubelet reports as a container's imageID)."""

    reference: str
    archive: Path
    digest: str
    id: str
    size: int
    key: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "archive": str(self.archive)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Image:
        data = json.loads(text)
        return cls(**{**data, "archive": Path(data["archive"])})


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def image_cache() -> Path:
    return cache_root() / "image"


def _run(step: str, argv: list[str], **kwargs: object) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise ImageBuildError(f"{step} failed ({' '.join(argv[:3])} ...):\n{output}")
    return str(result.stdout)


def _chroot(rootfs: Path, step: str, script: str) -> str:
    env = {
        "PATH": CHROOT_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "SOURCE_DATE_EPOCH": str(spec.SOURCE_DATE_EPOCH),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    return _run(step, ["chroot", str(rootfs), "/bin/sh", "-euc", script], env=env)


# -- keys ----------------------------------------------------------------------------------


def _hash_tree(digest: hashlib._Hash, root: Path, relative: str) -> None:
    path = root / relative
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        parts = file.relative_to(root).parts
        if "__pycache__" in parts or file.suffix in (".pyc", ".pyo"):
            continue
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())


def base_key() -> str:
    """What the base layer depends on: the lock, the Debian and Python it is built
    for, the account, and the recipe."""
    digest = hashlib.sha256()
    for part in (
        BASE_RECIPE,
        spec.DEBIAN_SUITE,
        spec.PYTHON_VERSION,
        ",".join(spec.DEBIAN_PACKAGES),
        ",".join(DPKG_EXCLUDES),
        spec.USER,
        str(spec.UID),
        spec.VENV,
        spec.LOCK.read_text(),
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def app_key(agent_bundle: Path | None = None) -> str:
    """What the image depends on: the base, the project's sources, the tag, the image
    config and the agent bundle, if any."""
    digest = hashlib.sha256()
    for part in (
        APP_RECIPE,
        base_key(),
        spec.app_version(),
        json.dumps(spec.ENV, sort_keys=True),
        ",".join(spec.ENTRY_POINTS),
        spec.DEFAULT_COMMAND,
    ):
        digest.update(part.encode() + b"\0")
    for source in spec.SOURCES:
        _hash_tree(digest, spec.ROOT, source)
    if agent_bundle is not None:
        digest.update(b"agent\0" + hashlib.sha256(agent_bundle.read_bytes()).digest())
    return digest.hexdigest()[:16]


# -- steps ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder beside the cache entries (so the final rename stays on one
    file system), removed unless it was renamed away."""
    folder = image_cache()
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=folder))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _publish(scratch: Path, final: Path) -> None:
    """Rename a finished build into place; if another build got there first, keep
    theirs (same key, same content)."""
    try:
        scratch.rename(final)
    except OSError:
        if not final.exists():
            raise


def download_wheels(into: Path) -> None:
    """Every locked dependency as a wheel for the image's Python, from the package
    index, on the host."""
    _run(
        "downloading the locked wheels",
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(into),
            *WHEEL_PLATFORM,
            "--requirement",
            str(spec.LOCK),
        ],
    )


def project_wheel(into: Path) -> Path:
    """The project's own wheel, built from the work tree."""
    _run(
        "building the project's wheel",
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(into),
            str(spec.ROOT),
        ],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(spec.SOURCE_DATE_EPOCH)},
    )
    (wheel,) = into.glob("smartserver-*.whl")
    return wheel


def debian_rootfs(rootfs: Path) -> None:
    suite = spec.DEBIAN_SUITE
    _run(
        "mmdebstrap",
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=directory",
            "--quiet",
            f"--include={','.join(spec.DEBIAN_PACKAGES)}",
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            suite,
            str(rootfs),
            f"deb {DEBIAN_MIRROR} {suite} main",
            f"deb {DEBIAN_MIRROR} {suite}-updates main",
            f"deb {DEBIAN_SECURITY} {suite}-security main",
        ],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(spec.SOURCE_DATE_EPOCH)},
    )


def account_script() -> str:
    """The shell commands that make the non-root account (the Dockerfile runs the same)."""
    return (
        f"groupadd --system --gid {spec.UID} {spec.USER}\n"
        f"useradd --system --uid {spec.UID} --gid {spec.UID} --no-create-home "
        f"--home-dir /nonexistent --shell /usr/sbin/nologin {spec.USER}\n"
    )


def _forget_build_traces(rootfs: Path) -> None:
    """Remove what differs from one build to the next and is of no use at run time:
    logs, caches, and the files dpkg and the shadow tools keep as backups."""
    for pattern in (
        "var/log/**/*",
        "var/cache/ldconfig/aux-cache",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "etc/*-",
        "tmp/*",
        "root/.cache",
    ):
        for path in sorted(rootfs.glob(pattern), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def build_base(base: Path) -> None:
    """The base layer, as image ``base`` in a new OCI layout at ``base/layout``, and
    its root filesystem unpacked at ``base/rootfs`` (the platform layer is installed
    on top of it through an overlay)."""
    rootfs = base / "rootfs"
    started = time.monotonic()
    say(f"  Debian {spec.DEBIAN_SUITE} (minbase) with {', '.join(spec.DEBIAN_PACKAGES)}")
    debian_rootfs(rootfs)
    say(f"    ... {time.monotonic() - started:.0f} s; the account and the virtualenv")
    _chroot(rootfs, "making the account", account_script())
    wheels = rootfs / "tmp" / "wheels"
    wheels.mkdir(parents=True)
    say(f"  downloading {len(spec.locked_requirements())} locked wheels on the host")
    download_wheels(wheels)
    shutil.copy(spec.LOCK, rootfs / "tmp" / "requirements.lock")
    say("  installing them offline into the virtualenv")
    _chroot(
        rootfs,
        "installing the locked dependencies",
        f"python3 -m venv {spec.VENV}\n"
        f"{spec.VENV}/bin/pip install --quiet --no-index --find-links /tmp/wheels "
        "--no-deps --requirement /tmp/requirements.lock\n",
    )
    _forget_build_traces(rootfs)
    say("  packing the base layer")
    oci.pack_rootfs(rootfs, base / "layout", "base", spec.SOURCE_DATE_EPOCH, "smartserver base")


def ensure_base() -> Path:
    """The base layer's folder (``layout`` and ``rootfs``), built once per base key."""
    final = image_cache() / f"base-{base_key()}"
    if (final / "layout" / "index.json").exists():
        return final
    say(f"Building the image's base layer into {final} (one time; about 2 minutes)...")
    started = time.monotonic()
    with _scratch("base") as scratch:
        build_base(scratch)
        _publish(scratch, final)
    say(f"Built the base layer in {time.monotonic() - started:.0f} s.")
    return final


def install_project(base: Path, work: Path, agent_bundle: Path) -> Path:
    """Install the project on top of the base's root filesystem through an overlay;
    returns the overlay's upper folder, which holds exactly what was added."""
    upper, scratch, merged = work / "upper", work / "overlay-work", work / "merged"
    for folder in (upper, scratch, merged):
        folder.mkdir()
    (upper / "tmp").mkdir(mode=0o1777)
    wheel = project_wheel(upper / "tmp")
    # The bundle and its SHA-256 beside it (sha256sum's format), which the operator reads
    # instead of hashing the bundle at every start.
    target = upper / spec.AGENT_BUNDLE_FILE.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy(agent_bundle, target)
    digest = hashlib.sha256(agent_bundle.read_bytes()).hexdigest()
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    say(f"  installing {wheel.name} into the virtualenv")
    script = (
        f"{spec.VENV}/bin/pip install --quiet --no-index --no-deps /tmp/{wheel.name}\n"
        f"{spec.VENV}/bin/pip check\n"
        f"for command in {' '.join(spec.ENTRY_POINTS)}; do "
        f'test -x "{spec.VENV}/bin/$command"; done\n'
    )
    # The overlay exists only in this private mount namespace: it goes away with the
    # shell, whatever happens.
    mount = (
        f"mount -t overlay overlay -o lowerdir={base / 'rootfs'},upperdir={upper},"
        f"workdir={scratch} {merged}\n"
        f'exec chroot {merged} /bin/sh -euc "$1"\n'
    )
    _run(
        "installing the project",
        ["unshare", "--mount", "--propagation=private", "/bin/sh", "-euc", mount, "sh", script],
        env={
            "PATH": CHROOT_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "SOURCE_DATE_EPOCH": str(spec.SOURCE_DATE_EPOCH),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_CACHE_DIR": "1",
            # pip's own modules are in the base layer: compiling them here would copy
            # them up into this one.
            "PYTHONDONTWRITEBYTECODE": "1",
        },
    )
    (upper / "tmp" / wheel.name).unlink()
    shutil.rmtree(scratch)
    merged.rmdir()
    _forget_build_traces(upper)
    return upper


def build_app(base: Path, work: Path, agent_bundle: Path) -> Path:
    """The platform's image on top of the base, as an OCI layout in ``work``."""
    tag = spec.app_version()
    changes = install_project(base, work, agent_bundle)
    layout = work / "layout"
    shutil.copytree(base / "layout", layout)
    say("  packing the platform layer")
    oci.add_layer(layout, "base", tag, changes, spec.SOURCE_DATE_EPOCH, f"smartserver {tag}")
    shutil.rmtree(changes)
    env = dict(spec.ENV)
    oci.configure(
        layout,
        tag,
        spec.SOURCE_DATE_EPOCH,
        user=f"{spec.UID}:{spec.UID}",
        env=env,
        cmd=[spec.DEFAULT_COMMAND],
        labels={
            "org.opencontainers.image.title": "Smart Server",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    )
    oci.remove_tag(layout, "base")
    return layout


# Platform images not used for this long are removed when a new one is built (each
# source change makes one, 170 MB each); the newest few always stay.
PRUNE_AFTER_SECONDS = 2 * 24 * 3600
KEEP_NEWEST = 3


def prune_images() -> None:
    """Remove platform images nobody used in two days, keeping the newest few: a
    session that started with an older one has long imported it."""
    entries = sorted(
        (p for p in image_cache().glob("operator-*") if (p / "image.json").exists()),
        key=lambda p: (p / "image.json").stat().st_mtime,
        reverse=True,
    )
    cutoff = time.time() - PRUNE_AFTER_SECONDS
    for entry in entries[KEEP_NEWEST:]:
        if (entry / "image.json").stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)


def ensure_image(agent_bundle: Path | None = None) -> Image:
    """The platform's image, built once per key (see the module docstring), with the
    agent bundle its operator delivers to servers (the one built from this tree unless
    another is given)."""
    bundle = resolve_bundle(agent_bundle)
    key = app_key(bundle)
    final = image_cache() / f"operator-{spec.app_version()}-{key}"
    if (final / "image.json").exists():
        # Marks it used, for prune_images.
        os.utime(final / "image.json")
        return Image.from_json((final / "image.json").read_text())
    _require_root()
    base = ensure_base()
    say(f"Building the platform's image {spec.reference()} into {final}...")
    started = time.monotonic()
    with _scratch("operator") as scratch:
        layout = build_app(base, scratch, bundle)
        archive = scratch / "image.tar"
        oci.archive(layout, archive, spec.SOURCE_DATE_EPOCH)
        digest, image_id = oci.manifest_digest(layout), oci.config_digest(layout)
        shutil.rmtree(layout)
        image = Image(
            reference=spec.reference(),
            archive=final / "image.tar",
            digest=digest,
            id=image_id,
            size=archive.stat().st_size,
            key=key,
        )
        (scratch / "image.json").write_text(image.to_json())
        if app_key(bundle) != key:
            # The image would be filed under a key its contents no longer match.
            raise ImageBuildError("the sources changed while the image was built: build again")
        _publish(scratch, final)
    prune_images()
    elapsed = time.monotonic() - started
    say(f"Built {image.reference} ({image.size / 1e6:.0f} MB) in {elapsed:.0f} s.")
    return image


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the image without Docker needs root (mmdebstrap, chroot, an overlay "
            "mount); with Docker, `docker build -t smartserver/operator .` builds the same"
        )


def resolve_bundle(agent_bundle: Path | None = None) -> Path:
    """The agent bundle an image carries: the one given, else ``SMARTSERVER_AGENT_BUNDLE``,
    else the one built from this tree (built once, cached)."""
    if agent_bundle is not None:
        return agent_bundle
    from smart_sim.boot.bundle import ensure_bundle

    return agent_bundle_from_env() or ensure_bundle().path


def agent_bundle_from_env() -> Path | None:
    """The agent bundle to embed, when ``SMARTSERVER_AGENT_BUNDLE`` names one (built
    elsewhere); else the one built from this tree. The image carries it at
    ``spec.AGENT_BUNDLE_FILE`` and tells the operator with ``SMART_AGENT_BUNDLE``."""
    named = os.environ.get("SMARTSERVER_AGENT_BUNDLE")
    if not named:
        return None
    path = Path(named)
    if not path.is_file():
        raise ImageBuildError(f"SMARTSERVER_AGENT_BUNDLE={named} is not a file")
    return path
