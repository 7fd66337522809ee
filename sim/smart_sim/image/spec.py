"""What the platform's image is: one source of truth for the Docker-free builder
(``smart_sim.image.build``) and the ``Dockerfile`` at the repository root, which a unit
test holds to these same values (base system, Python, user, virtualenv, entry points,
environment, locked dependencies).

Pure data and small readers of project files; nothing here builds or runs anything.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "smartserver" / "Chart.yaml"
DOCKERFILE = ROOT / "Dockerfile"

# The registry path the chart and the kustomize base name (values.yaml,
# manifests/*/kustomization.yaml); containerd resolves the short name on Docker Hub.
REPOSITORY = "smartserver/operator"
FULL_REPOSITORY = f"docker.io/{REPOSITORY}"

# Debian 12: its python3 is the Python the wheels are resolved for.
DEBIAN_SUITE = "bookworm"
PYTHON_VERSION = "3.11"
# What the image needs from Debian beyond the minimal base: Python, the venv module
# (ensurepip, offline) and the CA bundle the providers' HTTPS APIs are verified with.
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")

# The non-root account every process runs as; the chart's securityContext runs as
# this uid and gid too (runAsUser/runAsGroup 10001).
USER = "smart"
UID = 10001

# The platform's virtualenv: its bin/ comes first on PATH, so `python3` in the image is
# the platform's Python (the chart's test pod runs `python3 -c ...`).
VENV = "/opt/smartserver"
ENTRY_POINTS = ("smart-operator", "smart-intake", "smart-dashboard")
DEFAULT_COMMAND = "smart-operator"
# The agent bundle (the agent is delivered to the customer servers from the operator's
# image, checked by hash), with its SHA-256 in `<bundle>.sha256` beside it, and the
# variable that tells the operator its path.
AGENT_BUNDLE_DIR = "/opt/smartserver-agent"
AGENT_BUNDLE_FILE = f"{AGENT_BUNDLE_DIR}/smart-agent.tar.gz"
AGENT_BUNDLE_ENV = "SMART_AGENT_BUNDLE"

ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED": "1",
    # The root filesystem is read-only in the cluster; everything is compiled already.
    "PYTHONDONTWRITEBYTECODE": "1",
    "LANG": "C.UTF-8",
    AGENT_BUNDLE_ENV: AGENT_BUNDLE_FILE,
}

# Every dependency of the distribution, pinned: `python -m smart_sim.image lock`
# resolves it anew for PYTHON_VERSION; both builds install exactly these versions.
LOCK = Path(__file__).with_name("requirements.lock")


# Timestamps in the image (file times, the config's `created`) are this instant, so
# the same inputs give the same image digest.
SOURCE_DATE_EPOCH = 315532800  # 1980-01-01, the earliest a zip (wheel) can hold

# The project's files that go into the image (through its wheel), hashed into the
# image's cache key.
SOURCES = ("pyproject.toml", "README.md", "operator", "agent", "dashboard", "sim/smart_sim")


def app_version() -> str:
    """The image tag: the chart's appVersion, which the chart's default images name."""
    found = re.search(r'^appVersion:\s*"?([^"\s]+)"?', CHART.read_text(), re.MULTILINE)
    if found is None:
        raise ValueError(f"{CHART} has no appVersion")
    return found.group(1)


def reference() -> str:
    """The image as containerd names it, for example docker.io/smartserver/operator:0.1.0."""
    return f"{FULL_REPOSITORY}:{app_version()}"


def locked_requirements() -> list[str]:
    """The lock's ``name==version`` lines, in order."""
    return [
        line.strip()
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
