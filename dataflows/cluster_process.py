"""One process of a Bytewax cluster running the streaming dataflow:
``python -m dataflows.cluster_process --workers W --process-id I --addresses "h1:p1;h2:p2"``.

What ``python -m bytewax.run dataflows.app:flow -w W -i I -a ... -s 1`` does, plus an
exit code of our own: when the processes' settings differ (dataflows/cluster_check.py),
the dataflow ends normally on every process with nothing applied, and this exits with
:class:`ClusterSettingsError`'s exit code after the message was printed. The dataflow
is configured like ``dataflows/app.py`` (``STREAMFEAT_*`` variables), which
``streamfeat run`` sets for its children.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

from dataflows.cluster_check import refusal


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataflows.cluster_process")
    parser.add_argument("--workers", type=int, required=True, help="worker threads of this process")
    parser.add_argument("--process-id", type=int, required=True, help="this process's index in --addresses")
    parser.add_argument("--addresses", required=True, help="every process's host:port, ';'-separated")
    return parser.parse_args(argv)


#: Set by ``streamfeat run`` for its children: the pid this process must not outlive.
PARENT_PID_ENV = "STREAMFEAT_RUN_PARENT_PID"


def stop_with_parent() -> None:
    """On Linux, a SIGTERM (a graceful stop, engine/shutdown.py) when the ``streamfeat run``
    that started this process dies, even by ``kill -9``: no child keeps writing the
    shards unsupervised, holding their locks against the next run."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the prctl: nobody will send the signal
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    from bytewax._bytewax import cli_main

    from dataflows.app import epoch_interval, flow  # installs the graceful SIGTERM handler

    stop_with_parent()

    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=args.workers,
        process_id=args.process_id,
        addresses=args.addresses.split(";"),
        epoch_interval=epoch_interval,
    )
    refused = refusal()
    return 0 if refused is None else refused.exit_code


if __name__ == "__main__":
    sys.exit(main())
