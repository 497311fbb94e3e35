"""Free loopback ports: the one helper the CLI, the benchmarks and the tests use.

A port found free can be taken by someone else before it is bound again; callers
that start a server on it must treat "address in use" as an ordinary start failure.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports free on ``host`` (held open together, so never equal)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """One port free on ``host``."""
    return free_ports(1, host)[0]


def free_port_pair(host: str = LOOPBACK) -> int:
    """A free port whose successor is free too (a Kafka broker and its controller)."""
    for _ in range(50):
        port = free_port(host)
        if port >= 65535:
            continue
        with socket.socket() as successor:
            try:
                successor.bind((host, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no two consecutive free ports on {host} after 50 tries")
