"""Items that travel through the ingest dataflow: raw Kafka batches, dead letters, decoded batches.

One ``RawBatch`` holds consecutive records of one partition; the decoder turns it into one
``DecodedBatch`` whose rows are the valid events (column arrays, event times, offsets) and whose
``dead_letters`` are every refused record. Together they account for every raw record.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from engine.io.exceptions import IoTypeError, IoValueError
from engine.wording import counted


def dlq_topic_for(topic: str) -> str:
    """The dead-letter topic of a source topic (``<topic>.dlq``): the one place its name is made."""
    return topic + ".dlq"


class DeadLetterReason(StrEnum):
    """Why a record was refused (docs/semantics.md section 5), in the order checks run."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    INVALID_STRING = "invalid_string"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    LATE_EVENT = "late_event"


_REASONS = frozenset(r.value for r in DeadLetterReason)


def _check_int64_vector(kind: str, topic: str, field: str, arr: object) -> None:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.int64 or arr.ndim != 1:
        got = (
            f"ndarray of {arr.dtype} with {counted(arr.ndim, 'dimension')}"
            if isinstance(arr, np.ndarray)
            else type(arr).__name__
        )
        raise IoTypeError(
            f"{kind} for topic '{topic}': field '{field}': expected a 1-D numpy int64 array, "
            f"got {got}. Hint: build it with np.asarray(values, dtype=np.int64)."
        )


def _check_offsets(kind: str, topic: str, offsets: npt.NDArray[np.int64]) -> None:
    _check_int64_vector(kind, topic, "offsets", offsets)
    # Kafka offsets of one partition only grow; the watermark logic relies on this order.
    if len(offsets) > 1 and not bool(np.all(offsets[1:] > offsets[:-1])):
        raise IoValueError(
            f"{kind} for topic '{topic}': field 'offsets': expected strictly increasing "
            f"offsets, got {offsets[:8].tolist()}... Hint: keep records in partition order."
        )
    if len(offsets) and int(offsets[0]) < 0:
        raise IoValueError(
            f"{kind} for topic '{topic}': field 'offsets': expected offsets >= 0, "
            f"got {int(offsets[0])}. Hint: use the offsets Kafka reported."
        )


def _check_partition(kind: str, topic: str, partition: object) -> None:
    if type(partition) is not int or partition < 0:
        raise IoValueError(
            f"{kind} for topic '{topic}': field 'partition': expected an int >= 0, "
            f"got {partition!r}. Hint: pass the Kafka partition number."
        )


@dataclass(frozen=True, eq=False)
class RawBatch:
    """Consecutive records of one topic partition, as read from Kafka (offsets ascending)."""

    topic: str
    partition: int
    offsets: npt.NDArray[np.int64]
    keys: list[bytes | None]
    values: list[bytes | None]

    def __post_init__(self) -> None:
        _check_partition("RawBatch", self.topic, self.partition)
        _check_offsets("RawBatch", self.topic, self.offsets)
        if len(self.offsets) == 0:
            raise IoValueError(
                f"RawBatch for topic '{self.topic}' partition {self.partition}: field 'offsets': "
                "expected at least one record, got 0. Hint: emit no item instead of an empty batch."
            )
        for name, seq in (("keys", self.keys), ("values", self.values)):
            if len(seq) != len(self.offsets):
                raise IoValueError(
                    f"RawBatch for topic '{self.topic}' partition {self.partition}: field "
                    f"'{name}': expected {len(self.offsets)} entries (one per offset), "
                    f"got {len(seq)}. Hint: keep offsets, keys and values aligned."
                )

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class DeadLetter:
    """One refused record: its position, original key and bytes, and why it was refused."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str

    def __post_init__(self) -> None:
        _check_partition("DeadLetter", self.topic, self.partition)
        if type(self.offset) is not int or self.offset < 0:
            raise IoValueError(
                f"DeadLetter for topic '{self.topic}': field 'offset': expected an int >= 0, "
                f"got {self.offset!r}. Hint: pass the Kafka offset of the refused record."
            )
        if str(self.reason) not in _REASONS:
            raise IoValueError(
                f"DeadLetter for topic '{self.topic}': field 'reason': expected one of "
                f"{sorted(_REASONS)}, got {self.reason!r}. Hint: use DeadLetterReason."
            )


_COLUMN_KINDS = {"O": "string", "i": "int", "f": "float", "b": "bool"}


@dataclass(frozen=True, eq=False)
class DecodedBatch:
    """Valid events of one raw batch as columns, plus the batch's dead letters.

    ``top_ts_after`` is the partition's largest valid event times through ``last_offset``,
    descending (as many as the watermark rank, docs/semantics.md section 5; empty when the
    partition has none yet); they are stored with the applied offset so the watermark
    survives restarts.
    """

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    top_ts_after: tuple[int, ...]
    offsets: npt.NDArray[np.int64]
    event_ts: npt.NDArray[np.int64]
    columns: dict[str, np.ndarray]
    dead_letters: tuple[DeadLetter, ...]

    def __post_init__(self) -> None:
        _check_partition("DecodedBatch", self.topic, self.partition)
        n = len(self.offsets)
        _check_offsets("DecodedBatch", self.topic, self.offsets)
        _check_int64_vector("DecodedBatch", self.topic, "event_ts", self.event_ts)
        if len(self.event_ts) != n:
            raise IoValueError(
                f"DecodedBatch for topic '{self.topic}': field 'event_ts': expected {n} entries, "
                f"got {len(self.event_ts)}. Hint: one event time per valid row."
            )
        if self.first_offset > self.last_offset:
            raise IoValueError(
                f"DecodedBatch for topic '{self.topic}': field 'first_offset': expected <= "
                f"last_offset {self.last_offset}, got {self.first_offset}. Hint: pass the "
                "offsets of the raw batch's first and last records."
            )
        for name, arr in self.columns.items():
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or len(arr) != n:
                raise IoValueError(
                    f"DecodedBatch for topic '{self.topic}': column '{name}': expected a 1-D "
                    f"array of {n} rows, got {type(arr).__name__} of shape "
                    f"{getattr(arr, 'shape', None)}. "
                    "Hint: build one array per schema field over the valid rows."
                )
            if arr.dtype.kind not in _COLUMN_KINDS:
                raise IoTypeError(
                    f"DecodedBatch for topic '{self.topic}': column '{name}': expected dtype "
                    f"object, int64, float64 or bool, got {arr.dtype}. Hint: see engine.io.decoder."
                )

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def raw_count(self) -> int:
        """Number of raw records this batch accounts for (valid rows plus dead letters)."""
        return len(self.offsets) + len(self.dead_letters)
