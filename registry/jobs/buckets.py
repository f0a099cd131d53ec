"""Which buckets of the object store a tenant's batch jobs may read and write (pure).

``INFAAS_JOB_BUCKETS`` is an allow-list of ``TENANT:BUCKET`` rules, comma-separated; both
sides are shell patterns (``*``, ``?``, ``[a-z]``), and ``{tenant}`` in a bucket pattern
stands for the caller's tenant, so ``*:{tenant}-*`` gives each tenant the buckets named
after it. The default, ``default:*``, lets the default tenant (authentication off, the
demo) use any bucket and other tenants none until an operator says which.

Whatever the rules say, the system's own buckets are never a job's: the store's bucket
itself (models, variants' artifacts, validation sets, uploaded job inputs) is reached only
through the system's own keys, never through a location a client names.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from queues.errors import ConfigError, Forbidden
from registry.jobs.locations import Location

DEFAULT_RULES = "default:*"
_PATTERN_RE = re.compile(r"^[a-z0-9*?\[\]{}.-]{1,80}$")


@dataclass(frozen=True, slots=True)
class BucketRule:
    """Tenants matching ``tenant`` may use the buckets matching ``bucket``."""

    tenant: str
    bucket: str

    def allows(self, tenant: str, bucket: str) -> bool:
        pattern = self.bucket.replace("{tenant}", tenant)
        return fnmatchcase(tenant, self.tenant) and fnmatchcase(bucket, pattern)

    def __str__(self) -> str:
        return f"{self.tenant}:{self.bucket}"


def parse_bucket_rules(text: str) -> tuple[BucketRule, ...]:
    """The rules of ``INFAAS_JOB_BUCKETS``, or ConfigError saying what is wrong."""
    rules: list[BucketRule] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        tenant, sep, bucket = entry.partition(":")
        if not sep or not _PATTERN_RE.match(tenant) or not _PATTERN_RE.match(bucket):
            raise ConfigError(
                f"INFAAS_JOB_BUCKETS entry {entry!r} is not TENANT:BUCKET; give patterns of "
                "[a-z0-9.-] with * ? [..] and {tenant}, e.g. 'default:*' or "
                "'acme:acme-data,*:{tenant}-*'"
            )
        rules.append(BucketRule(tenant, bucket))
    return tuple(rules)


def check_job_bucket(
    rules: Iterable[BucketRule],
    tenant: str,
    location: Location,
    *,
    reserved: Collection[str],
    what: str,
) -> None:
    """Refuse (403) a job location outside the tenant's buckets or in the system's own.

    The empty bucket is the system's store, where only the gateway puts a job's uploaded
    input (``upload_location``); a client cannot name it (``parse_location``)."""
    bucket = location.bucket
    if not bucket:
        return
    if bucket in reserved:
        raise Forbidden(
            f"the {what} location {location.url} is in the system's own bucket {bucket!r} "
            "(models, artifacts, uploads), which no job may read or write; use a bucket "
            "of your data"
        )
    rules = tuple(rules)
    if not any(rule.allows(tenant, bucket) for rule in rules):
        allowed = ", ".join(str(r) for r in rules) or "none"
        raise Forbidden(
            f"the {what} location {location.url} is outside the buckets tenant {tenant!r} "
            f"may use (INFAAS_JOB_BUCKETS: {allowed}); use one of those, or ask an "
            "operator to allow this bucket"
        )
