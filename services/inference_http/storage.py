"""Fetching objects from MinIO, with failures mapped to honest errors.

The minio SDK blocks; the engine calls `fetch` from a thread pool. An object's size is decided from the
response's Content-Length before its body is read, so an oversized object costs one response header, not
its bytes. Content encodings are not undone (`decode_content=False`): a gzip-encoded upload could otherwise
expand without bound on the way in.
"""

from __future__ import annotations

import time

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

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

# S3 error codes that say our own credentials are wrong: a service problem, not the message's
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"}
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "NoSuchObject"}
# S3 error codes that say storage as a whole cannot serve now (MinIO starting, overloaded, or out of quorum)
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "XMinioServerNotInitialized", "XMinioStorageFull",
                      "XMinioReadQuorum", "XMinioWriteQuorum", "RequestTimeout"}
_PROBE_BUCKET = "imagery-readiness-probe"


def _pool(settings: ServiceSettings, *, size: int, retries: urllib3.Retry | bool,
          timeout_s: float) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        maxsize=size,
        timeout=urllib3.Timeout(connect=min(3.0, timeout_s), read=timeout_s),
        retries=retries,
        cert_reqs="CERT_REQUIRED" if settings.minio_secure else "CERT_NONE",
        ca_certs=certifi.where() if settings.minio_secure else None,
    )


class ObjectStore:
    def __init__(self, settings: ServiceSettings) -> None:
        self.endpoint = settings.minio_endpoint
        self.max_bytes = settings.max_object_bytes
        credentials = dict(access_key=settings.minio_access_key,
                           secret_key=settings.minio_secret_key.get_secret_value(),
                           secure=settings.minio_secure, region=settings.minio_region)
        # a couple of quick retries for connection blips; the dispatcher retries anything longer
        retries = urllib3.Retry(total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504),
                                allowed_methods=None, raise_on_status=False)
        self._client = Minio(self.endpoint, **credentials,
                             http_client=_pool(settings, size=settings.fetch_concurrency + 4, retries=retries,
                                               timeout_s=settings.storage_timeout_s))
        self._probe = Minio(self.endpoint, **credentials,
                            http_client=_pool(settings, size=2, retries=False, timeout_s=2.0))
        self._probe_ok_until = 0.0

    def fetch(self, bucket: str, key: str) -> bytes:
        """The object's bytes; raises a ServiceError subclass on every failure (blocking: call from a thread)."""
        try:
            return self._fetch(bucket, key)
        except StorageUnavailable:
            self._probe_ok_until = 0.0  # readiness must not vouch for storage from a cached answer now
            raise

    def _fetch(self, bucket: str, key: str) -> bytes:
        try:
            response = self._client.get_object(bucket, key)
        except S3Error as exc:
            raise self._s3_error(exc, bucket, key) from exc
        except ValueError as exc:  # the SDK's own checks of the names: nothing was sent
            raise StorageRefused(f"the MinIO client refuses the name s3://{bucket}/{key}: {exc}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"MinIO at {self.endpoint} did not answer: {exc}") from exc
        try:
            length = response.headers.get("Content-Length")
            if length is not None and int(length) > self.max_bytes:
                response.close()  # drop the connection rather than read the body
                raise ObjectTooLarge(f"s3://{bucket}/{key} is {int(length)} bytes; the limit is {self.max_bytes}")
            data = response.read(self.max_bytes + 1, decode_content=False)
            if len(data) > self.max_bytes:  # no (or a wrong) Content-Length: the capped read decides
                response.close()
                raise ObjectTooLarge(f"s3://{bucket}/{key} is over the limit of {self.max_bytes} bytes")
            return data
        except ServiceError:
            raise
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            response.close()
            raise StorageUnavailable(f"reading s3://{bucket}/{key} from {self.endpoint} failed: {exc}") from exc
        finally:
            response.release_conn()

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

    def _s3_error(self, exc: S3Error, bucket: str, key: str) -> ServiceError:
        if exc.code == "NoSuchBucket":
            return BucketNotFound(f"no bucket {bucket!r}")
        if exc.code in _MISSING_CODES:
            return ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
        if exc.code in _CREDENTIAL_CODES:
            return StorageUnavailable(f"MinIO at {self.endpoint} rejects our credentials ({exc.code})")
        if exc.code == "AccessDenied":
            return AccessDenied(f"access to s3://{bucket}/{key} is denied to this service's MinIO user")
        status = getattr(exc.response, "status", 500)
        if exc.code in _UNAVAILABLE_CODES or status == 503:
            return StorageUnavailable(f"MinIO at {self.endpoint} answered {exc.code}: {exc.message}")
        if 400 <= status < 500:  # MinIO answered, about this request: the name, the object, its state
            return StorageRefused(f"MinIO refuses s3://{bucket}/{key}: {exc.code}: {exc.message}")
        return StorageFailed(f"MinIO at {self.endpoint} failed on s3://{bucket}/{key}: {exc.code}: {exc.message}")
