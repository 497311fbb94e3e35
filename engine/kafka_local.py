"""A local Apache Kafka 4.x broker for development and tests, without Docker.

The broker's classpath comes from Maven Central (``engine/kafka_files/pom.xml``, package
data shipped in the wheel), resolved once into ``<cache>/<version>/lib``. Both places
belong to the user, not to whichever clone or virtualenv started the broker:

- jars: ``$STREAMFEAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamfeat/kafka``
  (``~/.cache/streamfeat/kafka``);
- broker data and logs, one directory per port: ``$XDG_DATA_HOME/streamfeat/kafka/<port>``
  (``~/.local/share/streamfeat/kafka/<port>``), unless ``--data-dir`` says otherwise.

One JVM runs a combined KRaft
broker + controller bound to 127.0.0.1 only, with settings that suit tests
(three partitions by default, replication factor 1 everywhere, no initial
rebalance delay, a small heap).

Layout of a broker's data directory::

    streamfeat-server.properties   generated on every start
    kafka.pid                      pid of the running JVM
    ports.json                     ports the storage was formatted for
    data/                          Kafka log.dirs (KRaft metadata + topics)
    logs/server.log                Log4j 2 output of the broker
    logs/jvm.out                   stdout/stderr of the JVM (crashes land here)

Every JVM carries the marker ``-Dstreamfeat.kafka=1`` on its command line, so a
stray broker is found with ``pgrep -f streamfeat.kafka``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from engine.exceptions import KafkaBrokerError, KafkaUnreachableError

_KAFKA_FILES = Path(__file__).resolve().parent / "kafka_files"
POM_FILE = _KAFKA_FILES / "pom.xml"
LOG4J_CONFIG = _KAFKA_FILES / "log4j2.xml"

DEFAULT_VERSION = "4.1.1"
DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 30.0
HOST = "127.0.0.1"

# The marker that identifies our JVMs (see module docstring).
MARKER = "-Dstreamfeat.kafka=1"
PROPERTIES_NAME = "streamfeat-server.properties"
_STAMP_NAME = ".complete"

Progress = Callable[[str], None]

# JVMs started by this Python process: kept so that stopping them also reaps them
# (an unreaped child stays a zombie, which os.kill(pid, 0) reports as alive).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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


@dataclass(frozen=True)
class BrokerHandle:
    """A reachable broker; ``started_by_us`` tells whether the caller should stop it."""

    bootstrap: str
    started_by_us: bool
    pid: int | None = None
    log_file: Path | None = None


@dataclass(frozen=True)
class BrokerStatus:
    """The truth about a local broker: running means our pid is alive AND metadata answers."""

    bootstrap: str
    pid: int | None
    pid_alive: bool
    metadata_ok: bool
    log_file: Path
    data_dir: Path
    foreign: bool = False  # a broker answers on the port but it is not ours
    detail: str = field(default="")

    @property
    def running(self) -> bool:
        return self.pid_alive and self.metadata_ok

    def describe(self) -> str:
        if self.running:
            return f"Kafka is running at {self.bootstrap} (pid {self.pid}); data {self.data_dir}, log {self.log_file}"
        if self.foreign:
            return (
                f"Kafka is already running at {self.bootstrap}, started outside this data directory ({self.data_dir})"
            )
        if self.pid_alive:
            return (
                f"Kafka process {self.pid} is alive but {self.bootstrap} does not answer metadata "
                f"requests (starting or stuck; see {self.log_file})"
            )
        return f"Kafka is not running at {self.bootstrap}; its data directory is {self.data_dir}" + (
            f" ({self.detail})" if self.detail else ""
        )


# --------------------------------------------------------------------------- probes


def _port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def metadata_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request."""
    host, _, port_text = bootstrap.rpartition(":")
    # A plain TCP check first: librdkafka would log every refused connection to stderr.
    if host in (HOST, "localhost") and port_text.isdigit() and not _port_open(int(port_text)):
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 2000})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


UNREACHABLE_HINT = (
    "start one with `streamfeat kafka start`, or check kafka_bootstrap in streamfeat.yaml "
    "(or --bootstrap / STREAMFEAT_KAFKA_BOOTSTRAP)"
)


def require_broker(bootstrap: str, *, consequence: str = "", timeout_s: float = 5.0) -> None:
    """Raise :class:`KafkaUnreachableError` (one line naming ``bootstrap``, with a hint) when
    no broker answers there; ``consequence`` says what was therefore not done."""
    if not metadata_answers(bootstrap, timeout_s=timeout_s):
        raise KafkaUnreachableError(
            f"no Kafka broker answers at {bootstrap}" + (f"; {consequence}" if consequence else ""),
            hint=UNREACHABLE_HINT,
        )


def _read_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _is_our_broker(pid: int, config: BrokerConfig) -> bool:
    """Alive, not a zombie, and its command line names our marker and our properties file."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    if _is_zombie(pid):
        return False
    args = _read_cmdline(pid)
    return MARKER in args and str(config.properties_file) in args


def _marked_pids(config: BrokerConfig) -> list[int]:
    """Every live JVM of this data directory, whether or not the pid file knows it."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_our_broker(int(entry.name), config):
            pids.append(int(entry.name))
    return sorted(pids)


def _read_pid(config: BrokerConfig) -> int | None:
    try:
        text = config.pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def broker_status(
    port: int = DEFAULT_PORT, *, data_dir: Path | None = None, config: BrokerConfig | None = None
) -> BrokerStatus:
    """Report whether our broker for ``port``/``data_dir`` runs (pid alive AND metadata answers)."""
    config = config or BrokerConfig(port=port, data_dir=data_dir)
    recorded = _read_pid(config)
    alive = recorded is not None and _is_our_broker(recorded, config)
    detail = ""
    if recorded is not None and not alive:
        detail = f"stale pid file {config.pid_file} names pid {recorded}, which is not our broker"
    pid = recorded if alive else None
    if not alive:
        # The pid file may be gone or stale while our JVM still runs: trust /proc.
        found = _marked_pids(config)
        if found:
            pid, alive, detail = found[0], True, ""
    answers = metadata_answers(config.bootstrap)
    return BrokerStatus(
        bootstrap=config.bootstrap,
        pid=pid,
        pid_alive=alive,
        metadata_ok=answers,
        log_file=config.log_file,
        data_dir=config.root,
        foreign=answers and not alive,
        detail=detail,
    )


# ------------------------------------------------------------------ classpath


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_libs(version: str = DEFAULT_VERSION, *, progress: Progress | None = None) -> Path:
    """Return ``<cache>/<version>/lib`` holding the broker's jars, downloading them once.

    A stamp file marks a complete download; a lock file keeps two processes from
    downloading into the same place at once.
    """
    version_dir = cache_root() / version
    lib_dir = version_dir / "lib"
    stamp = version_dir / _STAMP_NAME
    if stamp.is_file():
        return lib_dir
    with _file_lock(version_dir / ".lock"):
        if stamp.is_file():
            return lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError(
                "cannot download Apache Kafka: the 'mvn' command was not found",
                hint="install Maven (apt-get install maven) or use docker-compose.kafka.yml",
            )
        if progress is not None:
            progress(f"downloading Apache Kafka {version} from Maven Central into {lib_dir} (once)")
        staging = version_dir / f"lib.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM_FILE),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        jar = staging / f"kafka_2.13-{version}.jar"
        if result.returncode != 0 or not jar.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            tail = _maven_error(result.stdout + result.stderr)
            raise KafkaBrokerError(
                f"downloading Apache Kafka {version} with Maven failed (exit {result.returncode}):\n{tail}",
                hint=f"check that org.apache.kafka:kafka_2.13:{version} exists; the pom is {POM_FILE}",
            )
        shutil.rmtree(lib_dir, ignore_errors=True)
        staging.rename(lib_dir)
        jars = sorted(p.name for p in lib_dir.glob("*.jar"))
        stamp.write_text("\n".join(jars) + "\n")
    return lib_dir


def _maven_error(output: str) -> str:
    """The lines of Maven's output that say what failed (colour codes and advice removed)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    errors = [
        line
        for line in lines
        if line.startswith("[ERROR]")
        and len(line) > 8
        and not any(word in line for word in ("re-run Maven", "Re-run Maven", "[ERROR] [Help", "For more information"))
    ]
    return "\n".join(errors or [line for line in lines if line][-15:])


# ------------------------------------------------------------------- storage


def _properties_text(config: BrokerConfig) -> str:
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
    lines = ["# Generated by engine/kafka_local.py on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _new_cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in unpadded URL-safe base64; like Kafka's
    # own generator, avoid a leading '-' which command-line parsers mistake for a flag.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaBrokerError(
            "cannot start Kafka: the 'java' command was not found",
            hint="install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)",
        )
    return java


def _java_command(
    config: BrokerConfig, lib_dir: Path, main_class: str, *args: str, jvm_options: tuple[str, ...] = ()
) -> list[str]:
    return [
        _java(),
        MARKER,
        *jvm_options,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={config.log_dir}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{lib_dir}/*",
        main_class,
        *args,
    ]


def _format_storage(config: BrokerConfig, lib_dir: Path) -> None:
    ports_file = config.root / "ports.json"
    wanted = {"port": config.port, "controller_port": config.resolved_controller_port}
    if (config.storage_dir / "meta.properties").is_file():
        recorded = json.loads(ports_file.read_text()) if ports_file.is_file() else None
        if recorded is not None and recorded != wanted:
            raise KafkaBrokerError(
                f"Kafka storage in {config.storage_dir} was formatted for ports {recorded}, "
                f"not {wanted}: the KRaft voter set remembers the controller address",
                hint=f"use another --data-dir, or delete {config.root} to start afresh",
            )
        return
    shutil.rmtree(config.storage_dir, ignore_errors=True)
    command = _java_command(
        config,
        lib_dir,
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "--cluster-id",
        _new_cluster_id(),
        "--config",
        str(config.properties_file),
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaBrokerError(
            f"formatting Kafka storage {config.storage_dir} failed (exit {result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-2000:]}",
            hint=f"see {config.log_file}",
        )
    ports_file.write_text(json.dumps(wanted) + "\n")


# ------------------------------------------------------------- start / stop


def _log_tail(config: BrokerConfig, lines: int = 20) -> str:
    parts = []
    for path in (config.jvm_out_file, config.log_file):
        try:
            text = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            continue
        interesting = [line for line in text if "ERROR" in line or "Exception" in line or "FATAL" in line]
        chosen = (interesting or text)[-lines:]
        if chosen:
            parts.append(f"--- {path} ---\n" + "\n".join(chosen))
    return "\n".join(parts)


def _wait_until_answers(
    config: BrokerConfig, pid: int, timeout_s: float, child: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        exited = child.poll() if child is not None else None
        # Our own child is alive exactly while poll() says so; its /proc command line can
        # read empty for a moment while the JVM starts, so it only decides for other pids.
        gone = exited is not None if child is not None else not _is_our_broker(pid, config)
        if gone:
            _CHILDREN.pop(pid, None)
            config.pid_file.unlink(missing_ok=True)
            code = f" with exit code {exited}" if exited is not None else ""
            raise KafkaBrokerError(
                f"Kafka (pid {pid}) exited during start-up{code}; log {config.log_file}\n" + _log_tail(config),
                hint=f"read {config.log_file} and {config.jvm_out_file}",
            )
        if metadata_answers(config.bootstrap, timeout_s=2.0):
            return
        if time.monotonic() >= deadline:
            raise KafkaBrokerError(
                f"Kafka (pid {pid}) did not answer a metadata request at {config.bootstrap} "
                f"within {timeout_s:.0f} s; log {config.log_file}\n" + _log_tail(config),
                hint=f"read {config.log_file}; `streamfeat kafka stop` ends the process",
            )
        time.sleep(0.25)


def start_broker(
    port: int = DEFAULT_PORT,
    *,
    data_dir: Path | None = None,
    config: BrokerConfig | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    progress: Progress | None = None,
) -> BrokerHandle:
    """Start our broker (or find it already running) and wait until metadata answers.

    ``started_by_us`` is False when our broker was already running. A port taken
    by anything else (including a Kafka that streamfeat did not start) is an error.
    """
    config = config or BrokerConfig(port=port, data_dir=data_dir)
    with _file_lock(config.root / ".start.lock"):
        return _start_locked(config, timeout_s, progress)


def _start_locked(config: BrokerConfig, timeout_s: float, progress: Progress | None) -> BrokerHandle:
    # Callers hold the start lock: two processes (say, two pytest sessions) must not
    # both see "not running" and race to start the same broker.
    status = broker_status(config=config)
    if status.pid_alive:
        running_pid = status.pid if status.pid is not None else -1
        if _read_pid(config) != running_pid:  # found through /proc: repair the pid file
            config.pid_file.write_text(f"{running_pid}\n")
        if not status.metadata_ok:  # still starting (another `start` launched it)
            _wait_until_answers(config, running_pid, timeout_s, _CHILDREN.get(running_pid))
        return BrokerHandle(config.bootstrap, started_by_us=False, pid=status.pid, log_file=config.log_file)
    config.pid_file.unlink(missing_ok=True)
    for busy in (config.port, config.resolved_controller_port):
        if _port_open(busy):
            raise KafkaBrokerError(
                f"cannot start Kafka: {HOST}:{busy} is already in use"
                + (" by a Kafka broker streamfeat did not start" if status.foreign and busy == config.port else ""),
                hint="stop whatever listens there, or pick another --port",
            )
    lib_dir = ensure_kafka_libs(config.version, progress=progress)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    config.properties_file.write_text(_properties_text(config))
    _format_storage(config, lib_dir)
    heap = (f"-Xmx{config.heap}", f"-Xms{min(128, _heap_mb(config.heap))}m")
    command = _java_command(
        config,
        lib_dir,
        "kafka.Kafka",
        str(config.properties_file),
        jvm_options=(*heap, "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError"),
    )
    if progress is not None:
        progress(f"starting Kafka {config.version} at {config.bootstrap} (data {config.root})")
    with config.jvm_out_file.open("ab") as out:
        # A new session: Ctrl-C in the terminal that ran `start` must not kill the broker.
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config.root,
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    config.pid_file.write_text(f"{child.pid}\n")
    try:
        _wait_until_answers(config, child.pid, timeout_s, child)
    except KafkaBrokerError:
        _terminate(child.pid, DEFAULT_STOP_TIMEOUT_S)
        config.pid_file.unlink(missing_ok=True)
        raise
    return BrokerHandle(config.bootstrap, started_by_us=True, pid=child.pid, log_file=config.log_file)


def _heap_mb(heap: str) -> int:
    number = int(heap[:-1])
    return number * 1024 if heap[-1] in "gG" else number


def _gone(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        _CHILDREN.pop(pid, None)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 10.0):
        raise KafkaBrokerError(f"Kafka process {pid} survived SIGKILL", hint=f"inspect it with ps -p {pid}")


def stop_broker(
    port: int = DEFAULT_PORT,
    *,
    data_dir: Path | None = None,
    config: BrokerConfig | None = None,
    timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> list[int]:
    """Stop every JVM of this broker (pid file or found by marker); return the pids stopped."""
    config = config or BrokerConfig(port=port, data_dir=data_dir)
    pids = set(_marked_pids(config))
    recorded = _read_pid(config)
    if recorded is not None and _is_our_broker(recorded, config):
        pids.add(recorded)
    for pid in sorted(pids):
        _terminate(pid, timeout_s)
    config.pid_file.unlink(missing_ok=True)
    return sorted(pids)


def ensure_broker(
    port: int = DEFAULT_PORT,
    *,
    data_dir: Path | None = None,
    config: BrokerConfig | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    progress: Progress | None = None,
) -> BrokerHandle:
    """A broker at 127.0.0.1:``port``: any that already answers there, else one we start."""
    config = config or BrokerConfig(port=port, data_dir=data_dir)
    with _file_lock(config.root / ".start.lock"):
        if metadata_answers(config.bootstrap):
            pid = _read_pid(config)
            ours = pid is not None and _is_our_broker(pid, config)
            return BrokerHandle(
                config.bootstrap,
                started_by_us=False,
                pid=pid if ours else None,
                log_file=config.log_file if ours else None,
            )
        return _start_locked(config, timeout_s, progress)
