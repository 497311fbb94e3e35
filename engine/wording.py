"""Wording shared by messages: counts ("1 record", "2,000 records", never "1 records")
and echoed values cut to a length ("abc...")."""

from collections.abc import Iterable


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with thousands separators and ``noun`` in the right number.

    >>> counted(1, "record"), counted(2_000, "record"), counted(0, "entry", "entries")
    ('1 record', '2,000 records', '0 entries')
    """
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def shortened(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut (a message echoes
    the start of a value or command line of any length).

    >>> shortened("abcdef", 5), shortened("abc", 5)
    ('ab...', 'abc')
    """
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(names: Iterable[str], empty: str = "none") -> str:
    """Each name quoted as Python prints it, comma-separated; ``empty`` when there are none.

    >>> quoted(["user_id", "ts"]), quoted([], "no columns")
    ("'user_id', 'ts'", 'no columns')
    """
    return ", ".join(repr(name) for name in names) or empty
