"""Ask both servers one question, compare every value, classify every mismatch.

streamfeat is asked at a fixed ``as_of`` (the request's, else the time it was sent),
so the follow-up questions that explain a mismatch (the same request a tile earlier,
an hour earlier, ...) are about the same moment. The baseline is asked at the same
``as_of``: a server that honours it says so in ``metadata.as_of`` (streamfeat's Feast
route does) and is compared at that moment; a Feast server ignores it and answers what it
has materialized now, so the time it took to answer is kept for the ``request_time`` cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import orjson

from engine.clock import wall_clock_ms
from serving.shadow.classify import NO_VALUE, Probe, Tolerance, classify
from serving.shadow.feast_http import Answer, Failure, ask, request_body
from serving.shadow.mapping import FeatureMapping
from serving.shadow.outcome import Mismatch, Outcome, RequestFailure

DEFAULT_INTERVAL_MS = 60_000  # a view's default aggregation_interval (docs/semantics.md section 2)


@dataclass(frozen=True)
class ShadowRequest:
    """One question: a feature service or ``view:feature`` references, and the entity rows
    (join keys and request fields, one list of values per column, as Feast sends them)."""

    index: int
    entities: Mapping[str, Sequence[object]]
    service: str | None = None
    features: tuple[str, ...] = ()
    as_of_ms: int | None = None

    def __post_init__(self) -> None:
        if (self.service is None) == (not self.features):
            raise ValueError(
                f"ShadowRequest {self.index}: expected a feature service or a list of "
                f'"view:feature" references (one of them), got service={self.service!r}, '
                f"features={list(self.features)!r}"
            )
        lengths = {len(v) for v in self.entities.values()}
        if not self.entities or len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                f"ShadowRequest {self.index}: 'entities': expected columns of equal, non-zero "
                f"length, got { ({k: len(v) for k, v in self.entities.items()}) }"
            )

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.entities.values())))


class ShadowRunner:
    """Compares the answers of ``baseline_url`` and ``streamfeat_url`` request by request."""

    def __init__(
        self,
        baseline_url: str,
        streamfeat_url: str,
        *,
        mapping: FeatureMapping | None = None,
        tolerance: Tolerance | None = None,
        timeout_s: float = 2.0,
        streamfeat_api_key: str | None = None,
    ) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise ValueError(f"ShadowRunner.timeout_s: expected seconds > 0, got {timeout_s!r}")
        self.mapping = mapping or FeatureMapping()
        self.tolerance = tolerance or Tolerance()
        self._baseline = httpx.Client(base_url=baseline_url.rstrip("/"), timeout=timeout_s)
        auth = {"authorization": f"Bearer {streamfeat_api_key}"} if streamfeat_api_key else {}
        self._streamfeat = httpx.Client(base_url=streamfeat_url.rstrip("/"), timeout=timeout_s, headers=auth)
        self._intervals: dict[str, int] | None = None

    def close(self) -> None:
        self._baseline.close()
        self._streamfeat.close()

    def interval_ms(self, view: str) -> int:
        """The view's tile width, from streamfeat's service descriptions (read once)."""
        if self._intervals is None:
            self._intervals = {}
            try:
                response = self._streamfeat.get("/v1/services")
                services = orjson.loads(response.content)["services"] if response.status_code == 200 else []
                for service in services:
                    for described in service.get("views", []):
                        self._intervals[described["name"]] = int(described["aggregation_interval_ms"])
            except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                pass  # the default interval is used: only the boundary shifts tried depend on it
        return self._intervals.get(view, DEFAULT_INTERVAL_MS)

    def compare(self, request: ShadowRequest) -> Outcome:
        as_of = request.as_of_ms if request.as_of_ms is not None else wall_clock_ms()
        ours = self._ask_streamfeat(request, as_of)
        if isinstance(ours, Failure):
            return Outcome(request.index, as_of, failure=RequestFailure("streamfeat", ours.reason, ours.detail))
        theirs_body = request_body(
            request.entities,
            as_of_ms=as_of,
            service=self.mapping.baseline_service(request.service) if request.service is not None else None,
            features=[self.mapping.baseline_ref(f) for f in request.features],
        )
        asked = wall_clock_ms()
        theirs = ask(self._baseline, theirs_body, request.n_rows)
        answered = (asked - as_of, wall_clock_ms() - as_of)
        if isinstance(theirs, Failure):
            return Outcome(request.index, as_of, failure=RequestFailure("baseline", theirs.reason, theirs.detail))
        if theirs.as_of_ms == as_of:
            answered = (0, 0)  # it answered as of the same moment: no time passed between the answers
        return self._compare_answers(request, as_of, ours, theirs, answered)

    def _ask_streamfeat(self, request: ShadowRequest, as_of: int) -> Answer | Failure:
        body = request_body(request.entities, service=request.service, features=request.features, as_of_ms=as_of)
        return ask(self._streamfeat, body, request.n_rows)

    def _compare_answers(
        self, request: ShadowRequest, as_of: int, ours: Answer, theirs: Answer, baseline_answered: tuple[int, int]
    ) -> Outcome:
        probes: dict[int, Answer | Failure] = {}

        def probe_row(i: int, feature: str) -> Probe:
            def probe(shift_ms: int) -> object:
                if shift_ms not in probes:
                    probes[shift_ms] = self._ask_streamfeat(request, as_of + shift_ms)
                answer = probes[shift_ms]
                cell = answer.rows[i].get(feature) if isinstance(answer, Answer) else None
                return NO_VALUE if cell is None or cell.status == "NOT_FOUND" else cell.value

            return probe

        compared: dict[str, int] = {}
        mismatches: list[Mismatch] = []
        for i in range(request.n_rows):
            entity = {k: v[i] for k, v in request.entities.items()}
            for feature, mine in ours.rows[i].items():
                compared[feature] = compared.get(feature, 0) + 1
                their_name = self.mapping.baseline_ref(feature)
                other = theirs.rows[i].get(their_name)
                if other is None:
                    mismatches.append(
                        Mismatch(
                            feature,
                            their_name,
                            i,
                            entity,
                            mine.value,
                            mine.status,
                            None,
                            "ABSENT",
                            "not_in_baseline",
                            "the baseline's answer has no such feature",
                        )
                    )
                    continue
                if self.tolerance.equal(mine.value, other.value):
                    continue
                view, their_view = feature.split(":")[0], their_name.split(":")[0]
                verdict = classify(
                    mine.value,
                    other.value,
                    ours_row_missing=ours.row_missing(i, view),
                    theirs_row_missing=theirs.row_missing(i, their_view),
                    as_of_ms=as_of,
                    interval_ms=self.interval_ms(view),
                    tolerance=self.tolerance,
                    probe=probe_row(i, feature),
                    baseline_answered=baseline_answered,
                )
                mismatches.append(
                    Mismatch(
                        feature,
                        their_name,
                        i,
                        entity,
                        mine.value,
                        mine.status,
                        other.value,
                        other.status,
                        verdict.cause,
                        verdict.evidence,
                    )
                )
        return Outcome(request.index, as_of, compared, tuple(mismatches))
