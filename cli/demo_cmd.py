"""``streamfeat demo``: the whole product end to end on this machine.

1. start a local Kafka broker (unless one answers already);
2. apply the example fraud repo into a fresh demo data directory;
3. backfill one day of generated history from Parquet (handoff at "now");
4. start the streaming dataflow and the feature server as child processes;
5. produce a live stream of generated transactions;
6. print feature vectors (with the request-time ratio) for a few users from the API;
7. write a point-in-time training set from the Parquet log and train a small fraud model;
8. score live transactions through the cached client, as an inference endpoint would;
9. stop everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cli.common import Subparsers
from engine.clock import wall_clock_ms
from engine.json_types import JSONObject
from engine.ports import free_port, free_port_pair
from engine.processes import stop_process_group
from engine.timefmt import iso_utc
from engine.wording import counted

DEMO_TOPIC = "transactions"
HISTORY_EVENTS_PER_SECOND = 3.0
STREAM_SECONDS = 8
STREAM_RATE = 1_000


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the example fraud pipeline end to end (Kafka, backfill, dataflow, serving)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".streamfeat/demo"), help="demo data (wiped first)")
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="use this running Kafka broker instead of the demo's own private one (started on a free port "
        "under --data-dir and stopped at the end)",
    )
    parser.add_argument(
        "--reset-topic",
        action="store_true",
        help=f"with --bootstrap: delete and recreate the topic '{DEMO_TOPIC}' if it already exists there",
    )
    parser.add_argument("--users", type=int, default=5_000, help="distinct users (default 5000)")
    parser.add_argument("--port", type=int, default=0, help="serving port (default: a free one)")
    parser.set_defaults(handler=_demo)


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def _run_cli(*args: str) -> None:
    done = subprocess.run(_cli(*args), capture_output=True, text=True)
    if done.returncode != 0:
        from engine.exceptions import StreamfeatError

        raise StreamfeatError(f"`streamfeat {' '.join(args)}` failed:\n{done.stderr.strip()}")


@contextlib.contextmanager
def _child(name: str, args: list[str], log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_file.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop_process_group(proc, signal.SIGINT, timeout_s=20)
            _say(f"stopped {name} (log: {log_file})")


def _topic_exists(bootstrap: str, topic: str) -> bool:
    from confluent_kafka.admin import AdminClient

    from engine.kafka_clients import quiet_client_settings

    admin = AdminClient(quiet_client_settings(bootstrap))
    return topic in admin.list_topics(timeout=10).topics


def _recreate_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from engine.io.batches import dlq_topic_for
    from engine.kafka_clients import quiet_client_settings

    admin = AdminClient(quiet_client_settings(bootstrap))
    existing = admin.list_topics(timeout=10).topics
    doomed = [t for t in (topic, dlq_topic_for(topic)) if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)
        deadline = time.monotonic() + 30
        while any(t in admin.list_topics(timeout=10).topics for t in doomed) and time.monotonic() < deadline:
            time.sleep(0.2)
    for _ in range(50):  # deletion is asynchronous on the broker: retry creation briefly
        futures = admin.create_topics(
            [NewTopic(topic, 3, 1), NewTopic(dlq_topic_for(topic), 1, 1)], operation_timeout=30
        )
        try:
            for future in futures.values():
                future.result(timeout=30)
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"could not create the demo topic {topic!r}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the feature server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the feature server at {url} did not become ready")


def _demo(args: argparse.Namespace) -> int:
    from engine.exceptions import ConfigError
    from engine.kafka_local import BrokerConfig, ensure_broker, require_broker, stop_broker

    data_dir: Path = args.data_dir.resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    if args.bootstrap is not None:
        # Someone else's broker: its topics are theirs, so an existing demo topic is only
        # replaced when asked (a shared broker's 'transactions' may hold real data).
        require_broker(args.bootstrap, consequence="the demo did not start")
        if _topic_exists(args.bootstrap, DEMO_TOPIC) and not args.reset_topic:
            raise ConfigError(
                f"the broker at {args.bootstrap} already has a topic '{DEMO_TOPIC}'; the demo would replace it",
                hint="pass --reset-topic to let the demo delete and recreate it, or leave out --bootstrap: "
                "the demo then runs its own private broker",
            )
        _say(f"Kafka at {args.bootstrap} (already running)")
        return _pipeline(args, data_dir, args.bootstrap)
    # The demo's own broker: a free port and a data directory inside the demo's, so no
    # other broker or topic on the machine is touched.
    config = BrokerConfig(port=free_port_pair(), data_dir=data_dir / "kafka")
    broker = ensure_broker(config=config)
    _say(f"Kafka at {broker.bootstrap} (a private broker for the demo, data in {data_dir / 'kafka'})")
    try:
        return _pipeline(args, data_dir, broker.bootstrap)
    finally:
        stop_broker(config=config)
        _say("stopped the demo's Kafka broker")


def _pipeline(args: argparse.Namespace, data_dir: Path, bootstrap: str) -> int:
    repo = str(Path("feature_defs").resolve())
    common = ["--repo", repo, "--data-dir", str(data_dir)]
    _recreate_topic(bootstrap, DEMO_TOPIC)
    _apply_example_repo(repo, common)
    handoff_ms = _backfill_one_day(args.users, data_dir, common)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        _child("dataflow", _cli("run", *common, "--bootstrap", bootstrap), data_dir / "dataflow.log") as flow,
        _child("feature server", _cli("serve", *common, "--port", str(port)), data_dir / "serve.log") as server,
    ):
        _wait_ready(url, server)
        _say(f"dataflow running (pid {flow.pid}); feature server at {url} (docs at {url}/docs)")
        produced = _stream_live(args.users, bootstrap, handoff_ms)
        _say(f"produced {produced:,} live transactions (1% malformed) to topic '{DEMO_TOPIC}'")
        _show_feature_vectors(url, flow, data_dir)
        _report_dead_letters(bootstrap, produced)
        _train_and_score(url, data_dir, common, args.users)

    _say("done")
    return 0


def _apply_example_repo(repo: str, common: list[str]) -> None:
    from engine.definitions import load_repo

    _run_cli("apply", *common, "--shards", "4")
    example = load_repo(Path(repo))
    _say(
        f"applied the example fraud repo (views {', '.join(v.name for v in example.views)}; "
        f"services {', '.join(s.name for s in example.services)})"
    )


def _backfill_one_day(users: int, data_dir: Path, common: list[str]) -> int:
    """One day of history up to the handoff time T, replayed through the same kernel;
    returns T (epoch ms)."""
    from engine.generate import GeneratorConfig, write_parquet

    handoff_ms = wall_clock_ms() // 60_000 * 60_000  # the current minute
    day_ms = 86_400_000
    history = GeneratorConfig(
        events=int(86_400 * HISTORY_EVENTS_PER_SECOND),
        users=users,
        merchants=500,
        seed=1,
        start_ms=handoff_ms - day_ms,
        rate=HISTORY_EVENTS_PER_SECOND,
    )
    write_parquet(history, data_dir / "history")
    started = time.monotonic()
    _run_cli(
        "backfill",
        *common,
        "--source",
        "transactions",
        "--from",
        str(data_dir / "history"),
        "--start",
        iso_utc(handoff_ms - day_ms),
        "--end",
        iso_utc(handoff_ms),
        "--quiet",
    )
    _say(f"backfilled {history.events:,} historical events (one day) in {time.monotonic() - started:.1f}s")
    return handoff_ms


def _stream_live(users: int, bootstrap: str, handoff_ms: int) -> int:
    """STREAM_SECONDS seconds of live transactions at STREAM_RATE per second (1%
    malformed); returns how many were produced."""
    from engine.generate import GeneratorConfig, produce_events

    produced = 0
    for second in range(STREAM_SECONDS):
        now_ms = max(wall_clock_ms(), handoff_ms)
        live = GeneratorConfig(
            events=STREAM_RATE,
            users=users,
            merchants=500,
            seed=100 + second,
            start_ms=now_ms,
            rate=float(STREAM_RATE),
            malformed_fraction=0.01,
        )
        report = produce_events(live, DEMO_TOPIC, bootstrap)
        produced += report.events
        time.sleep(max(0.0, 1.0 - (wall_clock_ms() - now_ms) / 1000))
    return produced


_SHOWN_FEATURES = (
    "amount_count_15m",
    "amount_sum_15m",
    "amount_sum_1d",
    "amount_count_1d",
    "ms_since_last_purchase",
    "distinct_merchants_1h",
    "distinct_cards_1d",
    "amount_median_30d",
    "amount_p95_30d",
    "last_5_merchants_1d",
    "merchant_txn_count_15m",
    "pair_txn_count_1d",
    "pair_ms_since_last_1d",
    "pair_first_seen_1d",
    "user_purchases_lifetime",
    "user_first_seen_lifetime",
    "spend_velocity_ratio",
    "user_merchant_share_1h",
)


def _show_feature_vectors(url: str, flow: subprocess.Popen[bytes], data_dir: Path) -> None:
    """Ask for four users' vectors until every view is within 5 s of now (or 30 s
    passed), then print them with each view's freshness lag."""
    import httpx

    users = ["u000000", "u000001", "u000002", "u000003"]
    amounts = [25.0, 250.0, 2500.0, 40.0]
    body: JSONObject = {
        "entities": {"user_id": users, "merchant_id": ["m0000", "m0001", "m0002", "m0003"]},
        "request_data": {"amount": amounts},
        "include_metadata": True,
    }
    deadline = time.monotonic() + 30
    while True:
        if flow.poll() is not None:
            raise RuntimeError(f"the dataflow exited with code {flow.returncode}; see {data_dir / 'dataflow.log'}")
        answer = httpx.post(f"{url}/v1/features/fraud_scoring", json=body, timeout=5).json()
        fresh = {name: v.get("freshness_lag_ms") for name, v in answer.get("metadata", {}).get("views", {}).items()}
        lag = max((v if v is not None else 10**9 for v in fresh.values()), default=10**9)
        if lag < 5_000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    _say("feature vectors from POST /v1/features/fraud_scoring (values as of now):")
    for row, amount in zip(answer["features"], amounts, strict=True):
        values = ", ".join(
            f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in _SHOWN_FEATURES
        )
        print(f"    user {row['user_id']} amount {amount:>7.2f}: {values}")
    print(f"    freshness lag (ms) per view: {fresh}")


def _report_dead_letters(bootstrap: str, produced: int) -> None:
    from engine.io.batches import dlq_topic_for
    from engine.io.dead_letters import dlq_record_count

    dlq_topic = dlq_topic_for(DEMO_TOPIC)
    dlq = dlq_record_count(bootstrap, dlq_topic) or 0
    _say(f"counts: produced {produced:,} live events; {dlq:,} dead letters in '{dlq_topic}'")


def _train_and_score(url: str, data_dir: Path, common: list[str], users: int) -> None:
    """A point-in-time training set from the Parquet log (same time contract as serving),
    a small model trained on it, then live transactions scored through the client."""
    import httpx
    import polars as pl

    from cli.demo_scorer import SERVICE, demo_spine, score_live, train_model
    from serving.model_file import save_model

    spine_path, out_path = data_dir / "spine.parquet", data_dir / "train.parquet"
    demo_spine(data_dir / "history").write_parquet(spine_path)
    _run_cli("training-set", *common, "--service", SERVICE, "--spine", str(spine_path), "--out", str(out_path))
    train = pl.read_parquet(out_path)
    _say(
        f"wrote a point-in-time training set: {out_path} ({counted(train.height, 'row')}, {counted(train.width, 'column')})"
    )
    with pl.Config(tbl_rows=6, tbl_cols=10):
        print(
            train.select(
                [
                    "user_id",
                    "event_timestamp",
                    "amount",
                    "amount_sum_1d",
                    "amount_count_15m",
                    "ms_since_last_purchase",
                    "distinct_merchants_1h",
                    "amount_p95_30d",
                    "spend_velocity_ratio",
                ]
            ).head(6)
        )
    fingerprint = httpx.get(f"{url}/v1/services/{SERVICE}", timeout=5).json()["fingerprint"]
    model = train_model(train, fingerprint)
    save_model(model, data_dir / "model.json")
    _say(
        f"trained a logistic fraud model on it (labels: the rule in cli/demo_scorer.py); "
        f"saved {data_dir / 'model.json'} (service {SERVICE}, fingerprint {fingerprint})"
    )
    score_live(url, model, users, _say)
