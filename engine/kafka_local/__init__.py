"""A local Apache Kafka 4.x broker for development and tests, without Docker.

The broker's classpath comes from Maven Central (``engine/kafka_files/pom.xml``, package
data shipped in the wheel), resolved once into ``<cache>/<version>/lib``. Both places
belong to the user, not to whichever clone or virtualenv started the broker:

- jars: ``$STREAMFEAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamfeat/kafka``
  (``~/.cache/streamfeat/kafka``);
- broker data and logs, one directory per port: ``$XDG_DATA_HOME/streamfeat/kafka/<port>``
  (``~/.local/share/streamfeat/kafka/<port>``), unless ``--data-dir`` says otherwise.

One JVM runs a combined KRaft
broker + controller bound to 127.0.0.1 only, with settings that suit tests
(three partitions by default, replication factor 1 everywhere, no initial
rebalance delay, a small heap).

Layout of a broker's data directory::

    streamfeat-server.properties   generated on every start
    kafka.pid                      pid of the running JVM
    ports.json                     ports the storage was formatted for
    data/                          Kafka log.dirs (KRaft metadata + topics)
    logs/server.log                Log4j 2 output of the broker
    logs/jvm.out                   stdout/stderr of the JVM (crashes land here)

Every JVM carries the marker ``-Dstreamfeat.kafka=1`` on its command line, so a
stray broker is found with ``pgrep -f streamfeat.kafka``.
"""

from engine.kafka_local.broker import (
    BrokerHandle,
    BrokerStatus,
    PortHolder,
    broker_status,
    ensure_broker,
    port_holder,
    start_broker,
    stop_broker,
)
from engine.kafka_local.classpath import POM_FILE, ensure_kafka_libs
from engine.kafka_local.config import (
    DEFAULT_HEAP,
    DEFAULT_PORT,
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    DEFAULT_VERSION,
    HOST,
    MARKER,
    BrokerConfig,
    cache_root,
    default_data_dir,
)
from engine.kafka_local.probe import UNREACHABLE_HINT, metadata_answers, require_broker

__all__ = [
    "DEFAULT_HEAP",
    "DEFAULT_PORT",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "DEFAULT_VERSION",
    "HOST",
    "MARKER",
    "POM_FILE",
    "UNREACHABLE_HINT",
    "BrokerConfig",
    "BrokerHandle",
    "BrokerStatus",
    "PortHolder",
    "broker_status",
    "cache_root",
    "default_data_dir",
    "ensure_broker",
    "ensure_kafka_libs",
    "metadata_answers",
    "port_holder",
    "require_broker",
    "start_broker",
    "stop_broker",
]
