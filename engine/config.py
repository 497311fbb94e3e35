"""One configuration for every ``streamfeat`` subcommand.

Precedence, lowest first: built-in defaults, ``[tool.streamfeat]`` in
``pyproject.toml``, ``streamfeat.yaml``, ``STREAMFEAT_*`` environment variables,
command-line flags. Unknown keys are errors (with the closest known key as a
hint): a typo must never be swallowed silently.

>>> settings = load_settings(Path("/nonexistent"), env={}, overrides={"kafka_bootstrap": "127.0.0.1:9093"})
>>> settings.kafka_bootstrap
'127.0.0.1:9093'
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from engine.bootstrap import bootstrap_problems
from engine.exceptions import ConfigError, SettingsError

ENV_PREFIX = "STREAMFEAT_"
#: The applied plan's file name inside the data (or state) directory (engine/plan.py).
PLAN_FILE_NAME = "plan.json"
#: The port settings: the lowest valid value and what a value means beyond being a port.
_PORT_SETTINGS: dict[str, tuple[int, str]] = {
    "serve_port": (1, ""),
    "metrics_port": (0, " (0: no metrics endpoint)"),
}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting streamfeat reads. Paths are relative to ``project_dir``."""

    project_dir: Path = Path(".")
    repo: Path = Path("feature_defs")
    data_dir: Path = Path(".streamfeat")
    kafka_bootstrap: str = "127.0.0.1:9092"
    state_shards: int = 8
    batch_size: int = 30_000  # records per Kafka consume at most (engine/io/kafka_source.py)
    log_root: str = ""  # empty: <data_dir>/log
    online: str = "rocksdb"  # rocksdb | redis
    redis_url: str = ""
    state_backup: str = ""  # "" (local shards only) | kafka (changelog topic, docs/deploy.md)
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    metrics_port: int = 9464
    # Serving's secondaries catch up this often (engine/state/online_rocksdb.py). The catch-up
    # CPU follows the data written, not the rounds (3-4% of a core at 10, 25 or 100 ms with
    # a writer at ~7k events/s), while the interval is added to freshness: 100 ms alone
    # used up the 100 ms p99 target.
    catch_up_interval_ms: int = 25
    max_entities_per_request: int = 1000
    max_request_bytes: int = 1_048_576
    request_log_dir: str = ""  # empty: no request logging (streamfeat consistency-check reads it)
    api_keys_file: str = ""  # empty: no API keys (serving/auth.py, docs/security.md)
    max_in_flight: int = 64  # per serving process; more concurrent requests get 503 (serving/shedding.py)
    push_sources: str = ""  # comma-separated event sources POST /v1/push/{source} accepts; empty: no push route
    # Slow clients (serving/http_guard.py): 408 past the read timeouts, 431 past the header size,
    # 503 for a client address with more open connections than the cap (0: no cap).
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    max_header_bytes: int = 65_536
    max_connections_per_client: int = 128
    # FastAPI's own OpenTelemetry spans, metrics and logs (serving/telemetry.py): off, since
    # with no provider configured its per-request check is pure cost (~4-7 us a request).
    serve_telemetry: str = "off"  # off | on

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SettingsError(problems)

    def problems(self) -> list[str]:
        """Every invalid value, each naming its setting, what was expected and what was given."""
        problems: list[str] = []
        for name, (low, meaning) in _PORT_SETTINGS.items():
            port = getattr(self, name)
            if not low <= port <= 65535:
                problems.append(
                    f"{name}: expected a port from {low} to 65535{meaning}, got {port}; "
                    f"pick a free one, e.g. {name}: {getattr(Settings, name)}"
                )
        problems += bootstrap_problems(self.kafka_bootstrap)
        if self.state_shards < 1 or self.state_shards > 4096:
            problems.append(f"state_shards: expected 1..4096, got {self.state_shards}")
        if self.batch_size < 1:
            problems.append(f"batch_size: expected a positive integer, got {self.batch_size}")
        if self.online not in ("rocksdb", "redis"):
            problems.append(f"online: expected 'rocksdb' or 'redis', got {self.online!r}")
        if self.online == "redis" and not self.redis_url:
            problems.append("redis_url: required when online is 'redis' (e.g. redis://127.0.0.1:6379/0)")
        if self.state_backup not in ("", "kafka"):
            problems.append(f"state_backup: expected '' (off) or 'kafka' (changelog topic), got {self.state_backup!r}")
        if self.serve_telemetry not in ("off", "on"):
            problems.append(
                f"serve_telemetry: expected 'off' or 'on' (FastAPI's OpenTelemetry telemetry), "
                f"got {self.serve_telemetry!r}"
            )
        if self.max_in_flight < 1:
            problems.append(f"max_in_flight: expected >= 1, got {self.max_in_flight}")
        if self.max_entities_per_request < 1:
            problems.append(
                f"max_entities_per_request: expected >= 1 entity rows per request, got {self.max_entities_per_request}; "
                f"e.g. max_entities_per_request: {Settings.max_entities_per_request}"
            )
        if self.max_request_bytes < 1024:  # smaller than any real feature request
            problems.append(
                f"max_request_bytes: expected >= 1024 bytes, got {self.max_request_bytes}; "
                f"e.g. max_request_bytes: {Settings.max_request_bytes}"
            )
        if not self.serve_host.strip():
            problems.append(
                "serve_host: expected a host name or address to listen on, got an empty value; "
                "e.g. serve_host: 127.0.0.1 (loopback only; 0.0.0.0 listens on every interface)"
            )
        for name in ("header_timeout_ms", "body_timeout_ms", "max_header_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_connections_per_client < 0:
            problems.append(
                f"max_connections_per_client: expected >= 0 (0: no cap), got {self.max_connections_per_client}"
            )
        if self.catch_up_interval_ms < 1:
            problems.append(f"catch_up_interval_ms: expected >= 1, got {self.catch_up_interval_ms}")
        return problems

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.project_dir / value

    @property
    def repo_path(self) -> Path:
        return self.path(self.repo)

    @property
    def state_dir(self) -> Path:
        return self.path(self.data_dir) / "state"

    @property
    def plan_file(self) -> Path:
        return self.path(self.data_dir) / PLAN_FILE_NAME

    @property
    def serve_url(self) -> str:
        """Where ``streamfeat serve`` answers with these settings."""
        return serve_url(self.serve_host, self.serve_port)

    @property
    def log_uri(self) -> str:
        return self.log_root or str(self.path(self.data_dir) / "log")


def serve_url(host: str, port: int) -> str:
    """The feature server's base URL at ``host`` and ``port`` (serve_host, serve_port)."""
    return f"http://{host}:{port}"


_FIELD_TYPES: dict[str, type] = {
    f.name: (Path if "Path" in str(f.type) else int if "int" in str(f.type) else str) for f in fields(Settings)
}


#: A setting's value once coerced to its field's type.
SettingValue = str | int | Path


def _expected(key: str) -> str:
    """What a value of setting ``key`` must be, as error messages say it."""
    if key in _PORT_SETTINGS:
        low, meaning = _PORT_SETTINGS[key]
        return f"an integer port from {low} to 65535{meaning}"
    return {int: "an integer", Path: "a path (a string)", str: "a string"}[_FIELD_TYPES[key]]


def _example(key: str) -> str:
    """A valid line for setting ``key`` (its default), for the hint of a refused value."""
    return f"e.g. {key}: {getattr(Settings(), key)}"


def _coerce(key: str, raw: object, origin: str) -> SettingValue:
    if key not in _FIELD_TYPES:
        close = difflib.get_close_matches(key, list(_FIELD_TYPES), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(_FIELD_TYPES))}"
        raise ConfigError(f"unknown setting '{key}' in {origin}", hint=hint)
    wanted = _FIELD_TYPES[key]
    if wanted is int:
        # A bool is an int to Python, and a float such as 8000.5 would be truncated: neither is taken.
        number: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, float) and raw.is_integer():
            number = int(raw)
        elif isinstance(raw, str):
            with contextlib.suppress(ValueError):
                number = int(raw.strip())
        if number is None:
            raise ConfigError(
                f"setting '{key}' in {origin}: expected {_expected(key)}, got {raw!r}",
                hint=f"write a whole number, {_example(key)}",
            )
        return number
    if wanted is Path and isinstance(raw, os.PathLike):  # a flag's type=Path
        return Path(raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        shown = "nothing (an empty value)" if raw is None else f"{type(raw).__name__} {raw!r}"
        raise ConfigError(
            f"setting '{key}' in {origin}: expected {_expected(key)}, got {shown}",
            hint=f"write one value, {_example(key)}",
        )
    return Path(str(raw)) if wanted is Path else str(raw)


def _read_pyproject(project_dir: Path) -> Mapping[str, object]:
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", hint="save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the line it names") from None
    section = data.get("tool", {}).get("streamfeat", {})
    if not isinstance(section, dict):
        raise ConfigError(
            f"[tool.streamfeat] in {path} must be a table", hint="write [tool.streamfeat] then key = value lines"
        )
    return section


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key said twice in one mapping (YAML keeps the last
    one silently, so the first would be swallowed)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1}): "
                    "keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read_yaml(project_dir: Path) -> Mapping[str, object]:
    path = project_dir / "streamfeat.yaml"
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not UTF-8 text: byte {exc.object[exc.start]:#04x} on line {line} cannot be read",
            hint="save the file as UTF-8",
        ) from None
    try:
        loader = _UniqueKeyLoader(text)  # a SafeLoader subclass
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", hint="fix the line it names") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of settings, got {type(data).__name__}",
            hint="write one `key: value` line per setting, e.g. serve_port: 8000",
        )
    return data


#: Where a setting's value comes from: (said in full for errors, said in short for --help).
_Origin = tuple[str, str]


def _configured(root: Path, environ: Mapping[str, str]) -> Iterator[tuple[str, object, _Origin] | ConfigError]:
    """Every setting the project and the environment give, lowest precedence first, as
    (key, raw value, origin); a layer that cannot be read at all comes as its ConfigError."""
    for origin, short, read in (
        (f"{root / 'pyproject.toml'} [tool.streamfeat]", "[tool.streamfeat] of pyproject.toml", _read_pyproject),
        (str(root / "streamfeat.yaml"), "streamfeat.yaml", _read_yaml),
    ):
        try:
            layer = read(root)
        except ConfigError as exc:
            yield exc
            continue
        for key, raw in layer.items():
            yield str(key), raw, (origin, short)
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            if key in ("cache_dir", "faults", "faults_seed", "faults_soak_s"):  # engine.kafka_local, tests/faults
                continue
            yield key, raw, (f"environment variable {name}", name)


def _problem(exc: ConfigError) -> str:
    return f"{exc}; {exc.hint}" if exc.hint else str(exc)


def _merged(
    root: Path, environ: Mapping[str, str], overrides: Mapping[str, object]
) -> tuple[dict[str, SettingValue], dict[str, _Origin], list[str]]:
    """Every layer merged: the values that coerce, where each comes from, and every problem."""
    values: dict[str, SettingValue] = {}
    origins: dict[str, _Origin] = {}
    problems: list[str] = []
    given = [*_configured(root, environ)]
    given += [
        (key, raw, ("command-line flags", "command-line flags")) for key, raw in overrides.items() if raw is not None
    ]
    for item in given:
        if isinstance(item, ConfigError):
            problems.append(_problem(item))
            continue
        key, raw, origin = item
        try:
            values[key] = _coerce(key, raw, origin[0])
        except ConfigError as exc:
            problems.append(_problem(exc))
            values.pop(key, None)  # a lower layer's value would hide this problem's fix
            continue
        origins[key] = origin
    return values, origins, problems


def load_settings(
    project_dir: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge every configuration layer into one validated :class:`Settings`. Raises
    :class:`SettingsError` naming every problem of every layer at once."""
    root = (project_dir or Path.cwd()).resolve() if project_dir is not None else Path.cwd()
    values, origins, problems = _merged(root, os.environ if env is None else env, overrides or {})
    # Each value has its own field's type (checked by _coerce): only replace() sees them all.
    typed: dict[str, Any] = {"project_dir": root, **values}
    try:
        settings = dataclasses.replace(Settings(), **typed)
    except SettingsError as exc:
        # Each problem starts with its setting's name: say where that setting was given.
        for problem in exc.problems:
            origin = origins.get(problem.split(":", 1)[0])
            problems.append(f"{problem} (from {origin[0]})" if origin else problem)
    if problems:
        raise SettingsError(problems)
    return settings


def configured_setting(
    key: str, project_dir: Path | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[SettingValue, str | None]:
    """The value setting ``key`` takes in ``project_dir`` (default: the current directory)
    when no flag gives one, and where it comes from in short (``"streamfeat.yaml"``,
    ``"STREAMFEAT_DATA_DIR"``; None: the built-in default). Raises ConfigError as
    :func:`load_settings` does for a broken configuration.

    >>> configured_setting("serve_port", Path("/nonexistent"), env={"STREAMFEAT_SERVE_PORT": "8080"})
    (8080, 'STREAMFEAT_SERVE_PORT')
    """
    if key not in _FIELD_TYPES:
        raise ValueError(f"configured_setting: key: expected one of {sorted(_FIELD_TYPES)}, got {key!r}")
    root = project_dir if project_dir is not None else Path.cwd()
    values, origins, problems = _merged(root, os.environ if env is None else env, {})
    if problems:  # every key checked, as load_settings does
        raise SettingsError(problems)
    if key not in values:
        return getattr(Settings(), key), None
    return values[key], origins[key][1]
