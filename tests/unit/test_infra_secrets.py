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
        "MINIO_ROOT_PASSWORD is shorter than 20 characters: set a real secret (e.g. openssl "
        "rand -hex 24), or start a development stack with INFAAS_DEV=1",
    )


# One weak secret each, and the reason the check gives (what is wrong, then what to do).
WEAK_SECRETS = {
    "short": ("9f3a7c1e5b", "is shorter than 20 characters"),
    "same-character": ("a" * 24, "is one short piece repeated"),
    "repeated-word": ("passwordpassword1234", "contains the well-known default 'password'"),
    "repeated-unit": ("x7Kq" * 6, "is one short piece repeated (like 'passwordpassword')"),
    "few-characters": ("ab12ab21ba12ba21abab1212", "uses fewer than 8 different characters"),
    "one-kind": ("qwxzrtplmnbvcsdfghjkyu", "uses one kind of character only"),
    "ascending-run": ("k3abcdefq9Zp0x7Wm2Ln5T", "has a run of 6 repeated or consecutive"),
    "descending-run": ("k3q9Z987654p0x7Wm2Ln5T", "has a run of 6 repeated or consecutive"),
    "run-of-one": ("k3q9Zp0x7W000000m2Ln5T", "has a run of 6 repeated or consecutive"),
    "changeme": ("Changeme-2024-for-real", "contains the well-known default 'changeme'"),
    "minioadmin": ("minioadmin-3f9c1a7e5b2d", "contains the well-known default 'minioadmin'"),
    "guest": ("guest.3f9c1a7e5b2d4c6e", "contains the well-known default 'guest'"),
    "postgres": ("postgres_3f9c1a7e5b2d4c", "contains the well-known default 'postgres'"),
}


@pytest.mark.parametrize(("value", "reason"), WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
def test_each_weakness_is_refused_with_its_reason_and_the_fix(
    example: dict[str, str], value: str, reason: str
) -> None:
    assert reason in (cs.secret_weakness(value) or "")
    verdict = cs.check({**good_env(example), "REDIS_PASSWORD": value}, example)
    assert len(verdict.errors) == 1
    assert verdict.errors[0].startswith(f"REDIS_PASSWORD {reason}")
    assert verdict.errors[0].endswith(
        ": set a real secret (e.g. openssl rand -hex 24), or start a development stack "
        "with INFAAS_DEV=1"
    )
    assert value not in verdict.errors[0], "the message never repeats the secret"
    developing = cs.check(
        {**good_env(example), "REDIS_PASSWORD": value, "INFAAS_DEV": "1"}, example
    )
    assert developing.ok
    assert len(developing.warnings) == 1


def test_generated_secrets_pass() -> None:
    for value in (
        STRONG,
        "dc661482607a329c2c7eb364a8ebcc14805150b648091ecf",
        "Zk3.q9_Lm0~p7Wx2-Tn5Rb8",
    ):
        assert cs.secret_weakness(value) is None, value


def test_one_secret_shared_by_two_services_is_refused(example: dict[str, str]) -> None:
    env = good_env(example)
    env["MINIO_WORKER_PASSWORD"] = env["RABBITMQ_WORKER_PASSWORD"]
    verdict = cs.check(env, example)
    assert verdict.errors == (
        "MINIO_WORKER_PASSWORD, RABBITMQ_WORKER_PASSWORD share one secret (one leaked "
        "service would open the others): give each its own (e.g. openssl rand -hex 24 for "
        "each), or start a development stack with INFAAS_DEV=1",
    )


@pytest.mark.parametrize(
    "name", ["admin", "Administrator", "guest", "postgres", "minioadmin", "root"]
)
def test_well_known_user_names_are_refused(example: dict[str, str], name: str) -> None:
    verdict = cs.check({**good_env(example), "GRAFANA_ADMIN_USER": name}, example)
    assert len(verdict.errors) == 1
    assert verdict.errors[0].startswith(f"GRAFANA_ADMIN_USER is the well-known user name {name!r}")
    assert ": pick a name of your own, or start a development stack" in verdict.errors[0]


@pytest.mark.parametrize(
    ("worker", "owner"),
    [
        ("RABBITMQ_WORKER_USER", "RABBITMQ_USER"),
        ("POSTGRES_WORKER_USER", "POSTGRES_USER"),
        ("MINIO_WORKER_USER", "MINIO_INFAAS_USER"),
        ("MINIO_WORKER_USER", "MINIO_ROOT_USER"),
    ],
)
def test_the_workers_account_must_not_be_the_owners_even_in_development(
    example: dict[str, str], worker: str, owner: str
) -> None:
    env = {**good_env(example), worker: example[owner], "INFAAS_DEV": "1"}
    verdict = cs.check(env, example)
    assert verdict.errors == (
        f"{worker} names the same account as {owner}: give the workers an account of "
        "their own (the setup gives it fewer rights)",
    )


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", "INFAAS_PRIVATE_ADDR is not set"),
        ("  ", "INFAAS_PRIVATE_ADDR is not set"),
        ("0.0.0.0", "listens on every interface"),
        ("::", "listens on every interface"),
        ("127.0.0.1", "is loopback"),
        ("8.8.8.8", "is a public address"),
        ("stack.example", "is not an IP address"),
    ],
)
def test_the_private_address_check_refuses(address: str, problem: str) -> None:
    assert problem in (cs.private_address_problem(address) or "")


@pytest.mark.parametrize(
    "address", ["10.0.0.5", "192.168.1.20", "172.16.0.3", "100.64.1.2", "fd00::5"]
)
def test_the_private_address_check_accepts_private_addresses(address: str) -> None:
    assert cs.private_address_problem(address) is None


def test_the_private_address_mode_of_the_script() -> None:
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--private-address", "0.0.0.0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "refusing to publish the data ports" in refused.stderr
    accepted = subprocess.run(
        [sys.executable, str(SCRIPT), "--private-address", "10.0.0.5"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr


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
