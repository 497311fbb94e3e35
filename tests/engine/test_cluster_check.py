"""The settings every process of a cluster must share: a difference is named and told to
every process, agreement is announced once every process has reported
(dataflows/cluster_check.py)."""

from __future__ import annotations

import pytest

from dataflows.cluster_check import (
    ProcessSettings,
    SettingsAgree,
    SettingsComparer,
    SettingsDisagree,
    Verdict,
    VerdictSink,
    verdict_items,
)
from engine.shutdown import STOP


def _settings(process: str, **changes: str) -> ProcessSettings:
    values = {"source topic": "transactions", "shards": "4", "state_backup": "kafka", **changes}
    return ProcessSettings(process, tuple(values.items()), part=f"settings-{process}")


def test_agreement_is_announced_once_every_process_reported() -> None:
    compare = SettingsComparer(3)
    state, said = compare(None, _settings("host-c"))
    assert said is None
    state, said = compare(state, _settings("host-a"))
    assert said is None
    state, said = compare(state, _settings("host-b"))
    assert said == Verdict(SettingsAgree(3), ("settings-host-a", "settings-host-b", "settings-host-c"))


def test_a_single_process_agrees_with_itself() -> None:
    assert SettingsComparer(1)(None, _settings("host-a"))[1] == Verdict(SettingsAgree(1), ("settings-host-a",))


def test_a_difference_names_the_setting_both_processes_and_values_once_all_reported() -> None:
    compare = SettingsComparer(3)
    state, said = compare(None, _settings("host-a"))
    state, said = compare(state, _settings("host-b", state_backup="off"))
    assert said is None  # the third process must hear the verdict too
    state, said = compare(state, _settings("host-c", shards="8"))
    assert said is not None and isinstance(said.outcome, SettingsDisagree)
    message = said.outcome.message
    # the first difference found is the one named
    assert "state_backup" in message and "host-a has 'kafka'" in message and "host-b has 'off'" in message
    assert "same settings" in said.outcome.hint
    assert said.outcome.error().exit_code != 0
    assert said.parts == ("settings-host-a", "settings-host-b", "settings-host-c")


def test_the_verdict_reaches_every_process_partition() -> None:
    parts = ("settings-a", "settings-b", "settings-c")
    outcome = SettingsDisagree("differ", "fix it")
    items = verdict_items(Verdict(outcome, parts))
    sink = VerdictSink(_settings("b"))
    # Bytewax indexes part_fn into the sorted set of every process's partitions.
    assert sorted(parts[sink.part_fn(key) % len(parts)] for key, _ in items) == list(parts)
    assert all(value == outcome for _, value in items)
    assert verdict_items(None) == []
    assert sink.list_parts() == ["settings-b"]


def test_a_process_told_of_a_difference_prints_it_and_stops_its_sources(capsys: pytest.CaptureFixture[str]) -> None:
    from dataflows import cluster_check

    STOP.clear()
    cluster_check._REFUSALS.clear()
    try:
        part = VerdictSink(_settings("a")).build_part("settings_verdict", "settings-a", None)
        part.write_batch([SettingsAgree(2)])
        assert cluster_check.refusal() is None and not STOP.is_set()
        part.write_batch([SettingsDisagree("processes differ: shards", "start them alike")])
        part.write_batch([SettingsDisagree("processes differ: shards", "start them alike")])
        refused = cluster_check.refusal()
        assert refused is not None and str(refused) == "processes differ: shards"
        assert STOP.is_set()
        assert capsys.readouterr().err.count("streamfeat run: processes differ: shards\n  hint: start them alike") == 1
    finally:
        STOP.clear()
        cluster_check._REFUSALS.clear()


@pytest.mark.parametrize("processes", [0, -1, True, 1.5])
def test_the_process_count_is_checked(processes: object) -> None:
    with pytest.raises(ValueError, match="processes"):
        SettingsComparer(processes)  # type: ignore[arg-type]
