"""``infaas keys create|list|revoke``: API keys, made on the catalog directly.

These run where the catalog is reachable (``INFAAS_CATALOG_URL``, or the embedded
SQLite catalog under ``INFAAS_HOME``), like the other server-side commands, so that the
first admin key can be made before any gateway needs one. Over HTTP, admins use
``POST /v1/keys``, ``GET /v1/keys`` and ``DELETE /v1/keys/{id}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from registry.keys import Role


def _store() -> Any:
    from registry.catalog import Catalog
    from registry.keys import KeyStore
    from registry.settings import RegistrySettings

    return KeyStore(Catalog(RegistrySettings().resolved_catalog_url))


def cmd_create(args: argparse.Namespace) -> int:
    store = _store()
    try:
        made = store.create(args.tenant, args.role, note=args.note, created_by="infaas keys")
    finally:
        store.catalog.close()
    if args.json:
        print(json.dumps(made.to_dict(), indent=2))
        return 0
    record = made.record
    print(f"made {record.role.value} key {record.id} for tenant {record.tenant}")
    print("the key (shown this once; keep it secret, send it as 'Authorization: Bearer KEY'):")
    print(made.key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store()
    try:
        keys = store.all(include_revoked=args.revoked)
    finally:
        store.catalog.close()
    if args.tenant is not None:
        keys = [k for k in keys if k.tenant == args.tenant]
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2))
        return 0
    if not keys:
        print("no API keys; make one with `infaas keys create --tenant T --role admin`")
        return 0
    print(f"{'id':14} {'tenant':16} {'role':7} {'created':20} {'revoked':20} note")
    for key in keys:
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "-"
        created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{key.id:14} {key.tenant:16} {key.role.value:7} {created:20} {revoked:20} {key.note}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    store = _store()
    try:
        revoked = store.revoke(args.key_id)
    finally:
        store.catalog.close()
    print(f"revoked key {revoked.id} ({revoked.role.value}, tenant {revoked.tenant})")
    return 0


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys on the catalog: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    create = keys_sub.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument(
        "--tenant",
        required=True,
        help="the tenant the key acts for: 1-24 of [a-z0-9-], no '--' "
        "('default' owns the demo's apps)",
    )
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--note", default="", help="what the key is for")
    create.add_argument("--json", action="store_true", help="print the record and key as JSON")
    create.set_defaults(handler=cmd_create)

    listing = keys_sub.add_parser("list", help="keys, oldest first (never their secrets)")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--revoked", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=cmd_revoke)
