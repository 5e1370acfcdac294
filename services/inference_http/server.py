"""The HTTP server: uvicorn, with the limits a service facing many clients needs and uvicorn lacks.

    python -m services.inference_http      (configured by the environment: services/inference_http/settings.py)

uvicorn closes idle keep-alive connections, but a connection that sends nothing, or sends its request head a
byte at a time, is held for as long as the client likes. `HeadTimeoutProtocol` gives every request head a
deadline (HEADER_TIMEOUT_S, read once here and handed to it); `InferRoutes` (asgi.py) gives the body one;
`limit_concurrency` bounds connections and requests (503 beyond it, which the dispatcher waits out like any
overload). The app is served as a factory (`create_app`, app.py): each worker process builds its own.

WORKERS (settings.py) sets how many worker processes share the port. With more than one, this process loads the
model once and runs the scheduler (scheduler.py) in a thread beside uvicorn's supervisor: the one owner of the
device, batching across every worker. The workers are HTTP fronts that feed it over a Unix socket; the supervisor
starts them, health-checks them and replaces one that dies while the others go on serving. Each takes connections
only once the scheduler and it are warm (app.py's lifespan), and all of them, the scheduler too, report /metrics
together through prometheus_client's multiprocess mode (metrics.py), in a fresh folder this process makes and
removes. If the scheduler fails (the model does not load or warm up), the service stops: nothing could serve.

TLS_CERT_FILE and TLS_KEY_FILE make it serve HTTPS, in one process or many (each worker loads them). Settings
that cannot work (a secret given twice, a file that cannot be read, a certificate without its key) stop it
before anything starts, with a message naming the variables and paths, never a secret's value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import tempfile
from functools import partial
from typing import Any, cast

import uvicorn
from prometheus_client import values
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from services.inference_http import model_registry
from services.inference_http.app import APP_FACTORY
from services.inference_http.metrics import MULTIPROC_ENV, Metrics
from services.inference_http.scheduler import Scheduler
from services.inference_http.settings import ServiceSettings, service_environment, settings_error

log = logging.getLogger("services.inference_http")

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus: a request's head (request line and headers) must arrive within
    `head_timeout_s` of the connection opening or of the request's first byte, else 408 and the connection
    closes. (httptools is what uvicorn[standard] runs; the hooks below are its parser's callbacks.) uvicorn makes
    one per connection with its own arguments: `head_timeout_protocol` binds the timeout."""

    _head_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, head_timeout_s: float, **kwargs: Any) -> None:
        self.head_timeout_s = head_timeout_s
        super().__init__(*args, **kwargs)

    # uvicorn's own connection_made takes asyncio.Transport, not asyncio's BaseTransport (and ignores it the same way)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()


def head_timeout_protocol(head_timeout_s: float) -> type[asyncio.Protocol]:
    """HeadTimeoutProtocol with its deadline bound, as uvicorn's `http` takes a protocol: a partial, which uvicorn
    calls as it would the class (its type says a class; it only ever calls it), and which pickles to the worker
    processes with the config."""
    return cast("type[asyncio.Protocol]", partial(HeadTimeoutProtocol, head_timeout_s=head_timeout_s))


def uvicorn_config(settings: ServiceSettings) -> uvicorn.Config:
    """uvicorn serving `create_app` as a factory (each worker process builds its app, from the environment that
    main() sets), with the service's server limits."""
    return uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        http=head_timeout_protocol(settings.header_timeout_s),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=20,
        workers=settings.worker_count,
        # HTTPS: uvicorn loads them in each process that serves (every worker, with several)
        ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
        ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
    )


def load_settings() -> ServiceSettings:
    """The settings from the environment, checked; SystemExit with what is wrong (never a secret) otherwise."""
    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        raise SystemExit(f"refusing to start: {settings_error(exc)}") from None
    if settings.tls_cert_file and settings.tls_key_file:
        try:  # what uvicorn will do in each worker, done once here: a mismatched or broken pair stops the start
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                settings.tls_cert_file, settings.tls_key_file
            )
        except (ssl.SSLError, OSError) as exc:
            raise SystemExit(
                f"refusing to start: TLS_CERT_FILE={settings.tls_cert_file} and TLS_KEY_FILE="
                f"{settings.tls_key_file} are not a certificate and its key: {exc}"
            ) from None
    return settings


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for warning in settings.secret_warnings():  # once, here: not again in each worker
        log.warning(warning)
    workers = settings.worker_count
    if workers == 1:
        uvicorn.Server(uvicorn_config(settings)).run()
        return
    os.environ.update(service_environment(workers=workers))  # the workers see the count this process decided
    given = os.environ.get(MULTIPROC_ENV)
    folder = given or tempfile.mkdtemp(prefix="imagery-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    for stale in os.scandir(folder):  # a previous run's counts must not add to this one's
        if stale.name.endswith(".db"):
            os.unlink(stale.path)
    # prometheus_client chose how to store values when it was imported, before the folder was set: the scheduler
    # in this process writes to the folder like the workers do (its batch sizes, forward time, queue depth)
    values.ValueClass = values.get_value_class()
    socket_dir = tempfile.mkdtemp(prefix="imagery-scheduler-")
    socket_path = os.path.join(socket_dir, "scheduler.sock")
    os.environ.update(service_environment(scheduler_socket=socket_path))
    try:
        runner = model_registry.get_model_runner(
            settings.team, settings.weights_path, settings.model_tag, module=settings.runner_module
        )
    except model_registry.RegistryError as exc:
        raise SystemExit(f"refusing to start: {exc}") from exc
    scheduler = Scheduler(settings, runner, Metrics(), socket_path)
    config = uvicorn_config(settings)
    try:
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        scheduler.on_failure = supervisor.should_exit.set
        scheduler.start()
        supervisor.run()
    finally:
        scheduler.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
    if scheduler.error:
        raise SystemExit(f"the scheduler failed, so the service stopped: {scheduler.error}")
