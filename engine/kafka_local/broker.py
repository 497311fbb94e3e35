"""Starting, finding and stopping our broker: one JVM per data directory, formatted
once for its ports, started in a session of its own and waited for until metadata
answers; its status is the truth of the pid AND a metadata request."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from engine.exceptions import KafkaBrokerError
from engine.kafka_local.classpath import KAFKA_FILES, ensure_kafka_libs, file_lock
from engine.kafka_local.config import (
    DEFAULT_PORT,
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    HOST,
    MARKER,
    PROPERTIES_NAME,
    BrokerConfig,
    Progress,
    properties_text,
)
from engine.kafka_local.jvm import CHILDREN, is_our_broker, marked_pids, read_pid, terminate
from engine.kafka_local.probe import metadata_answers, port_open
from engine.processes import command_line, listening_pids
from engine.wording import shortened

LOG4J_CONFIG = KAFKA_FILES / "log4j2.xml"


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


def broker_status(
    port: int = DEFAULT_PORT, *, data_dir: Path | None = None, config: BrokerConfig | None = None
) -> BrokerStatus:
    """Report whether our broker for ``port``/``data_dir`` runs (pid alive AND metadata answers)."""
    config = config or BrokerConfig(port=port, data_dir=data_dir)
    recorded = read_pid(config)
    alive = recorded is not None and is_our_broker(recorded, config)
    detail = ""
    if recorded is not None and not alive:
        detail = f"stale pid file {config.pid_file} names pid {recorded}, which is not our broker"
    pid = recorded if alive else None
    if not alive:
        # The pid file may be gone or stale while our JVM still runs: trust /proc.
        found = marked_pids(config)
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
        gone = exited is not None if child is not None else not is_our_broker(pid, config)
        if gone:
            CHILDREN.pop(pid, None)
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
    with file_lock(config.root / ".start.lock"):
        return _start_locked(config, timeout_s, progress)


def _start_locked(config: BrokerConfig, timeout_s: float, progress: Progress | None) -> BrokerHandle:
    # Callers hold the start lock: two processes (say, two pytest sessions) must not
    # both see "not running" and race to start the same broker.
    status = broker_status(config=config)
    if status.pid_alive:
        running_pid = status.pid if status.pid is not None else -1
        if read_pid(config) != running_pid:  # found through /proc: repair the pid file
            config.pid_file.write_text(f"{running_pid}\n")
        if not status.metadata_ok:  # still starting (another `start` launched it)
            _wait_until_answers(config, running_pid, timeout_s, CHILDREN.get(running_pid))
        return BrokerHandle(config.bootstrap, started_by_us=False, pid=status.pid, log_file=config.log_file)
    config.pid_file.unlink(missing_ok=True)
    for busy in (config.port, config.resolved_controller_port):
        if port_open(busy):
            holder = port_holder(config) if busy == config.port else None
            raise KafkaBrokerError(
                f"cannot start Kafka: {HOST}:{busy} is already in use"
                + (f" by {holder.describe()}" if holder is not None else ""),
                hint="stop whatever listens there, or pick another --port",
            )
    lib_dir = ensure_kafka_libs(config.version, progress=progress)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    config.properties_file.write_text(properties_text(config))
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
    CHILDREN[child.pid] = child
    config.pid_file.write_text(f"{child.pid}\n")
    try:
        _wait_until_answers(config, child.pid, timeout_s, child)
    except KafkaBrokerError:
        terminate(child.pid, DEFAULT_STOP_TIMEOUT_S)
        config.pid_file.unlink(missing_ok=True)
        raise
    return BrokerHandle(config.bootstrap, started_by_us=True, pid=child.pid, log_file=config.log_file)


def _heap_mb(heap: str) -> int:
    number = int(heap[:-1])
    return number * 1024 if heap[-1] in "gG" else number


def stop_broker(
    port: int = DEFAULT_PORT,
    *,
    data_dir: Path | None = None,
    config: BrokerConfig | None = None,
    timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> list[int]:
    """Stop every JVM of this broker (pid file or found by marker); return the pids stopped."""
    config = config or BrokerConfig(port=port, data_dir=data_dir)
    pids = set(marked_pids(config))
    recorded = read_pid(config)
    if recorded is not None and is_our_broker(recorded, config):
        pids.add(recorded)
    for pid in sorted(pids):
        terminate(pid, timeout_s)
    config.pid_file.unlink(missing_ok=True)
    return sorted(pids)


@dataclass(frozen=True)
class PortHolder:
    """What listens on a broker's port when it is not the broker of the data directory asked
    about: the processes (empty when /proc does not tell: another user's), whether a Kafka
    broker answers there, and, for a streamfeat broker of another directory, that directory."""

    port: int
    pids: tuple[int, ...]
    commands: tuple[str, ...]
    kafka: bool
    streamfeat_data_dir: Path | None

    def describe(self) -> str:
        what = "a Kafka broker" if self.kafka else "a process that is not a Kafka broker"
        if self.streamfeat_data_dir is not None:
            what = f"a Kafka broker streamfeat started with another data directory ({self.streamfeat_data_dir})"
        elif self.kafka:
            what += " that streamfeat did not start"
        if self.pids:
            shown = "; ".join(f"pid {pid}: {command}" for pid, command in zip(self.pids, self.commands, strict=True))
            return f"{what} ({shown})"
        return f"{what} (its process is not visible to this user)"


def port_holder(config: BrokerConfig) -> PortHolder | None:
    """What listens on 127.0.0.1:``config.port`` other than this data directory's broker;
    None when nothing does, or when the listener is that broker."""
    if not port_open(config.port) or marked_pids(config):
        return None
    pids = tuple(listening_pids(config.port))
    arguments = [command_line(pid) for pid in pids]
    commands = tuple(_short_command(args) for args in arguments)
    data_dir = None
    for args in arguments:
        if MARKER in args:
            properties = [a for a in args if a.endswith(PROPERTIES_NAME)]
            data_dir = Path(properties[0]).parent if properties else None
    return PortHolder(config.port, pids, commands, metadata_answers(config.bootstrap), data_dir)


def _short_command(args: list[str], limit: int = 120) -> str:
    return shortened(" ".join(args) or "command line unknown", limit)


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
    with file_lock(config.root / ".start.lock"):
        if metadata_answers(config.bootstrap):
            pid = read_pid(config)
            ours = pid is not None and is_our_broker(pid, config)
            return BrokerHandle(
                config.bootstrap,
                started_by_us=False,
                pid=pid if ours else None,
                log_file=config.log_file if ours else None,
            )
        return _start_locked(config, timeout_s, progress)
