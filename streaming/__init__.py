"""The dispatcher, and only it: what the Flink image ships.

`flink/jobs/http_dispatcher.py` is the PyFlink job, `dispatch/` the plain logic it calls (parse, call the service,
route each record to a result or a dead letter), `flink/keeper.py` keeps one job per team alive on a cluster.
Nothing here imports `services/`, `adapters/`, torch or the tooling (`imagery/`): the dispatcher talks to the
inference service over HTTP only, and the boundary test (tests/unit/test_dependencies.py) holds it to that.
"""
