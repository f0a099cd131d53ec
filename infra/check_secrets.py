"""Refuse to start the stack with missing, example or weak credentials.

Runs as the one-shot ``check-secrets`` service of ``infra/docker-compose.yml`` (every
other service waits for it to succeed) and as an init container in ``infra/k8s``. It
compares the credentials in its environment with the example file the stack ships
(``infra/.env.example``): every ``*_USER`` / ``*_PASSWORD`` / ``*_SECRET`` / ``*_TOKEN``
named there must be set, URL-safe (they go into ``amqp://USER:PASSWORD@...`` and the like),
and each secret must differ from its example value and be long enough, unless
``INFAAS_DEV=1`` says this is a development run (then those two are warnings).

Standard library only, so any Python image can run it; values are never printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEV_FLAG = "INFAAS_DEV"
SECRET_SUFFIXES = ("_PASSWORD", "_SECRET", "_TOKEN")
CREDENTIAL_SUFFIXES = ("_USER", *SECRET_SUFFIXES)
MIN_SECRET_CHARS = 16
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
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


def credential_keys(example: Mapping[str, str]) -> list[str]:
    return sorted(key for key in example if key.endswith(CREDENTIAL_SUFFIXES))


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


def check(environ: Mapping[str, str], example: Mapping[str, str]) -> Verdict:
    """Judge the credentials in ``environ`` against the example file's."""
    dev, flag_error = _dev_run(environ)
    errors: list[str] = [flag_error] if flag_error else []
    warnings: list[str] = []
    keys = credential_keys(example)
    for key in keys:
        value = environ.get(key, "")
        if not value:
            errors.append(f"{key} is not set: give it a value in infra/.env (see .env.example)")
            continue
        if _URL_SAFE.fullmatch(value) is None:
            errors.append(
                f"{key} holds characters that break the service URLs: use letters, digits "
                "and . _ ~ - only (e.g. openssl rand -hex 24)"
            )
            continue
        if not is_secret(key):
            continue
        weak = None
        if value == example[key]:
            weak = f"{key} still has the example value from .env.example"
        elif len(value) < MIN_SECRET_CHARS:
            weak = f"{key} is shorter than {MIN_SECRET_CHARS} characters"
        if weak is None:
            continue
        if dev:
            warnings.append(f"{weak} (allowed: {DEV_FLAG}=1, a development run)")
        else:
            errors.append(
                f"{weak}: set a real secret (e.g. openssl rand -hex 24), or start a "
                f"development stack with {DEV_FLAG}=1"
            )
    return Verdict(tuple(errors), tuple(warnings), len(keys))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_secrets",
        description="Refuse missing, example or weak credentials (unless INFAAS_DEV=1).",
    )
    parser.add_argument("--example", required=True, type=Path, help="the .env.example file")
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
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
