"""One owner for reading ``kafka_bootstrap``: a comma-separated list of broker entries,
each ``host:port``, ``host`` (Kafka's default port 9092), ``SCHEME://host:port`` or
``[ipv6]:port``."""

from __future__ import annotations

from dataclasses import dataclass

#: The names this machine's local broker answers to (it binds to 127.0.0.1 only).
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class BrokerEntry:
    """One broker of a bootstrap list: ``entry`` as written, its ``host`` and its ``port``
    text (None when the entry names no port; "" for ``host:``)."""

    entry: str
    host: str
    port: str | None

    @property
    def local_port(self) -> int | None:
        """The port of a 127.0.0.1/localhost entry with a numeric port, else None."""
        if self.host in LOCAL_HOSTS and self.port is not None and self.port.isdigit():
            return int(self.port)
        return None


def broker_entries(bootstrap: str) -> list[BrokerEntry]:
    """Every entry of ``bootstrap`` in order (empty entries kept, with empty host)."""
    out: list[BrokerEntry] = []
    for raw in bootstrap.split(","):
        entry = raw.strip()
        address = entry.split("://", 1)[-1]
        host, colon, port = address.rpartition(":") if not address.endswith("]") else (address, "", "")
        out.append(BrokerEntry(entry, host, port) if colon else BrokerEntry(entry, address, None))
    return out


def first_local_port(bootstrap: str) -> int | None:
    """The port of the first broker entry when it names this machine, else None."""
    return broker_entries(bootstrap)[0].local_port


def bootstrap_problems(bootstrap: str) -> list[str]:
    """What is wrong with a ``host:port[,host:port...]`` list, naming the broker entry; a
    port-less host (Kafka's default 9092) and a ``SCHEME://`` prefix are valid."""
    entries = broker_entries(bootstrap)
    if not any(e.entry for e in entries):
        return ["kafka_bootstrap: expected host:port of a Kafka broker, got an empty value; e.g. 127.0.0.1:9092"]
    problems: list[str] = []
    for e in entries:
        if not e.entry or not e.host:
            problems.append(
                f"kafka_bootstrap: expected host:port for every broker, got {bootstrap!r}; e.g. 127.0.0.1:9092"
            )
        elif e.port is not None and not (e.port.isdigit() and 1 <= int(e.port) <= 65535):
            problems.append(
                f"kafka_bootstrap: broker {e.entry!r} has port {e.port!r}, expected 1 to 65535; e.g. {e.host}:9092"
            )
    return problems
