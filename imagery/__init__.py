"""The tooling around the pipeline: the `imagery` CLI, the local stack, compose generation, provisioning, health,
the DLQ tools, the audit, the demo, the team scaffold, and the harness the tests and benches run the pipeline with.

None of it ships in the Flink image (`streaming/`) or the inference service's image (`services/`).
"""
