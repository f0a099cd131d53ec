"""Batch jobs stay inside their tenant's buckets (registry/jobs/buckets.py)."""

from __future__ import annotations

import pytest

from queues.errors import ConfigError, Forbidden
from registry.jobs.buckets import (
    DEFAULT_RULES,
    BucketRule,
    check_job_bucket,
    parse_bucket_rules,
)
from registry.jobs.locations import Location

SYSTEM = frozenset({"infaas"})


def _check(text: str, tenant: str, bucket: str) -> None:
    check_job_bucket(
        parse_bucket_rules(text), tenant, Location(bucket, "x"), reserved=SYSTEM, what="input"
    )


def test_the_default_lets_the_default_tenant_use_any_data_bucket() -> None:
    _check(DEFAULT_RULES, "default", "my-data")
    with pytest.raises(Forbidden, match="outside the buckets tenant 'acme' may use"):
        _check(DEFAULT_RULES, "acme", "my-data")


def test_the_system_bucket_is_never_a_jobs_whatever_the_rules() -> None:
    with pytest.raises(Forbidden, match="system's own bucket 'infaas'"):
        _check("*:*", "default", "infaas")


def test_the_system_store_itself_is_the_gateways_uploads_only() -> None:
    # the empty bucket: a job's uploaded input, placed by the gateway
    _check("", "acme", "")


@pytest.mark.parametrize(
    ("tenant", "bucket", "allowed"),
    [
        ("acme", "acme-data", True),
        ("acme", "acme-results", True),
        ("acme", "beta-data", False),
        ("beta", "beta-x", True),
        ("beta", "shared", True),
        ("gamma", "shared", False),
    ],
)
def test_tenant_placeholders_and_named_rules(tenant: str, bucket: str, allowed: bool) -> None:
    rules = "*:{tenant}-*, beta:shared"
    if allowed:
        _check(rules, tenant, bucket)
    else:
        with pytest.raises(Forbidden, match=r"INFAAS_JOB_BUCKETS: \*:\{tenant\}-\*, beta:shared"):
            _check(rules, tenant, bucket)


def test_rules_parse_and_print_back() -> None:
    rules = parse_bucket_rules(" default:* ,acme:acme-[0-9]*,")
    assert rules == (BucketRule("default", "*"), BucketRule("acme", "acme-[0-9]*"))
    assert ",".join(str(r) for r in rules) == "default:*,acme:acme-[0-9]*"


@pytest.mark.parametrize("bad", ["acme", "acme:", ":data", "Acme:data", "acme:da ta", "a:b/c"])
def test_a_bad_rule_is_a_config_error_that_says_the_form(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not TENANT:BUCKET"):
        parse_bucket_rules(bad)


def test_no_rules_allow_nothing_and_say_so() -> None:
    with pytest.raises(Forbidden, match=r"INFAAS_JOB_BUCKETS: none"):
        _check("", "default", "data")
