"""Input/output: Kafka source, decoding, dead letters, Parquet log.

Modules: ``batches`` (RawBatch, DecodedBatch, DeadLetter), ``decoder`` (Decoder),
``field_checks`` (the decoder's per-field checks), ``watermarks`` (PartitionWatermarks),
``kafka_source`` (KafkaBatchSource), ``dead_letters`` (DeadLetterProducer,
read_dead_letters), the Parquet log's ``log_format``, ``parquet_log`` (the writer) and
``log_reader``. Only the Kafka-free names are
re-exported here so importing ``engine.io`` does not load Bytewax or librdkafka.
"""

from engine.io.batches import DeadLetter, DeadLetterReason, DecodedBatch, RawBatch
from engine.io.decoder import Decoder
from engine.io.watermarks import PartitionWatermarks

__all__ = [
    "DeadLetter",
    "DeadLetterReason",
    "DecodedBatch",
    "Decoder",
    "PartitionWatermarks",
    "RawBatch",
]
