"""Where a shadow run's questions come from: a JSON-lines requests file, or the request
log ``streamfeat serve`` writes (``request_log_dir``, serving/request_log.py).

Requests file, one request per line::

    {"feature_service": "fraud_scoring", "entities": {"user_id": ["u1", "u2"], "merchant_id": ["m1", "m2"]},
     "request_data": {"amount": [25.0, 7.5]}, "as_of": 1767225600000}

``features`` (a list of ``"view:feature"``) may replace ``feature_service``;
``request_data`` and ``as_of`` (epoch ms or ISO-8601 with an offset) are optional.
Request fields travel inside ``entities`` as Feast sends them. A logged request is asked
again now (the baseline cannot answer about the past); its join keys and request data
are replayed as they were.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from engine.io.request_log import read_request_log
from serving.exceptions import InvalidRequest
from serving.request import parse_as_of
from serving.shadow.exceptions import ShadowSetupError
from serving.shadow.runner import ShadowRequest

REQUEST_KEYS = frozenset({"feature_service", "features", "entities", "request_data", "as_of"})
EXAMPLE = (
    '{"feature_service": "fraud_scoring", "entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, '
    '"request_data": {"amount": [25.0]}}'
)


def request_from_line(raw: object, index: int, where: str) -> ShadowRequest:
    if not isinstance(raw, dict):
        raise ShadowSetupError(f"{where}: expected a JSON object, got {str(raw)[:60]}", hint=f"e.g. {EXAMPLE}")
    unknown = set(raw) - REQUEST_KEYS
    if unknown:
        raise ShadowSetupError(
            f"{where}: unknown {'field' if len(unknown) == 1 else 'fields'} {sorted(unknown)}; expected some of {sorted(REQUEST_KEYS)}",
            hint=f"e.g. {EXAMPLE}",
        )
    entities, data = raw.get("entities"), raw.get("request_data") or {}
    if (
        not isinstance(entities, dict)
        or not isinstance(data, dict)
        or not all(isinstance(v, list) for v in (*entities.values(), *data.values()))
    ):
        raise ShadowSetupError(
            f"{where}: fields 'entities' / 'request_data': expected objects of column -> list of values",
            hint=f"e.g. {EXAMPLE}",
        )
    features = raw.get("features") or ()
    if not isinstance(features, list | tuple) or not all(isinstance(f, str) for f in features):
        raise ShadowSetupError(f"{where}: field 'features': expected a list of \"view:feature\" strings")
    try:
        as_of = parse_as_of(raw["as_of"]) if raw.get("as_of") is not None else None
        return ShadowRequest(index, {**entities, **data}, raw.get("feature_service"), tuple(features), as_of)
    except InvalidRequest as exc:
        raise ShadowSetupError(f"{where}: {exc}", hint=exc.hint) from None
    except (ValueError, TypeError) as exc:
        raise ShadowSetupError(f"{where}: {exc}", hint=f"e.g. {EXAMPLE}") from None


def read_requests_file(path: Path) -> list[ShadowRequest]:
    """Every request of ``path``; a bad line stops the run before anything is sent, naming the line."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ShadowSetupError(f"--requests {path}: {exc.strerror or exc}") from None
    requests: list[ShadowRequest] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"--requests {path}, line {number}"
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ShadowSetupError(f"{where}: not JSON ({exc})", hint=f"one request per line, e.g. {EXAMPLE}") from None
        requests.append(request_from_line(raw, len(requests), where))
    if not requests:
        raise ShadowSetupError(f"--requests {path}: no requests in it", hint=f"one request per line, e.g. {EXAMPLE}")
    return requests


def read_replay_log(directory: Path, service: str | None = None, limit: int | None = None) -> list[ShadowRequest]:
    """Logged requests (one per answered row), oldest file first, at most ``limit``."""
    table = read_request_log(directory, service)
    if table.num_rows == 0:
        raise ShadowSetupError(
            f"--replay-log {directory}: no logged requests" + (f" of service {service!r}" if service else ""),
            hint="serve with request_log_dir set (STREAMFEAT_REQUEST_LOG_DIR) to log requests",
        )
    columns = table.select(["service", "keys_json", "request_json"]).to_pydict()
    requests: list[ShadowRequest] = []
    for i, (name, keys, data) in enumerate(
        zip(columns["service"], columns["keys_json"], columns["request_json"], strict=True)
    ):
        if limit is not None and i >= limit:
            break
        row = {**orjson.loads(keys), **orjson.loads(data)}
        requests.append(ShadowRequest(i, {k: [v] for k, v in row.items()}, service=name))
    return requests
