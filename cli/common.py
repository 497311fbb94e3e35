"""Flags every subcommand shares, and turning them into :class:`Settings`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TextIO

from cli.setting_options import add_setting_option
from engine.config import Settings, load_settings


class Subparsers(Protocol):
    """What a subcommand's ``register`` needs of ``argparse``'s subparsers object."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...  # argparse's own keywords


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (seconds, days, rates)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (minutes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    """An argparse type: a finite number >= 0 (tolerances; 0 where 0 means off)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = _finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


def add_settings_args(parser: argparse.ArgumentParser, *, kafka: bool = True) -> None:
    group = parser.add_argument_group("settings (override streamfeat.yaml / [tool.streamfeat] / STREAMFEAT_*)")
    add_setting_option(parser, "--repo", setting="repo", what="feature repo directory", group=group, type=Path)
    add_setting_option(
        parser, "--data-dir", setting="data_dir", what="state, plan and log directory", group=group, type=Path
    )
    if kafka:
        add_setting_option(
            parser, "--bootstrap", setting="kafka_bootstrap", what="Kafka bootstrap servers", group=group
        )


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    overrides: dict[str, object] = {
        "repo": getattr(args, "repo", None),
        "data_dir": getattr(args, "data_dir", None),
        "kafka_bootstrap": getattr(args, "bootstrap", None),
    }
    overrides.update(extra)
    return load_settings(overrides=overrides)


def log_to_file(path: Path, *, verbose: bool) -> Path:
    """Send every log record to ``path``. The terminal gets streamfeat's own warnings and
    errors; Kafka client lines and INFO records only with ``verbose``. Returns ``path``."""
    from engine.kafka_clients import CLIENT_LOG

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    terminal = logging.StreamHandler(sys.stderr)
    if not verbose:
        terminal.setLevel(logging.WARNING)
        terminal.addFilter(lambda record: not record.name.startswith(CLIENT_LOG.name))
    root.addHandler(terminal)
    return path


@contextmanager
def native_stderr_to(path: Path) -> Iterator[TextIO]:
    """While the dataflow runs, file descriptor 2 writes to ``path``: what the Rust runtime
    prints there itself (a panic report when a step raised: our own error follows in one
    line) goes to the run log. Yields a stream on the terminal's stderr, and points the
    terminal log handler of :func:`log_to_file` at it, for what the user must see."""
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    handlers = [
        h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr
    ]
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    for handler in handlers:
        handler.setStream(terminal)
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        for handler in handlers:
            handler.setStream(sys.stderr)
        terminal.close()


def check_source_topic(bootstrap: str, topic: str) -> None:
    """Refuse to start when no broker answers at ``bootstrap`` or ``topic`` is not there,
    with one line saying what to do (instead of a client library's retry loop)."""
    from engine.io.kafka_source import list_topic_partitions
    from engine.kafka_local import require_broker

    require_broker(bootstrap)
    list_topic_partitions(bootstrap, topic)  # TopicNotFoundError names the topics there
