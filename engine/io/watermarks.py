"""The partition watermark's memory: the largest valid event times per source partition
(docs/semantics.md section 5).

A partition's watermark is its ``rank``-th largest valid event time minus the source's
allowed lateness, ``rank`` being ``watermark_outliers + 1``. The decoder refuses events
below it as late; the largest times are stored with the applied offsets, so a restart
resumes with the same watermark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from engine.io.exceptions import IoValueError
from engine.timefmt import NO_EVENT_TS


class PartitionWatermarks:
    """The largest valid event times seen per partition of one source (the watermark's memory).

    The watermark of a partition is its ``rank``-th largest valid event time minus the
    source's allowed lateness, where ``rank`` is the source's ``watermark_outliers + 1``
    (docs/semantics.md section 5). The decoder keeps the ``rank`` largest times here; they
    are stored with the applied offsets and handed back through ``restore`` on restart.
    """

    def __init__(self) -> None:
        self._top: dict[int, tuple[int, ...]] = {}

    @classmethod
    def restore(cls, top_ts: Mapping[int, Sequence[int]]) -> PartitionWatermarks:
        """State as of a resume point: ``{partition: largest event times through its applied
        offset}``."""
        marks = cls()
        for partition, times in top_ts.items():
            if (
                type(partition) is not int
                or partition < 0
                or isinstance(times, (str, bytes))
                or not isinstance(times, Sequence)
                or any(type(ts) is not int for ts in times)
            ):
                raise IoValueError(
                    f"PartitionWatermarks.restore: entry {partition!r}: expected "
                    f"{{partition int >= 0: sequence of int event times}}, got "
                    f"{partition!r}: {times!r}. Hint: pass the top event times stored with "
                    "each partition's applied offset."
                )
            if times:
                marks._top[partition] = tuple(sorted(times, reverse=True))
        return marks

    def top_ts(self, partition: int) -> tuple[int, ...]:
        """The partition's largest valid event times so far, descending."""
        return self._top.get(partition, ())

    def max_ts(self, partition: int) -> int:
        """Largest valid event time of the partition so far, ``NO_EVENT_TS`` if none."""
        top = self._top.get(partition)
        return top[0] if top else NO_EVENT_TS

    def advance(self, partition: int, times: Sequence[int], rank: int) -> tuple[int, ...]:
        """Record valid events at ``times``, keep the ``rank`` largest; returns them."""
        top = tuple(sorted((*self._top.get(partition, ()), *times), reverse=True)[:rank])
        if top:
            self._top[partition] = top
        return top

    def snapshot(self) -> dict[int, tuple[int, ...]]:
        """Copy of ``{partition: top event times}`` for the partitions seen so far."""
        return dict(self._top)


def ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def rank_th_before(
    carried: Sequence[int], ts: npt.NDArray[np.int64], rank: int, lateness: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per event: the rank-th largest of ``carried`` and the earlier ``ts``, and whether the
    event is late against it (one pass; ``rank`` is small)."""
    top = sorted(carried, reverse=True)[:rank]
    before = np.empty_like(ts)
    late = np.zeros(len(ts), dtype=np.bool_)
    for j, e in enumerate(ts.tolist()):
        base = top[rank - 1] if len(top) >= rank else NO_EVENT_TS
        before[j] = base
        if e + lateness < base:
            late[j] = True
            continue
        if len(top) < rank or e > top[-1]:
            top.append(e)
            top.sort(reverse=True)
            del top[rank:]
    return before, late
