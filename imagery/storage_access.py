"""Per-team MinIO credentials: a team's inference service reads its own buckets and nothing else.

    admin = minio_admin("minio:9000", "root", root_secret, secure=True, ca_file=Path("ca.crt"))
    ensure_team_reader(admin, "fruit", access_key="fruit-reader", secret_key=secret)

`ensure_team_reader` makes (or brings back into line) a MinIO user for the team and one policy of its own that
allows reading objects (s3:GetObject) and listing and locating (s3:ListBucket, s3:GetBucketLocation: the minio
SDK's readiness probe and region lookup) in the team's buckets alone: `<bucket>` and `<bucket>-*`, where the
bucket is `schemas.topics.team_bucket(team)` ('_' in a team's name read as '-'), the same buckets the service's
ALLOWED_BUCKETS admits by default. The user ends up with exactly that policy: one attached to it before is
detached, so the credential can never read more than its team's buckets. Running it again changes nothing (the
secret key is set again to the one given).

Mind the patterns' overlap, as with ALLOWED_BUCKETS: team `fruit` reads `fruit-*`, so also the buckets of a team
named `fruit_hot` (`fruit-hot`); name teams so that no team's bucket starts with another's and a dash.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import certifi
import urllib3
from minio import Minio
from minio.credentials import StaticProvider
from minio.error import MinioAdminException
from minio.minioadmin import MinioAdmin

from imagery.errors import ToolError
from schemas import topics

# what reading a team's images takes: the object, and the bucket's location and listing (readiness, region)
BUCKET_ACTIONS = ("s3:GetBucketLocation", "s3:ListBucket")
OBJECT_ACTIONS = ("s3:GetObject",)
# MinIO's answer to attaching a policy the user already has
_ALREADY_APPLIED = "XMinioAdminPolicyChangeAlreadyApplied"


class StorageAccessError(ToolError):
    """MinIO refused an administrative call; the message says which and why (never a secret)."""


@dataclass(frozen=True)
class TeamReader:
    """What `ensure_team_reader` made: the user, its one policy, and the bucket patterns that policy covers."""

    access_key: str
    policy: str
    buckets: tuple[str, ...]


def team_buckets(team: str) -> tuple[str, ...]:
    """The bucket names (globs) a team reads: its own bucket and `<bucket>-*`."""
    own = topics.team_bucket(team.strip().lower())
    return own, f"{own}-*"


def reader_policy_name(team: str) -> str:
    return f"imagery-{topics.team_bucket(team.strip().lower())}-reader"


def reader_policy(buckets: Sequence[str]) -> dict[str, object]:
    """An IAM policy document that reads objects in BUCKETS (names or globs) and nothing else."""
    if not buckets:
        raise ValueError("a reader's policy needs at least one bucket")
    for bucket in buckets:
        if not bucket or "/" in bucket or bucket.strip() != bucket:
            raise ValueError(f"not a bucket name or glob: {bucket!r}")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": list(BUCKET_ACTIONS),
                "Resource": [f"arn:aws:s3:::{bucket}" for bucket in buckets],
            },
            {
                "Effect": "Allow",
                "Action": list(OBJECT_ACTIONS),
                "Resource": [f"arn:aws:s3:::{bucket}/*" for bucket in buckets],
            },
        ],
    }


def _pool(secure: bool, ca_file: Path | None, timeout_s: float) -> urllib3.PoolManager:
    """An HTTP pool for a MinIO client; over TLS it trusts certifi's roots and the CAs of CA_FILE."""
    context: ssl.SSLContext | None = None
    if secure:
        context = ssl.create_default_context(cafile=certifi.where())
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
    return urllib3.PoolManager(
        maxsize=2,
        timeout=urllib3.Timeout(connect=min(3.0, timeout_s), read=timeout_s),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ssl_context=context,
    )


def minio_admin(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    secure: bool = False,
    ca_file: Path | None = None,
    timeout_s: float = 10.0,
) -> MinioAdmin:
    """An admin client of the MinIO at ENDPOINT (host:port) as ACCESS_KEY."""
    return MinioAdmin(
        endpoint=endpoint,
        credentials=StaticProvider(access_key, secret_key),
        secure=secure,
        http_client=_pool(secure, ca_file, timeout_s),
    )


def minio_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    secure: bool = False,
    ca_file: Path | None = None,
    timeout_s: float = 10.0,
) -> Minio:
    """An S3 client of the MinIO at ENDPOINT (host:port) as ACCESS_KEY."""
    return Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=secure,
        http_client=_pool(secure, ca_file, timeout_s),
    )


def ensure_team_reader(
    admin: MinioAdmin, team: str, access_key: str, secret_key: str, *, buckets: Sequence[str] | None = None
) -> TeamReader:
    """Make the MinIO user ACCESS_KEY (secret SECRET_KEY) able to read TEAM's buckets (default: `team_buckets`)
    and nothing else, through a policy of the team's own. Idempotent."""
    if len(access_key) < 3 or len(secret_key) < 8:  # MinIO's own limits, said before anything is sent
        raise ValueError("a MinIO access key has at least 3 characters and a secret key at least 8")
    patterns = tuple(buckets) if buckets is not None else team_buckets(team)
    policy = reader_policy_name(team)
    _call(f"writing the policy {policy}", admin.policy_add, policy, policy=reader_policy(patterns))
    _call(f"adding the user {access_key}", admin.user_add, access_key, secret_key)
    attached = set(_user_policies(admin, access_key))
    others = sorted(attached - {policy})
    if others:  # whatever else it could read before: this credential reads the team's buckets alone
        _call(f"detaching {', '.join(others)} from {access_key}", admin.detach_policy, others, user=access_key)
    if policy not in attached:
        try:
            admin.attach_policy([policy], user=access_key)
        except MinioAdminException as exc:
            if _ALREADY_APPLIED not in str(exc):  # attached meanwhile by another run: what we wanted
                raise StorageAccessError(f"attaching {policy} to {access_key} failed: {_reason(exc)}") from None
    return TeamReader(access_key, policy, patterns)


def remove_team_reader(admin: MinioAdmin, team: str, access_key: str) -> None:
    """Undo `ensure_team_reader`: the user, then the team's policy (what is already gone is no error)."""
    steps: list[tuple[str, Callable[[str], str], str]] = [
        (f"removing the user {access_key}", admin.user_remove, access_key),
        (f"removing the policy {reader_policy_name(team)}", admin.policy_remove, reader_policy_name(team)),
    ]
    for what, call, name in steps:
        try:
            call(name)
        except MinioAdminException as exc:
            if _status(exc) != "404" and "NoSuch" not in str(exc):
                raise StorageAccessError(f"{what} failed: {_reason(exc)}") from None


def _user_policies(admin: MinioAdmin, access_key: str) -> list[str]:
    info = json.loads(_call(f"reading the user {access_key}", admin.user_info, access_key) or "{}")
    return [name for name in str(info.get("policyName") or "").split(",") if name]


def _call(what: str, call: Callable[..., str], *args: object, **kwargs: object) -> str:
    try:
        return call(*args, **kwargs)
    except MinioAdminException as exc:
        raise StorageAccessError(f"{what} failed: {_reason(exc)}") from None


def _status(exc: MinioAdminException) -> str:
    return str(getattr(exc, "_code", ""))


def _reason(exc: MinioAdminException) -> str:
    """MinIO's answer (a JSON body with Code and Message, usually), in a line."""
    body = str(getattr(exc, "_body", "") or "")
    try:
        parsed = json.loads(body)
        return f"{parsed.get('Code', _status(exc))}: {parsed.get('Message', '')}".strip()
    except (ValueError, AttributeError):
        return f"HTTP {_status(exc)}: {body[:300]}"
