"""RESULTS.md names the load generator that drove the serving runs (issue 19, item 5)."""

from __future__ import annotations

from benchmarks.report import _load_generator


def test_wrk_is_named() -> None:
    assert _load_generator("wrk").startswith("wrk (")


def test_the_python_fallback_is_named_with_its_cost_and_the_fix() -> None:
    text = _load_generator("python-asyncio")
    assert text.startswith("python-asyncio, the Python fallback")
    assert "`make bench` installs it" in text and "every serving figure is lower" in text
