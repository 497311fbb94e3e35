"""Issue #15 item 7: every `Any` in product code says why it is not a real type.

A product-code line that names ``typing.Any`` (outside an import) needs a comment on the
same line or a comment line right above it; ``# type: ignore``/``# noqa`` markers do not
count as a reason. Files still waiting for their pass are listed in ``PENDING`` with the
reason; the list may only shrink (a listed file that is already clean fails the test).
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("cli", "dataflows", "engine", "feature_defs", "serving")

#: Files not yet through the item-7 pass, each with why. Remove an entry once its file passes.
PENDING: dict[str, str] = {}

_MARKERS_ONLY = ("type: ignore", "noqa", "pragma")


def _explains(comment: str) -> bool:
    """True for a comment that gives a reason, not only a tool marker."""
    text = comment.lstrip("#").strip()
    return bool(text) and not any(text.startswith(marker) for marker in _MARKERS_ONLY)


def unexplained_any_lines(source: str) -> list[int]:
    """Line numbers whose code names `Any` with no reason on that line or the comment line above."""
    lines = source.splitlines()
    comments: dict[int, str] = {}
    any_lines: set[int] = set()
    statement_is_import = False
    at_statement_start = True
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string
            continue
        if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            at_statement_start = True
            continue
        if token.type in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            continue
        if at_statement_start:
            statement_is_import = token.type == tokenize.NAME and token.string in ("import", "from")
            at_statement_start = False
        if token.type == tokenize.NAME and token.string == "Any" and not statement_is_import:
            any_lines.add(token.start[0])
    unexplained = []
    for number in sorted(any_lines):
        same_line = comments.get(number, "")
        comment_line_above = number > 1 and lines[number - 2].lstrip().startswith("#")
        above = comments.get(number - 1, "") if comment_line_above else ""
        if not (_explains(same_line) or _explains(above)):
            unexplained.append(number)
    return unexplained


def _product_files() -> list[Path]:
    return sorted(path for package in PRODUCT_PACKAGES for path in (ROOT / package).rglob("*.py"))


def _pending(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == entry or relative.startswith(entry + "/") for entry in PENDING)


def test_every_product_any_is_explained() -> None:
    problems = []
    for path in _product_files():
        if _pending(path):
            continue
        for number in unexplained_any_lines(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(ROOT)}:{number}")
    assert not problems, (
        "`Any` without a reason in product code; use a real type (engine/array_types.py, "
        "engine/json_types.py, a Protocol, object) or add a comment saying why Any is needed:\n  "
        + "\n  ".join(problems)
    )


def test_pending_entries_still_have_work() -> None:
    for entry in PENDING:
        files = [
            path for path in _product_files() if _pending(path) and path.relative_to(ROOT).as_posix().startswith(entry)
        ]
        assert files, f"PENDING entry {entry!r} names no product file; remove it"
        assert any(unexplained_any_lines(path.read_text(encoding="utf-8")) for path in files), (
            f"PENDING entry {entry!r} has no unexplained Any left; remove it from the list"
        )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from typing import Any\n", []),
        ("x: Any = 1\n", [1]),
        ("x: Any = 1  # a reason\n", []),
        ("# a reason\nx: Any = 1\n", []),
        ("x: Any = 1  # type: ignore[misc]\n", [1]),
        ("y = 2  # unrelated\nx: Any = 1\n", [2]),
        ("s = 'Any'\n# Any in a comment\n", []),
        ("def f(\n    a: Any,\n) -> None: ...\n", [2]),
    ],
)
def test_checker_rules(source: str, expected: list[int]) -> None:
    assert unexplained_any_lines(source) == expected
