"""What the client raises when a reward cannot be had: it never returns a placeholder."""

from __future__ import annotations


class RewardError(Exception):
    """No rewards for this call."""


class RewardRequestError(RewardError):
    """The server refused the request (HTTP 4xx, gRPC INVALID_ARGUMENT/NOT_FOUND...): fix it, do not
    retry it."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RewardAuthError(RewardRequestError):
    """The server refused the API key (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED): a
    missing or wrong key does not get better by retrying."""


class RewardUnavailableError(RewardError):
    """The server stayed busy or unreachable through every retry."""


class RewardTimeoutError(RewardError):
    """No answer within the client's timeout."""


class Retryable(Exception):
    """A transport's signal that the call may succeed later (never raised to the caller)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
