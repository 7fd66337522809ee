"""Builds the agent bundle: the agent as its own light, offline-installable artifact.

``python -m smart_sim.boot.bundle [--out DIR] [--version V]`` (or :func:`ensure_bundle`)
prints the path of ``smart-agent-<version>.tar.gz`` and writes its SHA-256 beside it
(``<file>.sha256``, ``sha256sum`` format), which is what the operator's
``SMART_AGENT_BUNDLE`` points at and :class:`smart_operator.agentbundle.AgentBundle`
reads. The tarball holds one folder ``smart-agent/``:

- ``wheels/smart_agent-<version>-py3-none-any.whl``: the agent package alone (the
  ``smart-agent`` command), built here as a plain zip: no build backend, no network;
- ``wheels/*.whl``: the pinned wheels of only what the agent imports
  (``agent/bundle-requirements.txt``: aiohttp, pydantic, pydantic-settings and their
  dependencies) for CPython 3.11 (Debian 12) and 3.12 (Ubuntu 24.04) on x86_64 and
  aarch64, fetched once from PyPI with pip and cached;
- ``install.sh`` (the server's installer, :data:`smart_operator.agentbundle.INSTALLER`),
  ``VERSION`` and ``MANIFEST`` (the SHA-256 of every file).

Reproducible: entries sorted, every timestamp fixed, owners and modes normalised, gzip
without a name or time; the same inputs give the same bytes, so the same SHA-256. The
result is cached under ``~/.cache/smartserver/agent-bundles/<input hash>/`` (built in a
temporary folder and renamed). Build tooling: the operator image embeds the artifact;
product code never imports this module.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from smart_operator.agentbundle import INSTALLER, AgentBundle
from smart_sim.controlplane.binaries import cache_root

__all__ = ["TARGETS", "BuiltBundle", "build_bundle", "ensure_bundle", "main"]

REPO = Path(__file__).resolve().parents[3]
AGENT_SOURCE = REPO / "agent" / "smart_agent"
REQUIREMENTS = REPO / "agent" / "bundle-requirements.txt"
# (python version, platform tag): the images we support. Debian 12 has CPython 3.11,
# Ubuntu 24.04 CPython 3.12; Hetzner sells x86 and Arm (CAX) servers.
TARGETS = (
    ("311", "manylinux2014_x86_64"),
    ("311", "manylinux2014_aarch64"),
    ("312", "manylinux2014_x86_64"),
    ("312", "manylinux2014_aarch64"),
)
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
TAR_MTIME = 315532800  # the same instant, for tar
BUILDER = "1"  # bump when the layout changes: a new cache key


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    sha256: str
    version: str
    seconds: float
    """How long the build took (0 when it came from the cache)."""

    def describe(self) -> AgentBundle:
        return AgentBundle(self.path, self.sha256, self.version)


def agent_version() -> str:
    text = (AGENT_SOURCE / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if found is None:
        raise RuntimeError("agent/smart_agent/__init__.py has no __version__")
    return found.group(1)


def _sources() -> list[Path]:
    return sorted(p for p in AGENT_SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def input_key(version: str) -> str:
    digest = hashlib.sha256(f"builder {BUILDER}\nversion {version}\n".encode())
    digest.update(INSTALLER.encode())
    digest.update(REQUIREMENTS.read_bytes())
    digest.update(repr(TARGETS).encode())
    for path in _sources():
        digest.update(str(path.relative_to(AGENT_SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# -- the agent's own wheel ---------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _requirements() -> list[str]:
    """``name==version`` of everything pinned (the agent's wheel requires the direct ones)."""
    lines = []
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


DIRECT = ("aiohttp", "pydantic", "pydantic-settings")


def agent_wheel(version: str) -> tuple[str, bytes]:
    """The ``smart_agent`` package as a wheel (name, bytes), built deterministically."""
    name = f"smart_agent-{version}"
    pins = {line.split("==")[0].lower(): line for line in _requirements()}
    metadata = "".join(
        [
            "Metadata-Version: 2.1\n",
            "Name: smart-agent\n",
            f"Version: {version}\n",
            "Summary: Smart Server agent: serves experiments, counts privately, reports\n",
            "Requires-Python: >=3.11\n",
            *(f"Requires-Dist: {pins[d]}\n" for d in DIRECT),
        ]
    )
    files: dict[str, bytes] = {}
    for path in _sources():
        data = path.read_bytes()
        relative = path.relative_to(AGENT_SOURCE.parent).as_posix()
        if relative == "smart_agent/__init__.py":
            # The version the bundle says is the version the agent reports.
            data = re.sub(
                rb'^__version__ = "[^"]+"', f'__version__ = "{version}"'.encode(), data, flags=re.M
            )
        files[relative] = data
    files[f"{name}.dist-info/METADATA"] = metadata.encode()
    files[f"{name}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: smart_sim.boot.bundle\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    files[f"{name}.dist-info/entry_points.txt"] = (
        b"[console_scripts]\nsmart-agent = smart_agent.cli:main\n"
    )
    record_name = f"{name}.dist-info/RECORD"
    record = "".join(
        f"{path},{_record_hash(data)},{len(data)}\n" for path, data in sorted(files.items())
    )
    files[record_name] = (record + f"{record_name},,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in sorted(files):
            info = zipfile.ZipInfo(member, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[member])
    return f"{name}-py3-none-any.whl", buffer.getvalue()


# -- the dependencies' wheels -------------------------------------------------------------


def dependency_wheels(*, quiet: bool = False) -> Path:
    """A folder with every pinned wheel for every target, downloaded once (cached)."""
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + repr(TARGETS).encode()).hexdigest()[:16]
    final = cache_root() / "agent-wheels" / key
    if final.is_dir():
        return final
    staging = final.with_name(f"{key}.partial-{time.time_ns()}")
    staging.mkdir(parents=True)
    try:
        for python, platform in TARGETS:
            if not quiet:
                print(f"  pip download for cp{python} {platform}", file=sys.stderr, flush=True)
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--implementation",
                    "cp",
                    "--python-version",
                    python,
                    "--abi",
                    f"cp{python}",
                    "--platform",
                    platform,
                    "--requirement",
                    str(REQUIREMENTS),
                    "--dest",
                    str(staging),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"pip download failed:\n{result.stderr[-3000:]}")
        try:
            staging.rename(final)
        except OSError:
            if not final.is_dir():  # someone else finished first: theirs is the same
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# -- the tarball --------------------------------------------------------------------------


def _tar(entries: Iterable[tuple[str, bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        folders: set[str] = set()
        for path, data, mode in sorted(entries):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = TAR_MTIME
                    archive.addfile(info)
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = mode
            info.mtime = TAR_MTIME
            archive.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def build_bundle(out_dir: Path, version: str | None = None, *, quiet: bool = False) -> BuiltBundle:
    """Build the bundle into ``out_dir`` (``smart-agent-<version>.tar.gz`` and ``.sha256``)."""
    started = time.monotonic()
    version = version or agent_version()
    wheels = dependency_wheels(quiet=quiet)
    entries: list[tuple[str, bytes, int]] = []
    wheel_name, wheel = agent_wheel(version)
    entries.append((f"smart-agent/wheels/{wheel_name}", wheel, 0o644))
    for path in sorted(wheels.glob("*.whl")):
        entries.append((f"smart-agent/wheels/{path.name}", path.read_bytes(), 0o644))
    entries.append(("smart-agent/install.sh", INSTALLER.encode(), 0o755))
    entries.append(("smart-agent/VERSION", f"{version}\n".encode(), 0o644))
    manifest = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {path.removeprefix('smart-agent/')}\n"
        for path, data, _ in sorted(entries)
    )
    entries.append(("smart-agent/MANIFEST", manifest.encode(), 0o644))
    data = _tar(entries)
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"smart-agent-{version}.tar.gz"
    temporary = path.with_name(f".{path.name}.{time.time_ns()}")
    temporary.write_bytes(data)
    temporary.replace(path)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.write_text(f"{digest}  {path.name}\n")
    return BuiltBundle(path, digest, version, time.monotonic() - started)


def ensure_bundle(version: str | None = None, *, quiet: bool = True) -> BuiltBundle:
    """The bundle for the current agent source (and ``version``), built once and cached."""
    version = version or agent_version()
    final = cache_root() / "agent-bundles" / input_key(version)
    path = final / f"smart-agent-{version}.tar.gz"
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        with (final.parent / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not sidecar.is_file():
                staging = final.with_name(f"{final.name}.partial-{time.time_ns()}")
                try:
                    built = build_bundle(staging, version, quiet=quiet)
                    staging.rename(final)
                    return BuiltBundle(path, built.sha256, version, built.seconds)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
    digest = sidecar.read_text().split()[0]
    return BuiltBundle(path, digest, version, 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m smart_sim.boot.bundle", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=None, help="write here (default: the cache)")
    parser.add_argument("--version", default=None, help="agent version (default: the source's)")
    parser.add_argument("--json", action="store_true", help="print path, sha256, version as JSON")
    args = parser.parse_args(argv)
    if args.out is None:
        built = ensure_bundle(args.version, quiet=False)
    else:
        built = build_bundle(args.out, args.version)
    if args.json:
        print(
            json.dumps({"path": str(built.path), "sha256": built.sha256, "version": built.version})
        )
    else:
        print(f"{built.path}\nsha256 {built.sha256}\nversion {built.version}")


if __name__ == "__main__":
    main()
