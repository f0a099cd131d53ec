"""API keys (registry/keys.py, api_gateway/keyring.py): their shape and hash, roles, the
bootstrap admin key, the gateway's copy, the settings that turn authentication on, and
the ``infaas keys`` commands."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from api_gateway.access import presented_key
from api_gateway.keyring import MISS_RELOAD_S, RELOAD_S, KeyRing
from api_gateway.settings import GatewaySettings
from infaas.cli import main
from infaas.client import InfaasClient
from queues.errors import ConfigError, Conflict, InvalidRequest, NotFound, Unauthenticated
from registry.catalog import Catalog
from registry.keys import (
    KeyStore,
    Role,
    hash_key,
    key_id_of,
    matches,
    new_key,
    parse_role,
)

CHOSEN = "an-operator-chosen-bootstrap-key-of-40-chars"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(Catalog(f"sqlite:///{tmp_path / 'catalog.db'}"))


# ------------------------------------------------------------------ key material


def test_a_new_key_carries_its_id_and_256_random_bits() -> None:
    key, key_id = new_key()
    other, other_id = new_key()
    assert key.startswith(f"infaas_{key_id}_")
    assert len(key_id) == 12
    assert len(key) == len("infaas_") + 12 + 1 + 43
    assert key != other
    assert key_id != other_id
    assert key_id_of(key) == key_id


def test_the_hash_is_sha256_and_compared_whole() -> None:
    key, _ = new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert matches(key, hash_key(key))
    assert not matches(key + "x", hash_key(key))
    stored = hash_key(key)
    other_last = "1" if stored.endswith("0") else "0"  # never the digit it had
    assert not matches(key, stored[:-1] + other_last)


def test_a_key_of_another_shape_gets_an_id_from_its_hash() -> None:
    assert key_id_of(CHOSEN) == "ext-" + hash_key(CHOSEN)[:8]
    assert key_id_of("infaas_nothex000000_" + "a" * 43).startswith("ext-")


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.DEPLOY)
    assert Role.ADMIN.allows(Role.QUERY)
    assert Role.DEPLOY.allows(Role.QUERY)
    assert not Role.DEPLOY.allows(Role.ADMIN)
    assert Role.QUERY.allows(Role.QUERY)
    assert not Role.QUERY.allows(Role.DEPLOY)
    with pytest.raises(InvalidRequest, match=r"one of"):
        parse_role("root")


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", None, "abc"),
        (None, "abc", "abc"),
        ("Bearer abc", "abc", "abc"),
    ],
)
def test_the_key_comes_from_either_header(
    authorization: str | None, x_api_key: str | None, expected: str
) -> None:
    assert presented_key(authorization, x_api_key) == expected


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "why"),
    [
        (None, None, "needs an API key"),
        ("", "  ", "needs an API key"),
        ("Basic abc", None, "Bearer"),
        ("Bearer", None, "Bearer"),
        ("Bearer abc", "def", "different keys"),
        ("Bearer " + "a" * 600, None, "too long"),
    ],
)
def test_a_missing_or_malformed_key_is_401(
    authorization: str | None, x_api_key: str | None, why: str
) -> None:
    with pytest.raises(Unauthenticated, match=why) as caught:
        presented_key(authorization, x_api_key)
    assert caught.value.status_code == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


# ------------------------------------------------------------------------ store


def test_the_store_keeps_the_hash_never_the_key(store: KeyStore) -> None:
    made = store.create("acme", "deploy", note="ci")
    record = store.get(made.record.id)
    assert record.key_hash == hash_key(made.key)
    assert record.role is Role.DEPLOY
    assert made.key not in json.dumps(record.to_dict())
    assert made.to_dict()["key"] == made.key


@pytest.mark.parametrize(
    ("tenant", "role", "note"),
    [("Acme Corp", "query", ""), ("acme", "superuser", ""), ("acme", "query", "x" * 201)],
)
def test_a_bad_key_request_is_refused_and_makes_nothing(
    store: KeyStore, tenant: str, role: str, note: str
) -> None:
    with pytest.raises(InvalidRequest):
        store.create(tenant, role, note=note)
    assert store.all() == []


def test_revoking_is_for_good_and_refuses_twice_and_unknown(store: KeyStore) -> None:
    made = store.create("acme", Role.QUERY)
    revoked = store.revoke(made.record.id)
    assert revoked.revoked_at is not None
    assert not revoked.active
    with pytest.raises(Conflict, match="revoked already"):
        store.revoke(made.record.id)
    with pytest.raises(NotFound):
        store.revoke("nope")
    assert store.all(include_revoked=False) == []


def test_the_last_admin_key_is_kept_when_asked(store: KeyStore) -> None:
    first = store.create("ops", Role.ADMIN)
    with pytest.raises(Conflict, match="last active admin"):
        store.revoke(first.record.id, keep_an_admin=True)
    second = store.create("ops", Role.ADMIN)
    store.revoke(first.record.id, keep_an_admin=True)
    with pytest.raises(Conflict):
        store.revoke(second.record.id, keep_an_admin=True)
    store.revoke(second.record.id)  # on the catalog, an operator may


def test_bootstrap_makes_an_admin_key_only_where_none_exists(store: KeyStore) -> None:
    made = store.bootstrap_admin(CHOSEN)
    assert made is not None
    assert made.role is Role.ADMIN
    assert matches(CHOSEN, made.key_hash)
    assert store.bootstrap_admin(CHOSEN) is None  # a restart changes nothing
    assert store.bootstrap_admin("another-chosen-key-also-long-enough-1234") is None
    assert len(store.all()) == 1


def test_a_revoked_bootstrap_key_never_comes_back(store: KeyStore) -> None:
    made = store.bootstrap_admin(CHOSEN)
    assert made is not None
    store.revoke(made.id)
    assert store.bootstrap_admin(CHOSEN) is None
    assert [k.active for k in store.all()] == [False]


def test_a_short_bootstrap_key_is_refused_without_echoing_it(store: KeyStore) -> None:
    with pytest.raises(ConfigError) as caught:
        store.bootstrap_admin("short-secret")
    assert "short-secret" not in caught.value.message
    assert store.all() == []


# ---------------------------------------------------------------------- keyring


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_knows_a_key_made_elsewhere_at_once(store: KeyStore) -> None:
    clock = Clock()
    ring = KeyRing(store, clock=clock)

    async def scenario() -> None:
        await ring.start(bootstrap_key=None, auth_on=True)
        made = store.create("acme", Role.QUERY)  # another gateway, or the CLI
        clock.now += MISS_RELOAD_S
        assert (await ring.authenticate(made.key)).tenant == "acme"

    asyncio.run(scenario())


def test_a_key_revoked_elsewhere_is_refused_within_the_reload_interval(store: KeyStore) -> None:
    clock = Clock()
    ring = KeyRing(store, clock=clock)
    made = store.create("acme", Role.QUERY)

    async def scenario() -> None:
        await ring.start(bootstrap_key=None, auth_on=True)
        assert (await ring.authenticate(made.key)).id == made.record.id
        store.revoke(made.record.id)
        clock.now += RELOAD_S
        await ring.authenticate(made.key)  # still the old copy; a re-read starts
        await asyncio.sleep(0.2)
        with pytest.raises(Unauthenticated, match="revoked"):
            await ring.authenticate(made.key)

    asyncio.run(scenario())


def test_wrong_keys_reread_the_catalog_at_most_every_miss_interval(store: KeyStore) -> None:
    clock = Clock()
    ring = KeyRing(store, clock=clock)
    reads = []
    original = store.all

    def counted(*, include_revoked: bool = True) -> list:  # type: ignore[type-arg]
        reads.append(1)
        return original(include_revoked=include_revoked)

    store.all = counted  # type: ignore[method-assign]

    async def scenario() -> None:
        await ring.start(bootstrap_key=CHOSEN, auth_on=True)
        for _ in range(50):
            with pytest.raises(Unauthenticated):
                await ring.authenticate(new_key()[0])

    asyncio.run(scenario())
    assert len(reads) == 1


# --------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("host", "auth", "on"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("0.0.0.0", None, True),
        ("10.1.2.3", None, True),
        ("gateway.example", None, True),
        ("0.0.0.0", False, False),
        ("127.0.0.1", True, True),
    ],
)
def test_auth_is_on_beyond_loopback_unless_turned_off(
    host: str, auth: bool | None, on: bool
) -> None:
    settings = GatewaySettings(host=host, auth=auth)
    assert settings.auth_on is on
    assert ("on" if on else "OFF") in settings.describe_auth()


def test_docs_and_metrics_are_open_on_loopback_only_unless_set() -> None:
    assert GatewaySettings(host="127.0.0.1", auth=True).info_open
    assert not GatewaySettings(host="0.0.0.0").info_open
    assert GatewaySettings(host="0.0.0.0", open_docs_metrics=True).info_open
    assert not GatewaySettings(host="127.0.0.1", auth=True, open_docs_metrics=False).info_open


def test_the_env_turns_auth_on_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFAAS_AUTH", "off")
    assert GatewaySettings(host="0.0.0.0").auth_on is False
    monkeypatch.setenv("INFAAS_AUTH", "on")
    assert GatewaySettings(host="127.0.0.1").auth_on is True


def test_the_demo_refuses_to_serve_beyond_loopback_without_an_explicit_choice() -> None:
    with pytest.raises(ConfigError, match="INFAAS_AUTH=off"):
        GatewaySettings(host="0.0.0.0").check_demo_exposure()
    GatewaySettings(host="0.0.0.0", auth=False).check_demo_exposure()
    GatewaySettings(host="0.0.0.0", auth=True).check_demo_exposure()
    GatewaySettings(host="127.0.0.1").check_demo_exposure()


def test_the_demo_command_stops_before_serving_open_on_all_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFAAS_HOME", str(tmp_path))
    monkeypatch.delenv("INFAAS_AUTH", raising=False)
    from infaas import cli

    def built(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the demo was built before its exposure was checked")

    monkeypatch.setattr("infaas.services.open_services", built)
    assert cli.main(["demo", "--serve", "--host", "0.0.0.0", "--queries", "1"]) == 2
    assert "INFAAS_AUTH=off" in capsys.readouterr().err


# -------------------------------------------------------------------- CLI, client


def test_infaas_keys_create_list_revoke_on_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFAAS_HOME", str(tmp_path))
    monkeypatch.delenv("INFAAS_CATALOG_URL", raising=False)
    assert main(["keys", "create", "--tenant", "acme", "--role", "deploy", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith("infaas_")
    assert made["tenant"] == "acme"
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert made["id"] in listing
    assert made["key"] not in listing
    assert main(["keys", "revoke", made["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", made["id"]]) == 1
    assert "revoked already" in capsys.readouterr().err
    assert main(["keys", "list", "--revoked", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"]
    assert main(["keys", "create", "--tenant", "Bad Name", "--role", "query"]) == 1
    assert "tenant id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--tenant", "acme", "--role", "root"])
    store = KeyStore(Catalog(f"sqlite:///{tmp_path / 'catalog.db'}"))
    assert len(store.all()) == 1  # the refused ones made nothing


def test_the_client_sends_the_key_from_the_argument_or_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"apps": []})

    transport = httpx.MockTransport(handler)
    monkeypatch.setenv("INFAAS_API_KEY", "from-env")
    for client in (InfaasClient("http://gw", api_key="given"), InfaasClient("http://gw")):
        client._http = httpx.Client(
            base_url=client.url, transport=transport, headers=client._http.headers
        )
        client.apps()
    monkeypatch.delenv("INFAAS_API_KEY")
    bare = InfaasClient("http://gw")
    bare._http = httpx.Client(base_url=bare.url, transport=transport, headers=bare._http.headers)
    bare.apps()
    assert seen == ["Bearer given", "Bearer from-env", None]


def test_the_cli_takes_api_key_on_every_gateway_command() -> None:
    from infaas.cli import build_parser

    parser = build_parser()
    for argv in (
        ["query", "digits", "--input", "x.json"],
        ["jobs", "status", "job-1"],
        ["models", "digits"],
        ["delete-model", "digits", "m"],
    ):
        assert parser.parse_args([*argv, "--api-key", "K"]).api_key == "K"
