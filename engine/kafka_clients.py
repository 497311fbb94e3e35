"""Where librdkafka's own log lines go: the one rule every Kafka client of streamfeat follows.

A long-lived client (a stream consumer, a changelog or dead-letter producer) sends them to
:data:`CLIENT_LOG`: into the log file of ``streamfeat run``, onto the terminal only with
``--verbose`` (cli/common.py), and nowhere for a program that configured no logging (the
NullHandler below keeps Python's last-resort handler from printing them). A short-lived
client (a metadata probe, a one-off reader) drops them: its failures come back as
exceptions, and a Python logger would make librdkafka print "Purging unserved events"
on stderr when the client is freed before its log queue is served.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

#: librdkafka settings: text and numbers, plus Python objects (a logger, callbacks).
#: Any: confluent-kafka's stubs type AdminClient's settings as text and numbers only.
ClientSettings = dict[str, Any]

CLIENT_LOG = logging.getLogger("streamfeat.kafka.client")
CLIENT_LOG.addHandler(logging.NullHandler())


def logged_client_settings(bootstrap: str, settings: Mapping[str, object] | None = None) -> ClientSettings:
    """Settings of a long-lived client: librdkafka's lines go to :data:`CLIENT_LOG`."""
    return {"bootstrap.servers": bootstrap, **(settings or {}), "logger": CLIENT_LOG}


def quiet_client_settings(bootstrap: str, settings: Mapping[str, object] | None = None) -> ClientSettings:
    """Settings of a short-lived client whose failures surface as exceptions: no log lines."""
    return {"bootstrap.servers": bootstrap, **(settings or {}), "log_level": 0}
