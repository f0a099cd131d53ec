"""Tenants' names (pure): the one mapping between the name a tenant sees and the name
used inside the system (catalog ids, variant ids, queue names, live-state keys, store
keys).

Every app, model and variant belongs to one tenant. Inside the system its id is the
tenant's **prefix** followed by the name the tenant gave it: ``acme--digits`` is app
``digits`` of tenant ``acme``, and its variants are ``acme--digits-mlp.onnx-fp32.cpu-t1``
and so on, so queue names (``infaas.acme--digits.acme--digits-mlp.onnx-fp32.cpu-t1``),
live-state keys and store keys (``models/acme--digits-mlp/...``) need no change to keep
tenants apart. The ``default`` tenant (authentication off, the demo) has no prefix: its
names are exactly what they were before tenants existed.

The mapping is unambiguous because neither a tenant's name nor the name it gives an app
or a model may contain ``--``: an internal id belongs to the tenant before its first
``--``, or to ``default`` when it has none. Internal ids obey the id rule of
:mod:`registry.names` (at most 64 characters), so a tenant's names are shorter by its
prefix.

Admins work on the internal names themselves: they see every tenant's apps (``digits``
of ``default``, ``acme--digits`` of ``acme``) and address them by those names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from queues.errors import InfaasError, InvalidRequest
from registry.names import check_id

DEFAULT_TENANT = "default"
SEPARATOR = "--"
MAX_TENANT_CHARS = 24
MAX_ID_CHARS = 64
_TENANT_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def check_tenant(tenant: str) -> str:
    """Return ``tenant`` if it can name a tenant, else a clear 422."""
    if (
        not isinstance(tenant, str)
        or len(tenant) > MAX_TENANT_CHARS
        or not _TENANT_RE.match(tenant)
    ):
        raise InvalidRequest(
            f"tenant id {tenant!r} is not valid: use 1-{MAX_TENANT_CHARS} characters of "
            "lowercase letters, digits and single '-', starting and ending with a letter "
            "or digit"
        )
    return tenant


def prefix_of(tenant: str) -> str:
    """What a tenant's internal ids start with (empty for the default tenant)."""
    return "" if tenant == DEFAULT_TENANT else tenant + SEPARATOR


def owner_of(internal: str) -> str:
    """The tenant an internal id (app, model or variant) belongs to."""
    head, separator, _ = internal.partition(SEPARATOR)
    if separator and _TENANT_RE.match(head) and len(head) <= MAX_TENANT_CHARS:
        return head
    return DEFAULT_TENANT


def internal_id(tenant: str, name: str) -> str:
    """The internal id of ``name`` as ``tenant`` calls it (no checks: see
    :meth:`Namespace.new_id` for a name about to be created)."""
    return prefix_of(tenant) + name


@dataclass(frozen=True, slots=True)
class Namespace:
    """The names one caller sees: a tenant's own (``everything=False``), or, for an
    admin, every tenant's by their internal ids."""

    tenant: str
    everything: bool = False

    def inside(self, name: str) -> str | None:
        """The internal id of ``name`` as this caller calls it; None when no id of this
        caller's can be called that (answer it as an unknown name: 404)."""
        if self.everything:
            return name
        internal = internal_id(self.tenant, name)
        return internal if owner_of(internal) == self.tenant else None

    def owns(self, internal: str) -> bool:
        """Whether this caller may see the app, model or variant with this internal id."""
        return self.everything or owner_of(internal) == self.tenant

    def outside(self, internal: str) -> str:
        """The name this caller sees for an internal id it owns."""
        if self.everything:
            return internal
        return internal.removeprefix(prefix_of(self.tenant))

    def show(self, text: str) -> str:
        """A message about this caller's things with their ids as it names them."""
        prefix = prefix_of(self.tenant)
        return text if self.everything or not prefix else text.replace(prefix, "")

    def shown(self, error: InfaasError) -> None:
        """Put ``error``'s message in this caller's names (before it is raised on)."""
        message = self.show(error.message)
        if message != error.message:
            error.message = message
            error.args = (message, *error.args[1:])

    def new_id(self, kind: str, name: str) -> str:
        """The internal id of an app or model this caller is about to create as ``name``,
        checked: a valid id without ``--`` (an admin may name another tenant's as
        ``<tenant>--<name>``), at most 64 characters with the prefix."""
        if self.everything:
            tenant, separator, own = name.partition(SEPARATOR)
            if separator:
                return Namespace(check_tenant(tenant)).new_id(kind, own)
            return Namespace(DEFAULT_TENANT).new_id(kind, name)
        check_id(kind, name)
        if SEPARATOR in name:
            raise InvalidRequest(
                f"{kind} id {name!r} contains '--', which the system keeps to tell "
                "tenants apart; use single '-' between words"
            )
        prefix = prefix_of(self.tenant)
        if len(prefix) + len(name) > MAX_ID_CHARS:
            raise InvalidRequest(
                f"{kind} id {name!r} is too long for tenant {self.tenant!r}: its ids may "
                f"have at most {MAX_ID_CHARS - len(prefix)} characters"
            )
        return prefix + name


DEFAULT_NAMESPACE = Namespace(DEFAULT_TENANT, everything=True)


def member_id(names: Namespace, kind: str, name: str, parent: str) -> str:
    """The internal id of a new ``kind`` (a model) called ``name`` by the caller, inside
    ``parent`` (an internal app id): it belongs to the app's tenant. An admin may name it
    ``<tenant>--<name>``, of the app's tenant only."""
    owner = owner_of(parent)
    if names.everything and SEPARATOR in name:
        internal = names.new_id(kind, name)
        if owner_of(internal) != owner:
            raise InvalidRequest(
                f"{kind} {name!r} would belong to tenant {owner_of(internal)!r} but app "
                f"{parent!r} belongs to {owner!r}; a {kind} belongs to its app's tenant"
            )
        return internal
    return Namespace(owner).new_id(kind, name)
