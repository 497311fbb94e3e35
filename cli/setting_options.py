"""Options that stand for a setting, and a ``--help`` that shows the value each takes here.

A flag such as ``--data-dir`` overrides the setting ``data_dir``; without it the command
uses what ``streamfeat.yaml``, ``[tool.streamfeat]`` or ``STREAMFEAT_*`` say
(engine/config.py), else the built-in default. ``--help`` reads those when it is shown,
not at every start, so a broken ``streamfeat.yaml`` never stops the parser (the command
itself then says what is wrong).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.config import Settings, configured_setting
from engine.exceptions import ConfigError


def setting_default_text(key: str) -> str:
    """What ``--help`` says of the default of the option for setting ``key``, e.g.
    ``"default: data, data_dir from streamfeat.yaml"`` or ``"default: .streamfeat, setting data_dir"``."""
    try:
        value, where = configured_setting(key)
    except ConfigError:
        return _unread_default_text(key)
    if where is None:
        return f"default: {_value(value)}, setting {key}"
    return f"default: {_value(value)}, {key} from {where}"


def _unread_default_text(key: str) -> str:
    """The default said without reading the configuration (unreadable, or not read yet)."""
    return f"default: streamfeat.yaml's {key}, else {_value(getattr(Settings(), key))}"


def _value(value: object) -> str:
    return str(value) if value != "" else "unset"


def _shown(text: str) -> str:
    return text.replace("%", "%%")  # argparse expands %(...)s in help


class SettingsHelpParser(argparse.ArgumentParser):
    """The parser of ``streamfeat`` and, through ``add_subparsers``, of every subcommand:
    its help fills in the defaults of its setting options when it is formatted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # argparse's own parameters
        super().__init__(*args, **kwargs)
        # (option, what it is, the text of its default as this directory gives it)
        self.setting_options: list[tuple[argparse.Action, str, Callable[[], str]]] = []

    def format_help(self) -> str:
        for action, what, default_text in self.setting_options:
            action.help = f"{what} ({_shown(default_text())})"
        return super().format_help()


def add_setting_option(
    parser: argparse.ArgumentParser,
    *flags: str,
    setting: str,
    what: str,
    group: argparse._ArgumentGroup | None = None,
    **kwargs: Any,  # add_argument's own keywords (type, choices, metavar)
) -> argparse.Action:
    """Add option ``flags`` (default None: the settings decide) overriding ``setting``;
    its help is ``what`` and, when shown, the default this directory gives it."""
    return add_derived_option(
        parser,
        *flags,
        what=what,
        default_text=lambda: setting_default_text(setting),
        unread_text=_unread_default_text(setting),
        group=group,
        **kwargs,
    )


def add_derived_option(
    parser: argparse.ArgumentParser,
    *flags: str,
    what: str,
    default_text: Callable[[], str],
    unread_text: str,
    group: argparse._ArgumentGroup | None = None,
    **kwargs: Any,  # add_argument's own keywords (type, choices, metavar)
) -> argparse.Action:
    """Add option ``flags`` (default None: the command works its value out from the settings);
    ``--help`` shows ``default_text()`` (e.g. ``"default: http://127.0.0.1:8100, serve_host and
    serve_port"``), computed when the help is shown, else ``unread_text``."""
    action = (group or parser).add_argument(*flags, default=None, help=f"{what} ({_shown(unread_text)})", **kwargs)
    if isinstance(parser, SettingsHelpParser):
        parser.setting_options.append((action, what, default_text))
    return action
