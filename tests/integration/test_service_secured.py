"""The inference service with its hops secured, on real parts: a MinIO of its own over TLS (a private CA's
certificate), the service over HTTPS with a bearer token, and MinIO credentials that read one team's buckets only.

- the fruit service (MINIO_SECURE=1, MINIO_CA_FILE) fetches from the TLS MinIO as a team reader made by
  `imagery.storage_access.ensure_team_reader`; an object outside the reader's policy, though inside
  ALLOWED_BUCKETS='*', answers the service's 403 (access_denied), never a 500, alone and as a batch item;
- the service over TLS with its token from AUTH_TOKEN_FILE: the probes answer over https without it, the infer
  routes want it (401), a client that does not trust the CA cannot connect;
- no secret in the service's environment, command line or log; its secret files are private and go with it.

This module starts nothing of the shared stack: only its own MinIO (stopped at its end) and its own service.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import ssl
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from imagery.local import stack
from imagery.local.certs import Authority
from imagery.local.inference_service import InferenceService, InferenceServiceError
from imagery.local.settings import StackSettings
from imagery.process import free_port, group_members
from imagery.storage_access import ensure_team_reader, minio_admin, reader_policy_name, remove_team_reader
from schemas import HEALTHZ_ROUTE, INFER_BATCH_ROUTE, INFER_JSON_ROUTE, READYZ_ROUTE
from services.inference_http.errors import StorageUnavailable
from services.inference_http.settings import ServiceSettings, service_environment
from services.inference_http.storage import ObjectStore
from tests.conftest import remove_bucket, unique
from tests.service_fixtures import FRUIT_SERVICE_ENV, FruitImages

pytestmark = pytest.mark.integration

TOKEN = "token-" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class TlsMinio:
    settings: StackSettings  # its address and root credentials
    ca: Path  # the CA that issued its certificate

    @property
    def endpoint(self) -> str:
        return self.settings.minio_endpoint

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Minio:
        return Minio(
            self.endpoint,
            access_key=access_key or self.settings.minio_access_key,
            secret_key=secret_key or self.settings.minio_secret_key,
            secure=True,
            http_client=urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(self.ca), retries=False),
        )


@dataclass(frozen=True)
class Reader:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Buckets:
    own: str  # the team's (fruit-*): the reader's policy allows it
    other: str  # another's: outside the reader's policy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_minio(pki: Authority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMinio]:
    """A second MinIO, serving only TLS with a certificate of the test's CA (MinIO's --certs-dir: public.crt,
    private.key, and CAs/ for the CAs it trusts itself)."""
    root = tmp_path_factory.mktemp("minio-tls")
    leaf = pki.issue("minio-tls")
    certs = root / "certs"
    (certs / "CAs").mkdir(parents=True)
    shutil.copy(leaf.cert, certs / "public.crt")
    shutil.copy(leaf.key, certs / "private.key")
    shutil.copy(pki.cert, certs / "CAs" / "ca.crt")
    settings = StackSettings(state_dir=root / "state", minio_port=free_port(), minio_console_port=free_port())
    minio = TlsMinio(settings, pki.cert)
    name = unique("minio-tls")
    component = stack.minio_component(settings, name=name)
    component.argv += ["--certs-dir", str(certs)]
    component.probe = lambda: minio.client().bucket_exists("imagery-stack-check")  # over TLS, trusting the CA
    stack.start(settings, component)
    try:
        yield minio
    finally:
        stack.stop(settings, name)


@pytest.fixture(scope="module")
def reader(tls_minio: TlsMinio) -> Iterator[Reader]:
    """The fruit team's reader: a MinIO user whose one policy reads fruit and fruit-* only."""
    admin = minio_admin(
        tls_minio.endpoint,
        tls_minio.settings.minio_access_key,
        tls_minio.settings.minio_secret_key,
        secure=True,
        ca_file=tls_minio.ca,
    )
    made = Reader(unique("fruit-reader"), secrets.token_urlsafe(24))
    ensure_team_reader(admin, "fruit", made.access_key, made.secret_key)
    yield made
    remove_team_reader(admin, "fruit", made.access_key)


@pytest.fixture(scope="module")
def buckets(tls_minio: TlsMinio) -> Iterator[Buckets]:
    images = FruitImages()
    client = tls_minio.client()
    made = Buckets(own=unique("fruit-secured"), other=unique("orchard-secured"))
    try:
        for bucket in (made.own, made.other):
            client.make_bucket(bucket)
            for kind in ("clean", "defect"):
                client.put_object(bucket, f"{kind}.jpg", io.BytesIO(images[kind]), len(images[kind]))
        yield made
    finally:
        for bucket in (made.own, made.other):
            remove_bucket(client, bucket)


@pytest.fixture(scope="module")
def service(
    tls_minio: TlsMinio, reader: Reader, pki: Authority, fruit_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InferenceService]:
    """The fruit service secured end to end; ALLOWED_BUCKETS='*', so only MinIO's policy keeps it to its buckets."""
    service = InferenceService(
        tls_minio.settings,
        team="fruit",
        weights_path=str(fruit_weights),
        env={**FRUIT_SERVICE_ENV, **service_environment(allowed_buckets="*")},
        log_path=tmp_path_factory.mktemp("service") / "service.log",
        auth_token=TOKEN,
        tls=pki.issue("inference-fruit"),
        minio_secure=True,
        minio_ca_file=tls_minio.ca,
        minio_access_key=reader.access_key,
        minio_secret_key=reader.secret_key,
    )
    with service.start():
        yield service


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture
def client(service: InferenceService, pki: Authority) -> Iterator[httpx.Client]:
    """A client that trusts the CA and holds the token."""
    with httpx.Client(
        base_url=service.base_url,
        verify=trusting(pki.cert),
        trust_env=False,
        timeout=60,
        headers={"authorization": f"Bearer {TOKEN}"},
    ) as http:
        yield http


def error_type(response: httpx.Response) -> str:
    return response.json()["error"]["type"]


# ---------------------------------------------------------------------------- MinIO over TLS, as a team reader


def test_the_team_reader_reads_its_buckets_only(tls_minio, reader, buckets):
    """The policy itself, as MinIO enforces it on the reader's own requests."""
    as_reader = tls_minio.client(reader.access_key, reader.secret_key)
    assert as_reader.get_object(buckets.own, "clean.jpg").read() == FruitImages().clean
    for denied in (
        lambda: as_reader.get_object(buckets.other, "clean.jpg"),
        lambda: as_reader.put_object(buckets.own, "new.jpg", io.BytesIO(b"x"), 1),
        lambda: as_reader.remove_object(buckets.own, "clean.jpg"),
    ):
        with pytest.raises(S3Error) as caught:
            denied()
        assert caught.value.code == "AccessDenied"
    assert buckets.other not in {b.name for b in as_reader.list_buckets()}  # MinIO lists what it may read


def test_ensure_team_reader_is_idempotent_and_leaves_only_its_own_policy(tls_minio):
    admin = minio_admin(
        tls_minio.endpoint,
        tls_minio.settings.minio_access_key,
        tls_minio.settings.minio_secret_key,
        secure=True,
        ca_file=tls_minio.ca,
    )
    user = unique("fruit-again")
    admin.user_add(user, "first-secret-1")
    admin.attach_policy(["readwrite"], user=user)  # a user that could read (and write) everything
    try:
        made = [ensure_team_reader(admin, "fruit", user, "second-secret-2") for _ in range(2)]
        assert made[0] == made[1]
        assert (made[0].policy, made[0].buckets) == (reader_policy_name("fruit"), ("fruit", "fruit-*"))
        assert json.loads(admin.user_info(user))["policyName"] == reader_policy_name("fruit")
        tls_minio.client(user, "second-secret-2").bucket_exists("fruit")  # the secret given last holds
    finally:
        admin.user_remove(user)


def test_both_fetch_paths_trust_the_named_ca_and_only_with_it(tls_minio, reader, buckets):
    """In this process: obstore's GET and the minio SDK's readiness call reach the TLS MinIO with MINIO_CA_FILE,
    and refuse its certificate without it (a private CA is in no default roots)."""
    given = dict(
        minio_endpoint=tls_minio.endpoint,
        minio_access_key=reader.access_key,
        minio_secret_key=reader.secret_key,
        minio_secure=True,
    )
    trusted = ObjectStore(ServiceSettings(**given, minio_ca_file=tls_minio.ca))
    assert asyncio.run(trusted.fetch(buckets.own, "defect.jpg")) == FruitImages().defect
    trusted.check(cache_s=0)
    untrusted = ObjectStore(ServiceSettings(**given))
    with pytest.raises(StorageUnavailable):
        asyncio.run(untrusted.fetch(buckets.own, "defect.jpg"))
    with pytest.raises(StorageUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.check(cache_s=0)


def test_the_service_fetches_from_minio_over_tls_as_the_team_reader(client, buckets):
    ready = client.get(READYZ_ROUTE)
    assert ready.status_code == 200 and ready.json()["ready"], ready.text
    for kind in ("clean", "defect"):
        answer = client.post(INFER_JSON_ROUTE, json={"bucket": buckets.own, "key": f"{kind}.jpg"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] == kind


def test_an_object_outside_the_readers_policy_is_403_never_500(client, buckets, tls_minio):
    tls_minio.client().stat_object(buckets.other, "clean.jpg")  # it is there: only the policy stands in the way
    denied = client.post(INFER_JSON_ROUTE, json={"bucket": buckets.other, "key": "clean.jpg"})
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"]["type"] == "access_denied" and denied.json()["error"]["stage"] == "fetch"
    assert buckets.other in denied.json()["error"]["message"]
    batch = client.post(
        INFER_BATCH_ROUTE,
        json={
            "items": [
                {"bucket": buckets.own, "key": "defect.jpg"},
                {"bucket": buckets.other, "key": "defect.jpg"},
                {"bucket": unique("elsewhere"), "key": "a.jpg"},  # a bucket outside the policy, existing or not: 403
                {"bucket": buckets.own, "key": "missing.jpg"},  # inside it, the reader may list: a plain 404
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    first, other, elsewhere, missing = batch.json()["items"]
    assert first["ok"] and first["result"]["label"] == "defect"
    for item in (other, elsewhere):
        assert not item["ok"] and item["status"] == 403 and item["error"]["type"] == "access_denied", item
    assert (missing["status"], missing["error"]["type"]) == (404, "object_not_found")


# ---------------------------------------------------------------------------- the service over TLS, with a token


def test_the_probes_answer_over_https_without_the_token(service, pki):
    with httpx.Client(base_url=service.base_url, verify=trusting(pki.cert), trust_env=False, timeout=30) as anyone:
        health = anyone.get(HEALTHZ_ROUTE)
        assert (health.status_code, health.json()) == (200, {"ok": True, "team": "fruit"})
        assert anyone.get(READYZ_ROUTE).status_code == 200


def test_the_infer_routes_need_the_token(service, pki, buckets):
    body = {"bucket": buckets.own, "key": "clean.jpg"}
    with httpx.Client(base_url=service.base_url, verify=trusting(pki.cert), trust_env=False, timeout=60) as anyone:
        for headers in ({}, {"authorization": "Bearer wrong-token"}, {"authorization": TOKEN}):
            refused = anyone.post(INFER_JSON_ROUTE, json=body, headers=headers)
            assert refused.status_code == 401 and error_type(refused) == "unauthorized", refused.text
            assert refused.headers["www-authenticate"] == "Bearer"
        assert anyone.post(INFER_BATCH_ROUTE, json={"items": [body]}).status_code == 401
        allowed = anyone.post(INFER_JSON_ROUTE, json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200 and allowed.json()["label"] == "clean", allowed.text


def test_a_client_that_does_not_trust_the_ca_cannot_connect(service, tmp_path):
    assert service.base_url.startswith("https://")
    url = f"{service.base_url}{HEALTHZ_ROUTE}"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url, verify=True, trust_env=False, timeout=10)  # the default roots (certifi)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url, verify=trusting(Authority(tmp_path / "another-ca").cert), trust_env=False, timeout=10)
    with pytest.raises(httpx.TransportError):  # plain HTTP to the HTTPS port: no answer
        httpx.get(f"http://{service.host}:{service.port}{HEALTHZ_ROUTE}", trust_env=False, timeout=10)


def test_several_workers_serve_https_with_the_token_too(tls_minio, reader, pki, fruit_weights, buckets, tmp_path):
    """WORKERS=2: uvicorn's supervisor and its worker processes, each loading the certificate and the token."""
    service = InferenceService(
        tls_minio.settings,
        team="fruit",
        weights_path=str(fruit_weights),
        env={**FRUIT_SERVICE_ENV, **service_environment(workers=2)},
        log_path=tmp_path / "service.log",
        auth_token=TOKEN,
        tls=pki.issue("inference-fruit"),
        minio_secure=True,
        minio_ca_file=tls_minio.ca,
        minio_access_key=reader.access_key,
        minio_secret_key=reader.secret_key,
    )
    body = {"bucket": buckets.own, "key": "defect.jpg"}

    async def infer_each_on_a_connection_of_its_own(count: int, headers: dict[str, str]) -> list[int]:
        async with httpx.AsyncClient(
            base_url=service.base_url,
            verify=trusting(pki.cert),
            trust_env=False,
            timeout=60,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as http:
            answers = await asyncio.gather(
                *(http.post(INFER_JSON_ROUTE, json=body, headers=headers) for _ in range(count))
            )
        return [answer.status_code for answer in answers]

    with service.start():
        with httpx.Client(base_url=service.base_url, verify=trusting(pki.cert), trust_env=False, timeout=30) as http:
            deadline = time.monotonic() + 120
            while (ready := http.get(READYZ_ROUTE).json()).get("workers") != 2 or not ready["ready"]:
                assert time.monotonic() < deadline, f"the two workers did not become ready: {ready}"
                time.sleep(0.2)
            warm = 0.0
            while warm < 2:  # every worker warm, so each takes connections
                assert time.monotonic() < deadline, "the two workers did not both warm up"
                warm = sum(
                    float(line.split()[-1])
                    for line in http.get("/metrics").text.splitlines()
                    if line.startswith("inference_ready")
                )
                time.sleep(0.2)
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert asyncio.run(infer_each_on_a_connection_of_its_own(8, auth)) == [200] * 8
        assert asyncio.run(infer_each_on_a_connection_of_its_own(4, {})) == [401] * 4
    assert "is set in the process environment" not in (tmp_path / "service.log").read_text()


# ---------------------------------------------------------------------------- where the secrets are, and are not


def test_no_secret_in_the_services_environment_command_line_or_log(service, reader):
    assert service.process is not None and service.secrets_dir is not None
    folder = service.secrets_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["auth_token", "minio_secret_key"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_uid == os.getuid() for f in files)
    members = group_members(service.process.pid)
    assert members
    for pid in members:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in (TOKEN, reader.secret_key):
            assert secret.encode() not in environ and secret.encode() not in argv
        if pid == service.process.pid:
            variables = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
            assert variables[b"AUTH_TOKEN_FILE"] == str(folder / "auth_token").encode()
            assert variables[b"MINIO_SECRET_KEY_FILE"] == str(folder / "minio_secret_key").encode()
            assert variables.get(b"AUTH_TOKEN", b"") == b"" and variables.get(b"MINIO_SECRET_KEY", b"") == b""
    log = service.log_path.read_text()
    assert "is set in the process environment" not in log  # launched as it should be: nothing to warn about
    assert TOKEN not in log and reader.secret_key not in log


def test_the_secret_files_go_with_the_process(tmp_path):
    """A service that fails to start (no such team) is stopped, and its secret files with it."""
    team = unique("no-such-team")
    service = InferenceService(
        StackSettings(state_dir=tmp_path), team=team, auth_token=TOKEN, log_path=tmp_path / "service.log"
    )
    with pytest.raises(InferenceServiceError, match="unknown team"):
        service.start(timeout_s=120)
    assert service.secrets_dir is None
    assert not list(Path(tempfile.gettempdir()).glob(f"imagery-inference-{team}-*"))
    assert TOKEN not in (tmp_path / "service.log").read_text()
