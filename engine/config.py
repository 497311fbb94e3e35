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

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from engine.exceptions import ConfigError

ENV_PREFIX = "STREAMFEAT_"
#: The applied plan's file name inside the data (or state) directory (engine/plan.py).
PLAN_FILE_NAME = "plan.json"


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

    def __post_init__(self) -> None:
        problems: list[str] = []
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
        if self.max_in_flight < 1:
            problems.append(f"max_in_flight: expected >= 1, got {self.max_in_flight}")
        for name in ("header_timeout_ms", "body_timeout_ms", "max_header_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_connections_per_client < 0:
            problems.append(
                f"max_connections_per_client: expected >= 0 (0: no cap), got {self.max_connections_per_client}"
            )
        if self.catch_up_interval_ms < 1:
            problems.append(f"catch_up_interval_ms: expected >= 1, got {self.catch_up_interval_ms}")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))

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
    def log_uri(self) -> str:
        return self.log_root or str(self.path(self.data_dir) / "log")


_FIELD_TYPES: dict[str, type] = {
    f.name: (Path if "Path" in str(f.type) else int if "int" in str(f.type) else str) for f in fields(Settings)
}


#: A setting's value once coerced to its field's type.
SettingValue = str | int | Path


def _coerce(key: str, raw: object, origin: str) -> SettingValue:
    if key not in _FIELD_TYPES:
        close = difflib.get_close_matches(key, list(_FIELD_TYPES), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(_FIELD_TYPES))}"
        raise ConfigError(f"unknown setting '{key}' in {origin}", hint=hint)
    wanted = _FIELD_TYPES[key]
    if wanted is int:
        if isinstance(raw, bool):
            raise ConfigError(f"setting '{key}' in {origin}: expected an integer, got {raw!r}")
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"setting '{key}' in {origin}: expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting '{key}' in {origin}: expected an integer, got {raw!r}") from None
    if wanted is Path:
        return Path(str(raw))
    if not isinstance(raw, str | int | float):
        raise ConfigError(f"setting '{key}' in {origin}: expected a string, got {type(raw).__name__}")
    return str(raw)


def _read_pyproject(project_dir: Path) -> Mapping[str, object]:
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    section = data.get("tool", {}).get("streamfeat", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.streamfeat] in {path} must be a table")
    return section


def _read_yaml(project_dir: Path) -> Mapping[str, object]:
    path = project_dir / "streamfeat.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _configured(root: Path, environ: Mapping[str, str]) -> Iterator[tuple[str, object, str, str]]:
    """Every setting the project and the environment give, lowest precedence first:
    (key, raw value, where it is said in full for errors, where it is said in short)."""
    for origin, short, layer in (
        (f"{root / 'pyproject.toml'} [tool.streamfeat]", "[tool.streamfeat] of pyproject.toml", _read_pyproject(root)),
        (str(root / "streamfeat.yaml"), "streamfeat.yaml", _read_yaml(root)),
    ):
        for key, raw in layer.items():
            yield str(key), raw, origin, short
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            if key in ("cache_dir", "faults", "faults_seed", "faults_soak_s"):  # engine.kafka_local, tests/faults
                continue
            yield key, raw, f"environment variable {name}", name


def load_settings(
    project_dir: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge every configuration layer into one validated :class:`Settings`."""
    root = (project_dir or Path.cwd()).resolve() if project_dir is not None else Path.cwd()
    # Each value has its own field's type (checked by _coerce): only replace() sees them all.
    values: dict[str, Any] = {"project_dir": root}
    for key, raw, origin, _ in _configured(root, os.environ if env is None else env):
        values[key] = _coerce(key, raw, origin)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw, "command-line flags")
    return dataclasses.replace(Settings(), **values)


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
    value: SettingValue = getattr(Settings(), key)
    where: str | None = None
    for name, raw, origin, short in _configured(root, os.environ if env is None else env):
        coerced = _coerce(name, raw, origin)  # every key checked, as load_settings does
        if name == key:
            value, where = coerced, short
    return value, where
