"""The composition root: builds the stores and clients from settings, once per process.

Everything else takes these objects as arguments; nothing opens a connection at import.
"""

from __future__ import annotations

from dataclasses import dataclass

from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.livestate import LiveState, open_live_state
from registry.pricing import PriceTable
from registry.settings import RegistrySettings
from registry.store import ObjectStore, open_store


@dataclass
class Services:
    broker: BrokerSettings
    registry: RegistrySettings
    catalog: Catalog
    store: ObjectStore
    live: LiveState
    prices: PriceTable

    def close(self) -> None:
        self.live.close()
        self.catalog.close()


def open_services(
    broker: BrokerSettings | None = None, registry: RegistrySettings | None = None
) -> Services:
    broker = broker or BrokerSettings()
    registry = registry or RegistrySettings()
    prices = registry.price_table()
    catalog = Catalog(registry.resolved_catalog_url)
    store = open_store(registry.resolved_store_url)
    live = open_live_state(
        registry.state_url, prefix=registry.state_prefix, ttl_s=registry.state_ttl_s
    )
    return Services(broker, registry, catalog, store, live, prices)
