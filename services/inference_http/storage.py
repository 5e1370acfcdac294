"""Fetching objects from MinIO, with failures mapped to honest errors.

The GET of an object goes through obstore (Rust's object_store: SigV4 signing, the HTTP client and the body's
bytes all in Rust, on its own runtime, without the GIL) and is awaited on the event loop: no thread pool. With
the minio SDK (urllib3, http.client, signing in Python) the fetch held the GIL for 28% to 48% of its time under
load on an H100 and about 27% on a 2-core machine (bench/RESULTS.md, issue 10); that is what this replaces.

An object's size is decided from the response's Content-Length before its body is read, so an oversized object
costs one response header, not its bytes. Content encodings are not undone (object_store asks for none and
decodes none): a gzip-encoded upload cannot expand on the way in. The readiness probe is a rare call and keeps
the minio SDK, whose error codes it reads.

With MINIO_SECURE=1 both clients verify MinIO's certificate: against the default roots, and the CAs of
MINIO_CA_FILE besides (a private CA's MinIO). obstore takes them as its client option `root_certificate` (PEM
text, added to its roots); the SDK's urllib3 pool through an SSL context holding certifi's roots and them.
"""

from __future__ import annotations

import re
import ssl
import time
from collections import OrderedDict
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

import certifi
import obstore
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from obstore.exceptions import PermissionDeniedError
from obstore.store import S3Store

from services.inference_http.errors import (
    AccessDenied,
    BucketNotFound,
    ObjectNotFound,
    ObjectTooLarge,
    ServiceError,
    StorageFailed,
    StorageRefused,
    StorageUnavailable,
)
from services.inference_http.settings import ServiceSettings

if TYPE_CHECKING:
    from obstore.store import ClientConfig  # a TypedDict of the stubs alone (not importable at runtime)

# S3 error codes that say our own credentials are wrong: a service problem, not the message's
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"}
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "NoSuchObject"}
# S3 error codes that say storage as a whole cannot serve now (MinIO starting, overloaded, or out of quorum)
_UNAVAILABLE_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "XMinioServerNotInitialized",
    "XMinioStorageFull",
    "XMinioReadQuorum",
    "XMinioWriteQuorum",
    "RequestTimeout",
}
_PROBE_BUCKET = "imagery-readiness-probe"
# object_store reports S3's answer in its message: the status line, then the XML error body with its <Code>
_STATUS_RE = re.compile(r"status code: (\d{3})")
_CODE_RE = re.compile(r"<Code>([^<]{1,64})</Code>")
# one obstore store per bucket (a store is bound to its bucket); a glob in ALLOWED_BUCKETS may admit many
_MAX_STORES = 64


def _pool(
    settings: ServiceSettings, *, size: int, retries: urllib3.Retry | bool, timeout_s: float
) -> urllib3.PoolManager:
    context: ssl.SSLContext | None = None
    if settings.minio_secure and settings.minio_ca_file is not None:  # certifi's roots and the named CAs, as the
        context = ssl.create_default_context(cafile=certifi.where())  # GETs trust them
        context.load_verify_locations(cafile=str(settings.minio_ca_file))
    return urllib3.PoolManager(
        maxsize=size,
        timeout=urllib3.Timeout(connect=min(3.0, timeout_s), read=timeout_s),
        retries=retries,
        cert_reqs="CERT_REQUIRED" if settings.minio_secure else "CERT_NONE",
        ca_certs=certifi.where() if settings.minio_secure and context is None else None,
        ssl_context=context,
    )


def _client_options(settings: ServiceSettings) -> ClientConfig:
    options: ClientConfig = {
        "allow_http": not settings.minio_secure,
        "timeout": timedelta(seconds=settings.storage_timeout_s),
        "connect_timeout": timedelta(seconds=min(3.0, settings.storage_timeout_s)),
    }
    if settings.minio_secure and settings.minio_ca_file is not None:
        # object_store's ClientOptions::with_root_certificate, as obstore exposes it: the PEM text (every
        # certificate in it), added to the roots it trusts already
        options["root_certificate"] = settings.minio_ca_file.read_text()
    return options


class ObjectStore:
    def __init__(self, settings: ServiceSettings) -> None:
        self.endpoint = settings.minio_endpoint
        self.max_bytes = settings.max_object_bytes
        # a store for one bucket: S3Store(bucket) with these settings (partial, so mypy checks them against S3Store)
        self._new_store = partial(
            S3Store,
            endpoint=f"{'https' if settings.minio_secure else 'http'}://{settings.minio_endpoint}",
            access_key_id=settings.minio_access_key,
            secret_access_key=settings.minio_secret_key.get_secret_value(),
            region=settings.minio_region or "us-east-1",  # MinIO's default region
            virtual_hosted_style_request=False,  # MinIO serves path-style URLs
            client_options=_client_options(settings),
            # a couple of quick retries for connection blips and 5xx; the dispatcher retries anything longer
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=settings.storage_timeout_s),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=1),
                    "base": 2.0,
                },
            },
        )
        self._stores: OrderedDict[str, S3Store] = OrderedDict()
        self._probe = Minio(
            self.endpoint,
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key.get_secret_value(),
            secure=settings.minio_secure,
            region=settings.minio_region,
            http_client=_pool(settings, size=2, retries=False, timeout_s=2.0),
        )
        self._probe_ok_until = 0.0

    def _store(self, bucket: str) -> S3Store:
        store = self._stores.get(bucket)
        if store is None:
            store = self._stores[bucket] = self._new_store(bucket)
            if len(self._stores) > _MAX_STORES:
                self._stores.popitem(last=False)
        return store

    async def fetch(self, bucket: str, key: str) -> bytes:
        """The object's bytes; raises a ServiceError subclass on every failure."""
        try:
            return await self._fetch(bucket, key)
        except StorageUnavailable:
            self._probe_ok_until = 0.0  # readiness must not vouch for storage from a cached answer now
            raise

    async def _fetch(self, bucket: str, key: str) -> bytes:
        if key.startswith("/") or key.endswith("/"):  # object_store would drop the slash: another object
            raise StorageRefused(f"storage refuses the name s3://{bucket}/{key}: a key cannot start or end with '/'")
        try:
            store = self._store(bucket)
        except Exception as exc:  # obstore's own check of the bucket's name: nothing was sent
            raise StorageRefused(f"storage refuses the bucket name {bucket!r}: {_first_line(exc)}") from exc
        try:
            result = await obstore.get_async(store, key)
        except Exception as exc:
            raise self._error(exc, bucket, key) from exc
        size = result.meta["size"]
        if size > self.max_bytes:  # the body is never read: dropping the result drops the connection
            raise ObjectTooLarge(f"s3://{bucket}/{key} is {size} bytes; the limit is {self.max_bytes}")
        try:
            data = bytes(await result.bytes_async())
        except Exception as exc:
            raise StorageUnavailable(
                f"reading s3://{bucket}/{key} from {self.endpoint} failed: {_first_line(exc)}"
            ) from exc
        if len(data) > self.max_bytes:  # (HTTP's framing holds the body to Content-Length; kept as a backstop)
            raise ObjectTooLarge(f"s3://{bucket}/{key} is over the limit of {self.max_bytes} bytes")
        return data

    def _error(self, exc: Exception, bucket: str, key: str) -> ServiceError:
        text = str(exc)
        status_match, code_match = _STATUS_RE.search(text), _CODE_RE.search(text)
        if status_match is None:
            if isinstance(exc, PermissionDeniedError):  # a 403 whose text lacks its status line: still a 403
                return _access_denied(bucket, key)
            if isinstance(exc, ValueError):  # obstore's own checks of the key: nothing was sent
                return StorageRefused(f"storage refuses the name s3://{bucket}/{key}: {_first_line(exc)}")
            return StorageUnavailable(f"MinIO at {self.endpoint} did not answer: {_first_line(exc)}")
        status = int(status_match.group(1))
        code = code_match.group(1) if code_match else ""
        if code == "NoSuchBucket":
            return BucketNotFound(f"no bucket {bucket!r}")
        if code in _MISSING_CODES or (status == 404 and not code):
            return ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
        if code in _CREDENTIAL_CODES:
            return StorageUnavailable(f"MinIO at {self.endpoint} rejects our credentials ({code})")
        if code == "AccessDenied" or (status == 403 and not code):
            # MinIO's policy for our user does not allow this object (or this bucket: MinIO answers so for a
            # bucket outside the policy whether it exists or not): the caller's 403, never a 500
            return _access_denied(bucket, key)
        message = _s3_message(text) or _first_line(exc)
        if code in _UNAVAILABLE_CODES or status == 503:
            return StorageUnavailable(f"MinIO at {self.endpoint} answered {code or status}: {message}")
        if 400 <= status < 500:  # MinIO answered, about this request: the name, the object, its state
            return StorageRefused(f"MinIO refuses s3://{bucket}/{key}: {code or status}: {message}")
        return StorageFailed(f"MinIO at {self.endpoint} failed on s3://{bucket}/{key}: {code or status}: {message}")

    def check(self, cache_s: float = 1.0) -> None:
        """Raise StorageUnavailable unless MinIO answers an authenticated call (result cached `cache_s`)."""
        if time.monotonic() < self._probe_ok_until:
            return
        try:
            self._probe.bucket_exists(_PROBE_BUCKET)
        except S3Error as exc:
            if exc.code in _CREDENTIAL_CODES:
                raise StorageUnavailable(f"MinIO at {self.endpoint} rejects our credentials ({exc.code})") from exc
            # any other S3 answer (e.g. AccessDenied for this bucket) still means storage is up
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"MinIO at {self.endpoint} did not answer: {exc}") from exc
        self._probe_ok_until = time.monotonic() + cache_s


def _access_denied(bucket: str, key: str) -> AccessDenied:
    return AccessDenied(
        f"access to s3://{bucket}/{key} is denied to this service's MinIO user (its policy does not allow reading it)"
    )


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:300]


def _s3_message(text: str) -> str:
    found = re.search(r"<Message>([^<]{1,300})</Message>", text)
    return found.group(1) if found else ""
