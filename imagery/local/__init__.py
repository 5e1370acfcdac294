"""The real local stack: Kafka (Maven Central jars), MinIO (built with `go install`), Flink (the PyFlink wheel)."""
