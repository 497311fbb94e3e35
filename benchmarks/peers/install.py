"""Create one virtualenv per peer under benchmarks/.peers/<name>/ with a pinned version.

    .venv/bin/python -m benchmarks.peers.install quix feast

Each peer gets its own environment so its dependencies (Feast pins many) never touch
streamfeat's. An install that fails is reported, not hidden: the harness records the
reason in the result JSON and RESULTS.md. The Feast SDK compatibility test installs
its Feast versions the same way (``ensure_peer``, ``newest_release``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parents[1] / ".peers"


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    check_import: str

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.venv / ".installed"


# Pinned: the versions the published RESULTS.md numbers were measured with.
PEERS: dict[str, Peer] = {
    "quix": Peer("quix", ("quixstreams==3.28.1", "orjson"), "quixstreams"),
    "feast": Peer("feast", ("feast==0.67.0", "uvicorn"), "feast"),
}


class PeerInstallError(RuntimeError):
    """A peer's virtualenv could not be created or its package not installed."""


class RegistryUnreachable(PeerInstallError):
    """pip could not reach the package index (no network): nothing to install from."""


# What pip prints when the index cannot be reached at all (as opposed to a failed build).
_NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ProxyError",
)


def _run_pip_step(name: str, cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        output = (done.stderr or "") + (done.stdout or "")
        tail = "\n".join(output.strip().splitlines()[-15:])
        kind = RegistryUnreachable if any(e in output for e in _NETWORK_ERRORS) else PeerInstallError
        raise kind(f"peer {name}: `{' '.join(cmd[:4])} ...` failed:\n{tail}")
    return done.stdout


def newest_release(package: str) -> str:
    """The version pip would install for ``package`` now (the newest release it may use)."""
    report = _run_pip_step(
        package,
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-deps",
            "--ignore-installed",
            "--report",
            "-",
            package,
        ],
    )
    version: str = json.loads(report)["install"][0]["metadata"]["version"]
    return version


def installed_version(peer: Peer) -> str | None:
    if not peer.stamp.exists():
        return None
    return peer.stamp.read_text().strip() or None


def ensure(name: str) -> Peer:
    """Install the peer once (a stamp file records success); raise PeerInstallError with pip's tail."""
    if name not in PEERS:
        raise PeerInstallError(f"peer: expected one of {sorted(PEERS)}, got {name!r}")
    return ensure_peer(PEERS[name])


def ensure_peer(peer: Peer) -> Peer:
    """:func:`ensure` for any peer (RegistryUnreachable when pip cannot reach the index)."""
    if peer.stamp.exists():
        return peer
    peer.venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(peer.venv)],
        [str(peer.python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(peer.python), "-m", "pip", "install", "--quiet", *peer.requirements],
        [str(peer.python), "-c", f"import importlib.metadata as m; print(m.version({peer.check_import!r}))"],
    ]
    out = ""
    for cmd in steps:
        out = _run_pip_step(peer.name, cmd)
    peer.stamp.write_text(out.strip() + "\n")
    return peer


if __name__ == "__main__":
    for arg in sys.argv[1:] or list(PEERS):
        try:
            print(arg, "installed:", installed_version(ensure(arg)))
        except PeerInstallError as exc:
            print(exc, file=sys.stderr)
