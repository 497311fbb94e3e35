"""Hand-written OpenAPI schemas of the routes (documentation only; requests are
validated by serving.request on the orjson-parsed body, not by these schemas)."""

from __future__ import annotations

from engine.json_types import JSONObject

_SCALAR = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}]}
_KEY = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
_ONE_TIME: dict[str, list[JSONObject]] = {
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "date-time"}]
}
_AS_OF: JSONObject = {
    "anyOf": [*_ONE_TIME["anyOf"], {"type": "array", "items": _ONE_TIME}],
    "description": "evaluate as of this time: epoch milliseconds, or ISO-8601 with an offset, or a "
    "list with one such time per entity row (default: the request's wall-clock time)",
}
_ERROR: JSONObject = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "hint": {"type": "string"},
                "field": {"type": "string"},
                "transform": {"type": "string"},
                "reason": {"type": "string"},
            },
        }
    },
}


def _json(schema: JSONObject, description: str) -> JSONObject:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict[int | str, JSONObject]:
    text = {
        400: "malformed JSON",
        404: "unknown feature service",
        413: "body or entity count over the limit",
        422: "missing, extra or mistyped field (named in 'field')",
        500: "an on-demand transform failed",
        503: "online table unavailable, overloaded, or the definitions changed by apply since start (reason given)",
    }
    return {code: _json(_ERROR, text[code]) for code in codes}


def v1_request_body() -> JSONObject:
    schema: JSONObject = {
        "type": "object",
        "required": ["entities"],
        "additionalProperties": False,
        "properties": {
            "entities": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": _KEY},
                "description": "join key -> one value per entity row (lists of equal length)",
            },
            "request_data": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": _SCALAR},
                "description": "request field -> one value per entity row",
            },
            "as_of": _AS_OF,
            "include_metadata": {"type": "boolean", "default": False},
        },
    }
    example: JSONObject = {
        "entities": {"user_id": ["u1"], "merchant_id": ["m1"]},
        "request_data": {"amount": [42.0]},
        "include_metadata": True,
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}


def v1_responses() -> dict[int | str, JSONObject]:
    # A value is a scalar, null, or (last_n, first_n, last_distinct_n) a list of scalars.
    value: JSONObject = {"anyOf": [*_SCALAR["anyOf"], {"type": "null"}, {"type": "array", "items": _SCALAR}]}
    row: JSONObject = {"type": "object", "additionalProperties": value}
    schema: JSONObject = {
        "type": "object",
        "required": ["service", "as_of", "features"],
        "properties": {
            "service": {"type": "string"},
            "as_of": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]},
            "features": {"type": "array", "items": row},
            "metadata": {
                "type": "object",
                "properties": {
                    "statuses": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "string",
                                "enum": [
                                    "PRESENT",
                                    "NOT_FOUND",
                                    "DEFAULTED",
                                    "STALE",
                                    "INVALID",
                                    "FUTURE_EVENTS",
                                    "OVER_BOUND",
                                    "INCOMPLETE",
                                ],
                            },
                        },
                    },
                    "views": {"type": "object"},
                    "sources": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": {"type": "string", "enum": ["online", "log"]},
                        },
                    },
                },
            },
        },
    }
    return {200: _json(schema, "one object per entity row, in request order"), **errors(400, 404, 413, 422, 500, 503)}


def feast_request_body(services: list[str]) -> JSONObject:
    schema: JSONObject = {
        "type": "object",
        "required": ["entities"],
        "additionalProperties": True,
        "description": "Name a feature_service or list features; other fields Feast's clients send are ignored",
        "properties": {
            "feature_service": {"type": "string", "enum": services},
            "features": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[^:]+:[^:]+$"},
                "description": '"view:feature" references (instead of feature_service)',
            },
            "entities": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": _SCALAR},
                "description": "join keys and request fields -> one value per row",
            },
            "request_context": {"type": "object", "additionalProperties": {"type": "array", "items": _SCALAR}},
            "full_feature_names": {"type": "boolean", "default": False},
            "include_feature_view_version_metadata": {
                "type": "boolean",
                "default": False,
                "description": "accepted and ignored (no view versions)",
            },
            "as_of": _AS_OF,
        },
    }
    example: JSONObject = {
        "feature_service": "fraud_scoring",
        "entities": {"user_id": ["u1"], "merchant_id": ["m1"], "amount": [42.0]},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}


def feast_responses() -> dict[int | str, JSONObject]:
    column: JSONObject = {
        "type": "object",
        "required": ["values", "statuses", "event_timestamps"],
        "properties": {
            "values": {"type": "array"},
            "statuses": {
                "type": "array",
                "items": {"type": "string", "enum": ["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"]},
            },
            "event_timestamps": {"type": "array", "items": {"type": "string"}},
        },
    }
    schema: JSONObject = {
        "type": "object",
        "required": ["metadata", "results"],
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {
                    "feature_names": {"type": "array", "items": {"type": "string"}},
                    "as_of": {
                        "anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}],
                        "description": "streamfeat: the evaluation time in epoch ms (one per row when asked so)",
                    },
                },
            },
            "results": {"type": "array", "items": column},
        },
    }
    error = _json(
        {
            "type": "string",
            "description": 'JSON text {"module": "feast.errors", "class", "message", '
            '"code", "field"?} (Feast\'s error detail: its client re-raises that class)',
        },
        "an error, in the shape Feast's client reads",
    )
    return {
        200: _json(schema, "column-major, join keys first (Feast's shape)"),
        **{code: error for code in (400, 404, 413, 422, 500, 503)},
    }


def services_responses() -> dict[int | str, JSONObject]:
    return {200: _json({"type": "object", "properties": {"services": {"type": "array"}}}, "every service")}


def service_responses() -> dict[int | str, JSONObject]:
    return {200: _json({"type": "object"}, "inputs (with types) and outputs"), **errors(404)}


def simple_responses(status: str) -> dict[int | str, JSONObject]:
    return {200: _json({"type": "object", "properties": {"status": {"type": "string", "enum": [status]}}}, status)}


def readyz_responses() -> dict[int | str, JSONObject]:
    return {200: _json({"type": "object"}, "ready"), **errors(503)}
