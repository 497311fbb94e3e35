"""The ingest benchmark's stage profile wraps functions by name: every name must still exist."""

from __future__ import annotations

import importlib

from benchmarks.stage_profile import STAGES


def test_every_profiled_function_exists() -> None:
    missing = []
    for stage, places in STAGES.items():
        for module_name, qualified in places:
            target: object = importlib.import_module(module_name)
            for part in qualified.split("."):
                target = getattr(target, part, None)
            if not callable(target):
                missing.append(f"{stage}: {module_name}.{qualified}")
    assert missing == [], "moved or renamed; update benchmarks/stage_profile.py STAGES"
