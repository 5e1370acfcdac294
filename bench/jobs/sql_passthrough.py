"""The yardstick for the dispatcher's pace: Flink SQL Kafka -> Kafka with no Python in between, on the same
connector and settings the dispatcher uses (at-least-once, checkpoints every 5 s, parallelism as given).

    python bench/jobs/sql_passthrough.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC PARALLELISM JAR[,JAR...]
"""

import sys
from pathlib import Path

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment


def main(bootstrap: str, source: str, sink: str, parallelism: str, jars: str) -> None:
    env = StreamExecutionEnvironment.get_execution_environment(Configuration())
    env.set_parallelism(int(parallelism))
    env.enable_checkpointing(5000)
    env.add_jars(*(Path(j).resolve().as_uri() for j in jars.split(",")))
    t_env = StreamTableEnvironment.create(stream_execution_environment=env)
    options = (
        f"'connector' = 'kafka', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'raw', "
        "'key.fields' = 'k', 'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY'"
    )
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE src (`k` BYTES, `v` BYTES) WITH ({options}, 'topic' = '{source}',
        'properties.group.id' = 'passthrough-{source}', 'scan.startup.mode' = 'earliest-offset')""")
    t_env.execute_sql(f"CREATE TEMPORARY TABLE snk (`k` BYTES, `v` BYTES) WITH ({options}, 'topic' = '{sink}')")
    t_env.execute_sql("INSERT INTO snk SELECT k, v FROM src").wait()


if __name__ == "__main__":
    main(*sys.argv[1:6])
