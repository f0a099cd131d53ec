"""The workers' own RabbitMQ account: limited to one vhost and to the queue and exchange
names the workers use, so a worker host's credentials cannot read or configure anything
else on the broker (other vhosts, the management API, queues of other systems).

Names (``queues/topology.py`` and Celery's settings in ``queues/celery_app.py``), all
under the queue prefix ``P`` (``infaas``):

- ``P.<app>.<variant>`` online queues, ``P.<app>.batch`` batch queues and exchanges,
  ``P.control.<hardware>.quorum`` Celery task queues and their exchanges, ``P.dlx`` and
  ``P.expired`` for expired queries: ``P.`` and anything after;
- Celery's remote control (``control_exchange = P.ctl``): the fanout exchange
  ``P.ctl.pidbox`` (under ``P.`` already), each worker's ``<node>@<host>.P.ctl.pidbox``
  queue, and the ``reply.P.ctl.pidbox`` exchange its answers go to;
- replies to online queries go through the default exchange (``amq.default``) to the
  gateway's direct reply-to address: writing there is all the workers need of it.

RabbitMQ matches these regular expressions unanchored, so each is anchored here.

Runs as the one-shot ``rabbitmq-setup`` service of ``infra/docker-compose.yml`` through
the management API (standard library only); run again, it sets the same password and
permissions (idempotent).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

DEFAULT_PREFIX = "infaas"
DEFAULT_VHOST = "infaas"


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str

    def as_json(self) -> dict[str, str]:
        return {"configure": self.configure, "write": self.write, "read": self.read}


def worker_permissions(prefix: str = DEFAULT_PREFIX) -> Permissions:
    """What a worker may declare (configure), publish to or bind into (write) and consume
    from or bind from (read)."""
    p = re.escape(prefix)
    own = rf"{p}\..*"
    pidbox_queue = rf".+@.+\.{p}\.ctl\.pidbox"
    reply_exchange = rf"reply\.{p}\.ctl\.pidbox"
    return Permissions(
        configure=rf"^({own}|{pidbox_queue}|{reply_exchange})$",
        write=rf"^({own}|{pidbox_queue}|{reply_exchange}|amq\.default)$",
        read=rf"^({own}|{pidbox_queue})$",
    )


class SetupError(RuntimeError):
    """The management API refused or never answered."""


def _request(
    api: str, auth: tuple[str, str], method: str, path: str, body: object | None = None
) -> None:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{api.rstrip('/')}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        raise SetupError(f"{method} {path} answered {exc.code}: {exc.read()[:200]!r}") from exc


def apply(
    api: str,
    owner: tuple[str, str],
    worker: tuple[str, str],
    vhost: str,
    permissions: Permissions,
) -> None:
    """Create or update the worker's user (no tags: no management access) and set its
    permissions on ``vhost``."""
    user = quote(worker[0], safe="")
    _request(api, owner, "PUT", f"/users/{user}", {"password": worker[1], "tags": ""})
    _request(
        api,
        owner,
        "PUT",
        f"/permissions/{quote(vhost, safe='')}/{user}",
        permissions.as_json(),
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rabbitmq_worker", description=__doc__)
    parser.add_argument("--api", default="http://rabbitmq:15672/api")
    parser.add_argument("--vhost", default=DEFAULT_VHOST)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="the queue prefix")
    parser.add_argument("--wait-s", type=float, default=60.0, help="how long to retry")
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    owner = (env["RABBITMQ_USER"], env["RABBITMQ_PASSWORD"])
    worker = (env["RABBITMQ_WORKER_USER"], env["RABBITMQ_WORKER_PASSWORD"])
    permissions = worker_permissions(args.prefix)
    deadline = time.monotonic() + args.wait_s
    while True:
        try:
            apply(args.api, owner, worker, args.vhost, permissions)
        except (SetupError, OSError) as exc:
            if time.monotonic() > deadline:
                print(f"rabbitmq-setup: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)
            continue
        print(f"rabbitmq-setup: user {worker[0]} limited to {args.vhost}, {args.prefix}.*")
        return 0


if __name__ == "__main__":
    sys.exit(main())
