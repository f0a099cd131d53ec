"""The store setting, ``INFAAS_STORE_URL``: an S3 bucket, or a folder."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from queues.errors import ConfigError, InvalidRequest
from registry.store.keys import check_bucket_name

_S3_FORM = "s3://ACCESS:SECRET@host:port/bucket[?secure=true&region=REGION]"
_STORE_FORMS = f"{_S3_FORM}, a folder path, or file:///absolute/folder"
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A parsed ``INFAAS_STORE_URL``; the secret is kept out of ``repr`` so logs stay clean."""

    kind: Literal["s3", "local"]
    endpoint: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    bucket: str = ""
    secure: bool = False
    region: str | None = None
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return str(self.path)
        query = "?secure=true" if self.secure else ""
        return f"s3://{self.endpoint}/{self.bucket}{query}"


def parse_store_url(url: str) -> StoreLocation:
    """Read the store setting; errors say the expected form and never repeat the secret."""
    text = url.strip()
    if not text:
        raise ConfigError(f"INFAAS_STORE_URL is empty: give {_STORE_FORMS}")
    scheme = _SCHEME_RE.match(text)
    if scheme is None:
        return _local_location(Path(text))
    name = scheme.group(1).lower()
    if name == "s3":
        return _parse_s3_url(text[scheme.end() :])
    if name == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file URL {text!r} names a host; give file:///absolute/folder or a folder path"
            )
        return _local_location(Path(unquote(parts.path)))
    raise ConfigError(f"store URL scheme {name!r} is not supported: give {_STORE_FORMS}")


def _local_location(path: Path) -> StoreLocation:
    # Absolute now, so a later chdir cannot move the store.
    folder = Path(os.path.abspath(path.expanduser()))
    return StoreLocation(kind="local", bucket=folder.name, path=folder)


def _parse_s3_url(rest: str) -> StoreLocation:
    # Split at the last '@': hosts and buckets never hold one, while a pasted secret may
    # hold '/', '+', ':' or '@' unencoded; a bad URL is described by its parts after '@'.
    credentials, at, place = rest.rpartition("@")
    if not at:
        raise ConfigError(f"the S3 store URL has no credentials: expected {_S3_FORM}")
    access_raw, colon, secret_raw = credentials.partition(":")
    access_key, secret_key = unquote(access_raw), unquote(secret_raw)
    if not colon or not access_key or not secret_key:
        raise ConfigError(
            f"the S3 store URL needs both an access key and a secret: expected {_S3_FORM} "
            "(URL-encode special characters)"
        )
    address, _, query = place.partition("?")
    endpoint, _, bucket = address.partition("/")
    endpoint = endpoint.lower()
    _check_endpoint(endpoint)
    bucket = bucket.removesuffix("/")
    if not bucket:
        raise ConfigError(f"the S3 store URL for {endpoint} has no bucket: expected {_S3_FORM}")
    if "/" in bucket:
        raise ConfigError(
            f"the S3 store URL names the path {bucket!r}; give one bucket: expected {_S3_FORM}"
        )
    try:
        check_bucket_name(bucket)
    except InvalidRequest as exc:
        raise ConfigError(
            f"the S3 store URL for {endpoint}: {exc.message}; expected {_S3_FORM}"
        ) from None
    secure, region = _parse_s3_query(query)
    return StoreLocation(
        kind="s3",
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        secure=secure,
        region=region,
    )


def _check_endpoint(endpoint: str) -> None:
    try:
        parts = urlsplit(f"//{endpoint}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = endpoint or None, 0
    if not host:
        raise ConfigError(f"the S3 store URL has no host: expected {_S3_FORM}")
    if port == 0 or (port is None and endpoint.endswith(":")):
        raise ConfigError(
            f"the S3 store URL endpoint {endpoint!r} has a bad port (a number 1-65535 is "
            f"needed): expected {_S3_FORM}"
        )


def _parse_s3_query(query: str) -> tuple[bool, str | None]:
    secure, region = False, None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "secure" and value.lower() in _TRUE | _FALSE:
            secure = value.lower() in _TRUE
        elif name == "region" and value:
            region = value
        else:
            raise ConfigError(
                f"the S3 store URL option {name}={value!r} is not understood: use "
                "secure=true|false and region=NAME, as in " + _S3_FORM
            )
    return secure, region
