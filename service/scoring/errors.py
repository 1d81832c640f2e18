"""Domain errors of the scoring core; each transport maps them to its own status codes."""


class ScoringError(Exception):
    """Base of every error a caller can be told about. `model` is the (name, version) that was
    serving the request when it failed, None if it reached no model."""

    model: tuple[str, str] | None = None


class InvalidInputError(ScoringError):
    """The request is well-formed but cannot be scored as asked."""


class TooManyInputsError(ScoringError):
    """More inputs in one request than the configured limit."""


class UnknownModelError(ScoringError):
    """The request names a model this server does not serve."""


class NotReadyError(ScoringError):
    """Models are still loading or the server is shutting down."""


class OverloadedError(ScoringError):
    """The queue is full; the caller should retry after a short wait."""


class TooLargeError(ScoringError):
    """A field or an item is over a configured size limit."""


class InternalScoringError(ScoringError):
    """The model produced something that must not be returned (NaN, inf); details are in the log."""


class DeadlineExceededError(ScoringError):
    """The request's deadline passed before its items were computed; they were dropped."""


class ClientGoneError(ScoringError):
    """The client disconnected before the answer; its queued items were dropped."""
