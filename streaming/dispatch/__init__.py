"""The dispatcher's logic as plain Python: parse, call the service, classify, retry, build outputs.

The Flink job (streaming/flink/jobs/http_dispatcher.py) only wires these into a pipeline, so everything
here is unit-tested without Flink.
"""
