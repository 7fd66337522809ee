"""The node's pause image: ``pause.c`` compiled statically and packed as a one-file OCI
image, cached by the hash of its source like the other builds. containerd uses it as
every pod's sandbox (its ``sandbox_image``), so nothing is pulled from a registry."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from smart_sim.controlplane.binaries import cache_root
from smart_sim.image import oci
from smart_sim.image.build import Image, ImageBuildError

SOURCE = Path(__file__).with_name("pause.c")
REPOSITORY = "localhost/smartserver/pause"
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Werror")
RECIPE = "2"
EPOCH = 315532800
# The user the sandbox runs as: nobody's uid, as Kubernetes' own pause image does.
USER = "65535:65535"


def pause_key() -> str:
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS).encode() + RECIPE.encode())
    return digest.hexdigest()[:16]


def ensure_pause_image() -> Image:
    """The pause image, built once per source hash (under a second)."""
    key = pause_key()
    final = cache_root() / "image" / f"pause-{key}"
    if (final / "image.json").exists():
        return Image.from_json((final / "image.json").read_text())
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ImageBuildError("no C compiler (Debian package gcc) to build the pause image")
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".pause-", dir=final.parent))
    try:
        rootfs = scratch / "rootfs"
        rootfs.mkdir()
        result = subprocess.run(
            [cc, *CFLAGS, "-o", str(rootfs / "pause"), str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ImageBuildError(f"compiling {SOURCE.name} failed:\n{result.stderr}")
        layout = scratch / "layout"
        tag = key[:12]
        oci.pack_rootfs(rootfs, layout, tag, EPOCH, "pause")
        oci.configure(layout, tag, EPOCH, user=USER, entrypoint=["/pause"])
        oci.archive(layout, scratch / "image.tar", EPOCH)
        image = Image(
            reference=f"{REPOSITORY}:{tag}",
            archive=final / "image.tar",
            digest=oci.manifest_digest(layout),
            id=oci.config_digest(layout),
            size=(scratch / "image.tar").stat().st_size,
            key=key,
        )
        shutil.rmtree(layout)
        (scratch / "image.json").write_text(image.to_json())
        try:
            scratch.rename(final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return image
