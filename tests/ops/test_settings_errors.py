"""A broken configuration is refused at load, by the command a user runs: every problem of
every layer in one message, each naming the setting, where it is given, what it expected
and a fix. Port settings are checked against the range a port can take."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.test_first_hour_cli import streamfeat_in


def _refused(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = streamfeat_in(project, *args, env=env, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("serve_port: 70000", "serve_port: expected a port from 1 to 65535, got 70000"),
        ("serve_port: 0", "serve_port: expected a port from 1 to 65535, got 0"),
        ("serve_port: -1", "serve_port: expected a port from 1 to 65535, got -1"),
        (
            "serve_port: eighty",
            "setting 'serve_port' in {yaml}: expected an integer port from 1 to 65535, got 'eighty'",
        ),
        ("serve_port: 8000.5", "setting 'serve_port' in {yaml}: expected an integer port from 1 to 65535, got 8000.5"),
        ("serve_port: true", "setting 'serve_port' in {yaml}: expected an integer port from 1 to 65535, got True"),
    ],
)
def test_a_port_setting_out_of_range_or_not_an_integer_is_refused_at_load(
    tmp_path: Path, line: str, expected: str
) -> None:
    (tmp_path / "streamfeat.yaml").write_text(line + "\n", encoding="utf-8")
    err = _refused(tmp_path, "serve")
    assert expected.format(yaml=tmp_path / "streamfeat.yaml") in err, err
    key = line.split(":")[0]
    assert f"e.g. {key}: " in err, err  # a fix


def test_a_port_out_of_range_from_the_environment_or_a_flag_names_where(tmp_path: Path) -> None:
    err = _refused(tmp_path, "serve", env={"STREAMFEAT_SERVE_PORT": "123456"})
    assert (
        "serve_port: expected a port from 1 to 65535, got 123456; pick a free one, e.g. serve_port: 8000 (from environment variable STREAMFEAT_SERVE_PORT)"
        in err
    )
    err = _refused(tmp_path, "serve", "--port", "99999")
    assert (
        "serve_port: expected a port from 1 to 65535, got 99999; pick a free one, e.g. serve_port: 8000 (from command-line flags)"
        in err
    )
    # metrics_port takes 0 (no endpoint), never a value beyond the port range or a word.
    err = _refused(tmp_path, "run", env={"STREAMFEAT_METRICS_PORT": "65536"})
    assert (
        "metrics_port: expected a port from 0 to 65535 (0: no metrics endpoint), got 65536; pick a free one, "
        "e.g. metrics_port: 9464 (from environment variable STREAMFEAT_METRICS_PORT)"
    ) in err, err
    err = _refused(tmp_path, "run", env={"STREAMFEAT_METRICS_PORT": "off"})
    assert (
        "setting 'metrics_port' in environment variable STREAMFEAT_METRICS_PORT: expected an integer port from 0 to 65535"
        in err
    )


def test_every_problem_of_a_config_file_is_reported_at_once(tmp_path: Path) -> None:
    yaml_path = tmp_path / "streamfeat.yaml"
    yaml_path.write_text(
        "serve_prot: 8000\n"  # a typo'd key
        "batch_size: lots\n"  # a wrong type
        "data_dir: [a, b]\n"  # a list where a path goes
        "serve_port: 70000\n"  # out of range
        "online: redis\n",  # needs redis_url
        encoding="utf-8",
    )
    (tmp_path / "pyproject.toml").write_text("[tool.streamfeat]\nstate_shard = 4\n", encoding="utf-8")
    err = _refused(tmp_path, "plan")
    assert "streamfeat plan: error: 6 invalid settings:" in err, err
    assert f"unknown setting 'serve_prot' in {yaml_path}; did you mean 'serve_port'?" in err
    assert (
        f"unknown setting 'state_shard' in {tmp_path / 'pyproject.toml'} [tool.streamfeat]; did you mean 'state_shards'?"
        in err
    )
    assert (
        f"setting 'batch_size' in {yaml_path}: expected an integer, got 'lots'; write a whole number, e.g. batch_size: 30000"
        in err
    )
    assert f"setting 'data_dir' in {yaml_path}: expected a path (a string), got list ['a', 'b']; write one value" in err
    assert (
        f"serve_port: expected a port from 1 to 65535, got 70000; pick a free one, e.g. serve_port: 8000 (from {yaml_path})"
        in err
    )
    assert "redis_url: required when online is 'redis' (e.g. redis://127.0.0.1:6379/0)" in err


def test_a_key_given_twice_is_refused_not_swallowed(tmp_path: Path) -> None:
    (tmp_path / "streamfeat.yaml").write_text("serve_port: 8100\ndata_dir: d\nserve_port: 8200\n", encoding="utf-8")
    err = _refused(tmp_path, "plan")
    assert "key 'serve_port' is given twice (lines 1 and 3): keep one of them" in err, err


def test_an_unreadable_pyproject_is_reported_with_the_yaml_problems(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.streamfeat\n", encoding="utf-8")
    (tmp_path / "streamfeat.yaml").write_text("serve_port: x\n", encoding="utf-8")
    err = _refused(tmp_path, "plan")
    assert "2 invalid settings:" in err and "is not valid TOML" in err and "setting 'serve_port'" in err, err


def test_config_files_that_are_not_utf8_are_one_line_naming_the_byte_and_line(tmp_path: Path) -> None:
    (tmp_path / "streamfeat.yaml").write_bytes(b'repo: feature_defs\nkafka_bootstrap: "caf\xe9"\n')
    err = _refused(tmp_path, "plan")
    assert f"{tmp_path / 'streamfeat.yaml'} is not UTF-8 text: byte 0xe9 on line 2 cannot be read" in err, err
    assert "Traceback" not in err and "save the file as UTF-8" in err, err
    (tmp_path / "streamfeat.yaml").unlink()
    (tmp_path / "pyproject.toml").write_bytes(b'[tool.streamfeat]\nrepo = "d\xe9f"\n')
    err = _refused(tmp_path, "plan")
    assert "pyproject.toml is not UTF-8 text" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:99999", "kafka_bootstrap: broker '127.0.0.1:99999' has port '99999', expected 1 to 65535"),
        ("a:9092,b:x", "kafka_bootstrap: broker 'b:x' has port 'x', expected 1 to 65535; e.g. b:9092"),
        (":9092", "kafka_bootstrap: expected host:port for every broker, got ':9092'"),
    ],
)
def test_a_kafka_bootstrap_with_a_bad_port_is_refused_naming_the_broker(
    tmp_path: Path, bootstrap: str, expected: str
) -> None:
    err = _refused(tmp_path, "run", env={"STREAMFEAT_KAFKA_BOOTSTRAP": bootstrap})
    assert expected in err and "(from environment variable STREAMFEAT_KAFKA_BOOTSTRAP)" in err, err


def test_metrics_ports_of_every_process_must_fit_the_port_range(tmp_path: Path) -> None:
    err = _refused(tmp_path, "run", "--processes", "3", env={"STREAMFEAT_METRICS_PORT": "65534"})
    assert "metrics_port: process 2 of --processes 3 would listen on metrics_port + 2 = 65536, beyond 65535" in err
    assert "set metrics_port to at most 65533 (or 0: no metrics endpoint)" in err, err


def test_serving_limits_and_an_empty_host_are_refused_not_served_with(tmp_path: Path) -> None:
    env = {
        "STREAMFEAT_MAX_ENTITIES_PER_REQUEST": "0",
        "STREAMFEAT_MAX_REQUEST_BYTES": "-1",
        "STREAMFEAT_SERVE_HOST": "",
    }
    err = _refused(tmp_path, "serve", env=env)
    assert "3 invalid settings:" in err, err
    assert "max_entities_per_request: expected >= 1 entity rows per request, got 0" in err
    assert "max_request_bytes: expected >= 1024 bytes, got -1" in err
    assert "serve_host: expected a host name or address to listen on, got an empty value" in err
