"""`streamfeat COMMAND --help` shows the default an option takes in this directory: the
value streamfeat.yaml (or STREAMFEAT_*) gives its setting, else the built-in one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cli import build_parser, main
from engine.config import Settings, load_settings

# (command, option, the setting it overrides): every kind of setting option a first user meets.
SETTING_OPTIONS = [
    (("serve",), "--port", "serve_port"),
    (("serve",), "--data-dir", "data_dir"),
    (("run",), "--bootstrap", "kafka_bootstrap"),
    (("run",), "--batch-size", "batch_size"),
    (("backfill",), "--data-dir", "data_dir"),
    (("training-set",), "--data-dir", "data_dir"),
    (("generate",), "--bootstrap", "kafka_bootstrap"),
    (("apply",), "--shards", "state_shards"),
    (("status",), "--repo", "repo"),
    (("consistency-check",), "--request-log", "request_log_dir"),
    (("kafka", "start"), "--port", "kafka_bootstrap"),
]
PROJECT_YAML = (
    "data_dir: ./data\nkafka_bootstrap: 127.0.0.1:9193\nserve_port: 8100\nbatch_size: 500\nstate_shards: 4\n"
    "repo: my_features\nrequest_log_dir: requests\n"
)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory and no STREAMFEAT_* setting in the environment."""
    for field in dataclasses.fields(Settings):
        monkeypatch.delenv(f"STREAMFEAT_{field.name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def option_help(command: tuple[str, ...], option: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The help text of ``option`` in ``streamfeat COMMAND --help``, on one line."""
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{option} "))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("-") or not lines[i].strip()),
        len(lines),
    )
    return " ".join(" ".join(lines[start:end]).split())


@pytest.mark.parametrize(("command", "option", "key"), SETTING_OPTIONS)
def test_help_shows_the_value_streamfeat_yaml_gives(
    here: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...], option: str, key: str
) -> None:
    (here / "streamfeat.yaml").write_text(PROJECT_YAML)
    used = getattr(load_settings(here), key)
    assert used != getattr(Settings(), key)  # the project's value, not the built-in one
    shown = option_help(command, option, capsys)
    assert shown.endswith(f"(default: {used}, {key} from streamfeat.yaml)"), shown


@pytest.mark.parametrize(("command", "option", "key"), SETTING_OPTIONS)
def test_help_without_a_project_file_shows_the_built_in_default(
    here: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...], option: str, key: str
) -> None:
    built_in = getattr(Settings(), key) or "unset"
    shown = option_help(command, option, capsys)
    assert shown.endswith(f"(default: {built_in}, setting {key})"), shown


def test_help_names_an_environment_variable_that_wins_over_the_file(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "streamfeat.yaml").write_text(PROJECT_YAML)
    monkeypatch.setenv("STREAMFEAT_SERVE_PORT", "8200")
    assert load_settings(here).serve_port == 8200
    assert option_help(("serve",), "--port", capsys).endswith("(default: 8200, serve_port from STREAMFEAT_SERVE_PORT)")


def test_help_of_a_project_with_a_broken_file_still_shows(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken streamfeat.yaml never stops --help; the command itself says what is wrong."""
    (here / "streamfeat.yaml").write_text("data_dir: [\n")
    shown = option_help(("training-set",), "--data-dir", capsys)
    assert shown.endswith(f"(default: streamfeat.yaml's data_dir, else {Settings().data_dir})"), shown


def test_score_batch_help_shows_the_server_url_it_uses(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert option_help(("score-batch",), "--url", capsys).endswith(
        "(default: http://127.0.0.1:8000, settings serve_host and serve_port)"
    )
    (here / "streamfeat.yaml").write_text(PROJECT_YAML)
    monkeypatch.setenv("STREAMFEAT_SERVE_HOST", "127.0.0.2")
    used = load_settings(here).serve_url
    assert used == "http://127.0.0.2:8100"
    shown = option_help(("score-batch",), "--url", capsys)
    assert shown.endswith(
        f"(default: {used}, serve_host from STREAMFEAT_SERVE_HOST, serve_port from streamfeat.yaml)"
    ), shown


@pytest.mark.parametrize("action", ["start", "stop", "status"])
def test_kafka_help_shows_the_broker_directory_it_uses(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    from cli.kafka_cmd import _config

    monkeypatch.setenv("XDG_DATA_HOME", str(here / "xdg"))
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would wrap the long path at its hyphens
    (here / "streamfeat.yaml").write_text(PROJECT_YAML)  # kafka_bootstrap: 127.0.0.1:9193
    used = _config(build_parser().parse_args(["kafka", action])).root
    assert used == here / "xdg" / "streamfeat" / "kafka" / "9193"
    shown = option_help(("kafka", action), "--data-dir", capsys)
    assert shown.startswith(
        f"--data-dir DATA_DIR broker directory (default: {used}, one directory per port, here 9193 of "
        "kafka_bootstrap from streamfeat.yaml;"
    ), shown
    assert shown.endswith(f"--port N: {used.parent}/N)"), shown


def test_plan_shows_the_shard_count_apply_will_record(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2] / "feature_defs"
    (here / "streamfeat.yaml").write_text(f"data_dir: ./data\nstate_shards: 4\nrepo: {repo}\n")
    assert main(["plan"]) == 0
    assert "state shards: 4 (first apply)" in capsys.readouterr().out
    assert main(["apply"]) == 0
    assert ", 4 shards)" in capsys.readouterr().out
    assert main(["plan"]) == 0
    assert "state shards: 4\n" in capsys.readouterr().out
