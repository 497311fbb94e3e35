"""What describes one local Kafka broker: its ports, version, heap, where its jars and
its data live, and the ``server.properties`` generated from it on every start."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION = "4.1.1"
DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 30.0
HOST = "127.0.0.1"

# The marker that identifies our JVMs (see the package docstring).
MARKER = "-Dstreamfeat.kafka=1"
PROPERTIES_NAME = "streamfeat-server.properties"

Progress = Callable[[str], None]


def _xdg_dir(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    # The XDG spec: a relative value is invalid and must be ignored.
    base = Path(value) if value and Path(value).is_absolute() else Path.home() / fallback
    return base / "streamfeat"


def cache_root() -> Path:
    """Where downloaded broker classpaths live: ``$STREAMFEAT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/streamfeat/kafka`` (``~/.cache/streamfeat/kafka``)."""
    override = os.environ.get("STREAMFEAT_CACHE_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return _xdg_dir("XDG_CACHE_HOME", ".cache") / "kafka"


def default_data_dir(port: int = DEFAULT_PORT) -> Path:
    """``$XDG_DATA_HOME/streamfeat/kafka/<port>`` (``~/.local/share/streamfeat/kafka/<port>``).

    One directory per port: two local brokers never share storage, and every clone or
    virtualenv of the same user finds the same broker.
    """
    return _xdg_dir("XDG_DATA_HOME", ".local/share") / "kafka" / str(port)


@dataclass(frozen=True)
class BrokerConfig:
    """Everything that describes one local broker."""

    port: int = DEFAULT_PORT
    controller_port: int | None = None  # None: port + 1
    data_dir: Path | None = None  # None: default_data_dir(port)
    version: str = DEFAULT_VERSION
    heap: str = DEFAULT_HEAP
    num_partitions: int = 3

    def __post_init__(self) -> None:
        for name in ("port", "controller_port"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"BrokerConfig.{name}: expected an int, got {type(value).__name__}")
            if not 1 <= value <= 65535:
                raise ValueError(f"BrokerConfig.{name}: expected 1..65535, got {value}")
        if self.controller_port is not None and self.controller_port == self.port:
            raise ValueError(
                f"BrokerConfig.controller_port: must differ from port {self.port}; hint: leave it unset to use port + 1"
            )
        if self.controller_port is None and self.port == 65535:
            raise ValueError("BrokerConfig.port: 65535 leaves no room for the controller port (port + 1)")
        if not self.version or not self.version[0].isdigit() or not self.version.startswith("4."):
            raise ValueError(f"BrokerConfig.version: expected a Kafka 4.x version like '4.1.1', got {self.version!r}")
        if self.num_partitions < 1:
            raise ValueError(f"BrokerConfig.num_partitions: expected >= 1, got {self.num_partitions}")
        if not self.heap or not self.heap[:-1].isdigit() or self.heap[-1] not in "mMgG":
            raise ValueError(f"BrokerConfig.heap: expected a JVM size like '512m', got {self.heap!r}")

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def resolved_controller_port(self) -> int:
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def root(self) -> Path:
        return (self.data_dir if self.data_dir is not None else default_data_dir(self.port)).resolve()

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        return self.root / PROPERTIES_NAME

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def jvm_out_file(self) -> Path:
        return self.log_dir / "jvm.out"

    @property
    def storage_dir(self) -> Path:
        return self.root / "data"


def properties_text(config: BrokerConfig) -> str:
    cport = config.resolved_controller_port
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{cport}",
        "listeners": f"PLAINTEXT://{HOST}:{config.port},CONTROLLER://{HOST}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{config.port},CONTROLLER://{HOST}:{cport}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(config.storage_dir),
        "num.partitions": str(config.num_partitions),
        # One node: every internal topic must accept replication factor 1.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests join consumer groups constantly; the default 3 s delay would add up.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # Two shared cores: fewer threads than the defaults.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
    }
    lines = ["# Generated by engine/kafka_local/config.py on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"
