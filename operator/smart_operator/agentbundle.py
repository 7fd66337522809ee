"""The agent bundle as the operator knows it, and the installer that unpacks it on a server.

The agent ships as its own light artifact (``smart-agent-<version>.tar.gz``): a top folder
``smart-agent/`` with ``VERSION``, ``MANIFEST`` (the SHA-256 of every file), ``install.sh``
(the installer below) and ``wheels/`` (the agent's wheel and the wheels of only what it
imports, for every Python and architecture of the supported images). It is built
reproducibly by ``python -m smart_sim.boot.bundle`` (build tooling, not product code);
the operator only needs its path, its SHA-256 and its version: :class:`AgentBundle`.
``SMART_AGENT_BUNDLE`` names the file; the hash is read from the sidecar
``<file>.sha256`` (``sha256sum`` format) when there is one, else computed at start-up.

:data:`INSTALLER` is the server side of delivery: the operator's user-data installs it
as ``/usr/local/sbin/smart-agent-install`` (root's, mode 0755), and the deploy user may
run it, and only it, through sudo. It checks the SHA-256 of the uploaded bundle on the
server before anything in it is used, refuses links, devices and paths out of the
bundle, installs the wheels offline into a fresh virtualenv per version (no index, no
source distributions: nothing from the bundle runs as root), switches
``/opt/smart/agent/current`` atomically, writes the agent's environment (0600, the
agent's user) and restarts the agent; and it rotates the SSH host key in two phases.

Pure: reading the bundle's bytes (to hash it) is the only I/O, in :meth:`AgentBundle.load`.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AGENT_BASE",
    "AGENT_GROUP",
    "AGENT_USER",
    "DEPLOY_USER",
    "INSTALLER",
    "INSTALLER_PATH",
    "AgentBundle",
    "BundleError",
]

DEPLOY_USER = "deploy"
"""The operator's login on every server: SFTP into the experiments, ``smart-agent reload``,
and ``sudo smart-agent-install``; never root."""
AGENT_USER = "smart-agent"
"""The system user the agent (and its nginx) runs as."""
AGENT_GROUP = "smart"
"""Shared by the deploy user and the agent: the control socket and the experiments."""
AGENT_BASE = "/opt/smart/agent"
INSTALLER_PATH = "/usr/local/sbin/smart-agent-install"
TOP = "smart-agent"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


class BundleError(ValueError):
    """The file is not an agent bundle, or its sidecar hash is malformed."""


@dataclass(frozen=True)
class AgentBundle:
    """One built agent bundle: where it is, its SHA-256 and the agent version inside."""

    path: Path
    sha256: str
    version: str

    @property
    def release(self) -> str:
        """The server's release folder name: one virtualenv per version and bundle."""
        return f"{self.version}-{self.sha256[:12]}"

    @classmethod
    def load(cls, path: Path | str) -> AgentBundle:
        """Describe the bundle at ``path`` (hash from the sidecar, or computed)."""
        path = Path(path)
        sidecar = path.with_name(path.name + ".sha256")
        if sidecar.is_file():
            digest = sidecar.read_text().split()[0] if sidecar.read_text().split() else ""
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise BundleError(f"{sidecar}: not a SHA-256 line")
        else:
            hasher = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(chunk)
            digest = hasher.hexdigest()
        try:
            with tarfile.open(path, "r:gz") as archive:
                member = archive.extractfile(f"{TOP}/VERSION")
                version = member.read().decode().strip() if member else ""
        except (tarfile.TarError, KeyError, OSError) as exc:
            raise BundleError(f"{path} is not an agent bundle: {exc}") from None
        if not _VERSION.match(version):
            raise BundleError(f"{path}: bad version {version!r}")
        return cls(path, digest, version)


INSTALLER = r"""#!/bin/sh
# smart-agent-install: installs, configures and restarts the Smart Server agent.
# Written by the operator's cloud-init; the deploy user may run it (only it) with sudo.
#   smart-agent-install bundle FILE SHA256   install the bundle FILE (checked first)
#   smart-agent-install env                  stdin becomes the agent's environment
#   smart-agent-install restart              restart the agent, wait until it runs
#   smart-agent-install status               what is installed (key=value lines)
#   smart-agent-install host-key prepare     make the next SSH host key, print it
#   smart-agent-install host-key commit      make the next host key the current one
# Exit codes: 0 done, 1 failed, 2 usage, 4 the bundle's SHA-256 does not match.
set -eu
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
AGENT_USER=smart-agent
BASE=/opt/smart/agent
ENV_FILE=/etc/smartserver/agent.env
INCOMING=/var/lib/smart-agent-install
HOST_KEY=/etc/ssh/ssh_host_ed25519_key

die() { echo "smart-agent-install: $2" >&2; exit "$1"; }

installed() {
  if [ -f "$BASE/current/BUNDLE" ]; then cat "$BASE/current/BUNDLE"; fi
}

cmd_bundle() {
  [ $# -eq 2 ] || die 2 "usage: bundle FILE SHA256"
  file=$1; sha=$2
  echo "$sha" | grep -Eq '^[0-9a-f]{64}$' || die 2 "not a SHA-256: $sha"
  if installed | grep -qx "sha256=$sha"; then
    echo "changed=false"; installed; return 0
  fi
  mkdir -p -m 0700 "$INCOMING"
  copy="$INCOMING/$sha.tar.gz"
  # Read with the rights of whoever called sudo: root must not open a path they chose.
  runuser -u "${SUDO_USER:-root}" -- cat -- "$file" > "$copy" || die 1 "cannot read $file"
  actual=$(sha256sum "$copy" | cut -d' ' -f1)
  if [ "$actual" != "$sha" ]; then
    rm -f "$copy"
    die 4 "SHA-256 mismatch: $file is $actual, not $sha; nothing installed"
  fi
  # Plain files and folders only, inside smart-agent/, no '..'.
  if tar -tvzf "$copy" | cut -c1 | grep -qv '^[-d]$'; then
    rm -f "$copy"; die 1 "the bundle holds links or devices"
  fi
  if tar -tzf "$copy" | grep -Eqv '^smart-agent(/|$)' \
    || tar -tzf "$copy" | grep -Eq '(^|/)\.\.(/|$)'; then
    rm -f "$copy"; die 1 "the bundle holds paths outside smart-agent/"
  fi
  version=$(tar -xzOf "$copy" smart-agent/VERSION)
  echo "$version" | grep -Eq '^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$' || die 1 "bad version: $version"
  release="$version-$(echo "$sha" | cut -c1-12)"
  target="$BASE/releases/$release"
  if [ ! -f "$target/BUNDLE" ]; then
    rm -rf "$target"
    mkdir -p "$target"
    tar -xzf "$copy" -C "$target" --no-same-owner --no-same-permissions
    # A fresh virtualenv at its final path (a virtualenv cannot move). Wheels only,
    # offline: installing a wheel runs none of its code.
    python3 -m venv "$target/venv"
    "$target/venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check \
      --root-user-action=ignore --no-index --only-binary=:all: \
      --find-links "$target/smart-agent/wheels" "smart-agent==$version"
    # The first run of the new code is as the agent's user, never as root.
    runuser -u "$AGENT_USER" -- "$target/venv/bin/smart-agent" --version >/dev/null \
      || die 1 "the installed agent does not start"
    printf 'sha256=%s\nversion=%s\n' "$sha" "$version" > "$target/BUNDLE.new"
    mv -f "$target/BUNDLE.new" "$target/BUNDLE"
  fi
  ln -sfn "releases/$release" "$BASE/current.new"
  mv -T "$BASE/current.new" "$BASE/current"
  ln -sfn "$BASE/current/venv/bin/smart-agent" /usr/local/bin/smart-agent
  rm -f "$copy"
  # Keep the current release and the newest other one (a rollback); drop the rest.
  ls -1t "$BASE/releases" | grep -vx "$release" | tail -n +2 | while read -r old; do
    rm -rf "${BASE:?}/releases/$old"
  done
  echo "changed=true"; installed
}

cmd_env() {
  mkdir -p -m 0755 /etc/smartserver
  new=$(mktemp /etc/smartserver/.agent.env.XXXXXX)
  cat > "$new"
  if grep -Evq '^(SMART_AGENT_[A-Z0-9_]+=[^[:cntrl:]]*)?$' "$new"; then
    rm -f "$new"; die 1 "the environment may hold only SMART_AGENT_NAME=value lines"
  fi
  if [ -f "$ENV_FILE" ] && cmp -s "$new" "$ENV_FILE"; then
    rm -f "$new"; echo "changed=false"; return 0
  fi
  chown "$AGENT_USER:$AGENT_USER" "$new"
  chmod 0600 "$new"
  mv -f "$new" "$ENV_FILE"
  echo "changed=true"
}

cmd_restart() {
  [ -x "$BASE/current/venv/bin/smart-agent" ] || die 1 "no agent is installed"
  systemctl restart smart-agent
  i=0
  while ! systemctl is-active --quiet smart-agent; do
    i=$((i + 1)); [ $i -lt 150 ] || die 1 "smart-agent did not become active"
    sleep 0.2
  done
  echo "active=true"; installed
}

cmd_host_key() {
  case "${1:-}" in
    prepare)
      if [ ! -f "$HOST_KEY.next" ]; then
        rm -f "$HOST_KEY.next.pub"
        ssh-keygen -q -t ed25519 -N '' -C "root@$(hostname)" -f "$HOST_KEY.next"
      fi
      cat "$HOST_KEY.next.pub" ;;
    commit)
      if [ -f "$HOST_KEY.next" ]; then
        mv -f "$HOST_KEY.next.pub" "$HOST_KEY.pub"
        mv -f "$HOST_KEY.next" "$HOST_KEY"
        systemctl reload ssh
      fi
      cat "$HOST_KEY.pub" ;;
    *) die 2 "usage: host-key prepare|commit" ;;
  esac
}

command=${1:-}
[ $# -gt 0 ] && shift
# One command at a time: an operator killed mid-install leaves its command running here
# (closing the SSH session does not stop it), and the next operator's install must not
# unpack into the same release beside it. It waits for the first, then finds its work.
exec 9>/run/smart-agent-install.lock
flock -w 900 9 || die 1 "another installation has held the lock for 15 minutes"
case "$command" in
  bundle) cmd_bundle "$@" ;;
  env) cmd_env ;;
  restart) cmd_restart ;;
  status) installed ;;
  host-key) cmd_host_key "$@" ;;
  *) die 2 "usage: smart-agent-install bundle|env|restart|status|host-key ..." ;;
esac
"""
