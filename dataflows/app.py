"""Module-level dataflow for ``python -m bytewax.run dataflows.app:flow``.

Configured like every other command (``streamfeat.yaml``, ``[tool.streamfeat]``,
``STREAMFEAT_*`` variables); the source to run is ``STREAMFEAT_RUN_SOURCE``
(default ``transactions``). ``streamfeat run`` is the friendlier front door. Pass
``-s 1`` (the epoch interval without recovery, ``dataflows.stream.EPOCH_INTERVAL``):
Bytewax's 10 s default stalls the worker at every epoch close.
"""

from __future__ import annotations

import os

from dataflows.job import build_job
from dataflows.stream import build_flow
from engine.config import load_settings
from engine.shutdown import stop_gracefully_on_sigint

_env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("STREAMFEAT_RUN_SOURCE", "STREAMFEAT_RUN_TAIL", "STREAMFEAT_RUN_RESTORED")
}
_settings = load_settings(env=_env)
stop_gracefully_on_sigint()  # a SIGINT ends the dataflow normally, without a Rust panic
flow = build_flow(
    build_job(
        _settings,
        os.environ.get("STREAMFEAT_RUN_SOURCE", "transactions"),
        tail=os.environ.get("STREAMFEAT_RUN_TAIL", "1") != "0",
        # streamfeat run --processes N restores the shared state directory itself.
        restore_on_start=os.environ.get("STREAMFEAT_RUN_RESTORED", "0") != "1",
    )
)
