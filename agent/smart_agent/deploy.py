"""The on-disk deployment layout the operator writes and the agent serves.

::

    <root>/opt/smart/experiments/<experiment>/
        revisions/<revision>/experiment.json        the manifest (``ExperimentManifest``)
        revisions/<revision>/variants/<variant>/    one document root per variant
        revisions/<revision>/nginx/<variant>.conf   optional per-variant nginx fragment
        current -> revisions/<revision>             switched atomically (rename of a symlink)

A revision is immutable once its folder has its final name. ``scan`` reads every
experiment's ``current`` manifest and checks it; ``install_revision`` is the reference
writer (tests, simulated hosts), which the operator mirrors over SFTP. This module reads
and writes files only: it never renders nginx configuration and never touches the
counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from smart_agent.timing import DEFAULT_WASHOUT_SECONDS

MANIFEST = "experiment.json"
CURRENT = "current"
REVISIONS = "revisions"
VARIANTS = "variants"
FRAGMENTS = "nginx"

EXPERIMENT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
VARIANT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
REVISION_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# What a goal URL may hold so that nginx can return it as written: no quote, `$`,
# whitespace, braces, semicolon or backslash (see ``_goal_url``).
_URL_SAFE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!&()*+,=%]+$")
# Directives a fragment must not carry: it may not reach files, modules or the
# agent's own endpoints (templates/nginx.py in the operator writes only cache,
# compression and keep-alive settings).
_FRAGMENT_FORBIDDEN = re.compile(
    r"\b(include|load_module|root|alias|access_log|error_log|proxy_pass|return|rewrite|"
    r"perl|js_\w+|lua\w*)\b|_smart"
)

ExperimentType = Literal["landing_page", "performance", "conversion"]
ServingMode = Literal["split", "control", "winner", "off"]
ProbeMode = Literal["cold", "returning"]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class VariantSpec(_Model):
    name: str = Field(pattern=VARIANT_NAME, max_length=40)
    weight: int = Field(ge=0, le=1000)


class Serving(_Model):
    """What nginx serves: ``split`` by weights (counted), ``control`` (paused or
    suspended: everyone sees the control, nothing counted), ``winner`` (everyone sees
    ``winner``, nothing counted), ``off`` (not served at all)."""

    mode: ServingMode = "split"
    winner: str | None = Field(default=None, pattern=VARIANT_NAME)


class Performance(_Model):
    """Time windows of a performance experiment and how the agent probes it."""

    window_seconds: int = Field(default=3600, ge=1, le=7 * 86400)
    probe_paths: tuple[str, ...] = Field(default=("/",), min_length=1, max_length=10)
    probe_mode: ProbeMode = "cold"
    probe_seconds: float = Field(default=10.0, gt=0, le=3600)
    washout_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="Real-user timings of page views loaded in the first seconds of each "
        "window are left out (default: a tenth of the window, at most 300 s)",
    )

    @field_validator("probe_paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not re.fullmatch(r"/[A-Za-z0-9/._-]*", path) or path.startswith("/_smart/"):
                raise ValueError(f"probe path {path!r} is not a plain page path")
        return value

    @model_validator(mode="after")
    def _washout_within_window(self) -> Performance:
        if self.washout_seconds is not None and self.washout_seconds >= self.window_seconds:
            raise ValueError("washoutSeconds must be shorter than windowSeconds")
        return self

    @property
    def washout(self) -> int:
        """Seconds at the start of each window whose page views are not timed."""
        if self.washout_seconds is not None:
            return self.washout_seconds
        return min(DEFAULT_WASHOUT_SECONDS, self.window_seconds // 10)


class ExperimentManifest(_Model):
    """``experiment.json``: what one revision of an experiment serves and measures."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    name: str = Field(pattern=EXPERIMENT_NAME, max_length=253)
    uid: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="The Experiment resource's uid: a new uid under the same name starts "
        "the counts afresh (a deleted and re-created experiment)",
    )
    type: ExperimentType
    revision: str = Field(pattern=REVISION_NAME)
    variants: tuple[VariantSpec, ...] = Field(min_length=1, max_length=10)
    goal_url: str | None = Field(default=None, max_length=2048)
    serving: Serving = Serving()
    performance: Performance | None = None
    deployed_at: datetime | None = None

    @field_validator("goal_url")
    @classmethod
    def _goal_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or not _URL_SAFE.match(value):
            raise ValueError("goalUrl must be a plain https URL (no quotes, spaces or `$`)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentManifest:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        if self.serving.mode == "winner" and self.serving.winner not in names:
            raise ValueError("serving.winner must name one of the variants")
        return self

    @property
    def control(self) -> str:
        return self.variants[0].name

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    @property
    def counted(self) -> bool:
        """Visitors are randomised (and so counted) only while the split is served."""
        return self.serving.mode == "split"

    def served_variants(self) -> tuple[str, ...]:
        """The variants nginx may hand out under the current serving mode."""
        if self.serving.mode == "control":
            return (self.control,)
        if self.serving.mode == "winner":
            assert self.serving.winner is not None
            return (self.serving.winner,)
        if self.serving.mode == "off":
            return ()
        return tuple(v.name for v in self.variants if v.weight > 0)


@dataclass(frozen=True)
class Deployment:
    """One experiment's current revision, checked and ready to serve."""

    manifest: ExperimentManifest
    path: Path  # the revision folder, symlinks resolved

    @property
    def name(self) -> str:
        return self.manifest.name

    def document_root(self, variant: str) -> Path:
        return self.path / VARIANTS / variant

    def fragment(self, variant: str) -> Path | None:
        path = self.path / FRAGMENTS / f"{variant}.conf"
        return path if path.is_file() else None


@dataclass
class ScanResult:
    """Every experiment folder: the deployments that check out, the problems of the rest."""

    deployments: dict[str, Deployment] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> tuple[tuple[str, str, str], ...]:
        """Changes whenever a ``current`` symlink or a manifest's serving state changes."""
        return tuple(
            sorted(
                (name, str(d.path), d.manifest.model_dump_json())
                for name, d in self.deployments.items()
            )
        ) + tuple(sorted((name, "", problem) for name, problem in self.problems.items()))


class DeployError(ValueError):
    """A revision folder that cannot be served as it is."""


def scan(experiments_dir: Path) -> ScanResult:
    """Read and check every ``<experiment>/current`` revision under ``experiments_dir``."""
    result = ScanResult()
    if not experiments_dir.is_dir():
        return result
    for entry in sorted(experiments_dir.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        current = entry / CURRENT
        if not current.is_symlink() and not current.exists():
            continue  # uploaded but never switched on
        try:
            result.deployments[entry.name] = load_revision(entry.name, current)
        except DeployError as exc:
            result.problems[entry.name] = str(exc)
    return result


def load_revision(name: str, revision_dir: Path) -> Deployment:
    """Check one revision folder of experiment ``name``; raise ``DeployError`` if unfit."""
    try:
        resolved = revision_dir.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DeployError(f"{revision_dir} does not lead to a revision folder") from exc
    try:
        raw = json.loads((resolved / MANIFEST).read_text())
        manifest = ExperimentManifest.model_validate(raw)
    except FileNotFoundError as exc:
        raise DeployError(f"{resolved.name}: no {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{resolved.name}/{MANIFEST} is not JSON: {exc}") from exc
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()
        )
        raise DeployError(f"{resolved.name}/{MANIFEST}: {errors}") from exc
    if manifest.name != name:
        raise DeployError(f"{MANIFEST} names {manifest.name!r}, its folder is {name!r}")
    if manifest.revision != resolved.name:
        raise DeployError(
            f"{MANIFEST} says revision {manifest.revision!r}, its folder is {resolved.name!r}"
        )
    deployment = Deployment(manifest, resolved)
    for variant in manifest.variant_names:
        if not (deployment.document_root(variant) / "index.html").is_file():
            raise DeployError(f"{resolved.name}: variant {variant} has no index.html")
        fragment = deployment.fragment(variant)
        if fragment is not None:
            problem = fragment_problem(fragment.read_text(errors="replace"))
            if problem:
                raise DeployError(f"{resolved.name}: nginx/{variant}.conf {problem}")
    return deployment


def fragment_problem(text: str) -> str | None:
    """Why a per-variant nginx fragment may not be included, or None."""
    text = re.sub(r"#[^\n]*", "", text)  # comments may say anything
    match = _FRAGMENT_FORBIDDEN.search(text)
    if match:
        return f"uses {match.group(0)!r}, which a variant's settings may not"
    if text.count("{") != text.count("}"):
        return "has unbalanced braces"
    return None


def install_revision(
    experiments_dir: Path,
    manifest: ExperimentManifest,
    variants: Mapping[str, Mapping[str, bytes]],
    fragments: Mapping[str, str] | None = None,
) -> Path:
    """Write an immutable revision and switch ``current`` to it, as the operator does.

    The revision is written under a temporary name and renamed into place, then a new
    symlink is renamed over ``current``: a reader sees the old revision or the new one,
    never half of one. Installing a revision that already exists only switches to it.
    """
    folder = experiments_dir / manifest.name
    revisions = folder / REVISIONS
    revisions.mkdir(parents=True, exist_ok=True)
    final = revisions / manifest.revision
    if not final.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{manifest.revision}.", dir=revisions))
        try:
            (staging / MANIFEST).write_text(manifest.model_dump_json(by_alias=True, indent=2))
            for variant, files in variants.items():
                for relative, data in files.items():
                    target = staging / VARIANTS / variant / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
            for variant, text in (fragments or {}).items():
                target = staging / FRAGMENTS / f"{variant}.conf"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            # Readable by nginx's workers whatever the umask of the writer.
            for path in [staging, *staging.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    switch_current(folder, manifest.revision)
    return final


def switch_current(folder: Path, revision: str) -> None:
    """Point ``<folder>/current`` at ``revisions/<revision>`` atomically."""
    link = folder / CURRENT
    temporary = folder / f".{CURRENT}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(f"{REVISIONS}/{revision}")
    temporary.rename(link)
