"""The gateway's copy of the API keys, so that checking a key costs a dict look-up and a
hash, not a database read.

The copy is re-read in the background when it is older than :data:`RELOAD_S`, and at
once (at most every :data:`MISS_RELOAD_S`) when a key it does not know comes in, so a key
made on another gateway or by the CLI works on its first use while a flood of wrong
keys costs the catalog a few reads a second. A key revoked through this gateway is gone
here at once; one revoked elsewhere is refused within :data:`RELOAD_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from queues.errors import InfaasError, Unauthenticated
from registry.keys import ApiKey, KeyStore, key_id_of, matches
from registry.types import iso

log = logging.getLogger(__name__)
RELOAD_S = 2.0
MISS_RELOAD_S = 0.5


class KeyRing:
    def __init__(self, store: KeyStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at = -1e9
        self._reloading: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self, *, bootstrap_key: str | None, auth_on: bool) -> None:
        """Make the bootstrap admin key if asked, read the keys, and say when auth is on
        but nobody could get in."""
        if bootstrap_key:
            made = await asyncio.to_thread(self.store.bootstrap_admin, bootstrap_key)
            if made is not None:
                log.warning("made admin key %s from INFAAS_BOOTSTRAP_ADMIN_KEY", made.id)
        await self.reload()
        if auth_on and not any(k.active for k in self._keys.values()):
            log.warning(
                "authentication is on and no API key exists: every route but /healthz and "
                "/readyz answers 401; make one with `infaas keys create --tenant T --role "
                "admin` or set INFAAS_BOOTSTRAP_ADMIN_KEY"
            )

    async def reload(self) -> None:
        async with self._lock:
            keys = await asyncio.to_thread(self.store.all)
            self._keys = {k.id: k for k in keys}
            self._loaded_at = self._clock()

    def _reload_in_background(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            return

        async def run() -> None:
            try:
                await self.reload()
            except InfaasError as exc:  # keep checking against the last good copy
                log.warning("could not re-read the API keys: %s", exc.message)

        self._reloading = asyncio.create_task(run(), name="infaas-keys-reload")

    def put(self, key: ApiKey) -> None:
        """A key made or revoked through this gateway counts here at once."""
        self._keys[key.id] = key

    async def authenticate(self, presented: str) -> ApiKey:
        key_id = key_id_of(presented)
        age = self._clock() - self._loaded_at
        record = self._keys.get(key_id)
        if record is None and age >= MISS_RELOAD_S:
            await self.reload()
            record = self._keys.get(key_id)
        elif age >= RELOAD_S:
            self._reload_in_background()
        if record is None or not matches(presented, record.key_hash):
            raise Unauthenticated(
                "the API key is not valid; check it, or ask an admin for one (`infaas keys create`)"
            )
        if not record.active:
            raise Unauthenticated(
                f"API key {record.id} was revoked at {iso(record.revoked_at)}; ask an admin "
                "for a new one"
            )
        return record
