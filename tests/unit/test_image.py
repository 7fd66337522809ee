"""The platform's image, without building it: the Dockerfile (for users with Docker)
and the Docker-free builder install the same thing, both as spec.py says; the chart and
the kustomize base name that image and run it as its user; the lock pins every
dependency of pyproject.toml; and the cache key follows the sources and nothing else."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from smart_sim.image import build, spec
from smart_sim.image.lock import canonical

DOCKERFILE = spec.DOCKERFILE.read_text()
# One instruction per item, continuation lines joined.
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instructions(keyword: str) -> list[str]:
    return [i.split(None, 1)[1] for i in INSTRUCTIONS if i.split(None, 1)[0] == keyword]


def build_args() -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in instructions("ARG"))


def expand(text: str) -> str:
    for name, value in build_args().items():
        text = text.replace("${" + name + "}", value)
    return text


def run_commands() -> list[str]:
    """Every shell command of the RUN instructions, split at `&&`."""
    commands = []
    for run in instructions("RUN"):
        commands += [" ".join(part.replace('"', "").split()) for part in expand(run).split("&&")]
    return commands


def test_dockerfile_builds_on_the_same_debian_python_account_and_virtualenv() -> None:
    assert build_args() == {
        "DEBIAN_SUITE": spec.DEBIAN_SUITE,
        "PYTHON_VERSION": spec.PYTHON_VERSION,
        "USER": spec.USER,
        "UID": str(spec.UID),
        "VENV": spec.VENV,
    }
    assert instructions("FROM") == ["debian:${DEBIAN_SUITE}-slim"]
    (install,) = [c for c in run_commands() if c.startswith("apt-get install")]
    packages = [word for word in shlex.split(install)[2:] if not word.startswith("-")]
    assert packages == list(spec.DEBIAN_PACKAGES)


def test_dockerfile_makes_the_account_the_builder_makes() -> None:
    account = [c for c in run_commands() if c.startswith(("groupadd", "useradd"))]
    expected = [" ".join(line.split()) for line in build.account_script().splitlines()]
    assert account == expected


def test_dockerfile_installs_the_locked_dependencies_then_the_project_without_resolving() -> None:
    lock = spec.LOCK.relative_to(spec.ROOT).as_posix()
    copies = [expand(c).split() for c in instructions("COPY")]
    assert copies[0] == [lock, "/tmp/requirements.lock"]
    copied = {source for *sources, _ in copies[1:] for source in sources}
    assert copied == set(spec.SOURCES), "the Dockerfile copies other sources than the key hashes"
    installs = [c for c in run_commands() if " install " in c and "/bin/pip" in c]
    assert len(installs) == 2
    assert all("--no-deps" in c for c in installs)
    assert "--requirement /tmp/requirements.lock" in installs[0]
    assert any(c.endswith("/bin/pip check") for c in run_commands())


def test_dockerfile_has_the_entry_points_environment_user_and_command_of_the_spec() -> None:
    (loop,) = [c for c in run_commands() if c.startswith("for command in")]
    assert loop.split(";")[0].split()[3:] == list(spec.ENTRY_POINTS)
    (env,) = instructions("ENV")
    assert dict(pair.split("=", 1) for pair in env.split()) == spec.ENV
    assert instructions("USER") == [f"{spec.UID}:{spec.UID}"]
    assert instructions("CMD") == [f'["{spec.DEFAULT_COMMAND}"]']


def test_every_entry_point_is_a_script_of_the_distribution() -> None:
    scripts = tomllib.loads((spec.ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(spec.ENTRY_POINTS) <= set(scripts)


def test_the_lock_pins_every_dependency_of_the_distribution_once() -> None:
    pins = [Requirement(line) for line in spec.locked_requirements()]
    versions = {canonical(pin.name): str(pin.specifier).removeprefix("==") for pin in pins}
    assert len(versions) == len(pins), "a package is pinned twice"
    assert all(str(pin.specifier).startswith("==") for pin in pins)
    project = tomllib.loads((spec.ROOT / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = canonical(dependency.name)
        assert name in versions, f"{name} is not in the lock: run `python -m smart_sim.image lock`"
        assert dependency.specifier.contains(versions[name]), (
            f"the lock pins {name}=={versions[name]}, pyproject.toml wants {dependency}: "
            "run `python -m smart_sim.image lock`"
        )


def test_the_chart_and_the_kustomize_base_run_the_image_as_its_user() -> None:
    values = yaml.safe_load((spec.ROOT / "charts/smartserver/values.yaml").read_text())
    for component in ("operator", "intake", "dashboard"):
        assert values[component]["image"]["repository"] == spec.REPOSITORY
        assert values[component]["image"]["tag"] in ("", spec.app_version())
        context = values[component]["podSecurityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (spec.UID, spec.UID)
    for manifest in (spec.ROOT / "manifests").rglob("*.yaml"):
        for image in re.findall(r"image:\s*(\S+)", manifest.read_text()):
            assert image == f"{spec.REPOSITORY}:{spec.app_version()}", manifest
    version = tomllib.loads((spec.ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert spec.app_version() == version, "the image tag is not the distribution's version"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for source in spec.SOURCES:
        origin = spec.ROOT / source
        if origin.is_file():
            (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(origin, tmp_path / source)
        else:
            (tmp_path / source).mkdir(parents=True)
            (tmp_path / source / "module.py").write_text("VALUE = 1\n")
    monkeypatch.setattr(spec, "ROOT", tmp_path)
    return tmp_path


def test_the_image_key_follows_the_sources_and_ignores_bytecode(tree: Path) -> None:
    key = build.app_key()
    (tree / "operator" / "__pycache__").mkdir()
    (tree / "operator" / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"\0")
    assert build.app_key() == key, "compiled bytecode changed the key"
    (tree / "operator" / "module.py").write_text("VALUE = 2\n")
    assert build.app_key() != key, "a changed source file kept the key"


def test_an_agent_bundle_changes_the_image_key(tree: Path) -> None:
    bundle = tree / "agent-bundle.tar.gz"
    bundle.write_bytes(b"bundle")
    assert build.app_key(bundle) != build.app_key()


def test_images_unused_for_two_days_are_pruned_but_the_newest_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTSERVER_CACHE", str(tmp_path))
    now = time.time()
    ages = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 72, "f": 100}  # hours since last use
    for name, hours in ages.items():
        entry = build.image_cache() / f"operator-0.1.0-{name}"
        entry.mkdir(parents=True)
        (entry / "image.json").write_text("{}")
        os.utime(entry / "image.json", (now - hours * 3600, now - hours * 3600))
    base = build.image_cache() / "base-x"
    base.mkdir()
    build.prune_images()
    left = sorted(p.name.rsplit("-", 1)[1] for p in build.image_cache().glob("operator-*"))
    assert left == ["a", "b", "c", "d"], "only images unused for two days beyond the newest go"
    assert base.exists(), "the base layer is not the prune's"
