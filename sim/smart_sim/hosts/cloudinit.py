"""Cloud-init user-data for simulated hosts: validate it, then read what a host applies.

Validation has two layers. :class:`UserDataValidator` runs Debian's ``cloud-init schema
--config-file`` (the real tool, in a subprocess: cloud-init lives in the system Python,
not in the virtualenv) and fails on what it reports: a missing ``#cloud-config`` header,
broken YAML, a wrong type for a known key. Then :func:`parse` checks what the schema
tool lets through but a real boot would silently mangle: unknown top-level keys (with a
"did you mean" hint), relative or escaping ``write_files`` paths, permissions that are
not octal, content that does not decode, SSH keys that do not parse or do not match,
and user names that are not user names.

:func:`parse` is pure (no I/O): it turns valid user-data into a :class:`CloudConfig`
of the parts a simulated host applies. It must not write files or start anything;
:mod:`smart_sim.hosts.host` does that.

Modelled as on Hetzner's Debian images: the default user is ``root``, ``disable_root``
defaults to false, and the API's SSH keys authorise the default user.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import gzip
import json
import re
import shlex
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import asyncssh
import yaml

__all__ = [
    "EXTRA_TOP_LEVEL_KEYS",
    "SIMULATED_KEYS",
    "CloudConfig",
    "HostKey",
    "SchemaReport",
    "User",
    "UserDataError",
    "UserDataValidator",
    "WriteFile",
    "parse",
]

HEADER = "#cloud-config"

EXTRA_TOP_LEVEL_KEYS = frozenset(
    {"merge_how", "merge_type", "output", "network", "system_info", "datasource"}
)
"""Top-level keys cloud-init reads although its schema does not list them."""

SIMULATED_KEYS = frozenset(
    {
        "hostname",
        "fqdn",
        "write_files",
        "users",
        "user",
        "ssh_authorized_keys",
        "ssh_keys",
        "disable_root",
        "runcmd",
        "packages",
        "package_update",
        "package_upgrade",
    }
)
"""Top-level keys a simulated host acts on; the boot log lists every other key as skipped."""

_HOST_KEY_TYPES = {
    "ed25519": ("ssh-ed25519",),
    "rsa": ("ssh-rsa",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "dsa": ("ssh-dss",),
}
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_DEFAULT_PERMISSIONS = 0o644
_DEPRECATIONS = "Cloud config schema deprecations:"

_KNOWN_KEYS_SCRIPT = """
import json
from cloudinit.config.schema import get_schema
schema = get_schema()
keys = set(schema.get("properties", {}))
defs = schema.get("$defs", {})
for part in schema.get("allOf", []):
    keys.update(part.get("properties", {}))
    ref = part.get("$ref", "")
    if ref.startswith("#/$defs/"):
        keys.update(defs.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}))
print(json.dumps(sorted(keys)))
"""


class UserDataError(ValueError):
    """User-data a host refuses to boot with; the message says what and where."""


@dataclass(frozen=True)
class SchemaReport:
    """What ``cloud-init schema`` said about one user-data file."""

    valid: bool
    errors: str
    """The tool's error output (empty when valid)."""
    warnings: str
    """Deprecations and other remarks that do not fail the check."""


@dataclass(frozen=True)
class WriteFile:
    """One ``write_files`` entry, decoded."""

    path: str
    content: bytes
    permissions: int
    owner: str
    append: bool
    defer: bool


@dataclass(frozen=True)
class User:
    """A login user and the public keys that authorise it."""

    name: str
    authorized_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostKey:
    """An SSH host key from ``ssh_keys``: its type name and the private key (OpenSSH)."""

    type: str
    private_key: str
    public_key: str
    """The OpenSSH public key line derived from the private key."""


@dataclass(frozen=True)
class CloudConfig:
    """The parts of a cloud-config a simulated host applies."""

    hostname: str | None = None
    write_files: tuple[WriteFile, ...] = ()
    default_user: str = "root"
    users: tuple[User, ...] = ()
    """Every user the user-data names; the default user first, with the top-level keys."""
    disable_root: bool = False
    host_keys: tuple[HostKey, ...] = ()
    runcmd: tuple[str, ...] = ()
    """Each command as one shell line (list entries are quoted as cloud-init does)."""
    packages: tuple[str, ...] = ()
    package_update: bool = False
    package_upgrade: bool = False
    skipped_keys: tuple[str, ...] = ()
    """Known top-level keys present in the user-data that the simulation does not act on."""
    raw: Mapping[str, object] = field(default_factory=dict)


class UserDataValidator:
    """Runs ``cloud-init schema`` (a few at a time) and knows cloud-init's top-level keys."""

    def __init__(self, command: str = "cloud-init", *, timeout: float = 60.0, jobs: int = 4):
        self.command = command
        self.timeout = timeout
        self._jobs = jobs
        self._semaphore: asyncio.Semaphore | None = None
        self._known_keys: frozenset[str] | None = None

    def _executable(self) -> str:
        found = shutil.which(self.command)
        if found is None:
            raise UserDataError(
                f"{self.command!r} is not installed, so user-data cannot be validated; "
                "install Debian's cloud-init (make system, or apt-get install cloud-init)"
            )
        return found

    async def _run(self, *argv: str) -> tuple[int, str, str]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._jobs)
        async with self._semaphore:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                async with asyncio.timeout(self.timeout):
                    out, err = await process.communicate()
            except TimeoutError:
                raise UserDataError(f"{argv[0]} did not finish within {self.timeout:g} s") from None
            finally:
                if process.returncode is None:  # timed out or cancelled: never leave it behind
                    process.kill()
                    await asyncio.shield(process.wait())
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def check_schema(self, path: Path) -> SchemaReport:
        """Run ``cloud-init schema --config-file PATH``; exit 0 means valid."""
        code, out, err = await self._run(self._executable(), "schema", "--config-file", str(path))
        remarks = _remarks(out + "\n" + err).splitlines()
        deprecations = [line for line in remarks if line.startswith(_DEPRECATIONS)]
        warnings = "\n".join(dict.fromkeys(deprecations))
        if code == 0:
            others = [line for line in remarks if not line.startswith(_DEPRECATIONS)]
            return SchemaReport(True, "", "\n".join([warnings, *others]).strip())
        errors = "\n".join(line for line in _remarks(err).splitlines() if line not in deprecations)
        return SchemaReport(False, errors or f"exit status {code}", warnings)

    async def known_keys(self) -> frozenset[str] | None:
        """The top-level keys of the installed cloud-init's schema; None if unreadable."""
        if self._known_keys is not None:
            return self._known_keys
        first = await asyncio.to_thread(_first_line, Path(self._executable()))
        interpreter = first[2:].strip().split() if first.startswith("#!") else []
        if not interpreter:
            return None
        code, out, _ = await self._run(*interpreter, "-c", _KNOWN_KEYS_SCRIPT)
        if code != 0:
            return None
        try:
            keys = json.loads(out)
        except ValueError:
            return None
        if not isinstance(keys, list) or not keys:
            return None
        self._known_keys = frozenset(str(k) for k in keys) | EXTRA_TOP_LEVEL_KEYS
        return self._known_keys


def _first_line(path: Path) -> str:
    with path.open("rb") as script:
        return script.readline().decode(errors="replace")


def _remarks(text: str) -> str:
    """The tool's messages without its empty headings (``Error:``, ``...deprecations:``)."""
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped == "Error:" or stripped.startswith("Valid cloud-config:"):
            continue
        if re.fullmatch(r"Cloud config schema \w+:", stripped):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept)


# -- parsing ---------------------------------------------------------------------------


def parse(user_data: str, known_keys: frozenset[str] | None = None) -> CloudConfig:
    """Read user-data that passed ``cloud-init schema``; UserDataError for what it missed.

    With ``known_keys`` (see :meth:`UserDataValidator.known_keys`), unknown top-level keys
    are refused.
    """
    if not user_data.startswith(HEADER):
        raise UserDataError(f'user-data must begin with "{HEADER}"')
    try:
        document = yaml.safe_load(user_data)
    except yaml.YAMLError as exc:
        raise UserDataError(f"user-data is not valid YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UserDataError("user-data must be a YAML mapping of cloud-config keys")
    if known_keys is not None:
        _check_keys(document, known_keys)

    hostname = document.get("hostname")
    fqdn = document.get("fqdn")
    if hostname is not None and not isinstance(hostname, str):
        raise UserDataError("hostname must be a string")
    if hostname is None and isinstance(fqdn, str) and fqdn:
        hostname = fqdn.split(".", 1)[0]  # as cloud-init does without prefer_fqdn_over_hostname
    disable_root = document.get("disable_root", False)
    if not isinstance(disable_root, bool):
        raise UserDataError("disable_root must be true or false")
    default_user, users = _users(document)
    return CloudConfig(
        hostname=hostname,
        write_files=tuple(_write_files(document.get("write_files"))),
        default_user=default_user,
        users=users,
        disable_root=disable_root,
        host_keys=tuple(_host_keys(document.get("ssh_keys"))),
        runcmd=tuple(_runcmd(document.get("runcmd"))),
        packages=tuple(_packages(document.get("packages"))),
        package_update=bool(document.get("package_update", False)),
        package_upgrade=bool(document.get("package_upgrade", False)),
        skipped_keys=tuple(sorted(str(k) for k in document if k not in SIMULATED_KEYS)),
        raw=document,
    )


def _check_keys(document: Mapping[object, object], known: frozenset[str]) -> None:
    problems = []
    for key in document:
        if not isinstance(key, str) or key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known), n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"{key!r}{suffix}")
    if problems:
        raise UserDataError(
            f"unknown top-level key(s) {', '.join(problems)}: cloud-init would ignore them "
            "silently, so the server would boot without them"
        )


def _write_files(value: object) -> list[WriteFile]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserDataError("write_files must be a list")
    files = []
    for index, entry in enumerate(value):
        where = f"write_files[{index}]"
        if not isinstance(entry, dict):
            raise UserDataError(f"{where} must be a mapping")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise UserDataError(f"{where}.path is required")
        where = f"{where} ({path})"
        _check_path(path, where)
        files.append(
            WriteFile(
                path=path,
                content=_decode(entry.get("content", ""), entry.get("encoding"), where),
                permissions=_permissions(entry.get("permissions"), where),
                owner=str(entry.get("owner", "root:root")),
                append=_flag(entry.get("append", False), f"{where}.append"),
                defer=_flag(entry.get("defer", False), f"{where}.defer"),
            )
        )
    return files


def _check_path(path: str, where: str) -> None:
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        raise UserDataError(f"{where}: the path must be absolute")
    if ".." in pure.parts:
        raise UserDataError(f"{where}: the path must not contain '..'")
    if path.endswith("/"):
        raise UserDataError(f"{where}: the path names a folder, not a file")


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserDataError(f"{where} must be true or false")
    return value


def _permissions(value: object, where: str) -> int:
    if value is None:
        return _DEFAULT_PERMISSIONS
    text = str(value)
    if not re.fullmatch(r"0?o?[0-7]{3,4}", text):
        raise UserDataError(
            f"{where}.permissions {text!r} is not an octal mode like '0644' "
            "(cloud-init would warn and fall back to 0644)"
        )
    return int(text.replace("o", ""), 8)


def _decode(content: object, encoding: object, where: str) -> bytes:
    if isinstance(content, bytes):
        raw = content
    elif isinstance(content, str):
        raw = content.encode()
    else:
        raise UserDataError(f"{where}.content must be a string")
    kind = str(encoding or "text/plain").lower()
    try:
        if kind in ("b64", "base64"):
            return base64.b64decode(raw, validate=False)
        if kind in ("gz", "gzip"):
            return gzip.decompress(raw)
        if kind in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
            return gzip.decompress(base64.b64decode(raw))
    except (binascii.Error, OSError, EOFError, zlib.error) as exc:
        raise UserDataError(f"{where}.content does not decode as {kind}: {exc}") from None
    if kind != "text/plain":
        raise UserDataError(f"{where}.encoding {kind!r} is not one cloud-init knows")
    return raw


def _users(document: Mapping[str, object]) -> tuple[str, tuple[User, ...]]:
    default_user = "root"
    single = document.get("user")
    if isinstance(single, str):
        default_user = single
    elif isinstance(single, dict) and isinstance(single.get("name"), str):
        default_user = single["name"]
    _check_user_name(default_user, "user")
    keys: dict[str, list[str]] = {default_user: []}
    top = document.get("ssh_authorized_keys")
    keys[default_user] += _key_list(top, "ssh_authorized_keys")
    if isinstance(single, dict):
        keys[default_user] += _key_list(single.get("ssh_authorized_keys"), "user")

    for where, entry in _user_entries(document.get("users")):
        if entry == "default":
            continue
        if isinstance(entry, str):
            name, entry_keys = entry, []
        else:
            given = entry.get("name")
            if not isinstance(given, str):
                raise UserDataError(f"{where}.name is required")
            name = given
            entry_keys = _key_list(entry.get("ssh_authorized_keys"), f"{where}.ssh_authorized_keys")
        _check_user_name(name, where)
        keys.setdefault(name, []).extend(entry_keys)
    users = tuple(User(name, tuple(dict.fromkeys(k))) for name, k in keys.items())
    return default_user, users


def _user_entries(value: object) -> list[tuple[str, str | dict[str, object]]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [(f"users[{i}]", n.strip()) for i, n in enumerate(value.split(",")) if n.strip()]
    if isinstance(value, dict):
        return [
            (f"users.{name}", {**(spec if isinstance(spec, dict) else {}), "name": name})
            for name, spec in value.items()
        ]
    if not isinstance(value, list):
        raise UserDataError("users must be a list")
    entries: list[tuple[str, str | dict[str, object]]] = []
    for index, entry in enumerate(value):
        if isinstance(entry, str | dict):
            entries.append((f"users[{index}]", entry))
        elif isinstance(entry, list):
            entries += [(f"users[{index}]", str(n)) for n in entry]
        else:
            raise UserDataError(f"users[{index}] must be a name or a mapping")
    return entries


def _check_user_name(name: str, where: str) -> None:
    if not _USER_NAME.match(name):
        raise UserDataError(
            f"{where}: {name!r} is not a valid user name (lower-case letters, digits, '_' "
            "and '-', at most 32 characters)"
        )


def _key_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise UserDataError(f"{where} must be a list of public keys")
    keys = []
    for index, line in enumerate(value):
        if not isinstance(line, str):
            raise UserDataError(f"{where}[{index}] must be a string")
        try:
            asyncssh.import_public_key(line.strip())
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise UserDataError(
                f"{where}[{index}] is not an OpenSSH public key ({exc}); sshd would ignore it"
            ) from None
        keys.append(line.strip())
    return keys


def _host_keys(value: object) -> list[HostKey]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise UserDataError("ssh_keys must be a mapping")
    found = []
    for kind, algorithms in _HOST_KEY_TYPES.items():
        private = value.get(f"{kind}_private")
        public = value.get(f"{kind}_public")
        if private is None:
            if public is not None:
                raise UserDataError(f"ssh_keys.{kind}_public is given without {kind}_private")
            continue
        where = f"ssh_keys.{kind}_private"
        if not isinstance(private, str):
            raise UserDataError(f"{where} must be a string")
        try:
            key = asyncssh.import_private_key(private)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise UserDataError(f"{where} is not an unencrypted private key: {exc}") from None
        algorithm = key.algorithm.decode()
        if algorithm not in algorithms:
            raise UserDataError(f"{where} holds a {algorithm} key, not a {kind} key")
        derived = key.export_public_key().decode().strip()
        if public is not None:
            try:
                given = asyncssh.import_public_key(str(public).strip())
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise UserDataError(f"ssh_keys.{kind}_public is not a public key: {exc}") from None
            if given.public_data != key.convert_to_public().public_data:
                raise UserDataError(
                    f"ssh_keys.{kind}_public does not belong to ssh_keys.{kind}_private"
                )
        found.append(HostKey(kind, private, derived))
    return found


def _runcmd(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserDataError("runcmd must be a list")
    lines = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            lines.append(entry)
        elif isinstance(entry, list) and all(isinstance(a, str) for a in entry):
            lines.append(shlex.join(entry))
        else:
            raise UserDataError(f"runcmd[{index}] must be a string or a list of strings")
    return lines


def _packages(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserDataError("packages must be a list")
    names = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, list) and len(entry) == 2 and all(isinstance(p, str) for p in entry):
            names.append(f"{entry[0]}={entry[1]}")
        else:
            raise UserDataError(f"packages[{index}] must be a name or [name, version]")
    return names
