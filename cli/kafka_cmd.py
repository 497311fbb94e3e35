"""``streamfeat kafka start|stop|status``: the local development broker.

Exit codes: 0 success (``status``: running), 1 failure, 3 (``status`` only) stopped.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cli.common import positive_number
from cli.setting_options import add_derived_option, add_setting_option
from engine import kafka_local
from engine.bootstrap import first_local_port
from engine.config import configured_setting, load_settings
from engine.exceptions import ConfigError, KafkaBrokerError

STATUS_STOPPED = 3


def _configured_port() -> int:
    """The port of ``kafka_bootstrap`` (streamfeat.yaml, STREAMFEAT_KAFKA_BOOTSTRAP), which
    must name this machine: the local broker binds to 127.0.0.1 only."""
    return _local_port(load_settings().kafka_bootstrap)


def _local_port(bootstrap: str) -> int:
    port = first_local_port(bootstrap)
    if port is None:
        raise ConfigError(
            f"kafka_bootstrap is {bootstrap!r}, not a 127.0.0.1:PORT address, so there is no local broker to manage",
            hint="pass --port, or set kafka_bootstrap: 127.0.0.1:9092 in streamfeat.yaml",
        )
    return port


_DATA_DIR_UNREAD = (
    "default: $XDG_DATA_HOME/streamfeat/kafka/PORT, i.e. ~/.local/share/streamfeat/kafka/PORT, PORT that of --port"
)


def _data_dir_default_text() -> str:
    """The broker directory used without --data-dir (and without --port) here."""
    try:
        bootstrap, where = configured_setting("kafka_bootstrap")
        port = _local_port(str(bootstrap))
    except ConfigError:
        return _DATA_DIR_UNREAD
    origin = f"kafka_bootstrap from {where}" if where else "setting kafka_bootstrap"
    return (
        f"default: {kafka_local.default_data_dir(port)}, one directory per port, here {port} of {origin}; "
        f"--port N: {kafka_local.default_data_dir(port).parent}/N"
    )


def _config(args: argparse.Namespace) -> kafka_local.BrokerConfig:
    port = args.port if args.port is not None else _configured_port()
    try:
        return kafka_local.BrokerConfig(
            port=port,
            controller_port=getattr(args, "controller_port", None),
            data_dir=args.data_dir,
            version=getattr(args, "kafka_version", kafka_local.DEFAULT_VERSION),
        )
    except (TypeError, ValueError) as exc:
        message = str(exc)
        for field, flag in _FLAGS:  # the user typed a flag, not a BrokerConfig field
            message = message.replace(f"BrokerConfig.{field}:", f"{flag}:")
        message, _, hint = message.partition("; hint: ")
        raise ConfigError(message, hint=hint or f"see `streamfeat kafka {args.kafka_action} --help`") from None


_FLAGS = (("controller_port", "--controller-port"), ("port", "--port"), ("version", "--kafka-version"))


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> int:
    config = _config(args)
    before = kafka_local.broker_status(config=config)
    if before.foreign:
        print(f"{before.describe()}; using it, not starting another")
        _warn_if_not_configured(config.bootstrap)
        return 0
    try:
        config.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--data-dir: cannot create the broker directory {config.root}: {exc.strerror or exc}",
            hint="pass --data-dir with a writable directory",
        ) from None
    handle = kafka_local.start_broker(config=config, timeout_s=args.timeout, progress=_progress)
    if handle.started_by_us:
        print(
            f"Kafka started at {handle.bootstrap} (pid {handle.pid}); data {config.root}, "
            f"log {handle.log_file}; stop it with `{_stop_command(args, config)}`"
        )
    else:
        print(f"Kafka is already running at {handle.bootstrap} (pid {handle.pid}; data {config.root})")
    _warn_if_not_configured(handle.bootstrap)
    return 0


def _stop_command(args: argparse.Namespace, config: kafka_local.BrokerConfig) -> str:
    """The `kafka stop` that reaches this broker: a plain `streamfeat kafka stop` goes to the
    port of kafka_bootstrap, so a broker started elsewhere needs its --port (and --data-dir)."""
    words = ["streamfeat kafka stop"]
    try:
        configured: int | None = _configured_port()
    except ConfigError:
        configured = None
    if config.port != configured:
        words.append(f"--port {config.port}")
    if args.data_dir is not None:
        words.append(f"--data-dir {shlex.quote(str(args.data_dir))}")
    return " ".join(words)


def _warn_if_not_configured(bootstrap: str) -> None:
    """A broker started with --port where kafka_bootstrap names another: the other commands
    would talk to that one, so say how to point them here."""
    try:
        configured = load_settings().kafka_bootstrap
    except ConfigError:  # a broken streamfeat.yaml is reported by the commands that need it
        return
    if first_local_port(configured) == first_local_port(bootstrap):
        return
    print(
        f"note: kafka_bootstrap is {configured!r}, so `streamfeat generate/run/status` will not use this "
        f"broker; set `kafka_bootstrap: {bootstrap}` in streamfeat.yaml or "
        f"`export STREAMFEAT_KAFKA_BOOTSTRAP={bootstrap}`",
        file=sys.stderr,
    )


def _stop(args: argparse.Namespace) -> int:
    config = _config(args)
    holder = kafka_local.port_holder(config)
    if holder is not None:  # never stop (or claim to stop) what this data directory did not start
        hint = "stop it the way it was started (e.g. `docker compose -f docker-compose.kafka.yml down`)"
        if holder.streamfeat_data_dir is not None:
            hint = f"stop it with `streamfeat kafka stop --port {config.port} --data-dir {shlex.quote(str(holder.streamfeat_data_dir))}`"
        elif holder.pids:
            hint += f", or `kill {' '.join(map(str, holder.pids))}` if it is yours"
        raise KafkaBrokerError(
            f"nothing stopped: {config.bootstrap} is served by {holder.describe()}, not by the broker "
            f"of {config.root}; it is left running",
            hint=hint,
        )
    stopped = kafka_local.stop_broker(config=config, timeout_s=args.timeout)
    if stopped:
        print(f"Kafka stopped (pid {', '.join(map(str, stopped))})")
    else:
        print(f"Kafka was not running at {config.bootstrap} (data {config.root})")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = kafka_local.broker_status(config=_config(args))
    print(status.describe())
    return 0 if status.running or status.foreign else STATUS_STOPPED


# (action, help, handler, --timeout default, --timeout help); status takes no timeout.
_ACTIONS = (
    (
        "start",
        "download (once), format and start the broker",
        _start,
        kafka_local.DEFAULT_START_TIMEOUT_S,
        "seconds to wait for the broker to answer",
    ),
    (
        "stop",
        "SIGTERM the broker, SIGKILL if it lingers",
        _stop,
        kafka_local.DEFAULT_STOP_TIMEOUT_S,
        "seconds between SIGTERM and SIGKILL",
    ),
    ("status", "where the broker lives; exit 0 when a broker answers, 3 when stopped", _status, None, ""),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = subparsers.add_parser("kafka", help="run a local Apache Kafka broker (no Docker)")
    actions = kafka.add_subparsers(dest="kafka_action", metavar="ACTION")
    actions.required = True
    for name, help_text, handler, timeout, timeout_help in _ACTIONS:
        parser = actions.add_parser(name, help=help_text)
        add_setting_option(
            parser,
            "--port",
            setting="kafka_bootstrap",
            what="PLAINTEXT port on 127.0.0.1: that of kafka_bootstrap",
            type=int,
        )
        add_derived_option(
            parser,
            "--data-dir",
            what="broker directory",
            default_text=_data_dir_default_text,
            unread_text=_DATA_DIR_UNREAD,
            type=Path,
        )
        if timeout is not None:
            parser.add_argument(
                "--timeout", type=positive_number, default=timeout, help=f"{timeout_help} (default %(default)s)"
            )
        parser.set_defaults(handler=handler)
        if name == "start":
            parser.add_argument(
                "--controller-port", type=int, default=None, help="KRaft controller port (default PORT+1)"
            )
            parser.add_argument(
                "--kafka-version",
                default=kafka_local.DEFAULT_VERSION,
                help="org.apache.kafka:kafka_2.13 version (default %(default)s)",
            )
