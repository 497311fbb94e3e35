"""Counts in messages: "1 record", "2,000 records" (never "1 records")."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with thousands separators and ``noun`` in the right number.

    >>> counted(1, "record"), counted(2_000, "record"), counted(0, "entry", "entries")
    ('1 record', '2,000 records', '0 entries')
    """
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"
