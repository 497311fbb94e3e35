"""Flags every subcommand shares, and turning them into :class:`Settings`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.config import Settings, load_settings


def add_settings_args(parser: argparse.ArgumentParser, *, kafka: bool = True) -> None:
    group = parser.add_argument_group(
        "settings (override streamfeat.yaml / [tool.streamfeat] / STREAMFEAT_*)"
    )
    group.add_argument(
        "--repo", type=Path, default=None, help="feature repo directory (default: feature_defs)"
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state, plan and log directory (default: .streamfeat)",
    )
    if kafka:
        group.add_argument(
            "--bootstrap", default=None, help="Kafka bootstrap servers (default: 127.0.0.1:9092)"
        )


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {
        "repo": getattr(args, "repo", None),
        "data_dir": getattr(args, "data_dir", None),
        "kafka_bootstrap": getattr(args, "bootstrap", None),
    }
    overrides.update(extra)
    return load_settings(overrides=overrides)
