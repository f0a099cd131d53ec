"""infra/check_secrets.py: the guard every service of the stack waits for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra_support import INFRA, check_secrets_module, read_env_example

SCRIPT = INFRA / "check_secrets.py"
EXAMPLES = [INFRA / ".env.example", INFRA / "worker.env.example", INFRA / "k8s/secrets.env.example"]
STRONG = "3f9c1a7e5b2d4c6e8a0b1c2d3e4f5a6b"

cs = check_secrets_module()


def good_env(example: dict[str, str]) -> dict[str, str]:
    return {
        key: (f"{STRONG}{i}" if cs.is_secret(key) else value)
        for i, (key, value) in enumerate(example.items())
    }


@pytest.fixture
def example() -> dict[str, str]:
    return read_env_example(INFRA / ".env.example")


def test_real_secrets_pass(example: dict[str, str]) -> None:
    verdict = cs.check(good_env(example), example)
    assert verdict.ok
    assert verdict.warnings == ()
    assert verdict.checked == len(cs.credential_keys(example)) > 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_copied_example_is_refused(path: Path) -> None:
    example = read_env_example(path)
    verdict = cs.check(example, example)
    secrets = [key for key in cs.credential_keys(example) if cs.is_secret(key)]
    assert secrets
    assert len(verdict.errors) == len(secrets)
    assert all("still has the example value" in e for e in verdict.errors)
    assert all("INFAAS_DEV=1" in e for e in verdict.errors)


def test_a_development_run_may_use_the_example_secrets(example: dict[str, str]) -> None:
    verdict = cs.check({**example, "INFAAS_DEV": "1"}, example)
    assert verdict.ok
    assert len(verdict.warnings) == len([k for k in example if cs.is_secret(k)])
    assert all("development run" in w for w in verdict.warnings)


@pytest.mark.parametrize("flag", ["yes", "true", "2", " on"])
def test_a_dev_flag_that_is_not_0_or_1_is_an_error(example: dict[str, str], flag: str) -> None:
    verdict = cs.check({**good_env(example), "INFAAS_DEV": flag}, example)
    assert verdict.errors == (f"INFAAS_DEV must be 0 or 1, got {flag.strip()!r}",)


def test_missing_and_empty_credentials_are_errors(example: dict[str, str]) -> None:
    env = good_env(example)
    del env["REDIS_PASSWORD"]
    env["POSTGRES_USER"] = ""
    verdict = cs.check({**env, "INFAAS_DEV": "1"}, example)
    assert verdict.errors == (
        "POSTGRES_USER is not set: give it a value in infra/.env (see .env.example)",
        "REDIS_PASSWORD is not set: give it a value in infra/.env (see .env.example)",
    )


@pytest.mark.parametrize("value", ["pa:ss" + STRONG, "p@ss" + STRONG, "a/b" + STRONG, "x y"])
def test_characters_that_break_urls_are_refused_even_in_development(
    example: dict[str, str], value: str
) -> None:
    env = {**good_env(example), "RABBITMQ_PASSWORD": value, "INFAAS_DEV": "1"}
    verdict = cs.check(env, example)
    assert len(verdict.errors) == 1
    assert verdict.errors[0].startswith("RABBITMQ_PASSWORD holds characters that break")
    assert value not in verdict.errors[0]


def test_short_secrets_are_refused_but_user_names_may_be_short(example: dict[str, str]) -> None:
    env = {**good_env(example), "MINIO_ROOT_PASSWORD": "abc123", "POSTGRES_USER": "pg"}
    verdict = cs.check(env, example)
    assert verdict.errors == (
        "MINIO_ROOT_PASSWORD is shorter than 16 characters: set a real secret (e.g. openssl "
        "rand -hex 24), or start a development stack with INFAAS_DEV=1",
    )


def test_env_file_reading() -> None:
    text = "# comment\n\nA=1\nB='two words'\nC=\"x\"\nD=\n"
    assert cs.read_env_file(text, "f") == {"A": "1", "B": "two words", "C": "x", "D": ""}
    with pytest.raises(cs.EnvFileError, match=r"f:2: expected KEY=VALUE, got 'oops'"):
        cs.read_env_file("A=1\noops\n", "f")
    with pytest.raises(cs.EnvFileError, match="f:2: A is set twice"):
        cs.read_env_file("A=1\nA=2\n", "f")


def test_k8s_and_worker_examples_agree_with_the_stack_example(example: dict[str, str]) -> None:
    for path in EXAMPLES[1:]:
        other = read_env_example(path)
        shared = set(cs.credential_keys(other))
        assert shared <= set(example), f"{path.name} has credentials the stack does not know"
        assert {k: other[k] for k in shared} == {k: example[k] for k in shared}, path.name


def run_script(env: dict[str, str], example: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--example", str(example)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_script_refuses_example_secrets_and_never_prints_a_secret(
    example: dict[str, str],
) -> None:
    refused = run_script(example, INFRA / ".env.example")
    assert refused.returncode == 1
    assert "refusing to start the stack" in refused.stderr
    assert "changethis" not in refused.stderr + refused.stdout
    env = good_env(example)
    accepted = run_script(env, INFRA / ".env.example")
    assert accepted.returncode == 0, accepted.stderr
    assert "credentials checked" in accepted.stdout
    for key in cs.credential_keys(example):
        if cs.is_secret(key):
            assert env[key] not in accepted.stdout + accepted.stderr
    developing = run_script({**example, "INFAAS_DEV": "1"}, INFRA / ".env.example")
    assert developing.returncode == 0
    assert "warning:" in developing.stderr


def test_the_script_reports_an_unreadable_example(tmp_path: Path) -> None:
    missing = run_script({}, tmp_path / "nope.env")
    assert missing.returncode == 2
    assert "cannot read the example file" in missing.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("PORT=1\n")
    nothing = run_script({}, empty)
    assert nothing.returncode == 2
    assert "names no credentials" in nothing.stderr
