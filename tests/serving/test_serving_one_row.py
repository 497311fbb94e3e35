"""Property: a one-row request without metadata (answered by serving/one_row.py) gets the
answer the general path gives the same request with ``include_metadata`` (answered by
serving/pipeline.py): the same status, the same values and ``as_of``, the same error.

Every service of the test repo is drawn (defaults, a transform that raises, a feature
name two views share, a lifetime view, multi-key views, batch transforms), with entities
seen and unseen and ``as_of`` times around the events, so rows the online records
answer, rows the Parquet log answers and refused times all occur.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.definitions import FieldType
from serving.registry import Registry
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import MERCHANTS, T_END, USERS

HOUR = 3_600_000
# 13.0 makes the test repo's "flaky" transform raise (HTTP 500 on both paths).
AMOUNTS = (1.0, 13.0, 250.5)


@st.composite
def one_row_bodies(draw: st.DrawFn, registry: Registry, event_times: list[int]) -> tuple[str, dict[str, Any]]:
    service = registry.services[draw(st.sampled_from(sorted(registry.services)))]
    names = {"user_id": [*USERS, "nobody"], "merchant_id": [*MERCHANTS, "m-none"]}
    entities: dict[str, list[Any]] = {}
    for key, kind in service.join_key_types.items():
        if kind is FieldType.STRING:
            entities[key] = [draw(st.sampled_from(names.get(key, ["x"])))]
        else:
            entities[key] = [draw(st.integers(0, 3))]
    request_data = {name: [draw(st.sampled_from(AMOUNTS))] for name in service.request_fields}
    anchor = draw(st.sampled_from(event_times))
    offset = draw(st.sampled_from([-1, 0, 1, 60_000, -HOUR, 2 * HOUR, -30 * HOUR]))
    t_ms = min(anchor + offset, T_END)
    as_of: int | list[int] = [t_ms] if draw(st.booleans()) else t_ms
    body: dict[str, Any] = {"entities": entities, "as_of": as_of}
    send_empty = draw(st.booleans())  # an empty request_data object is accepted too
    if request_data or send_empty:
        body["request_data"] = request_data
    return service.name, body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_row_answers_equal_the_general_path(
    client: ASGIClient, events: list[dict[str, Any]], data: st.DataObject
) -> None:
    registry: Registry = client.app.state.serving.registry
    service, body = data.draw(one_row_bodies(registry, sorted({e["ts"] for e in events})))
    one_row = client.post(f"/v1/features/{service}", json=body)
    general = client.post(f"/v1/features/{service}", json={**body, "include_metadata": True})
    assert one_row.status_code == general.status_code, (one_row.text, general.text)
    answer, reference = one_row.json(), general.json()
    if general.status_code != 200:
        # A refused time's message ends with the range up to "now", read by each request.
        mine, theirs = answer["error"].pop("message"), reference["error"].pop("message")
        assert answer == reference
        assert mine.split(" can answer: ")[0] == theirs.split(" can answer: ")[0]
        return
    reference.pop("metadata")
    assert answer == reference
    assert list(answer["features"][0]) == list(reference["features"][0])  # column order too
