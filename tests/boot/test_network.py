"""The provider network: two runs at once never clash, and what a killed run left behind
is removed by the next one."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from smart_sim.boot.network import STATE_DIR, ProviderNetwork, run, sweep_stale_runs

KILLED_RUN = """
import ipaddress, json, os, signal
from smart_sim.boot.network import ProviderNetwork
network = ProviderNetwork().up()
first = ipaddress.IPv4Network(network.server_pool()).network_address + 1
link = network.attach("1", str(first))
left = {"run": network.run_id, "bridge": network.bridge}
left.update(netns=link.netns, veth=link.host_veth)
print(json.dumps(left), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def links() -> str:
    return run("ip", "-br", "link").stdout


def namespaces() -> str:
    return run("ip", "netns", "list").stdout


def test_two_runs_get_their_own_subnet_and_names(boot_ready: None) -> None:
    first, second = ProviderNetwork(), ProviderNetwork()
    try:
        first.up()
        second.up()
        assert first.subnet != second.subnet and first.bridge != second.bridge
        assert not first.subnet.overlaps(second.subnet)  # type: ignore[union-attr]
        for network in (first, second):
            assert network.subnet is not None
            assert network.subnet.subnet_of(ipaddress.IPv4Network("198.18.0.0/16"))
            assert not network.is_server_address(network.gateway)
            assert not network.is_server_address(network.spare_addresses(1)[0])
    finally:
        first.close()
        second.close()
    assert first.bridge not in links() and second.bridge not in links()


def test_a_killed_run_is_swept_by_the_next(boot_ready: None) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLED_RUN], capture_output=True, text=True, check=False
    )
    assert result.returncode == -9, result.stderr
    left = json.loads(result.stdout)
    assert left["bridge"] in links() and left["netns"] in namespaces()
    assert (STATE_DIR / f"{left['run']}.json").exists()
    swept = sweep_stale_runs()
    assert left["run"] in swept
    assert left["bridge"] not in links()
    assert left["veth"] not in links()
    assert left["netns"] not in namespaces()
    assert not (STATE_DIR / f"{left['run']}.json").exists()


@pytest.fixture(autouse=True)
def _no_leftovers() -> None:
    """A test that fails leaves nothing either: the sweep takes runs whose process died."""
    sweep_stale_runs()
