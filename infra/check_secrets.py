"""Refuse to start the stack with missing, example or weak credentials.

Runs as the one-shot ``check-secrets`` service of ``infra/docker-compose.yml`` (every
other service waits for it to succeed) and as an init container in ``infra/k8s``. It
compares the credentials in its environment with the example file the stack ships
(``infra/.env.example``): every ``*_USER`` / ``*_PASSWORD`` / ``*_SECRET`` / ``*_TOKEN``
named there must be set and URL-safe (they go into ``amqp://USER:PASSWORD@...`` and the
like). Then each secret must be strong -- not the example value, at least
``MIN_SECRET_CHARS`` long, of several kinds of characters, no repeated or trivial
pattern, no well-known default in it, used by one service only -- and no user name may be
a well-known default (``admin``, ``guest``, ``postgres``...). ``INFAAS_DEV=1`` says this is
a development run: then weak values are warnings, and missing or URL-breaking ones still
errors.

``--private-address ADDRESS`` checks something else: the address the ``remote-workers``
profile publishes the data ports on (``INFAAS_PRIVATE_ADDR``) must be one concrete,
non-public address of this host, never a wildcard.

Standard library only, so any Python image can run it; values are never printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

DEV_FLAG = "INFAAS_DEV"
PRIVATE_ADDRESS = "INFAAS_PRIVATE_ADDR"
SECRET_SUFFIXES = ("_PASSWORD", "_SECRET", "_TOKEN")
USER_SUFFIX = "_USER"
CREDENTIAL_SUFFIXES = (USER_SUFFIX, *SECRET_SUFFIXES)
MIN_SECRET_CHARS = 20
MIN_DISTINCT_CHARS = 8
MIN_CHARACTER_KINDS = 2
TRIVIAL_RUN = 6  # "aaaaaa", "abcdef", "654321": never in a generated secret
GENERATE = "openssl rand -hex 24"
# Defaults that ship with the images we run, and the words people type for them.
WELL_KNOWN_SECRETS = (
    "admin",
    "changeme",
    "changethis",
    "default",
    "guest",
    "letmein",
    "minioadmin",
    "password",
    "postgres",
    "qwerty",
    "rabbitmq",
    "redis",
    "secret",
)
WELL_KNOWN_USERS = frozenset(
    {
        "admin",
        "administrator",
        "default",
        "grafana",
        "guest",
        "minio",
        "minioadmin",
        "postgres",
        "rabbitmq",
        "redis",
        "root",
        "sa",
        "superuser",
        "test",
        "user",
    }
)
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_REPEATED_UNIT = re.compile(r"(.+?)\1+", re.DOTALL)
_KINDS = (re.compile(r"[a-z]"), re.compile(r"[A-Z]"), re.compile(r"[0-9]"), re.compile(r"[._~-]"))
_LINE = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)")


class EnvFileError(ValueError):
    """The example file is not a list of KEY=VALUE lines."""


def read_env_file(text: str, source: str) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads them (comments and blank lines skipped,
    one pair of surrounding quotes removed)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise EnvFileError(f"{source}:{number}: expected KEY=VALUE, got {line!r}")
        key, value = match["key"], match["value"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key in values:
            raise EnvFileError(f"{source}:{number}: {key} is set twice")
        values[key] = value
    return values


def is_secret(key: str) -> bool:
    return key.endswith(SECRET_SUFFIXES)


def is_user(key: str) -> bool:
    return key.endswith(USER_SUFFIX)


def credential_keys(example: Mapping[str, str]) -> list[str]:
    return sorted(key for key in example if key.endswith(CREDENTIAL_SUFFIXES))


# --- judging one value (pure: a reason, or None) ---------------------------------------


def _trivial_run(value: str) -> bool:
    """A run of TRIVIAL_RUN characters that repeat one or step by one ("aaaaaa",
    "abcdef", "987654")."""
    codes = [ord(c) for c in value.lower()]
    for step in (0, 1, -1):
        run = 1
        for previous, current in pairwise(codes):
            run = run + 1 if current - previous == step else 1
            if run >= TRIVIAL_RUN:
                return True
    return False


def secret_weakness(value: str) -> str | None:
    """Why ``value`` is no secret worth the name, or None: the first rule it fails. A
    value from ``openssl rand -hex 24`` passes; a value a person made up seldom does."""
    lowered = value.lower()
    known = next(
        (word for word in sorted(WELL_KNOWN_SECRETS, key=len, reverse=True) if word in lowered),
        None,
    )
    kinds = sum(1 for kind in _KINDS if kind.search(value))
    rules = [
        (len(value) < MIN_SECRET_CHARS, f"is shorter than {MIN_SECRET_CHARS} characters"),
        (known is not None, f"contains the well-known default {known!r}"),
        (
            _REPEATED_UNIT.fullmatch(value) is not None,
            "is one short piece repeated (like 'passwordpassword')",
        ),
        (
            len(set(value)) < MIN_DISTINCT_CHARS,
            f"uses fewer than {MIN_DISTINCT_CHARS} different characters",
        ),
        (
            kinds < MIN_CHARACTER_KINDS,
            f"uses one kind of character only (needs {MIN_CHARACTER_KINDS} of: lowercase, "
            "uppercase, digits, . _ ~ -)",
        ),
        (
            _trivial_run(value),
            f"has a run of {TRIVIAL_RUN} repeated or consecutive characters (like 'abcdef')",
        ),
    ]
    return next((reason for failed, reason in rules if failed), None)


def user_weakness(value: str) -> str | None:
    if value.lower() in WELL_KNOWN_USERS:
        return f"is the well-known user name {value!r}, the first one an attacker tries"
    return None


def _owner_keys(key: str, keys: Sequence[str]) -> list[str]:
    """RABBITMQ_WORKER_USER -> [RABBITMQ_USER]: the other accounts of the same service,
    which the workers' must differ from (MINIO_WORKER_USER: MINIO_INFAAS_USER and
    MINIO_ROOT_USER)."""
    head, sep, tail = key.rpartition("_WORKER_USER")
    if not sep or not head or tail:
        return []
    return [k for k in keys if k != key and is_user(k) and k.startswith(f"{head}_")]


@dataclass(frozen=True)
class Finding:
    """A weak value: what is wrong (naming the variable) and what to do."""

    problem: str
    fix: str


@dataclass(frozen=True)
class Verdict:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    checked: int

    @property
    def ok(self) -> bool:
        return not self.errors


def _dev_run(environ: Mapping[str, str]) -> tuple[bool, str | None]:
    flag = environ.get(DEV_FLAG, "").strip()
    if flag in ("", "0"):
        return False, None
    if flag == "1":
        return True, None
    return False, f"{DEV_FLAG} must be 0 or 1, got {flag!r}"


def _weak_values(usable: Mapping[str, str], example: Mapping[str, str]) -> list[Finding]:
    real_secret = f"set a real secret (e.g. {GENERATE})"
    findings: list[Finding] = []
    for key, value in usable.items():
        reason = None
        if is_secret(key):
            reason = (
                "still has the example value from .env.example"
                if value == example[key]
                else secret_weakness(value)
            )
            fix = real_secret
        elif is_user(key):
            reason, fix = user_weakness(value), "pick a name of your own"
        if reason is not None:
            findings.append(Finding(f"{key} {reason}", fix))
    weak = {finding.problem.split(" ", 1)[0] for finding in findings}
    sharing: dict[str, list[str]] = {}
    for key, value in usable.items():
        if is_secret(key) and key not in weak:
            sharing.setdefault(value, []).append(key)
    findings += [
        Finding(
            f"{', '.join(keys)} share one secret (one leaked service would open the others)",
            f"give each its own (e.g. {GENERATE} for each)",
        )
        for keys in sharing.values()
        if len(keys) > 1
    ]
    return findings


def check(environ: Mapping[str, str], example: Mapping[str, str]) -> Verdict:
    """Judge the credentials in ``environ`` against the example file's."""
    dev, flag_error = _dev_run(environ)
    errors: list[str] = [flag_error] if flag_error else []
    keys = credential_keys(example)
    usable: dict[str, str] = {}
    for key in keys:
        value = environ.get(key, "")
        if not value:
            errors.append(f"{key} is not set: give it a value in infra/.env (see .env.example)")
        elif _URL_SAFE.fullmatch(value) is None:
            errors.append(
                f"{key} holds characters that break the service URLs: use letters, digits "
                f"and . _ ~ - only (e.g. {GENERATE})"
            )
        else:
            usable[key] = value
    for key, value in usable.items():
        for owner in _owner_keys(key, list(usable)):
            if usable[owner] != value:
                continue
            # not a matter of strength: the setup would cut the owner's own rights
            errors.append(
                f"{key} names the same account as {owner}: give the workers an account of "
                "their own (the setup gives it fewer rights)"
            )
    findings = _weak_values(usable, example)
    if dev:
        warnings = [f"{f.problem} (allowed: {DEV_FLAG}=1, a development run)" for f in findings]
        return Verdict(tuple(errors), tuple(warnings), len(keys))
    errors += [
        f"{f.problem}: {f.fix}, or start a development stack with {DEV_FLAG}=1" for f in findings
    ]
    return Verdict(tuple(errors), (), len(keys))


# --- the address the remote-workers profile publishes on -------------------------------


def private_address_problem(value: str) -> str | None:
    """Why the data ports must not be published on ``value``, or None."""
    name = PRIVATE_ADDRESS
    if not value.strip():
        return (
            f"{name} is not set: the remote-workers profile publishes the broker, catalog, "
            "live state and object store there; set it in infra/.env to this host's "
            "private address (the one the worker hosts reach, e.g. 10.0.0.5)"
        )
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return f"{name}={value!r} is not an IP address: give this host's private address"
    if address.is_unspecified:
        return (
            f"{name}={value} listens on every interface, the public one too: give the one "
            "private address the worker hosts reach"
        )
    if address.is_loopback:
        return f"{name}={value} is loopback: workers on other hosts cannot reach it"
    if address.is_global:
        return (
            f"{name}={value} is a public address: the data ports would face the internet; "
            "use a private network (10/8, 172.16/12, 192.168/16, a VPN) between the hosts"
        )
    return None


def _check_private_address(value: str) -> int:
    problem = private_address_problem(value)
    if problem is not None:
        print(f"check-secrets: {problem}", file=sys.stderr)
        print("check-secrets: refusing to publish the data ports", file=sys.stderr)
        return 1
    print(f"check-secrets: the data ports go on {value.strip()} only")
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_secrets",
        description="Refuse missing, example or weak credentials (unless INFAAS_DEV=1).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", type=Path, help="the .env.example file")
    what.add_argument(
        "--private-address",
        metavar="ADDRESS",
        help=f"check the value of {PRIVATE_ADDRESS} instead: one private, concrete address",
    )
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    if args.private_address is not None:
        return _check_private_address(args.private_address)
    try:
        example = read_env_file(args.example.read_text(encoding="utf-8"), str(args.example))
    except (OSError, UnicodeDecodeError, EnvFileError) as exc:
        print(f"check-secrets: cannot read the example file: {exc}", file=sys.stderr)
        return 2
    if not credential_keys(example):
        print(f"check-secrets: {args.example} names no credentials to check", file=sys.stderr)
        return 2
    verdict = check(env, example)
    for warning in verdict.warnings:
        print(f"check-secrets: warning: {warning}", file=sys.stderr)
    for error in verdict.errors:
        print(f"check-secrets: {error}", file=sys.stderr)
    if not verdict.ok:
        print(
            f"check-secrets: refusing to start the stack ({len(verdict.errors)} problem(s) above)",
            file=sys.stderr,
        )
        return 1
    print(f"check-secrets: {verdict.checked} credentials checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
