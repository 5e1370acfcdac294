"""The job's Kafka tables: the input with what a dead letter needs (key, partition, offset, timestamp, headers), and
the two sinks (results, dead letters, which carry headers).

Flink's SQL Kafka connector reads and writes them because only it exposes that metadata and writes headers. They are
built with `TableDescriptor`/`Schema` rather than SQL text, so no value (a topic, a client property) is quoted into a
statement.
"""

from __future__ import annotations

from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor

from schemas import limits
from streaming.dispatch.config import DispatcherConfig

INPUT = "kafka_input"
RESULTS = "kafka_results"
DEAD_LETTERS = "kafka_dlq"
# The SQL group window's time column (see GROUPED_RECORDS)
PROCESSING_TIME = "pt"

HEADERS = DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES())
STARTUP_MODES = {"group": "group-offsets", "earliest": "earliest-offset", "latest": "latest-offset"}


def _kafka(cfg: DispatcherConfig, topic: str, schema: Schema, client: dict[str, str]) -> TableDescriptor.Builder:
    """A Kafka table's descriptor; CLIENT: the `properties.*` of --kafka-config (security), for every table alike."""
    builder = (
        TableDescriptor.for_connector("kafka")
        .schema(schema)
        .option("topic", topic)
        .option("properties.bootstrap.servers", cfg.bootstrap)
        .option("key.format", "raw")
        .option("key.fields", "k")
        .option("value.format", "raw")
        .option("value.fields-include", "EXCEPT_KEY")
    )
    for name, value in client.items():
        builder = builder.option(name, value)
    return builder


def _sink(cfg: DispatcherConfig, topic: str, role: str, schema: Schema, client: dict[str, str]) -> TableDescriptor:
    # every record the job writes is built to fit max_record_bytes (streaming/dispatch/records.py)
    builder = (
        _kafka(cfg, topic, schema, client)
        .option("sink.delivery-guarantee", cfg.delivery_guarantee)
        .option("properties.max.request.size", str(cfg.max_record_bytes))
    )
    if cfg.delivery_guarantee == "exactly-once":
        # One prefix per job identity and sink (DispatcherConfig.transactional_id_prefix says why). A transaction
        # stays open from one checkpoint to the next, and an outage holds checkpoints back for as long as it lasts,
        # with results already written in the open transaction: so the broker's longest timeout
        # (transaction.max.timeout.ms; a higher value is refused at start). An outage longer than that fails the job,
        # which restarts from its last checkpoint and loses nothing.
        builder = builder.option("sink.transactional-id-prefix", cfg.transactional_id_prefix(role)).option(
            "properties.transaction.timeout.ms", str(limits.KAFKA_MAX_TRANSACTION_MS)
        )
    return builder.build()


def create_kafka_tables(t_env: StreamTableEnvironment, cfg: DispatcherConfig, client: dict[str, str]) -> None:
    """INPUT, RESULTS and DEAD_LETTERS, as temporary tables of T_ENV."""
    input_schema = (
        Schema.new_builder()
        .column("k", DataTypes.BYTES())
        .column("v", DataTypes.BYTES())
        .column_by_metadata("topic", DataTypes.STRING(), "topic", True)
        .column_by_metadata("partition", DataTypes.INT(), "partition", True)
        .column_by_metadata("offset", DataTypes.BIGINT(), "offset", True)
        .column_by_metadata("ts", DataTypes.TIMESTAMP_LTZ(3), "timestamp", True)
        .column_by_metadata("headers", HEADERS, "headers", True)
        .column_by_expression(PROCESSING_TIME, "PROCTIME()")
        .build()
    )
    t_env.create_temporary_table(
        INPUT,
        _kafka(cfg, cfg.input_topic, input_schema, client)
        .option("properties.group.id", cfg.group_id)
        .option("properties.auto.offset.reset", "earliest")
        .option("properties.isolation.level", "read_committed")
        .option("scan.startup.mode", STARTUP_MODES[cfg.starting_offsets])
        .build(),
    )
    results = Schema.new_builder().column("k", DataTypes.BYTES()).column("v", DataTypes.BYTES()).build()
    t_env.create_temporary_table(RESULTS, _sink(cfg, cfg.output_topic, "results", results, client))
    dead_letters = (
        Schema.new_builder()
        .column("k", DataTypes.BYTES())
        .column("v", DataTypes.BYTES())
        .column_by_metadata("headers", HEADERS)
        .build()
    )
    t_env.create_temporary_table(DEAD_LETTERS, _sink(cfg, cfg.dlq_topic, "dlq", dead_letters, client))


# The fields of a group's records in `grouped_records`: one array per field, in the same order. Not one array of
# ROWs: PyFlink's Java-side converter for thread mode reuses one Object[] per ROW type, so every element of an array
# of ROWs came out as its last one (PythonTypeUtils.RowDataConverter.reuseExternalRow; arrays and maps are new each).
GROUP_FIELDS = ("k", "v", "topic", "offset", "ts", "headers")


def grouped_records(cfg: DispatcherConfig) -> str:
    """Records of one partition in groups: at most --group-size, gathered for at most --group-wait-ms.

    `offset / group_size` caps a group's size when a backlog puts thousands of records in one window. A group window
    (GROUP BY TUMBLE), not the TUMBLE table function: with the latter, records that were in open windows when a
    savepoint was taken never came out after the job resumed from it (tests/e2e/test_recovery.py). ARRAY_AGG keeps
    NULLs (a record with no key) by default, so the arrays stay aligned."""
    arrays = ", ".join(f"ARRAY_AGG(`{name}`)" for name in GROUP_FIELDS)
    return f"""
        SELECT `partition`, ROW({arrays}) AS records
        FROM {INPUT}
        GROUP BY TUMBLE({PROCESSING_TIME}, INTERVAL '{cfg.group_wait_ms / 1000:.3f}' SECOND), `partition`,
                 `offset` / {cfg.group_size}"""


def routed_records(batches: str) -> str:
    """The records of BATCHES (a view of the operators' `ROUTED_TYPE`), one row per output: dlq, k, v, headers."""
    return f"""
        SELECT o.dlq, b.k[o.i] AS k, b.v[o.i] AS v, b.headers[o.i] AS headers
        FROM {batches} AS b CROSS JOIN UNNEST(b.dlq) WITH ORDINALITY AS o(dlq, i)"""
