"""Shadow runs against a baseline with seeded divergences: ``streamfeat shadow`` explains every
seeded mismatch with its cause and reports nothing else; a baseline that is down, slow or
answers garbage is reported per request; the client's live sampler writes the same outcomes
off the caller's path, and drops (and counts) what its bounded queue cannot hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli import main
from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan
from engine.ports import free_port
from serving.client import FeatureClient
from serving.client_shadow import ShadowConfig
from serving.shadow.mapping import FeatureMapping
from serving.shadow.outcome import read_outcomes
from tests.serving.divergent_baseline_support import MISSING_USER, DivergentBaseline, NowBaseline
from tests.serving.serving_support import (
    MERCHANTS,
    T_END,
    USERS,
    rocksdb_server,
    uvicorn_server,
)

SERVICE = "fraud_scoring"
RENAMED = {"user_spend:amount_sum_15m": "user_stats:spend_15m"}
ENTITIES: dict[str, list[Any]] = {
    "user_id": list(USERS),
    "merchant_id": [MERCHANTS[i % len(MERCHANTS)] for i in range(len(USERS))],
    "amount": [25.0, 7.5, 300.0, 1.0, 42.0],
}


@pytest.fixture(scope="module")
def streamfeat_url(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with rocksdb_server(tmp_path_factory.mktemp("shadow"), repo, plan, events) as url:
        yield url


@pytest.fixture
def baseline(streamfeat_url: str) -> Iterator[tuple[DivergentBaseline, str]]:
    peer = DivergentBaseline(streamfeat_url, T_END, RENAMED)
    with uvicorn_server(peer.app) as url:
        yield peer, url
    peer.release.set()


def write_requests(path: Path) -> Path:
    requests = [
        {
            "feature_service": SERVICE,
            "entities": {k: ENTITIES[k] for k in ("user_id", "merchant_id")},
            "request_data": {"amount": ENTITIES["amount"]},
            "as_of": T_END,
        },
        {
            "features": ["user_spend:amount_sum_15m", "user_spend:amount_sum_1h"],
            "entities": {"user_id": list(USERS)},
            "as_of": T_END,
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in requests) + "\n")
    return path


def run_shadow(baseline_url: str, streamfeat_url: str, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    """``streamfeat shadow`` over the two requests of :func:`write_requests`; (exit code, out dir)."""
    out = tmp_path / "report"
    requests = write_requests(tmp_path / "requests.jsonl")
    argv = ["shadow", "--baseline", baseline_url, "--streamfeat", streamfeat_url, "--requests", str(requests)]
    return main([*argv, *extra, "--out", str(out)]), out


def mapping_file(path: Path) -> Path:
    path.write_text(json.dumps({"features": RENAMED}))
    return path


def reported(report: dict[str, Any]) -> set[tuple[tuple[tuple[str, Any], ...], str, str]]:
    found = set()
    for feature, entry in report["features"].items():
        assert sum(entry["causes"].values()) == entry["mismatches"]
        for cause, examples in entry["examples"].items():
            for example in examples:
                found.add((tuple(example["entity"].items()), feature, cause))
    return found


def all_mismatches(outcomes_path: Path) -> set[tuple[tuple[tuple[str, Any], ...], str, str]]:
    read = read_outcomes(outcomes_path)
    assert read.unreadable_lines == []
    return {(tuple(m.entity.items()), m.feature, m.cause) for o in read.outcomes for m in o.mismatches}


def test_shadow_run_explains_every_seeded_divergence(
    baseline: tuple[DivergentBaseline, str], streamfeat_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peer, url = baseline
    code, out = run_shadow(url, streamfeat_url, tmp_path, "--mapping", str(mapping_file(tmp_path / "m.json")))
    assert code == 0, capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    found = all_mismatches(out / "outcomes.jsonl")
    causes = {cause for _, _, cause in peer.seeded}
    assert causes == {"window_boundary", "staleness", "null_vs_default", "unit_or_time_zone", "missing_entity"}, (
        "the seeded events should produce every kind of divergence"
    )
    assert found == peer.seeded  # every seeded divergence, with its cause, and nothing else
    assert report["requests"] == {"total": 2, "compared": 2, "failed": 0, "failed_by_reason": {}}
    assert report["warning"] is None and "warning" not in capsys.readouterr().err
    renamed = report["features"]["user_spend:amount_sum_15m"]
    assert renamed["compared"] == 2 * len(USERS)
    assert set(renamed["causes"]) == {"missing_entity"}  # the renamed feature matched for every other user
    for feature, entry in report["features"].items():
        seeded_here = [s for s in peer.seeded if s[1] == feature]
        assert entry["mismatches"] == len(seeded_here), feature
        assert entry["mismatch_rate"] == len(seeded_here) / entry["compared"]
    assert all(m[0][0] == ("user_id", MISSING_USER) for m in found if m[2] == "missing_entity")
    markdown = (out / "report.md").read_text()
    assert (
        "| `user_spend:amount_sum_1h` |" in markdown and "### `user_spend:amount_sum_1h`: window_boundary" in markdown
    )
    assert "as_of -1m" in markdown and "1h earlier" in markdown
    svg = (out / "mismatch_rates.svg").read_text()
    assert svg.startswith("<svg") and "user_spend:amount_sum_1h" in svg and "staleness" in svg


@pytest.mark.parametrize(
    "mode,reason", [("garbage", "garbage"), ("error", "http_error"), ("down", "unreachable"), ("slow", "timeout")]
)
def test_a_failing_baseline_is_reported_per_request_and_never_reads_like_agreement(
    baseline: tuple[DivergentBaseline, str],
    streamfeat_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    reason: str,
) -> None:
    peer, url = baseline
    peer.mode = mode
    if mode == "down":
        url = f"http://127.0.0.1:{free_port()}"
    code, out = run_shadow(url, streamfeat_url, tmp_path, "--timeout", "1")
    assert code == 1  # nothing compared: not the exit of a run that found agreement
    report = json.loads((out / "report.json").read_text())
    assert report["requests"]["failed_by_reason"] == {f"baseline:{reason}": 2}
    assert [f["request"] for f in report["failures"]] == [0, 1]
    assert report["values"] == {"compared": 0, "mismatches": 0}
    warning = f"nothing was compared: 0 values compared (baseline {reason} at {url} for 2 requests)"
    assert report["warning"].startswith(warning), report["warning"]
    markdown = (out / "report.md").read_text()
    assert "## Failed requests" in markdown
    assert f"**Warning: {warning}" in markdown.split("- requests:")[0]  # above the totals
    assert "No mismatches." not in markdown and "Nothing compared, so no mismatch could be found." in markdown
    err = capsys.readouterr().err
    assert f"warning: {warning}" in err and "this report shows no agreement" in err, err


def test_bad_requests_file_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"feature_service": "fraud_scoring", "entities": {"user_id": ["u0"]}}\n{"entities": 3}\n')
    code = main(
        ["shadow", "--baseline", "http://127.0.0.1:9", "--requests", str(requests), "--out", str(tmp_path / "out")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'entities'" in err


def test_live_sampler_logs_outcomes_the_shadow_report_reads(
    baseline: tuple[DivergentBaseline, str], streamfeat_url: str, tmp_path: Path
) -> None:
    peer, url = baseline
    log_path = tmp_path / "shadow.jsonl"
    config = ShadowConfig(url, 1.0, log_path, mapping=FeatureMapping(RENAMED))
    keys = {k: ENTITIES[k] for k in ("user_id", "merchant_id")}
    with (
        FeatureClient(streamfeat_url, timeout=30, shadow=config) as client,
        FeatureClient(streamfeat_url, timeout=30) as plain,
    ):
        answer = client.get_feature_vectors(SERVICE, keys, {"amount": ENTITIES["amount"]}, as_of=T_END)
        assert answer == plain.get_feature_vectors(SERVICE, keys, {"amount": ENTITIES["amount"]}, as_of=T_END)
        assert client.shadow is not None and client.shadow.drain(60)
        assert (client.shadow.stats.sampled, client.shadow.stats.compared, client.shadow.stats.dropped) == (1, 1, 0)
    assert all_mismatches(log_path) == peer.seeded
    out = tmp_path / "report"
    assert main(["shadow", "--from-log", str(log_path), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["values"]["mismatches"] == len(peer.seeded)
    assert reported(report) <= peer.seeded


def test_live_sampler_never_blocks_the_caller_and_counts_drops(
    baseline: tuple[DivergentBaseline, str], streamfeat_url: str, tmp_path: Path
) -> None:
    peer, url = baseline
    peer.mode = "slow"  # the baseline answers only once released
    log_path = tmp_path / "shadow.jsonl"
    config = ShadowConfig(url, 1.0, log_path, max_queue=1, timeout_s=60)
    keys = {"user_id": ["u0"], "merchant_id": ["m0"]}
    with FeatureClient(streamfeat_url, timeout=30, shadow=config) as client:
        answers = [client.get_feature_vectors(SERVICE, keys, {"amount": [1.0]}, as_of=T_END) for _ in range(6)]
        assert all(a == answers[0] for a in answers)
        assert client.shadow is not None
        stats = client.shadow.stats
        # One request is with the (stuck) baseline, one waits in the queue, the rest were dropped.
        assert stats.sampled == 6 and stats.dropped >= 4
        peer.mode = "ok"
        peer.release.set()
        assert client.shadow.drain(60)
        assert stats.compared == stats.sampled - stats.dropped
    assert len(read_outcomes(log_path).outcomes) == stats.compared


def test_a_shadow_run_against_itself_finds_no_difference(
    streamfeat_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both sides are asked as of T_END (the requests' as_of); streamfeat's Feast route honours
    # it and says so in metadata.as_of, so the two answers are of the same moment.
    code, out = run_shadow(streamfeat_url, streamfeat_url, tmp_path)
    assert code == 0, capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["requests"]["failed"] == 0 and report["requests"]["compared"] == 2, report["requests"]
    assert all_mismatches(out / "outcomes.jsonl") == set()
    assert all(entry["mismatches"] == 0 for entry in report["features"].values())


def test_a_baseline_answering_now_differs_only_by_the_request_time(
    streamfeat_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A baseline that ignores as_of, as Feast's server does, answers as of now, months after
    # T_END: every windowed value differs, and each difference is streamfeat's own value at
    # the moment the baseline answered.
    with uvicorn_server(NowBaseline(streamfeat_url).app) as baseline_url:
        code, out = run_shadow(baseline_url, streamfeat_url, tmp_path)
    assert code == 0, capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["requests"]["failed"] == 0, report["requests"]
    causes = {cause for _, _, cause in all_mismatches(out / "outcomes.jsonl")}
    assert causes == {"request_time"}, report["causes"]
    assert "ms_since_last_purchase" in {
        f.split(":")[-1] for f in report["features"] if report["features"][f]["mismatches"]
    }
