"""A ``packages:`` entry that the image lacks comes from a local read-only folder of
``.deb`` files (no mirror is reachable from a booted server); one found nowhere makes
cloud-init finish with an error, as on a real server whose mirror does not have it."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from smart_sim.boot import BootManager
from smart_sim.boot.server import index_debs
from smart_sim.hetzner.hooks import ServerInfo

pytestmark = pytest.mark.asyncio(loop_scope="module")


def probe_deb(folder: Path) -> None:
    """A tiny real package: one file under /usr/share."""
    tree = folder / "build"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share/smart-sim-probe").mkdir(parents=True)
    (tree / "usr/share/smart-sim-probe/hello").write_text("installed by apt\n")
    (tree / "DEBIAN/control").write_text(
        "Package: smart-sim-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: Smart Server <dev@smartserver.example>\n"
        "Description: a package the booted servers' image does not have\n"
    )
    debs = folder / "debs"
    debs.mkdir()
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(debs / "probe.deb")],
        check=True,
        capture_output=True,
    )
    index_debs(debs)


def info(boot: BootManager, index: int, packages: list[str]) -> ServerInfo:
    pool = ipaddress.IPv4Network(boot.server_pool)
    user_data = "#cloud-config\npackage_update: true\npackages: [" + ", ".join(packages) + "]\n"
    return ServerInfo(
        id=500 + index,
        name=f"packages-{index}",
        ipv4=str(pool.network_address + 1 + index),
        ipv6_network=None,
        user_data=user_data,
        ssh_public_keys=(),
        labels={},
        server_type="cx23",
        image="debian-12",
        location="fsn1",
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def boot(
    tmp_path_factory: pytest.TempPathFactory, boot_ready: None
) -> AsyncIterator[BootManager]:
    folder = tmp_path_factory.mktemp("packages")
    probe_deb(folder)
    async with BootManager(folder / "servers", debs=folder / "debs") as manager:
        yield manager


async def test_a_package_from_the_local_folder_is_installed(boot: BootManager) -> None:
    server_info = info(boot, 0, ["smart-sim-probe", "nginx-light"])
    await boot.on_server_created(server_info)
    server = await boot.server(server_info.id).wait_running(within=180)
    assert server.cloud_init == "done", server.cloud_init_detail
    hello = await server.exec("cat", "/usr/share/smart-sim-probe/hello")
    assert hello.stdout == "installed by apt\n"


async def test_a_package_found_nowhere_fails_cloud_init_visibly(boot: BootManager) -> None:
    server_info = info(boot, 1, ["smart-sim-no-such-package"])
    await boot.on_server_created(server_info)
    server = await boot.server(server_info.id).wait_running(within=180)
    assert server.cloud_init == "error"
    assert "package" in server.cloud_init_detail.lower(), server.cloud_init_detail
