"""librdkafka never writes to the user's terminal on its own (engine/kafka_clients.py):
every Kafka client in product code takes its settings from the one owner of the rule,
and both kinds of settings keep a client that cannot reach its broker silent on stderr,
also in a program that configured no logging at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from engine.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("cli", "dataflows", "engine", "feature_defs", "serving")
CLIENT_CLASSES = {"Consumer", "Producer", "AdminClient"}
OWNER_FUNCTIONS = {"logged_client_settings", "quiet_client_settings", "consumer_settings"}


def _client_calls_without_owner(path: Path) -> list[int]:
    """Lines constructing a Kafka client whose settings do not come from the owner."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned_from_owner: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _calls_owner(node.value):
            assigned_from_owner.update(t.id for t in node.targets if isinstance(t, ast.Name))
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CLIENT_CLASSES):
            continue
        settings = node.args[0] if node.args else None
        from_owner = settings is not None and (
            _calls_owner(settings) or (isinstance(settings, ast.Name) and settings.id in assigned_from_owner)
        )
        if not from_owner:
            bad.append(node.lineno)
    return bad


def _calls_owner(node: ast.AST) -> bool:
    return any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in OWNER_FUNCTIONS
        for sub in ast.walk(node)
    )


def test_every_kafka_client_in_product_code_takes_the_owners_settings() -> None:
    offenders = {
        str(path.relative_to(ROOT)): lines
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := _client_calls_without_owner(path))
    }
    assert not offenders, f"build these clients' settings with engine.kafka_clients: {offenders}"


def test_the_check_finds_a_client_built_from_a_literal(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from confluent_kafka import Consumer\n"
        "from engine.kafka_clients import quiet_client_settings\n"
        "good = Consumer(quiet_client_settings('b'))\n"
        "settings = quiet_client_settings('b')\n"
        "also_good = Consumer(settings)\n"
        "bad = Consumer({'bootstrap.servers': 'b'})\n"
    )
    assert _client_calls_without_owner(module) == [6]


@pytest.mark.parametrize("kind", ["logged_client_settings", "quiet_client_settings"])
def test_a_client_without_a_broker_prints_nothing(kind: str) -> None:
    port = free_port()  # nothing listens there
    # A fresh interpreter with no logging configured: Python's last-resort handler would
    # print the client's warnings, and librdkafka's default logger prints to stderr.
    script = (
        "from confluent_kafka import Consumer\n"
        f"from engine.kafka_clients import {kind}\n"
        f"c = Consumer({kind}('127.0.0.1:{port}', {{'group.id': 'quiet-check'}}))\n"
        "c.subscribe(['nothing'])\n"
        "for _ in range(3):\n"
        "    c.poll(1.0)\n"
        "c.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
