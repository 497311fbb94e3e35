"""The settings every process of a cluster must share: a difference is named, agreement is
announced once every process has reported (dataflows/cluster_check.py)."""

from __future__ import annotations

import pytest

from dataflows.cluster_check import ProcessSettings, SettingsAgree, SettingsComparer
from dataflows.exceptions import ClusterSettingsError


def _settings(process: str, **changes: str) -> ProcessSettings:
    values = {"source topic": "transactions", "shards": "4", "state_backup": "kafka", **changes}
    return ProcessSettings(process, tuple(values.items()))


def test_agreement_is_announced_once_every_process_reported() -> None:
    compare = SettingsComparer(3)
    state, said = compare(None, _settings("host-a"))
    assert said is None
    state, said = compare(state, _settings("host-b"))
    assert said is None
    state, said = compare(state, _settings("host-c"))
    assert said == SettingsAgree(3)


def test_a_single_process_agrees_with_itself() -> None:
    assert SettingsComparer(1)(None, _settings("host-a"))[1] == SettingsAgree(1)


def test_a_difference_names_the_setting_both_processes_and_values() -> None:
    compare = SettingsComparer(2)
    state, _ = compare(None, _settings("host-a"))
    with pytest.raises(ClusterSettingsError) as info:
        compare(state, _settings("host-b", state_backup="off"))
    message = str(info.value)
    assert "state_backup" in message and "host-a has 'kafka'" in message and "host-b has 'off'" in message
    assert info.value.hint is not None and "same settings" in info.value.hint


@pytest.mark.parametrize("processes", [0, -1, True, 1.5])
def test_the_process_count_is_checked(processes: object) -> None:
    with pytest.raises(ValueError, match="processes"):
        SettingsComparer(processes)  # type: ignore[arg-type]
