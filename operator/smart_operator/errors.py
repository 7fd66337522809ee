"""How failures of outside systems are told apart, drawn once here.

Every client in ``clients/`` maps what its SDK raises (hcloud's ``APIException``,
cloudflare's ``APIStatusError``, kubernetes_asyncio's ``ApiException``, asyncssh's
errors, connection errors) onto this tree at its boundary; no SDK exception type
escapes ``clients/``. Reconcilers, background loops and the intake catch only these::

    ExternalError                   an outside system failed; ``system`` names it
    ├── TemporaryFailure            heals by waiting: 5xx, timeouts, lost connections,
    │   │                           a locked resource; ``delay`` is the seconds to wait
    │   ├── RateLimited             the system refused for its rate limit (HTTP 429);
    │   │                           ``delay`` runs to its reset
    │   └── Unreachable             a server could not be reached over SSH
    │       └── OperatorKeyRefused      the server refused every key of the operator's
    │                                   (the message names their fingerprints)
    ├── PermanentFailure            retrying the same request cannot help: invalid input,
    │   │                           bad credentials, a name taken by an object that is
    │   │                           not ours; the message says what to change
    │   ├── HostKeyMismatch         a server presented another host key than the pinned
    │   │                           one: nothing was sent to it
    │   ├── RevisionRefused         a server's agent refused a revision: the previous one
    │   │                           keeps serving
    │   └── InstallFailed           a server refused the agent's bundle or a step of its
    │                               installation; the message is the server's
    ├── NotFound                    the object does not exist (deletions count it done)
    └── Conflict                    a uniqueness error, or a write based on a stale read
                                    (Kubernetes resourceVersion): look it up again

Pure: no I/O, no SDK.
"""

from __future__ import annotations

import random


class ExternalError(Exception):
    """An outside system (a provider, Kubernetes, a server over SSH) failed. ``code``
    is the system's own name for the error (``placement_error``, ``1004``...), for
    decisions that depend on it; None when it gave none."""

    def __init__(self, system: str, message: str, code: str | None = None) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.detail = message
        self.code = code


class TemporaryFailure(ExternalError):
    """Will heal by waiting; ``delay`` is the seconds to wait before trying again."""

    def __init__(
        self, system: str, message: str, delay: float = 5.0, code: str | None = None
    ) -> None:
        super().__init__(system, message, code)
        self.delay = delay


class RateLimited(TemporaryFailure):
    """The system refused for its rate limit; ``delay`` runs to its reset."""


class Unreachable(TemporaryFailure):
    """A server could not be reached, or refused the operator's key, over SSH."""


class OperatorKeyRefused(Unreachable):
    """A server refused every SSH key the operator has (the current one and, during a
    rotation, the previous one); the message names the fingerprints tried. Staff must
    put the key the server authorizes into the operator's Secret, so it is tried again
    only slowly (a key that a server later accepts, say after its disk is restored,
    heals it)."""


class PermanentFailure(ExternalError):
    """Will not heal by retrying the same request; the message says what to change."""


class HostKeyMismatch(PermanentFailure):
    """A server presented a host key other than the pinned one: nothing was sent."""


class RevisionRefused(PermanentFailure):
    """A server's agent refused a revision; the previous one keeps serving."""


class InstallFailed(PermanentFailure):
    """A server refused the agent's bundle or a step of its installation."""


class NotFound(ExternalError):
    """The object does not exist."""


class Conflict(ExternalError):
    """A uniqueness error, or a write based on a stale read: look the object up again."""


def jittered(seconds: float, spread: float = 0.2) -> float:
    """``seconds`` plus up to ``spread`` of it at random, so retries do not align."""
    return seconds * (1 + random.uniform(0, spread))  # noqa: S311 (not for secrets)
