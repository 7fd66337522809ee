"""``Clouds(booted=True)``: the Hetzner simulator as its own process boots every server
it creates, tells host processes where to listen (the gateway), and leaves nothing behind
when it stops."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import hcloud
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from smart_sim.boot.network import run
from smart_sim.processes import CLOUD_TOKEN, Clouds


def servers(clouds: Clouds) -> list[dict[str, Any]]:
    url = f"{clouds.hetzner.root_url}/_sim/servers"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        return list(json.loads(response.read())["servers"])


def host_state(clouds: Clouds, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = {s["name"]: s["host"] for s in servers(clouds)}
        if found.get(name) and found[name]["state"] != "booting":
            return dict(found[name])
        time.sleep(0.3)
    raise AssertionError(f"{name} still boots after 120 s")


def test_the_simulator_process_boots_servers_on_a_network_of_its_own(
    tmp_path: Path, boot_ready: None
) -> None:
    with Clouds(tmp_path, booted=True) as clouds:
        env = clouds.operator_env()
        assert json.loads(env["SMART_SSH_SOURCES"]) == [f"{clouds.gateway}/32"]
        assert env["SMART_SSH_PORT"] == "22" and Path(env["SMART_AGENT_BUNDLE"]).is_file()
        client = hcloud.Client(CLOUD_TOKEN, api_endpoint=clouds.hetzner.url)
        created = client.servers.create(
            name="plain",
            server_type=ServerType(name="cx23"),
            image=Image(name="debian-12"),
            location=Location(name="fsn1"),
            user_data="#cloud-config\nruncmd:\n  - [touch, /root/ran]\n",
        )
        client.servers.create(
            name="other-os",
            server_type=ServerType(name="cx23"),
            image=Image(name="ubuntu-24.04"),
            location=Location(name="fsn1"),
        )
        address = created.server.public_net.ipv4.ip
        assert address.startswith(clouds.gateway.rsplit(".", 1)[0] + ".")
        plain = host_state(clouds, "plain")
        assert (plain["state"], plain["cloud_init"]) == ("running", "done"), plain
        ran = run("nsenter", "-t", str(plain["leader_pid"]), "-a", "test", "-e", "/root/ran")
        assert ran.returncode == 0
        other = host_state(clouds, "other-os")
        assert other["state"] == "failed" and "support: debian-12" in other["reason"]
        network = clouds.network
    # Stopped: no container, namespace or bridge of the run remains.
    assert network["bridge"] not in run("ip", "-br", "link").stdout
    assert run("pgrep", "-f", str(tmp_path), check=False).stdout == ""
