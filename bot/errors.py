"""Quorum's one domain error family: a stable code and a message people can read.

Services raise these; `handlers.api` maps each class to its HTTP status in one table, and the
chat handlers show `message` as the button's toast.
"""

from __future__ import annotations


class QuorumError(Exception):
    """A refused operation; `code` is stable for clients, `message` is safe to show."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(QuorumError):
    code = "not_found"


class Conflict(QuorumError):
    code = "conflict"


class Invalid(QuorumError):
    """An input the schema allowed but the policy refuses; names the field."""

    code = "validation_error"

    def __init__(self, field_name: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{field_name}: {message}", code=code)
        self.field = field_name


class UnreachableQuorum(QuorumError):
    """A request no set of votes could ever approve: too few approvers may vote on it."""

    code = "unreachable_quorum"


class RateLimited(QuorumError):
    """Too many requests too fast; `retry_after` says in how many seconds to try again."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)


class TooManyPending(QuorumError):
    code = "too_many_pending"


class TokenRefused(QuorumError):
    code = "invalid_token"


class TokenReplayed(Conflict):
    code = "token_replayed"


class Refused(QuorumError):
    """A tap or chat command that changes nothing; its audit row is already in the session
    (commit it). Shown to the person as an alert toast."""

    code = "refused"


class ForgedButton(Refused):
    code = "forged_button"

    def __init__(self, message: str = "This button is not valid here.") -> None:
        super().__init__(message)


class NotAnApprover(Refused):
    code = "not_an_approver"


class NotAMember(Refused):
    code = "not_a_member"

    def __init__(self, team: str) -> None:
        super().__init__(f"You are not a member of team {team}.")


class RequesterCannotVote(Refused):
    code = "requester_cannot_vote"


class NotTheRequester(Refused):
    code = "not_the_requester"


class AlreadyVoted(Refused):
    code = "already_voted"


class RequestClosed(Refused):
    code = "request_closed"


class RequestExpired(Refused):
    code = "request_expired"


class AlertClosed(Refused):
    code = "alert_closed"

    def __init__(self) -> None:
        super().__init__("This alert is already resolved.")


class AlertNotFound(Refused):
    code = "alert_not_found"

    def __init__(self) -> None:
        super().__init__("This alert no longer exists.")


class SilenceNotFound(Refused):
    code = "silence_not_found"

    def __init__(self, ref: str) -> None:
        super().__init__(f"No silence {ref} in this team.")


class InsufficientScope(QuorumError):
    """The API key is valid but not allowed this route."""

    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the scope {scope}, which this route needs")
        self.scope = scope


class Deferred(Exception):
    """An update that cannot be handled yet because something it needs is still in flight
    (not a fault): stored for the failed-update retry loop, without a traceback."""
