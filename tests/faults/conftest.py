"""Fixtures of the fault-injection tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import kafka_local
from engine.ports import free_port_pair


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[kafka_local.BrokerConfig]:
    """A broker of this test only (own port and data dir), so stopping it touches no other test."""
    config = kafka_local.BrokerConfig(port=free_port_pair(), data_dir=tmp_path / "kafka", num_partitions=3)
    kafka_local.start_broker(config=config)
    try:
        yield config
    finally:
        kafka_local.stop_broker(config=config)
