"""Optional API keys for the feature server (docs/security.md).

Keys come from a YAML or JSON file named by the ``api_keys_file`` setting
(``STREAMFEAT_API_KEYS_FILE``)::

    keys:
      - name: checkout            # shown in logs instead of the key
        sha256: 9f86d081...       # hex SHA-256 of the key (preferred: the file holds no secret)
        services: [fraud_scoring] # or ["*"] for every service
      - name: prometheus
        sha256: 2c26b46b...
        services: []
        scopes: [ops:read]        # /metrics, /v1/ops/*, /v1/quality/*, /ui
      - name: local-dev
        key: dev-secret           # plain key, hashed at load

Clients send ``Authorization: Bearer <key>`` (what ``FeatureClient(api_key=...)`` sends).
Without a key file the middleware is not installed and the API is open, as before.

Every request except the open paths (``/healthz``, ``/readyz``) needs a known key: 401
otherwise. A feature request for a service the key does not allow gets 403, and so does
an operations route (metrics, dashboard, quality tables: they describe every service)
for a key without the ``ops:read`` scope; ``"*"`` does not imply it. ``GET /v1/services``
lists only the services the key may read (the key is left in the scope for the route). The presented
key is hashed and compared with ``hmac.compare_digest`` against every stored hash (no early
exit), and neither it nor its hash is ever logged: only the key's ``name``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import ClientDisconnect

from engine.exceptions import ConfigError
from serving.deps import receive_body, replay_body
from serving.exceptions import PayloadTooLarge, ServingError
from serving.request import parse_json
from serving.routes_feast import FEAST_ROUTE, error_response

log = logging.getLogger("streamfeat.serving.auth")

# Any: ASGI values differ by key (str, bytes, tuples, nested dicts, callables) per the ASGI spec
Scope = MutableMapping[str, Any]
# Any: ASGI values differ by key (str, bytes, tuples, nested dicts, callables) per the ASGI spec
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALL_SERVICES = "*"
OPS_READ = "ops:read"
SCOPES = frozenset({OPS_READ})
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
OPS_PATHS = frozenset({"/metrics", "/ui"})
OPS_PREFIXES = ("/v1/ops/", "/v1/quality/", "/ui/")
SCOPE_KEY = "streamfeat.api_key"  # where the middleware leaves the caller's ApiKey in the ASGI scope
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
_FEATURES_PREFIX = "/v1/features/"
_SERVICE_PREFIX = "/v1/services/"
_PUSH_PREFIX = "/v1/push/"


class Unauthorized(ServingError):
    """No API key, or one the server does not know."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ServingError):
    """A known API key asked for a feature service it is not allowed to read."""

    status_code = 403
    code = "forbidden"


class ApiKeyFileError(ConfigError):
    """The API key file is missing, unreadable or malformed."""


def hash_key(key: str) -> bytes:
    """SHA-256 digest of a key: what the file stores and what requests are compared by."""
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    """One key: a name for logs, the key's SHA-256 digest, the services it may read, its scopes."""

    name: str
    digest: bytes
    services: frozenset[str]
    scopes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ApiKeyFileError(
                f"API key: field 'name': expected a non-empty string, got {self.name!r}",
                hint="name each key (e.g. the calling application) so logs can say who called",
            )
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise ApiKeyFileError(
                f"API key '{self.name}': field 'digest': expected 32 bytes (SHA-256), got {type(self.digest).__name__}",
            )
        if not all(isinstance(s, str) and s for s in self.services) or not (self.services or self.scopes):
            raise ApiKeyFileError(
                f"API key '{self.name}': field 'services': expected a list of service names or \"*\" "
                f"(non-empty unless the key has scopes), got {sorted(self.services)!r}",
                hint='use services: ["*"] for a key that may read every service',
            )
        unknown = self.scopes - SCOPES
        if unknown:
            raise ApiKeyFileError(
                f"API key '{self.name}': field 'scopes': expected only {sorted(SCOPES)}, got {sorted(unknown)}",
                hint=f"'{OPS_READ}' opens /metrics, /v1/ops/*, /v1/quality/* and /ui",
            )

    def allows(self, service: str) -> bool:
        return ALL_SERVICES in self.services or service in self.services

    @property
    def reads_ops(self) -> bool:
        return OPS_READ in self.scopes


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[ApiKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ApiKeyFileError(
                "API keys: expected at least one key, got none",
                hint="an empty key file would lock every client out; unset api_keys_file instead",
            )
        seen: set[str] = set()
        for key in self.keys:
            if key.name in seen:
                raise ApiKeyFileError(f"API keys: name '{key.name}' appears twice", hint="give every key its own name")
            seen.add(key.name)

    def identify(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``; every stored digest is compared, in constant time."""
        digest = hash_key(presented)
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def _entry(i: int, raw: object, origin: str) -> ApiKey:
    if not isinstance(raw, Mapping):
        raise ApiKeyFileError(f"{origin}: keys[{i}]: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"name", "sha256", "key", "services", "scopes"}
    if unknown:
        raise ApiKeyFileError(
            f"{origin}: keys[{i}]: unknown fields {sorted(unknown)}",
            hint="allowed fields: name, sha256 or key, services, scopes",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ApiKeyFileError(
            f"{origin}: keys[{i}]: field 'name': expected a non-empty string, got {name!r}",
            hint="name each key (e.g. the calling application) so logs can say who called",
        )
    if ("sha256" in raw) == ("key" in raw):
        raise ApiKeyFileError(
            f"{origin}: keys[{i}] ({name!r}): expected exactly one of 'sha256' or 'key'",
            hint="prefer sha256: the hex SHA-256 of the key, so the file holds no secret",
        )
    if "sha256" in raw:
        hexdigest = raw["sha256"]
        if not isinstance(hexdigest, str) or not _SHA256_HEX.match(hexdigest.lower()):
            raise ApiKeyFileError(
                f"{origin}: keys[{i}] ({name!r}): field 'sha256': expected 64 hex digits",
                hint='compute it with: printf %s "$KEY" | sha256sum',
            )
        digest = bytes.fromhex(hexdigest)
    else:
        plain = raw["key"]
        if not isinstance(plain, str) or len(plain) < 16:
            raise ApiKeyFileError(
                f"{origin}: keys[{i}] ({name!r}): field 'key': expected a string of at least 16 characters",
                hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        digest = hash_key(plain)
    services = raw.get("services")
    if not isinstance(services, list):
        raise ApiKeyFileError(
            f"{origin}: keys[{i}] ({name!r}): field 'services': expected a list, got {type(services).__name__}",
            hint='e.g. services: ["fraud_scoring"]',
        )
    scopes = raw.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ApiKeyFileError(
            f"{origin}: keys[{i}] ({name!r}): field 'scopes': expected a list of strings, got {scopes!r}",
            hint=f"e.g. scopes: [{OPS_READ}]",
        )
    return ApiKey(name=name, digest=digest, services=frozenset(services), scopes=frozenset(scopes))


def is_ops_path(path: str) -> bool:
    return path in OPS_PATHS or path.startswith(OPS_PREFIXES)


def readable_services(scope: Scope, names: list[str]) -> list[str]:
    """``names`` the caller's API key may read (all of them when keys are off)."""
    key: ApiKey | None = scope.get(SCOPE_KEY)
    return names if key is None else [n for n in names if key.allows(n)]


def load_api_keys(path: Path) -> ApiKeys:
    """Read a key file (``.json``, or YAML for any other suffix)."""
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ApiKeyFileError(
            f"API key file {origin}: cannot be read ({exc.strerror})",
            hint="check the api_keys_file setting / STREAMFEAT_API_KEYS_FILE",
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiKeyFileError(
            f"API key file {origin}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {type(exc).__name__}"
        ) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ApiKeyFileError(
            f"API key file {origin}: expected a mapping with a list under 'keys'",
            hint="see docs/security.md for the format",
        )
    return ApiKeys(tuple(_entry(i, raw, origin) for i, raw in enumerate(data["keys"])))


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header: str = bytes(value).decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class ApiKeyMiddleware:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, max_request_bytes: int = 1_048_576) -> None:
        self.app = app
        self.keys = keys
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        key = self.keys.identify(token) if token is not None else None
        if key is None:
            why = "no API key" if token is None else "unknown API key"
            log.warning("refused %s %s: %s", scope.get("method", "?"), scope["path"], why)
            await self._answer(
                Unauthorized(
                    f"{why}: this server requires an API key", hint="send the header 'Authorization: Bearer <key>'"
                ),
                send,
                scope["path"],
            )
            return
        path: str = scope["path"]
        if is_ops_path(path) and not key.reads_ops:
            log.warning("refused key '%s' for operations route %s", key.name, path)
            await self._answer(
                Forbidden(
                    f"API key '{key.name}' may not read operations route {path}",
                    hint=f"ask for a key with scopes: [{OPS_READ}]",
                ),
                send,
            )
            return
        service: str | None = None
        if path.startswith(_FEATURES_PREFIX):
            service = path[len(_FEATURES_PREFIX) :]
        elif path.startswith(_SERVICE_PREFIX):
            service = path[len(_SERVICE_PREFIX) :]
        elif path.startswith(_PUSH_PREFIX) and ALL_SERVICES not in key.services:
            # A push writes to a topic: only a key allowed every service may.
            log.warning("refused key '%s' for push", key.name)
            await self._answer(
                Forbidden(
                    f"API key '{key.name}' may not push events", hint="push with a key allowed every service ('*')"
                ),
                send,
            )
            return
        elif path == FEAST_ROUTE and ALL_SERVICES not in key.services:
            # The service is named in the body: read it here (bounded), check, then replay it.
            try:
                body = await receive_body(receive, self.max_request_bytes)
            except PayloadTooLarge as exc:
                await self._answer(exc, send, path)
                return
            except ClientDisconnect:
                return
            service = self._feast_service(body)
            receive = replay_body(body, receive)
            if service is None and self._feast_refs(body):
                # "view:feature" references can name any view: only an all-services key may send them.
                log.warning("refused key '%s' for feature references", key.name)
                await self._answer(
                    Forbidden(
                        f"API key '{key.name}' may read its feature services only, not \"view:feature\" references",
                        hint="name a feature_service the key allows, or use a key allowed every service ('*')",
                    ),
                    send,
                    path,
                )
                return
        if service is not None and not key.allows(service):
            log.warning("refused key '%s' for service '%s'", key.name, service)
            await self._answer(
                Forbidden(
                    f"API key '{key.name}' may not read feature service '{service}'",
                    hint="ask for a key whose services include it",
                ),
                send,
                path,
            )
            return
        scope[SCOPE_KEY] = key
        await self.app(scope, receive, send)

    @staticmethod
    def _feast_service(body: bytes) -> str | None:
        try:
            doc = parse_json(body)
        except ServingError:
            return None  # the route answers 400/422 for the same body
        name = doc.get("feature_service")
        if isinstance(name, str):
            return str(name)
        return None

    @staticmethod
    def _feast_refs(body: bytes) -> bool:
        try:
            return parse_json(body).get("features") is not None
        except ServingError:
            return False

    @staticmethod
    async def _answer(error: ServingError, send: Send, path: str = "") -> None:
        response = error_response(error, path)
        if error.status_code == 401:
            response.headers["www-authenticate"] = "Bearer"
        await response({"type": "http"}, empty_receive, send)


async def empty_receive() -> Message:
    return {"type": "http.disconnect"}
