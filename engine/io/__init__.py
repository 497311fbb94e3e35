"""Input/output: Kafka source, decoding, dead letters, Parquet log.

Modules: ``batches`` (RawBatch, DecodedBatch, DeadLetter), ``decoder`` (Decoder,
PartitionWatermarks), ``kafka_source`` (KafkaBatchSource), ``dead_letters``
(DeadLetterProducer, read_dead_letters), ``parquet_log``. Only the Kafka-free names are
re-exported here so importing ``engine.io`` does not load Bytewax or librdkafka.
"""

from engine.io.batches import NO_EVENT_TS, DeadLetter, DeadLetterReason, DecodedBatch, RawBatch
from engine.io.decoder import Decoder, PartitionWatermarks

__all__ = [
    "NO_EVENT_TS",
    "DeadLetter",
    "DeadLetterReason",
    "DecodedBatch",
    "Decoder",
    "PartitionWatermarks",
    "RawBatch",
]
