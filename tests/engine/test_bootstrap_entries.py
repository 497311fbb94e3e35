"""engine.bootstrap: the one reader of kafka_bootstrap lists (settings checks, `kafka start/stop`
and the broker probe all use it)."""

from __future__ import annotations

import pytest

from engine.bootstrap import BrokerEntry, bootstrap_problems, broker_entries, first_local_port


@pytest.mark.parametrize(
    ("bootstrap", "entries"),
    [
        ("127.0.0.1:9092", [BrokerEntry("127.0.0.1:9092", "127.0.0.1", "9092")]),
        (" a:1 ,b", [BrokerEntry("a:1", "a", "1"), BrokerEntry("b", "b", None)]),
        ("PLAINTEXT://localhost:19092", [BrokerEntry("PLAINTEXT://localhost:19092", "localhost", "19092")]),
        ("[::1]:9092,[::1]", [BrokerEntry("[::1]:9092", "[::1]", "9092"), BrokerEntry("[::1]", "[::1]", None)]),
        ("host:", [BrokerEntry("host:", "host", "")]),
        ("", [BrokerEntry("", "", None)]),
    ],
)
def test_entries_keep_their_text_host_and_port(bootstrap: str, entries: list[BrokerEntry]) -> None:
    assert broker_entries(bootstrap) == entries


@pytest.mark.parametrize(
    ("bootstrap", "port"),
    [
        ("127.0.0.1:9092", 9092),
        ("localhost:19092,other:9092", 19092),
        ("PLAINTEXT://127.0.0.1:9093", 9093),
        ("other:9092,127.0.0.1:9092", None),  # the first entry decides
        ("127.0.0.2:9092", None),
        ("127.0.0.1", None),
        ("127.0.0.1:x", None),
    ],
)
def test_the_first_local_port(bootstrap: str, port: int | None) -> None:
    assert first_local_port(bootstrap) == port


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:9092", "a,b:1", "SASL_SSL://h:9093", "[::1]:9092"])
def test_valid_lists_have_no_problems(bootstrap: str) -> None:
    assert bootstrap_problems(bootstrap) == []


@pytest.mark.parametrize(
    ("bootstrap", "words"),
    [
        ("host:", "broker 'host:' has port ''"),
        ("a:0", "broker 'a:0' has port '0', expected 1 to 65535"),
        ("a:1,,b:2", "expected host:port for every broker"),
        (" ", "got an empty value"),
    ],
)
def test_bad_lists_name_the_entry(bootstrap: str, words: str) -> None:
    problems = bootstrap_problems(bootstrap)
    assert len(problems) == 1 and words in problems[0], problems
