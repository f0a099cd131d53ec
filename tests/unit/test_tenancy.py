"""The one mapping between a tenant's names and the system's internal ids
(registry/tenancy.py), and the catalog's tenant columns (registry/catalog_schema.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from queues import topology
from queues.errors import InvalidRequest
from registry.catalog import Catalog, TenantUsage
from registry.names import parse_variant_id, variant_id
from registry.tenancy import (
    DEFAULT_NAMESPACE,
    MAX_ID_CHARS,
    Namespace,
    check_tenant,
    internal_id,
    member_id,
    owner_of,
)
from tests.catalog_cases import make_app, make_model, make_variant

ACME = Namespace("acme")
DEFAULT = Namespace("default")


def test_the_default_tenant_keeps_its_names() -> None:
    assert internal_id("default", "digits") == "digits"
    assert DEFAULT.inside("digits") == "digits"
    assert DEFAULT.outside("digits-mlp.onnx-fp32.cpu-t1") == "digits-mlp.onnx-fp32.cpu-t1"
    assert DEFAULT.new_id("app", "digits") == "digits"
    assert owner_of("digits-mlp.onnx-fp32.cpu-t1") == "default"


def test_another_tenant_gets_a_prefix_valid_in_ids_variant_ids_and_queue_names() -> None:
    app = ACME.new_id("app", "digits")
    model = ACME.new_id("model", "digits-mlp")
    assert (app, model) == ("acme--digits", "acme--digits-mlp")
    variant = variant_id(model, "onnx", "fp32", "cpu", threads=1)
    assert variant == "acme--digits-mlp.onnx-fp32.cpu-t1"
    assert parse_variant_id(variant).model == model
    assert topology.variant_queue("infaas", app, variant).startswith("infaas.acme--digits.")
    assert [owner_of(x) for x in (app, model, variant)] == ["acme"] * 3
    assert [ACME.outside(x) for x in (app, model, variant)] == [
        "digits",
        "digits-mlp",
        "digits-mlp.onnx-fp32.cpu-t1",
    ]


@pytest.mark.parametrize(
    ("names", "name", "internal"),
    [
        (ACME, "digits", "acme--digits"),
        (ACME, "beta--digits", "acme--beta--digits"),  # never beta's
        (DEFAULT, "digits", "digits"),
        (DEFAULT, "acme--digits", None),  # acme's: not the default tenant's to name
        (DEFAULT_NAMESPACE, "acme--digits", "acme--digits"),  # an admin names it
    ],
)
def test_a_name_is_looked_up_only_among_the_callers(
    names: Namespace, name: str, internal: str | None
) -> None:
    assert names.inside(name) == internal
    if internal is not None:
        assert names.owns(internal)
        assert names.outside(internal) == name


def test_ownership_and_what_an_admin_sees() -> None:
    assert not ACME.owns("digits")
    assert not ACME.owns("beta--digits")
    assert not DEFAULT.owns("acme--digits")
    assert DEFAULT_NAMESPACE.owns("acme--digits")
    assert DEFAULT_NAMESPACE.owns("digits")
    admin_of_acme = Namespace("acme", everything=True)
    assert admin_of_acme.inside("digits") == "digits"  # admins use internal ids
    assert admin_of_acme.new_id("app", "digits") == "digits"
    assert admin_of_acme.new_id("app", "beta--digits") == "beta--digits"


@pytest.mark.parametrize(
    ("names", "name", "words"),
    [
        (ACME, "a--b", "'--'"),
        (DEFAULT, "a--b", "'--'"),
        (ACME, "Digits", "not valid"),
        (ACME, "x" * (MAX_ID_CHARS - 5), f"at most {MAX_ID_CHARS - 6} characters"),
        (DEFAULT_NAMESPACE, "Bad Tenant--x", "tenant id"),
    ],
)
def test_bad_new_names_are_refused_clearly(names: Namespace, name: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        names.new_id("app", name)


def test_the_longest_name_of_a_tenant_fits_the_id_rule() -> None:
    longest = "x" * (MAX_ID_CHARS - len("acme--"))
    assert len(ACME.new_id("model", longest)) == MAX_ID_CHARS


@pytest.mark.parametrize("tenant", ["acme", "a", "team-7", "x" * 24])
def test_tenant_names(tenant: str) -> None:
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "Acme", "a--b", "-a", "a-", "x" * 25, "a_b"])
def test_bad_tenant_names(tenant: str) -> None:
    with pytest.raises(InvalidRequest, match="tenant id"):
        check_tenant(tenant)


def test_a_model_belongs_to_its_apps_tenant() -> None:
    assert member_id(ACME, "model", "mlp", "acme--digits") == "acme--mlp"
    assert member_id(DEFAULT_NAMESPACE, "model", "mlp", "acme--digits") == "acme--mlp"
    assert member_id(DEFAULT_NAMESPACE, "model", "acme--mlp", "acme--digits") == "acme--mlp"
    with pytest.raises(InvalidRequest, match="its app's tenant"):
        member_id(DEFAULT_NAMESPACE, "model", "beta--mlp", "acme--digits")


def test_messages_show_the_callers_names() -> None:
    message = "no variant of app 'acme--digits' reaches 0.99 (acme--digits-mlp.onnx-fp32.cpu)"
    assert (
        ACME.show(message) == "no variant of app 'digits' reaches 0.99 (digits-mlp.onnx-fp32.cpu)"
    )
    assert DEFAULT_NAMESPACE.show(message) == message


def test_rows_carry_the_tenant_of_their_id_and_usage_counts_per_tenant(tmp_path: Path) -> None:
    with Catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        for app, model in (("digits", "mlp"), ("acme--digits", "acme--mlp")):
            catalog.create_app(make_app(app))
            catalog.add_model(make_model(model, app), stored_bytes=1000)
            catalog.upsert_variant(make_variant(model, app))
        with catalog.read_session() as session:
            rows = {
                table: sorted(
                    tuple(r) for r in session.execute(text(f"SELECT id, tenant FROM {table}"))
                )
                for table in ("apps", "models", "variants")
            }
        assert rows["apps"] == [("acme--digits", "acme"), ("digits", "default")]
        assert rows["variants"] == [
            ("acme--mlp.onnx-fp32.cpu-t1", "acme"),
            ("mlp.onnx-fp32.cpu-t1", "default"),
        ]
        assert catalog.usage("acme") == TenantUsage("acme", variants=1, stored_bytes=1000)
        assert catalog.usage("beta") == TenantUsage("beta", variants=0, stored_bytes=0)


def test_an_older_catalog_gains_the_tenant_columns(tmp_path: Path) -> None:
    """A catalog made before tenants: its rows are the default tenant's."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE apps (id VARCHAR PRIMARY KEY, task VARCHAR NOT NULL, "
                "input_name VARCHAR NOT NULL, input_dtype VARCHAR NOT NULL, input_shape JSON "
                "NOT NULL, output_kind VARCHAR NOT NULL, num_classes INTEGER, description TEXT "
                "NOT NULL, created_at DATETIME NOT NULL)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO apps VALUES ('digits', 'classification', 'x', 'float32', "
                "'[-1, 64]', 'probabilities', 10, '', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    with Catalog(url) as catalog:
        assert [a.id for a in catalog.list_apps()] == ["digits"]
        with catalog.read_session() as session:
            rows = session.execute(text("SELECT id, tenant FROM apps")).all()
        assert [tuple(r) for r in rows] == [("digits", "default")]
        assert catalog.usage("default").variants == 0
