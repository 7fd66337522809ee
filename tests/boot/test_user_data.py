"""The user-data and the agent bundle, without booting: every rendered variant passes
Debian's ``cloud-init schema``; the bundle is reproducible, carries only what the agent
imports, and its installer is valid shell."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from smart_operator.agentbundle import INSTALLER, AgentBundle, BundleError
from smart_operator.clients.agent_install import render_environment
from smart_operator.cloudinit import UserDataInput, render_user_data
from smart_operator.keys import generate_ssh_key
from smart_operator.ports import AgentEnvironment
from smart_sim.boot.bundle import build_bundle, ensure_bundle

HOST = generate_ssh_key("root@ss-customer-acme-shop")
OPERATOR = generate_ssh_key("smart-operator")


def render(**changes: object) -> str:
    fields: dict[str, object] = {
        "hostname": "ss-customer-acme-shop",
        "domain": "shop.example.com",
        "host_private_key": HOST.private,
        "host_public_key": HOST.public,
        "operator_public_key": OPERATOR.public,
        "ssh_sources": ["203.0.113.7/32"],
    }
    fields.update(changes)
    return render_user_data(UserDataInput(**fields))  # type: ignore[arg-type]


VARIANTS = {
    "one source": {},
    "IPv4 and IPv6 sources": {"ssh_sources": ["203.0.113.0/24", "2001:db8::/48"]},
    "no source": {"ssh_sources": []},
    "extra packages": {"extra_packages": ("htop",)},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_passes_cloud_init_schema(variant: str, tmp_path: Path) -> None:
    if shutil.which("cloud-init") is None:
        pytest.fail("Debian's cloud-init is missing: `make system` installs it")
    path = tmp_path / "user-data"
    text = render(**VARIANTS[variant])
    path.write_text(text)
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(text.encode()) < 32 * 1024  # Hetzner's user-data limit


def test_the_user_data_carries_no_secret_but_the_host_key_and_no_root_login() -> None:
    text = render()
    document = yaml.safe_load(text)
    assert "SMART_AGENT_KEY" not in text and "ssk_" not in text
    # Nothing runs pip at boot; the only pip is the installer's, offline (--no-index).
    assert not any("pip" in str(command) for command in document["runcmd"])
    assert "--no-index" in INSTALLER and "--only-binary=:all:" in INSTALLER
    assert document["disable_root"] is True and document["ssh_pwauth"] is False
    assert [u["name"] for u in document["users"]] == ["deploy", "smart-agent"]
    deploy = document["users"][0]
    assert deploy["ssh_authorized_keys"] == [OPERATOR.public]
    assert deploy["sudo"] == "ALL=(root) NOPASSWD: /usr/local/sbin/smart-agent-install"
    rules = [" ".join(c) for c in document["runcmd"] if isinstance(c, list) and c[0] == "ufw"]
    assert "ufw allow proto tcp from 203.0.113.7/32 to any port 22" in rules
    assert not any("port 22" in r and "203.0.113.7" not in r for r in rules)
    assert rules[-1] == "ufw --force enable"


def test_a_bad_ssh_source_is_refused() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        render(ssh_sources=["everywhere"])


def test_the_environment_refuses_what_would_break_its_file() -> None:
    env = AgentEnvironment("http://198.18.0.1:8088", "ssk_x", "shop.example.com", "ns/shop")
    assert render_environment(env).splitlines() == [
        "SMART_AGENT_INTAKE_URL=http://198.18.0.1:8088",
        "SMART_AGENT_KEY=ssk_x",
        "SMART_AGENT_DOMAIN=shop.example.com",
        "SMART_AGENT_RESOURCE=ns/shop",
    ]
    with pytest.raises(ValueError, match="control character"):
        render_environment(AgentEnvironment("http://x", "ssk_x\nSMART_AGENT_ROOT=/tmp", "d"))
    with pytest.raises(ValueError, match="not a setting name"):
        render_environment(AgentEnvironment("http://x", "k", "d", extra={"a=b": "1"}))


def test_the_installer_is_valid_shell(tmp_path: Path) -> None:
    script = tmp_path / "install.sh"
    script.write_text(INSTALLER)
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_bundle_is_reproducible_and_holds_only_what_the_agent_imports(tmp_path: Path) -> None:
    cached = ensure_bundle()
    again = build_bundle(tmp_path / "again")
    assert again.sha256 == cached.sha256
    assert hashlib.sha256(again.path.read_bytes()).hexdigest() == again.sha256
    described = AgentBundle.load(again.path)
    assert (described.sha256, described.version) == (again.sha256, again.version)
    with tarfile.open(again.path) as archive:
        names = archive.getnames()
        assert all(m.isfile() or m.isdir() for m in archive.getmembers())
    wheels = {Path(n).name.split("-")[0].lower() for n in names if n.endswith(".whl")}
    assert wheels == {
        "smart_agent",
        "aiohttp",
        "aiohappyeyeballs",
        "aiosignal",
        "attrs",
        "frozenlist",
        "multidict",
        "propcache",
        "yarl",
        "idna",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "python_dotenv",
        "annotated_types",
        "typing_extensions",
        "typing_inspection",
    }
    for python in ("cp311", "cp312"):
        for machine in ("x86_64", "aarch64"):
            assert any(f"pydantic_core-2.50.5-{python}" in n and machine in n for n in names)


def test_a_bundle_description_refuses_what_is_not_a_bundle(tmp_path: Path) -> None:
    stray = tmp_path / "smart-agent-0.1.0.tar.gz"
    stray.write_bytes(b"not a tarball")
    with pytest.raises(BundleError):
        AgentBundle.load(stray)
