"""The shadow classifier's request-time cause (docs/shadow.md): a baseline asked without a
time answers "now", so a value counting time to the request differs by the time between
the two questions; it is explained only when streamfeat's own value at that moment equals
the baseline's."""

from __future__ import annotations

from serving.shadow.classify import NO_VALUE, Tolerance, classify

AS_OF = 1_767_225_637_123
NEWEST_EVENT = AS_OF - 28


def _time_since_last(shift_ms: int) -> object:
    """streamfeat's ``time_since_last`` at ``as_of + shift_ms`` (no event in between)."""
    return AS_OF + shift_ms - NEWEST_EVENT


def _verdict(ours: object, theirs: object, answered: tuple[int, int], probe: object = _time_since_last) -> str:
    return classify(
        ours,
        theirs,
        ours_row_missing=False,
        theirs_row_missing=False,
        as_of_ms=AS_OF,
        interval_ms=60_000,
        tolerance=Tolerance(),
        probe=probe,  # type: ignore[arg-type]
        baseline_answered=answered,
    ).cause


def test_a_time_counting_value_read_later_by_the_baseline_is_request_time() -> None:
    assert _verdict(28, 31, (2, 5)) == "request_time"


def test_a_difference_longer_than_the_baseline_took_is_not_request_time() -> None:
    assert _verdict(28, 90, (2, 5)) == "unexplained"


def test_without_the_answer_time_nothing_is_put_on_the_request_time() -> None:
    assert _verdict(28, 31, (0, 0)) == "unexplained"


def test_a_window_that_slid_while_the_baseline_answered_is_request_time() -> None:
    def count_15m(shift_ms: int) -> object:
        return 4 if shift_ms >= 3 else 5  # an event left the window 3 ms after as_of

    assert _verdict(5, 4, (1, 6), count_15m) == "request_time"


def test_a_probe_streamfeat_refuses_explains_nothing() -> None:
    assert _verdict(28, 31, (2, 5), lambda shift_ms: NO_VALUE) == "unexplained"


def test_the_default_tolerance_is_the_contracts_last_bits() -> None:
    # Two correct sums in another order (docs/semantics.md section 3): not a divergence.
    assert Tolerance().equal(48.86724431818181, 48.86724431818182)
    assert not Tolerance().equal(48.8672, 48.8673)
    assert Tolerance().equal(0.0, 5e-10)  # a value that should be zero
    assert not Tolerance(0.0, 0.0).equal(48.86724431818181, 48.86724431818182)  # exact when asked
