"""Every route of the gateway, walked from ``app.routes`` so that none can be forgotten:
with authentication on, each answers 401 with no key, a wrong key and a revoked key, 403
to a key of too small a role, and lets the right role through (the route may then refuse
the dummy request, with anything but 401 or 403); each that takes a name or an id
answers 404 to another tenant's. Health stays open; changes land in the audit log
(api_gateway/access.py, api_gateway/deps.py, registry/tenancy.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from api_gateway.access import ROUTE_ACCESS, Open, access_of
from api_gateway.app import create_app
from api_gateway.settings import GatewaySettings
from registry.keys import KeyStore, Role, new_key
from tests import factories as f
from tests.tenant_support import seed_tenant

T = TypeVar("T")
APP_BODY = {
    "id": "digits",
    "task": "classification",
    "input": {"name": "x", "dtype": "float32", "shape": [-1, 64]},
    "num_classes": 10,
}


@dataclass
class Keys:
    query: str
    deploy: str
    admin: str
    revoked: str
    admin_id: str

    def of(self, role: Role) -> str:
        return {Role.QUERY: self.query, Role.DEPLOY: self.deploy, Role.ADMIN: self.admin}[role]


def build(tmp_path: Path, **settings: Any) -> tuple[FastAPI, Keys]:
    gateway = GatewaySettings(freeze_heap=False, **settings)
    state = f.gateway_state(tmp_path, gateway)
    store = KeyStore(state.services.catalog)
    admin = store.create("ops", Role.ADMIN)
    revoked = store.create("ops", Role.ADMIN)
    store.revoke(revoked.record.id)
    keys = Keys(
        query=store.create("acme", Role.QUERY).key,
        deploy=store.create("acme", Role.DEPLOY).key,
        admin=admin.key,
        revoked=revoked.key,
        admin_id=admin.record.id,
    )
    return create_app(gateway, state.services), keys


def run(app: FastAPI, calls: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await calls(http)

    return asyncio.run(main())


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, included routers flattened."""
    found: list[tuple[str, str]] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        assert isinstance(route, APIRoute), f"{route} is not an APIRoute: it bypasses Tenant"
        assert context.path == route.path, f"{route.path}: a prefix the rules do not know"
        found.extend((method, route.path) for method in sorted(route.methods or ()))
    return found


def dummy_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "dummy", path)


async def call(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return await http.request(method, dummy_path(path), json=body, **kw)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_route_has_a_rule_and_every_rule_a_route(tmp_path: Path) -> None:
    app, _ = build(tmp_path, auth=True)
    assert sorted(routes(app)) == sorted(ROUTE_ACCESS)


def test_a_route_without_a_rule_needs_admin() -> None:
    assert access_of("POST", "/v1/something-new") is Role.ADMIN
    assert access_of("HEAD", "/healthz") is Open.PUBLIC


def test_without_a_valid_key_every_route_but_health_is_401(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True, open_docs_metrics=False)
    wrong, _ = new_key()
    attempts = {
        "no key": {},
        "wrong key": bearer(wrong),
        "wrong key of another shape": {"X-API-Key": "x" * 40},
        "revoked key": bearer(keys.revoked),
        "revoked key as X-API-Key": {"X-API-Key": keys.revoked},
        "not a bearer": {"Authorization": f"Basic {keys.admin}"},
    }

    async def calls(http: httpx.AsyncClient) -> list[str]:
        problems = []
        for method, path in routes(app):
            for what, headers in attempts.items():
                response = await call(http, method, path, headers=headers)
                if ROUTE_ACCESS[(method, path)] is Open.PUBLIC:
                    if response.status_code in (401, 403):
                        problems.append(f"{method} {path} with {what}: {response.status_code}")
                    continue
                body = response.json()
                if (
                    response.status_code != 401
                    or body["error"]["code"] != "unauthenticated"
                    or not response.headers.get("www-authenticate", "").startswith("Bearer")
                ):
                    problems.append(f"{method} {path} with {what}: {response.status_code} {body}")
        return problems

    assert run(app, calls) == []


def test_a_key_of_too_small_a_role_is_403_and_the_right_role_passes(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True, open_docs_metrics=False)

    async def calls(http: httpx.AsyncClient) -> list[str]:
        problems = []
        for method, path in routes(app):
            access = ROUTE_ACCESS[(method, path)]
            needed = Role.QUERY if isinstance(access, Open) else access
            for role in Role:
                response = await call(http, method, path, headers=bearer(keys.of(role)))
                if role.allows(needed) and response.status_code in (401, 403):
                    problems.append(f"{role} on {method} {path}: {response.text}")
                if not role.allows(needed) and (
                    response.status_code != 403 or response.json()["error"]["code"] != "forbidden"
                ):
                    problems.append(f"{role} on {method} {path}: {response.status_code}, not 403")
        return problems

    assert run(app, calls) == []


def test_health_needs_no_key_and_info_is_open_on_loopback_by_default(tmp_path: Path) -> None:
    app, _ = build(tmp_path, auth=True)  # host 127.0.0.1, open_docs_metrics unset

    async def calls(http: httpx.AsyncClient) -> dict[str, int]:
        paths = ("/healthz", "/metrics", "/openapi.json", "/docs", "/v1/apps")
        return {p: (await http.get(p)).status_code for p in paths}

    assert run(app, calls) == {
        "/healthz": 200,
        "/metrics": 200,
        "/openapi.json": 200,
        "/docs": 200,
        "/v1/apps": 401,
    }


def test_with_auth_off_no_route_asks_for_a_key(tmp_path: Path) -> None:
    app, _ = build(tmp_path, auth=False)

    async def calls(http: httpx.AsyncClient) -> list[str]:
        codes = [(m, p, (await call(http, m, p)).status_code) for m, p in routes(app)]
        return [f"{m} {p}: {code}" for m, p, code in codes if code in (401, 403)]

    assert run(app, calls) == []


def test_x_api_key_works_and_two_different_keys_are_refused(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True)

    async def calls(http: httpx.AsyncClient) -> tuple[int, int]:
        alone = await http.get("/v1/apps", headers={"X-API-Key": keys.query})
        both = {**bearer(keys.query), "X-API-Key": keys.deploy}
        return alone.status_code, (await http.get("/v1/apps", headers=both)).status_code

    assert run(app, calls) == (200, 401)


def test_changes_are_audited_with_tenant_key_route_target_and_outcome(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True)
    deploy_id = keys.deploy.split("_")[1]
    query_id = keys.query.split("_")[1]

    async def calls(http: httpx.AsyncClient) -> list[dict[str, Any]]:
        created = await http.post("/v1/apps", json=APP_BODY, headers=bearer(keys.deploy))
        assert created.status_code == 201, created.text
        again = await http.post("/v1/apps", json=APP_BODY, headers=bearer(keys.deploy))
        assert again.status_code == 409
        invalid = await http.post("/v1/apps", json={"id": "x"}, headers=bearer(keys.deploy))
        assert invalid.status_code == 422
        refused = await http.delete("/v1/apps/digits", headers=bearer(keys.query))
        assert refused.status_code == 403
        nobody = await http.delete("/v1/apps/digits")
        assert nobody.status_code == 401
        read = await http.get("/v1/apps", headers=bearer(keys.deploy))
        assert read.status_code == 200
        audit = await http.get("/v1/audit", headers=bearer(keys.admin))
        assert audit.status_code == 200, audit.text
        records: list[dict[str, Any]] = audit.json()["records"]
        return records

    records = run(app, calls)
    summary = [
        (r["tenant"], r["key_id"], r["method"], r["route"], r["target"], r["outcome"])
        for r in reversed(records)
    ]
    assert summary == [
        # the audit log is the admins': it names things by their internal ids
        ("acme", deploy_id, "POST", "/v1/apps", "app=acme--digits", "ok"),
        ("acme", deploy_id, "POST", "/v1/apps", "app=acme--digits", "conflict"),
        ("acme", deploy_id, "POST", "/v1/apps", "", "invalid_request"),
        ("acme", query_id, "DELETE", "/v1/apps/{app}", "app=digits", "forbidden"),
    ]
    assert all(r["at"] for r in records)


def test_keys_over_http_made_shown_once_listed_and_revoked(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True)
    admin = bearer(keys.admin)

    async def calls(http: httpx.AsyncClient) -> None:
        made = await http.post(
            "/v1/keys", json={"tenant": "beta", "role": "query", "note": "ci"}, headers=admin
        )
        assert made.status_code == 201, made.text
        new = made.json()
        assert new["key"].startswith("infaas_")
        assert new["role"] == "query"
        assert (await http.get("/v1/apps", headers=bearer(new["key"]))).status_code == 200
        listed = (await http.get("/v1/keys", headers=admin)).json()["keys"]
        assert all("key" not in k and "key_hash" not in k for k in listed)
        assert new["id"] in [k["id"] for k in listed]
        gone = await http.delete(f"/v1/keys/{new['id']}", headers=admin)
        assert gone.status_code == 200
        assert gone.json()["revoked_at"]
        refused = await http.get("/v1/apps", headers=bearer(new["key"]))
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]
        twice = await http.delete(f"/v1/keys/{new['id']}", headers=admin)
        assert twice.status_code == 409
        unknown = await http.delete("/v1/keys/nope", headers=admin)
        assert unknown.status_code == 404
        bad = await http.post("/v1/keys", json={"tenant": "beta", "role": "root"}, headers=admin)
        assert bad.status_code == 422
        assert "role" in bad.json()["error"]["message"]
        bad_tenant = await http.post(
            "/v1/keys", json={"tenant": "Not A Name", "role": "query"}, headers=admin
        )
        assert bad_tenant.status_code == 422
        last = await http.delete(f"/v1/keys/{keys.admin_id}", headers=admin)
        assert last.status_code == 409
        assert "last active admin" in last.json()["error"]["message"]
        after = (await http.get("/v1/keys", headers=admin)).json()["keys"]
        assert [k["id"] for k in after] == [k["id"] for k in listed if k["id"] != new["id"]]

    run(app, calls)


def test_a_tenant_sees_only_its_own_jobs(tmp_path: Path) -> None:
    """Jobs already belong to a tenant: now the key's."""
    app, keys = build(tmp_path, auth=True)

    async def calls(http: httpx.AsyncClient) -> tuple[int, int]:
        mine = await http.get("/v1/jobs", headers=bearer(keys.deploy))
        theirs = await http.get("/v1/jobs/some-job", headers=bearer(keys.admin))
        return mine.status_code, theirs.status_code

    assert run(app, calls) == (200, 404)


# Bodies that pass each route's own validation, so that only the name decides its answer.
ROW = [[[0.0] * 8] * 8]
OIP_BODY = {
    "inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/apps/{app}/infer"): {"inputs": ROW, "timeout_ms": 100},
    ("POST", "/v1/models/{model}/infer"): {"inputs": ROW, "timeout_ms": 100},
    ("POST", "/v1/variants/{variant}/infer"): {"inputs": ROW, "timeout_ms": 100},
    ("POST", "/v2/models/{name}/infer"): OIP_BODY,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): OIP_BODY,
}


def named_routes(app: FastAPI) -> list[tuple[str, str]]:
    """The routes that take a name or an id and belong to a tenant: every one with a path
    parameter but the open ones and the admins' (admins see every tenant's)."""
    return [
        (method, path)
        for method, path in routes(app)
        if "{" in path
        and isinstance(ROUTE_ACCESS[(method, path)], Role)
        and ROUTE_ACCESS[(method, path)] is not Role.ADMIN
    ]


def filled(path: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"{path}: no cross-tenant value for {{{name}}}; add one"
        return values[name]

    return re.sub(r"\{([^}]+)\}", value, path)


# Routes that do not look names up among the caller's yet (the console's, made beside
# this work: api_gateway/routes/ui.py should use routes/apps.py's visible_app). The test
# below fails as soon as one of them does, so that it leaves this list.
NOT_YET_TENANTED: frozenset[tuple[str, str]] = frozenset()  # the console is tenanted too


def test_another_tenants_names_are_404_on_every_route_that_takes_one(tmp_path: Path) -> None:
    """From the route table: tenant acme names beta's app, model, variant, registration
    and job (by beta's names and by their internal ids) and gets the 404 of a name that
    does not exist; beta itself, on the same calls, never does."""
    app, keys = build(tmp_path, auth=True)
    state = app.state.infaas
    beta = seed_tenant(state.services.catalog, "beta")
    beta_key = KeyStore(state.services.catalog).create("beta", Role.DEPLOY).key
    checked = named_routes(app)
    assert len(checked) >= 15, checked  # the table was read

    async def calls(http: httpx.AsyncClient) -> dict[tuple[str, str], list[str]]:
        await state.refresh(force=True)
        problems: dict[tuple[str, str], list[str]] = {}
        for internal in (False, True):
            values = beta.path_values(internal=internal)
            for method, path in checked:
                body = BODIES.get((method, path), {} if method == "POST" else None)
                url = filled(path, values)
                response = await http.request(method, url, json=body, headers=bearer(keys.deploy))
                error = response.json().get("error")
                # the Open Inference Protocol's errors are {"error": message}
                code = error.get("code", "") if isinstance(error, dict) else "not_found"
                if response.status_code != 404 or not code.startswith(("unknown_", "not_found")):
                    problems.setdefault((method, path), []).append(
                        f"acme {method} {url}: {response.status_code} {response.text}"
                    )
        # the same calls from beta find its things (deletes last: they change them)
        for method, path in sorted(checked, key=lambda route: route[0] == "DELETE"):
            body = BODIES.get((method, path), {} if method == "POST" else None)
            url = filled(path, beta.path_values())
            response = await http.request(method, url, json=body, headers=bearer(beta_key))
            if response.status_code == 404:
                problems.setdefault((method, path), []).append(
                    f"beta {method} {url}: {response.text}"
                )
        return problems

    problems = run(app, calls)
    assert {k: v for k, v in problems.items() if k not in NOT_YET_TENANTED} == {}
    assert set(problems) == NOT_YET_TENANTED & set(checked), "tenanted now: leave the list"


def test_lists_show_only_the_callers_own_under_its_names(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True)
    state = app.state.infaas
    catalog = state.services.catalog
    seed_tenant(catalog, "beta")
    seed_tenant(catalog, "acme")
    seed_tenant(catalog, "default")

    async def calls(http: httpx.AsyncClient) -> dict[str, Any]:
        await state.refresh(force=True)
        acme = bearer(keys.deploy)
        return {
            "apps": (await http.get("/v1/apps", headers=acme)).json()["apps"],
            "jobs": (await http.get("/v1/jobs", headers=acme)).json()["jobs"],
            "index": (await http.post("/v2/repository/index", headers=acme)).json(),
            "admin": (await http.get("/v1/apps", headers=bearer(keys.admin))).json()["apps"],
        }

    seen = run(app, calls)
    assert [(a["app"], a["models"]) for a in seen["apps"]] == [("digits", ["digits-mlp"])]
    assert [j["app"] for j in seen["jobs"]] == ["digits"]
    assert seen["jobs"][0]["variant"] == "digits-mlp.onnx-fp32.cpu-t1"
    assert {e["name"] for e in seen["index"]} == {"digits", "digits-mlp"}
    assert [a["app"] for a in seen["admin"]] == ["acme--digits", "beta--digits", "digits"]


def test_two_tenants_may_use_one_name_and_keep_apart(tmp_path: Path) -> None:
    app, keys = build(tmp_path, auth=True)
    state = app.state.infaas
    beta_key = KeyStore(state.services.catalog).create("beta", Role.DEPLOY).key

    async def calls(http: httpx.AsyncClient) -> list[int]:
        codes = []
        for key in (keys.deploy, beta_key, keys.deploy):
            made = await http.post("/v1/apps", json=APP_BODY, headers=bearer(key))
            codes.append(made.status_code)
        gone = await http.delete("/v1/apps/digits", headers=bearer(beta_key))
        codes.append(gone.status_code)
        left = await http.get("/v1/apps/digits", headers=bearer(keys.deploy))
        codes.append(left.status_code)
        assert left.json()["app"] == "digits"
        return codes

    assert run(app, calls) == [201, 201, 409, 200, 200]
    assert sorted(a.id for a in state.services.catalog.list_apps()) == ["acme--digits"]
