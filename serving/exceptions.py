"""Errors of the serving layer, shared by the server (raised, then rendered as JSON by
one handler) and the client (rebuilt from the JSON body by status code).

Every error carries its HTTP status and a stable ``code``; the JSON body is
``{"error": {"code", "message", "hint", "field"?, "transform"?, "reason"?}}``.
"""

from __future__ import annotations

from typing import ClassVar

from engine.exceptions import StreamfeatError
from engine.json_types import JSONObject
from engine.wording import counted, shortened


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (a request may send names
    and values of any length; a message echoes the start of them)."""
    return shortened(repr(value), limit)


class ServingError(StreamfeatError):
    """Base class: an HTTP error answer of the feature server."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field

    def details(self) -> JSONObject:
        """The fields a subclass adds to the JSON error body (after code, message, hint, field)."""
        return {}

    def to_dict(self) -> JSONObject:
        body: JSONObject = {"code": self.code, "message": str(self)}
        if self.hint:
            body["hint"] = self.hint
        if self.field is not None:
            body["field"] = self.field
        body.update(self.details())
        return {"error": body}


class MalformedRequest(ServingError):
    """The body is not JSON (or not UTF-8), or Content-Length is not a number."""

    status_code = 400
    code = "malformed_request"


class DuplicateKey(MalformedRequest):
    """The JSON body names the same key twice in one object (which value is meant is ambiguous)."""

    code = "duplicate_key"


class NotFound(ServingError):
    """No route at this path (the router's 404)."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServingError):
    """The path exists but not for this HTTP method (the router's 405; ``Allow`` lists the methods)."""

    status_code = 405
    code = "method_not_allowed"


class RequestTimeout(ServingError):
    """The request's headers or body did not arrive within the read timeouts (serving/http_guard.py)."""

    status_code = 408
    code = "request_timeout"


class UnsupportedMediaType(ServingError):
    """A feature route was sent a body whose Content-Type is not ``application/json``."""

    status_code = 415
    code = "unsupported_media_type"


class HeadersTooLarge(ServingError):
    """The request line and headers exceed ``max_header_bytes``."""

    status_code = 431
    code = "headers_too_large"


class TooManyConnections(ServingError):
    """One client address holds more than ``max_connections_per_client`` open connections."""

    status_code = 503
    code = "too_many_connections"

    def details(self) -> JSONObject:
        return {"reason": self.code}


class Overloaded(ServingError):
    """More requests in flight than ``max_in_flight``; retry after ``Retry-After`` seconds."""

    status_code = 503
    code = "overloaded"

    def details(self) -> JSONObject:
        return {"reason": self.code}


class PlanChanged(ServingError):
    """A service reads a view that ``streamfeat apply`` changed after this server started:
    the dataflow no longer writes the definition this server would answer."""

    status_code = 503
    code = "plan_changed"

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="restart `streamfeat serve` to serve the applied definitions")

    def details(self) -> JSONObject:
        return {"reason": self.code}


class ServiceNotFound(ServingError):
    """The path names a feature service the loaded repo does not define."""

    status_code = 404
    code = "service_not_found"


class InvalidRequest(ServingError):
    """A missing, extra or mistyped field; ``field`` names it (dotted path)."""

    status_code = 422
    code = "invalid_request"


class PayloadTooLarge(ServingError):
    """The body exceeds max_request_bytes or names more than max_entities_per_request entities."""

    status_code = 413
    code = "payload_too_large"


class TransformError(ServingError):
    """An on-demand transform raised or returned something other than its declared outputs."""

    status_code = 500
    code = "transform_failed"

    def __init__(self, message: str, *, transform: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.transform = transform

    def details(self) -> JSONObject:
        return {"transform": self.transform}


class OnlineTableUnavailableError(ServingError):
    """The online table cannot answer (shards not created, Redis down)."""

    status_code = 503
    code = "online_table_unavailable"

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"online table unavailable: {reason}", hint=hint)
        self.reason = reason

    def details(self) -> JSONObject:
        return {"reason": self.reason}


class ServerError(ServingError):
    """Any other 5xx answer (client side), or an unexpected failure (server side)."""

    status_code = 500
    code = "internal_error"


class ServingSetupError(ServingError):
    """The app cannot start: no applied plan, a view changed since apply, bad settings."""

    exit_code = 2
    code = "setup_error"


class ClientTransportError(ServingError):
    """Client side: the server could not be reached or did not answer in time."""

    status_code = 0
    code = "transport_error"


# Client side: which class an error answer becomes, by status code.
BY_STATUS: dict[int, type[ServingError]] = {
    400: MalformedRequest,
    404: ServiceNotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidRequest,
    431: HeadersTooLarge,
    503: OnlineTableUnavailableError,
}


class FeatureViewNotFound(ServingError):
    """A feature reference (``view:feature``) names a view the server does not serve."""

    status_code = 404
    code = "feature_view_not_found"


class SourceNotFound(ServingError):
    """A push names an event source the loaded repo does not define."""

    status_code = 404
    code = "source_not_found"


class InvalidRecords(ServingError):
    """Some pushed records were refused; the others (``accepted``) were written to the topic."""

    status_code = 422
    code = "invalid_records"

    def __init__(self, source: str, accepted: int, rejected: list[JSONObject]) -> None:
        first = rejected[0]
        super().__init__(
            f"source {source!r}: {len(rejected)} of {counted(accepted + len(rejected), 'record')} refused, the other "
            f"{accepted} written; first: record {first['index']}: {first['reason']}: {first['detail']}",
            hint="fix the records listed in 'rejected' and push only those again",
            field=f"records[{first['index']}]",
        )
        self.source = source
        self.accepted = accepted
        self.rejected = rejected

    def details(self) -> JSONObject:
        return {"source": self.source, "accepted": self.accepted, "rejected": self.rejected}


class PushUnavailable(ServingError):
    """Valid pushed records could not be written to Kafka in time."""

    status_code = 503
    code = "push_unavailable"


class ModelFileError(StreamfeatError):
    """A model file (``serving.model_file``) is missing, unreadable or not in the documented format."""

    exit_code = 2


class ModelServiceMismatch(StreamfeatError):
    """A model is asked to score with a feature service other than the one it was trained on
    (another name, or the same name whose features or windows changed: another fingerprint)."""

    exit_code = 2


class ScoringTimeColumnError(StreamfeatError, TypeError):
    """Batch scoring's time column is not epoch milliseconds nor time-zone-aware datetimes
    (a naive datetime is refused: a time zone is never guessed)."""

    exit_code = 2


class ScoringInputError(StreamfeatError, ValueError):
    """Batch scoring's entities cannot be scored: a column the service needs is missing, a
    row the server refuses (named by its row in the caller's frame, not in the request),
    a chunk larger than the server takes, or a missing value the model has no default for."""

    exit_code = 2
