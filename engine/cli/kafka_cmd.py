"""``streamfeat kafka start|stop|status``: the local development broker.

Exit codes: 0 success (``status``: running), 1 failure, 3 (``status`` only) stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import kafka_local
from engine.exceptions import ConfigError

STATUS_STOPPED = 3


def _config(args: argparse.Namespace) -> kafka_local.BrokerConfig:
    try:
        return kafka_local.BrokerConfig(
            port=args.port,
            controller_port=getattr(args, "controller_port", None),
            data_dir=args.data_dir,
            version=getattr(args, "kafka_version", kafka_local.DEFAULT_VERSION),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> int:
    config = _config(args)
    before = kafka_local.broker_status(config=config)
    if before.foreign:
        print(f"{before.describe()}; leaving it alone and not starting another")
        return 0
    handle = kafka_local.start_broker(config=config, timeout_s=args.timeout, progress=_progress)
    if handle.started_by_us:
        print(f"Kafka started at {handle.bootstrap} (pid {handle.pid}, log {handle.log_file})")
    else:
        print(f"Kafka is already running at {handle.bootstrap} (pid {handle.pid})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    config = _config(args)
    stopped = kafka_local.stop_broker(config=config, timeout_s=args.timeout)
    if stopped:
        print(f"Kafka stopped (pid {', '.join(map(str, stopped))})")
    else:
        print(f"Kafka was not running at {config.bootstrap} (data {config.root})")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = kafka_local.broker_status(config=_config(args))
    print(status.describe())
    return 0 if status.running else STATUS_STOPPED


# (action, help, handler, --timeout default, --timeout help); status takes no timeout.
_ACTIONS = (
    ("start", "download (once), format and start the broker", _start,
     kafka_local.DEFAULT_START_TIMEOUT_S, "seconds to wait for the broker to answer"),
    ("stop", "SIGTERM the broker, SIGKILL if it lingers", _stop,
     kafka_local.DEFAULT_STOP_TIMEOUT_S, "seconds between SIGTERM and SIGKILL"),
    ("status", "exit 0 when running, 3 when stopped", _status, None, ""),
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = subparsers.add_parser("kafka", help="run a local Apache Kafka broker (no Docker)")
    actions = kafka.add_subparsers(dest="kafka_action", metavar="ACTION")
    actions.required = True
    for name, help_text, handler, timeout, timeout_help in _ACTIONS:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument(
            "--port", type=int, default=kafka_local.DEFAULT_PORT,
            help="PLAINTEXT port on 127.0.0.1 (default %(default)s)",
        )  # fmt: skip
        parser.add_argument(
            "--data-dir", type=Path, default=None,
            help="broker directory (default .streamfeat/kafka, or .streamfeat/kafka-PORT for other ports)",
        )  # fmt: skip
        if timeout is not None:
            parser.add_argument("--timeout", type=float, default=timeout, help=f"{timeout_help} (default %(default)s)")
        parser.set_defaults(handler=handler)
        if name == "start":
            parser.add_argument("--controller-port", type=int, default=None, help="KRaft controller port (default PORT+1)")
            parser.add_argument(
                "--kafka-version", default=kafka_local.DEFAULT_VERSION,
                help="org.apache.kafka:kafka_2.13 version (default %(default)s)",
            )  # fmt: skip
