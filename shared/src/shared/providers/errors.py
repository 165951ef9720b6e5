"""Provider errors: the only exceptions that leave ``shared.providers``.

    ProviderError
    ├── ProviderDenied           the user or the provider refused the login (access_denied ...)
    ├── ProviderRejected         the provider rejected a grant (invalid_grant): the link is dead
    ├── ProviderUnavailable      network error, timeout, 5xx or 429: try again later
    └── ProviderInvalidResponse  the provider answered something that fails our checks

Raw httpx and authlib exceptions are translated at the boundary; messages never carry tokens.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class; ``str(error)`` is safe to log and to show (no token values)."""


class ProviderDenied(ProviderError):
    def __init__(self, error: str, description: str | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class ProviderRejected(ProviderError):
    def __init__(self, error: str = "invalid_grant", description: str | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class ProviderUnavailable(ProviderError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderInvalidResponse(ProviderError):
    pass
