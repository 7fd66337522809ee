"""Where the control-plane binaries come from: $KUBEBUILDER_ASSETS first, the build
cache for whatever it lacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smart_sim.controlplane import binaries


def test_envtest_assets_are_used_and_what_they_lack_comes_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = binaries.ensure_binaries()  # cached after the first build
    assets = tmp_path / "assets"
    assets.mkdir()
    # The envtest layout: etcd, kube-apiserver and kubectl, but no controller manager.
    for name, path in (
        ("etcd", built.etcd),
        ("kube-apiserver", built.kube_apiserver),
        ("kubectl", built.kubectl),
    ):
        (assets / name).symlink_to(path)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found = binaries.ensure_binaries()
    assert found.etcd == assets / "etcd"
    assert found.kube_apiserver == assets / "kube-apiserver"
    assert found.kubectl == assets / "kubectl"
    assert found.kube_controller_manager == built.kube_controller_manager
    assert os.access(found.kube_controller_manager, os.X_OK)


def test_the_pinned_release_is_read_from_the_go_module() -> None:
    assert binaries.kube_version().startswith("v1.")
