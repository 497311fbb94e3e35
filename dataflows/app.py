"""Module-level dataflow for ``python -m bytewax.run dataflows.app:flow``.

Configured like every other command (``streamfeat.yaml``, ``[tool.streamfeat]``,
``STREAMFEAT_*`` variables); the source to run is ``STREAMFEAT_RUN_SOURCE``
(default ``transactions``). ``streamfeat run`` is the friendlier front door. Pass
``-s 1`` (the epoch interval without recovery, ``dataflows.stream.EPOCH_INTERVAL``;
``-s 0.96`` with several workers, ``epoch_interval`` below): Bytewax's 10 s default
stalls the worker at every epoch close. With ``-w W`` set
``STREAMFEAT_RUN_WORKERS=W`` too: the shards form one group per worker, so with fewer
groups than workers some workers own no shard.
"""

from __future__ import annotations

import os
from pathlib import Path

from dataflows.job import build_job
from dataflows.stream import build_flow, job_epoch_interval
from engine.config import load_settings
from engine.run_counts import publish_counts
from engine.shutdown import stop_gracefully_on_sigint

_RUN_ONLY = (
    "STREAMFEAT_RUN_SOURCE",
    "STREAMFEAT_RUN_TAIL",
    "STREAMFEAT_RUN_COUNTS_FILE",
    "STREAMFEAT_RUN_PROCESSES",
    "STREAMFEAT_RUN_WORKERS",
    "STREAMFEAT_RUN_PARENT_PID",  # dataflows/cluster_process.py
)
_env = {k: v for k, v in os.environ.items() if k not in _RUN_ONLY}
_settings = load_settings(env=_env)
stop_gracefully_on_sigint()  # a SIGINT ends the dataflow normally, without a Rust panic
_job = build_job(
    _settings,
    os.environ.get("STREAMFEAT_RUN_SOURCE", "transactions"),
    tail=os.environ.get("STREAMFEAT_RUN_TAIL", "1") != "0",
    # How many processes form the cluster: their settings are compared (dataflows/cluster_check.py).
    processes=int(os.environ.get("STREAMFEAT_RUN_PROCESSES", "1")),
    # Worker threads per process (-w): the shards form one group per worker of the cluster.
    workers=int(os.environ.get("STREAMFEAT_RUN_WORKERS", "1")),
)
if os.environ.get("STREAMFEAT_RUN_COUNTS_FILE"):
    # `streamfeat run --processes N` sums these files into its progress line and summary.
    publish_counts(Path(os.environ["STREAMFEAT_RUN_COUNTS_FILE"]), _job.source.topic)
flow = build_flow(_job)
epoch_interval = job_epoch_interval(_job)
