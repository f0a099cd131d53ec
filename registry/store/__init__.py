"""The object store: model files, validation sets and batch-job data, by key.

Two backends sit behind one small interface so that the embedded default (a folder)
and production (S3 / MinIO) behave the same for every caller: the same key rules, the
same errors (:class:`ObjectMissing` for an absent key, :class:`StoreUnavailable` when
the store cannot be reached or written), and writes that readers never see half done.
Both backends refuse the same keys, so code tested on a folder does not break on S3.

Modules: ``protocol`` (the interface), ``keys`` (key and bucket rules), ``urls`` (the
store setting), ``files`` (atomic local writes), ``local`` and ``s3`` (the backends).
"""

from __future__ import annotations

from registry.store.keys import check_bucket_name, check_key, check_prefix
from registry.store.local import LocalStore
from registry.store.protocol import ObjectStore
from registry.store.s3 import S3Store
from registry.store.urls import StoreLocation, parse_store_url

__all__ = [
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "StoreLocation",
    "check_bucket_name",
    "check_key",
    "check_prefix",
    "open_store",
    "parse_store_url",
]


def open_store(url: str) -> ObjectStore:
    """The store an ``INFAAS_STORE_URL`` names; nothing is contacted until first use."""
    location = parse_store_url(url)
    if location.kind == "s3":
        return S3Store(location)
    assert location.path is not None
    return LocalStore(location.path)
