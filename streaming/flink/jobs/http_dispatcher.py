"""http_dispatcher: one PyFlink job per team.

    Kafka imagery.new.<team>  ->  group records (SQL window)  ->  parse + validate  ->  async HTTP to the inference
    service  ->  route
        ok     -> Kafka inference.results.<team>   (key = the input's key)
        failed -> Kafka dlq.inference.http         (original bytes + error envelope + headers)

Runs the same two ways:
    python streaming/flink/jobs/http_dispatcher.py --team fruit ...           (local MiniCluster)
    flink run --python streaming/flink/jobs/http_dispatcher.py -- --team ...  (standalone/Kubernetes cluster)

The tables are streaming/flink/tables.py, the Python operators streaming/flink/operators.py, the logic they call
plain Python in streaming/dispatch/, and Flink's configuration streaming/flink/environment.py.

Records reach Python in groups (at most --group-size records of one partition, gathered for at most
--group-wait-ms by a processing-time window in SQL), because each element that crosses from the JVM into Python
costs the same whatever it holds. The groups are keyed by their partition in the JVM and handled by Python running
inside the JVM (PyFlink's thread mode), which emits each group's outputs as soon as its calls complete. Each record
in a group is still handled on its own (its own calls, result or dead letter); the window's contents and the groups
whose calls run are Flink state, so a checkpoint covers them like any other record in flight.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python ... / flink run --python): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment

from streaming.dispatch import checkpoints
from streaming.dispatch.config import DispatcherConfig, parse_args
from streaming.dispatch.kafka_properties import flink_kafka_options, read_properties
from streaming.flink import embedded_python, tables
from streaming.flink.environment import make_environment, put_reporter_on_local_classpath, run_until_stopped
from streaming.flink.operators import ROUTED_TYPE, InferAndRoute

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
# a row of `tables.grouped_records`
GROUP_TYPE = Types.ROW_NAMED(
    ["partition", "records"],
    [
        Types.INT(),
        Types.ROW_NAMED(
            list(tables.GROUP_FIELDS),
            [
                Types.OBJECT_ARRAY(t)
                for t in (BYTES, BYTES, Types.STRING(), Types.LONG(), Types.INSTANT(), Types.MAP(Types.STRING(), BYTES))
            ],
        ),
    ],
)
LOCAL_LOG4J = Path(__file__).resolve().parents[1] / "log4j-local.properties"


def build_pipeline(env: StreamExecutionEnvironment, cfg: DispatcherConfig) -> Any:
    t_env = StreamTableEnvironment.create(stream_execution_environment=env)
    t_env.get_config().set("pipeline.name", cfg.name)
    # --kafka-config's entries, read once, here where the job is built: they become table options of the job graph,
    # never a field of the config that is pickled into the Python operators
    client = flink_kafka_options(read_properties(cfg.kafka_config)) if cfg.kafka_config else {}
    tables.create_kafka_tables(t_env, cfg, client)

    # typed as the DataStream API's RowTypeInfo, which thread mode's keyed operator requires of its input
    groups = t_env.to_append_stream(t_env.sql_query(tables.grouped_records(cfg)), GROUP_TYPE)
    routed = (
        _keyed_by_partition(groups)
        .process(InferAndRoute(cfg), output_type=ROUTED_TYPE)
        .name("parse, infer over HTTP, route")
    )
    headers = DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES())
    t_env.create_temporary_view(
        "batches",
        t_env.from_data_stream(
            routed,
            Schema.new_builder()
            .column("dlq", DataTypes.ARRAY(DataTypes.BOOLEAN()))
            .column("k", DataTypes.ARRAY(DataTypes.BYTES()))
            .column("v", DataTypes.ARRAY(DataTypes.BYTES()))
            .column("headers", DataTypes.ARRAY(headers))
            .build(),
        ),
    )
    t_env.create_temporary_view("routed", t_env.sql_query(tables.routed_records("batches")))

    statements = t_env.create_statement_set()
    statements.add_insert_sql(f"INSERT INTO {tables.RESULTS} SELECT k, v FROM routed WHERE NOT dlq")
    statements.add_insert_sql(f"INSERT INTO {tables.DEAD_LETTERS} SELECT k, v, headers FROM routed WHERE dlq")
    return statements


def _keyed_by_partition(stream: DataStream) -> KeyedStream:
    """STREAM (rows whose first field is the partition) keyed by that field in the JVM. PyFlink's `key_by` would run
    a Python key selector, one more crossing into Python per element on the source's thread."""
    gateway = get_gateway()
    j_keyed = stream._j_data_stream.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([Types.INT()]).get_java_type_info())
    return KeyedStream(j_keyed, None, stream)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    if not cfg.checkpoint_dir:  # the launcher's to say (the local stack's folder, a volume, s3://...), not the job's
        raise SystemExit(
            f"{cfg.name}: --checkpoint-dir (CHECKPOINT_DIR) is required: where the group's checkpoints "
            "and savepoints are kept, and a restart resumes from"
        )
    # read only where this process starts Flink itself (the local MiniCluster), not under `flink run`
    os.environ.setdefault("LOG4J_PROPERTIES", str(LOCAL_LOG4J))
    if cfg.prometheus_port:
        put_reporter_on_local_classpath()
    # the local JVM's embedded Python imports what this process does
    os.environ["PYTHONPATH"] = embedded_python.python_path()
    restore_from = checkpoints.resume_path(cfg.resume, cfg.checkpoint_dir, cfg.group_id)
    # Checked only under --resume latest (an explicit --resume path is the operator's choice, which Flink checks),
    # recorded at every start: the checkpoints this job takes are of its layout, whatever it started from.
    _claim_layout(cfg, restore_from if cfg.resume == "latest" else None)
    print(
        f"{cfg.name}: resuming from {restore_from}"
        if restore_from
        else f"{cfg.name}: no checkpoint to resume from; starting from the {cfg.starting_offsets} offsets",
        flush=True,
    )
    env = make_environment(cfg, restore_from)
    result = build_pipeline(env, cfg).execute()
    if not cfg.detached:
        savepoints = checkpoints.savepoint_dir(checkpoints.job_dir(cfg.checkpoint_dir, cfg.group_id))
        run_until_stopped(result.get_job_client(), savepoints)
        result.wait()


def _claim_layout(cfg: DispatcherConfig, restore_from: str | None) -> None:
    """Refuse to restore a checkpoint taken by a job whose operators keep other state (an earlier version's, such as
    the former process mode), naming the safe path: tested under load in tests/faults/test_operator_actions.py."""
    try:
        checkpoints.claim_layout(cfg.checkpoint_dir, cfg.group_id, checkpoints.LAYOUT, restore_from)
    except checkpoints.LayoutMismatch as found:
        raise SystemExit(
            f"{cfg.name}: the newest checkpoint of group {cfg.group_id} ({restore_from}) holds {found} state, and "
            f"this job keeps other state ({checkpoints.LAYOUT}): Flink cannot restore it. To move over, "
            f"let the running job drain: pause what writes to {cfg.input_topic}; wait until `imagery audit --team "
            f"{cfg.team} --group-id {cfg.group_id} --input-topic {cfg.input_topic} --output-topic {cfg.output_topic}` "
            "finds every record landed and none pending; stop the job; start this one with --resume none (it reads "
            "on from the group's committed offsets); resume the producers. Without the drain, the group's committed "
            "offsets can lag what the old job wrote, and records are written twice."
        ) from None


if __name__ == "__main__":
    main()
