"""How provider failures are told apart, drawn once here:

- ``ProviderError``: base of everything a provider call may raise.
  - ``TemporaryProviderError``: will heal (5xx, timeouts, lost connections, 429, a
    locked resource); carries ``delay``, the seconds to wait before trying again
    (the provider's reset time for a 429, with jitter).
  - ``PermanentProviderError``: will not heal by retrying (invalid input, a name taken by
    an object that is not ours); its message says what to fix.
  - ``NotFound``: the object does not exist; deletions count this as done.
  - ``Conflict``: a uniqueness error; the caller looks the object up and adopts it.
"""

from __future__ import annotations

import random


class ProviderError(Exception):
    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.detail = message


class TemporaryProviderError(ProviderError):
    def __init__(self, provider: str, message: str, delay: float = 5.0) -> None:
        super().__init__(provider, message)
        self.delay = delay


class PermanentProviderError(ProviderError):
    pass


class NotFound(ProviderError):
    pass


class Conflict(ProviderError):
    pass


def jittered(seconds: float, spread: float = 0.2) -> float:
    """``seconds`` plus up to ``spread`` of it at random, so retries do not align."""
    return seconds * (1 + random.uniform(0, spread))  # noqa: S311 (not for secrets)
