"""Sizes and bounds that the producer, the dispatcher and the service agree on: the one place each is defined.

Everything the dispatcher writes to Kafka is built to fit `KAFKA_MAX_RECORD_BYTES`, and its producers are
configured with the same number (`max.request.size`): a record that does not fit would fail the sink and, with
it, the whole job, on the same record after every restart.
"""

from __future__ import annotations

# The longest a Kafka transaction may stay open: the broker's transaction.max.timeout.ms (its default; the local
# stack and compose.yaml set it). An exactly-once sink holds a transaction open from one checkpoint to the next.
KAFKA_MAX_TRANSACTION_MS = 15 * 60 * 1000
# Kafka's own default `max.request.size` (and, within a few bytes, the broker's `message.max.bytes`).
KAFKA_MAX_RECORD_BYTES = 1024 * 1024
# What the dispatcher leaves of a record for Kafka's own framing and for the headers it adds itself.
RECORD_HEADROOM_BYTES = 16 * 1024
# The largest input record (key + value + headers) the dispatcher processes; larger ones are dead letters.
# A result echoes the input's unknown fields, so it stays well under KAFKA_MAX_RECORD_BYTES only if this does.
MAX_MESSAGE_BYTES = 256 * 1024
# A message is a small JSON object; deeper nesting than this is refused before anything walks it.
MAX_JSON_DEPTH = 32
# An S3 event notification names one object in practice; one with more records than this is refused.
MAX_EVENT_RECORDS = 100

# Object keys: S3's limit on the whole key, and the file-name limit MinIO enforces on each `/` segment.
MAX_KEY_BYTES = 1024
MAX_KEY_SEGMENT_BYTES = 255
# Bucket names MinIO keeps for itself (its admin and health APIs live under /minio/).
RESERVED_BUCKETS = frozenset({"minio"})
