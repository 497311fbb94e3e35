"""Suite-wide pytest configuration.

Fixtures live in ``tests/fixtures`` (one module per service) and are registered here:

- ``kafka_bootstrap`` (session): ``$KAFKA_BOOTSTRAP`` when set (a long-running broker, to
  skip the start-up), else the session's own broker (``kafka_broker``), started through
  ``engine.kafka_local`` on free loopback ports with its own data directory and stopped at
  the end (a watchdog process, tests/fixtures/watchdog.py, stops it if the session dies without its teardown):
  brokers of anyone else on the machine, 127.0.0.1:9092 included, are never used.
  Started once per pytest process, so parallel sessions each have their own.
- ``kafka_topic`` (function): factory ``kafka_topic(partitions=3) -> str`` creating a
  uuid-named topic, deleted (with any ``<topic>.*`` topics such as its DLQ) at teardown.
- ``STREAMFEAT_METRICS_PORT`` is 0 for the session (and its subprocesses) unless already set.
- ``redis_server`` (session): a private ``redis-server`` on a free loopback port without
  persistence; yields ``redis://127.0.0.1:PORT/0``. The same watchdog stops every test
  redis-server should the session die without its teardown.

Hypothesis: ``HYPOTHESIS_PROFILE=thorough`` runs every property test with ``HYPOTHESIS_FACTOR``
(default 10) times its own ``max_examples`` and no deadline, for bug hunts module by module
(``make test`` runs the default profile, unchanged).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# `streamfeat run` children started by tests inherit this: no metrics endpoint unless a test
# asks for one on a free port. The default 9464 may belong to another dataflow on a busy machine.
os.environ.setdefault("STREAMFEAT_METRICS_PORT", "0")

# `tests.fixtures.*` must import whichever way pytest was started (`pytest` or
# `python -m pytest`), so the repository root goes on sys.path.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

pytest_plugins = ("tests.fixtures.kafka", "tests.fixtures.redis")


settings.register_profile("thorough", deadline=None, print_blob=True)
_THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
if _THOROUGH:
    settings.load_profile("thorough")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the thorough profile, multiply each property test's own ``max_examples``.

    A profile alone cannot: tests that name ``max_examples`` in ``@settings`` override it.
    Hypothesis reads a test's settings from this attribute when the test runs.
    """
    if not _THOROUGH:
        return
    factor = int(os.environ.get("HYPOTHESIS_FACTOR", "10"))
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        if not getattr(test, "is_hypothesis_test", False):
            continue
        own: settings | None = getattr(test, "_hypothesis_internal_use_settings", None) or settings.default
        if own is None:
            continue
        multiplied = settings(own, max_examples=own.max_examples * factor, deadline=None)
        test._hypothesis_internal_use_settings = multiplied  # type: ignore[union-attr]
