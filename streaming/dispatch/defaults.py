"""The dispatcher's defaults that more than one module needs, each defined here once.

`DispatcherConfig` (config.py) offers them as its settings' defaults; the retry policy (retry.py), the HTTP client
(client.py) and the connection pool (http.py) take theirs from here, so that a client made without the settings (a
test, a benchmark) behaves as the job does by default. Plain constants, no imports: the lowest modules use them.
"""

from __future__ import annotations

# --- retries of one message (retry.RetryPolicy; --attempts, --backoff-ms, --backoff-max-ms)
ATTEMPTS = 5  # every try, the first included
BACKOFF_MS = 200  # the first retry's delay, doubled per attempt
BACKOFF_MAX_MS = 10_000

# --- calls to the service (client.InferenceClient; --items-per-request, --max-batch-wait-ms)
ITEMS_PER_REQUEST = 1  # 1: /infer_json; more: /infer_batch
MAX_BATCH_WAIT_MS = 5.0
MAX_CONNECTIONS = 64  # the pool's connections to the service (the job sizes it from --capacity)

# --- deadlines (seconds). No deadline covers a record's whole handling: that is up to ATTEMPTS tries of
# ATTEMPT_TIMEOUT_S each plus the backoff between them, and an outage of the service is waited out besides.
ATTEMPT_TIMEOUT_S = 30.0  # one try: one POST, from a free connection (connecting included) to its complete answer
CONNECT_TIMEOUT_S = 5.0  # opening one connection (TCP, and TLS for https), within the try's deadline
READINESS_PROBE_TIMEOUT_S = 2.0  # one GET /readyz while the circuit breaker is open for an outage
ROUTE_PROBE_TIMEOUT_S = 5.0  # one probe POST of the route while the breaker is open for a misconfiguration
