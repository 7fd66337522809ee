"""Status patches as a given account, straight to the API server, and what the results
intake's admission policy answers when it refuses one (the policy:
``manifests/rbac/intake-status-policy.yaml``, the chart's
``templates/intake/status-policy.yaml``)."""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

API = "smartserver.ai/v1alpha1"
INTAKE_POLICY = "smart-intake-status"
"""The policy's name in the kustomize base (the chart's is ``<fullname>-intake-status``)."""

PLURALS = {"Domain": "domains", "Experiment": "experiments", "Customer": "customers"}


def patch_status(
    kubeconfig: Path, kind: str, name: str, namespace: str | None, status: Any
) -> tuple[int, str]:
    """Merge-patch the status subresource with the account of ``kubeconfig``, as the
    intake does (kubectl would GET the status first, which the intake may not do for
    Customers); the answer's code and message."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]
    authority = base64.b64decode(server["certificate-authority-data"]).decode()
    where = f"namespaces/{namespace}/" if namespace else ""
    request = urllib.request.Request(  # noqa: S310 (the local API server)
        f"{server['server']}/apis/{API}/{where}{PLURALS[kind]}/{name}/status",
        data=json.dumps({"status": status}).encode(),
        method="PATCH",
        headers={
            "Content-Type": "application/merge-patch+json",
            "Authorization": f"Bearer {config['users'][0]['user']['token']}",
        },
    )
    context = ssl.create_default_context(cadata=authority)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, str(json.loads(error.read()).get("message", ""))


def refused(
    answer: tuple[int, str], target: str, part: str, policy: str = INTAKE_POLICY
) -> set[str]:
    """The fields the policy's refusal names (in no particular order: CEL iterates a
    map's keys as it likes); fails unless ``answer`` is that refusal, of ``target``."""
    code, message = answer
    prefix = (
        f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: "
        f"the results intake may change only its part of the status of {target} ({part}); "
        "refused its change of operator-owned "
    )
    assert code == 403 and prefix in message, answer
    named = message.split(prefix, 1)[1].strip()
    return {field.removeprefix("status.") for field in named.split(", ")}


def wait_for_policy(
    kubeconfig: Path, kind: str, name: str, namespace: str | None, within: float = 30
) -> None:
    """Wait until the policy refuses the account of ``kubeconfig`` a change of
    ``status.observedGeneration`` (the operator's) of the object: a policy takes effect
    shortly after it is written. Each try asks for a new value, so a try that landed
    before the policy did cannot make the next one a no-op."""
    deadline = time.monotonic() + within
    answer: tuple[int, str] = (0, "")
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        answer = patch_status(
            kubeconfig, kind, name, namespace, {"observedGeneration": 10**6 + tries}
        )
        if answer[0] == 403 and "denied request" in answer[1]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the policy did not refuse a change within {within} s: {answer}")
