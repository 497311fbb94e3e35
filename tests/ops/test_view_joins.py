"""A view applied while its stream already has state joins that stream (docs/semantics.md
section 8): changed definitions, new views and definitions applied again must never be
served PRESENT with events missing, and the backfill that completes them must not count
events twice. Found by an outside pass: a changed window was served PRESENT from the
events since the change, the backfill the plan asked for double counted, a server started
before the change kept serving the old definition's frozen records, and a rolled-back
definition reused its stale state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import Producer

from engine.clock import wall_clock_ms
from engine.ports import free_port
from engine.state.writer_lock import state_writer
from tests.ops.test_first_hour_cli import streamfeat_in

pytestmark = pytest.mark.kafka

MINUTE = 60_000


def _defs(project: Path, topic: str, window_min: int, second: bool = False) -> None:
    """One view ``spend`` (count over ``window_min``) in service ``svc``; with ``second``,
    also ``spend2`` (count over 90 min as ``n2``) in ``svc2``."""
    (project / "feature_defs").mkdir(parents=True, exist_ok=True)
    (project / "feature_defs" / "__init__.py").write_text("")
    extra = (
        """spend2 = StreamFeatureView(name="spend2", source=tx, entities=[user], aggregations=[
    Aggregation(column="amount", function="count", window=timedelta(minutes=90), name="n2")])
svc2 = FeatureService(name="svc2", features=[spend2])
"""
        if second
        else ""
    )
    (project / "feature_defs" / "defs.py").write_text(
        f"""from datetime import timedelta
from engine.definitions import Aggregation, Entity, EventSource, FeatureService, StreamFeatureView
user = Entity(name="user", join_keys=["user_id"])
tx = EventSource(name="tx", topic="{topic}", timestamp_field="ts", schema={{"user_id": "string", "amount": "float"}})
spend = StreamFeatureView(name="spend", source=tx, entities=[user], aggregations=[
    Aggregation(column="amount", function="count", window=timedelta(minutes={window_min}), name="n")])
svc = FeatureService(name="svc", features=[spend])
"""
        + extra
    )


def _project(tmp_path: Path, topic: str, bootstrap: str, port: int) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "streamfeat.yaml").write_text(
        f"repo: feature_defs\ndata_dir: .streamfeat\nkafka_bootstrap: {bootstrap}\nstate_shards: 2\n"
        f"serve_host: 127.0.0.1\nserve_port: {port}\nmetrics_port: 0\n"
    )
    _defs(project, topic, 60)
    return project


def _produce(bootstrap: str, topic: str, times: list[int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for ts in times:
        producer.produce(topic, key=b"u1", value=json.dumps({"user_id": "u1", "amount": 1.0, "ts": ts}).encode())
    producer.flush(30)


def _ok(project: Path, *args: str) -> str:
    done = streamfeat_in(project, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@contextmanager
def _server(project: Path) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFEAT_")}
    env.update({"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "STREAMFEAT_METRICS_PORT": "0"})
    child = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _query(port: int, as_of: int | None = None, service: str = "svc") -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"entities": {"user_id": ["u1"]}, "include_metadata": True}
    if as_of is not None:
        body["as_of"] = as_of
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/features/{service}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())
        except OSError:  # not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _served(port: int, as_of: int | None = None) -> tuple[int, str]:
    status, answer = _query(port, as_of)
    assert status == 200, answer
    return int(answer["features"][0]["n"]), str(answer["metadata"]["statuses"][0]["n"])


def _history(project: Path, times: list[int]) -> Path:
    path = project / "history.parquet"
    pl.DataFrame({"user_id": ["u1"] * len(times), "amount": [1.0] * len(times), "ts": sorted(times)}).write_parquet(
        path
    )
    return path


def _streamed(
    tmp_path: Path, bootstrap: str, kafka_topic: Callable[..., str], minutes_ago: tuple[int, ...]
) -> tuple[Path, str, int, list[int]]:
    """A project on a new topic whose view ``spend`` applied one event of u1 per
    ``minutes_ago``: (project, topic, server port, the events' times)."""
    topic = kafka_topic(partitions=1)
    port = free_port()
    project = _project(tmp_path, topic, bootstrap, port)
    now = wall_clock_ms()
    times = [now - m * MINUTE for m in minutes_ago]
    _ok(project, "apply")
    _produce(bootstrap, topic, times)
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    return project, topic, port, times


def test_a_changed_view_joins_its_stream_and_its_backfill_completes_it_exactly(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    project, topic, port, first = _streamed(tmp_path, kafka_bootstrap, kafka_topic, (50, 40, 30, 20, 1))
    with _server(project):
        assert _served(port) == (5, "PRESENT")
        _defs(project, topic, 120)  # the change: a new fingerprint
        applied = _ok(project, "apply")
        assert "view 'spend' joins the stream of source 'tx' at" in applied, applied
        assert "`streamfeat backfill --source tx --views spend --from <history>`" in applied, applied
        time.sleep(1.5)  # the server looks at the plan file about once a second
        status, answer = _query(port)
        assert status == 503 and answer["error"]["code"] == "plan_changed", answer
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert not_ready.value.code == 503 and b"plan_changed" in not_ready.value.read()
    later = [wall_clock_ms() + 1, wall_clock_ms() + 2]
    _produce(kafka_bootstrap, topic, later)
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    plan = json.loads((project / ".streamfeat" / "plan.json").read_text())
    (join,) = plan["joins"].values()
    assert join["at_ms"] == max(first) + 1
    with _server(project):
        # Before the backfill: the two events since the join, never PRESENT.
        n, status_text = _served(port)
        assert (n, status_text) == (2, "INCOMPLETE")
        _, answer = _query(port)
        assert answer["metadata"]["views"]["spend"]["joined_at_ms"] == join["at_ms"]
        shown = _ok(project, "status", "--sample", "0")
        assert "missing (backfill it)" in " ".join(shown.split()), shown
        spine = project / "spine.csv"
        spine.write_text(f"user_id,event_timestamp\nu1,{wall_clock_ms()}\n")
        built = streamfeat_in(project, "training-set", "--service", "svc", "--spine", "spine.csv", "--out", "t.pq")
        assert built.returncode == 0 and "view 'spend' joined its stream at" in built.stderr, built.stderr
        history = _history(project, first + later)
        refused = streamfeat_in(
            project, "backfill", "--source", "tx", "--from", str(history), "--end", "2030-01-01T00:00:00Z"
        )
        assert refused.returncode != 0 and "is not the join time" in refused.stderr, refused.stderr
        kafka = streamfeat_in(project, "backfill", "--source", "tx", "--from", "kafka")
        assert kafka.returncode != 0 and "--from kafka cannot fill the history" in kafka.stderr, kafka.stderr
        _ok(project, "backfill", "--source", "tx", "--from", str(history), "--quiet")  # --end: the join time
        assert json.loads((project / ".streamfeat" / "plan.json").read_text())["joins"] == {}
        again = _ok(project, "backfill", "--source", "tx", "--from", str(history))  # the same command again
        assert "nothing to replay" in again, again
        time.sleep(1.5)
        assert _served(port) == (7, "PRESENT")  # 5 from history, 2 from the stream: none twice
    built = streamfeat_in(project, "training-set", "--service", "svc", "--spine", "spine.csv", "--out", "t.pq")
    assert built.returncode == 0 and "joined its stream" not in built.stderr, built.stderr
    assert pl.read_parquet(project / "t.pq")["n"].to_list() == [7]


def test_a_definition_applied_again_starts_from_empty_state(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """A rollback: the old fingerprint's records stopped at the first change and miss the
    events applied under the other definition; they are cleared, not reused."""
    topic = kafka_topic(partitions=1)
    port = free_port()
    project = _project(tmp_path, topic, kafka_bootstrap, port)
    now = wall_clock_ms()
    _ok(project, "apply")
    _produce(kafka_bootstrap, topic, [now - m * MINUTE for m in (50, 40, 30)])
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    _defs(project, topic, 120)
    _ok(project, "apply")
    _produce(kafka_bootstrap, topic, [now - 5 * MINUTE, now - 4 * MINUTE])
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    _defs(project, topic, 60)  # roll back
    (project / "spine.csv").write_text(f"user_id,event_timestamp\nu1,{now}\n")
    unapplied = streamfeat_in(project, "training-set", "--service", "svc", "--spine", "spine.csv", "--out", "t.pq")
    assert unapplied.returncode != 0 and "does not match the applied plan" in unapplied.stderr, unapplied.stderr
    applied = _ok(project, "apply")
    assert "view 'spend' joins the stream" in applied and "earlier Parquet log moved to" in applied, applied
    last = wall_clock_ms()
    _produce(kafka_bootstrap, topic, [last])
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    spine = project / "spine.csv"
    spine.write_text(f"user_id,event_timestamp\nu1,{last + 1}\n")

    def trained() -> int:
        _ok(project, "training-set", "--service", "svc", "--spine", "spine.csv", "--out", "t.pq")
        return int(pl.read_parquet(project / "t.pq")["n"][0])

    with _server(project):
        assert _served(port, last + 1) == (1, "INCOMPLETE")  # not 4 (3 stale + 1): its old records are gone
    assert trained() == 1  # nor its old log
    every = [now - m * MINUTE for m in (50, 40, 30, 5, 4)] + [last]
    _ok(project, "backfill", "--source", "tx", "--from", str(_history(project, every)), "--quiet")
    with _server(project):
        assert _served(port, last + 1) == (6, "PRESENT")
    assert trained() == 6


def test_apply_is_refused_while_a_dataflow_holds_the_state(tmp_path: Path) -> None:
    project = _project(tmp_path, "never-read", "127.0.0.1:1", free_port())
    _ok(project, "apply")
    with state_writer(project / ".streamfeat", "streamfeat run"):
        busy = streamfeat_in(project, "apply")
    assert busy.returncode != 0 and "streamfeat run" in busy.stderr, busy.stderr


def test_a_backfill_replays_only_the_views_that_joined_and_a_lost_plan_file_keeps_the_join(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Outside pass, second round: a backfill without --views replayed e < H into a view that
    had streamed all along too (it counted those events twice); a plan file deleted and
    applied again lost the join, and a backfill with another --end was then accepted."""
    project, topic, port, first = _streamed(tmp_path, kafka_bootstrap, kafka_topic, (50, 40, 30, 20, 10))
    _defs(project, topic, 60, second=True)  # spend2 joins the running stream
    assert "view 'spend2' joins the stream" in _ok(project, "apply")
    later = [wall_clock_ms()]
    _produce(kafka_bootstrap, topic, later)
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    (project / ".streamfeat" / "plan.json").unlink()  # lost
    again = _ok(project, "apply")
    assert "the state holds this definition's records" in again, again
    (join,) = json.loads((project / ".streamfeat" / "plan.json").read_text())["joins"].values()
    assert join["view"] == "spend2" and join["at_ms"] == max(first) + 1
    history = _history(project, first + later)
    both = streamfeat_in(project, "backfill", "--source", "tx", "--views", "spend,spend2", "--from", str(history))
    assert both.returncode != 0 and "'spend'" in both.stderr and "twice" in both.stderr, both.stderr
    done = _ok(project, "backfill", "--source", "tx", "--from", str(history))  # no --views: spend2 only
    assert "backfilling the views that joined the stream: spend2" in done, done
    with _server(project):
        assert _served(port) == (6, "PRESENT")  # spend: not 11
        status, answer = _query(port, service="svc2")
        assert status == 200 and answer["features"][0]["n2"] == 6, answer
        assert answer["metadata"]["statuses"][0]["n2"] == "PRESENT", answer


def test_a_join_time_events_may_still_reach_cannot_be_backfilled_yet(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """An event stamped ahead of now (within max_future_skew) puts the join time in the
    future: events before it still arrive and skip the joined view, so a history exported
    now would miss them. The backfill waits, naming until when."""
    topic = kafka_topic(partitions=1)
    port = free_port()
    project = _project(tmp_path, topic, kafka_bootstrap, port)
    ahead = wall_clock_ms() + 3 * MINUTE
    _ok(project, "apply")
    _produce(kafka_bootstrap, topic, [ahead])
    _ok(project, "run", "--source", "tx", "--until-caught-up")
    _defs(project, topic, 60, second=True)
    _ok(project, "apply")
    refused = streamfeat_in(project, "backfill", "--source", "tx", "--from", str(_history(project, [ahead])))
    assert refused.returncode != 0 and "may still arrive" in refused.stderr, refused.stderr
    assert "backfill it after" in refused.stderr, refused.stderr
