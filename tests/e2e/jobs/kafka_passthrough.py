"""A minimal DataStream job: KafkaSource (bounded) -> upper-case -> KafkaSink. Proves the connector jar works."""

import sys

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)


def main(bootstrap: str, source_topic: str, sink_topic: str, jar_uri: str) -> None:
    conf = Configuration()
    conf.set_string("python.executable", sys.executable)  # workers otherwise run `python` from PATH
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.add_jars(jar_uri)
    env.set_parallelism(1)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(source_topic)
        .set_group_id("passthrough")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(sink_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka")
        .map(lambda s: s.upper(), output_type=Types.STRING())
        .sink_to(sink)
    )
    env.execute("kafka-passthrough")


if __name__ == "__main__":
    main(*sys.argv[1:5])
